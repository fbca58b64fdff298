"""A complete sample dossier, for the demo and the workflow tests."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from models.dossier import (
    Attachment,
    CertificateSource,
    CourseKind,
    Dossier,
    EducationProof,
    JournalTier,
    MaskingConfirmations,
    Paper,
    PublicityPeriod,
    PutonghuaGrade,
    ResearchProject,
    TeachingYear,
    TrainingCertificate,
)
from models.policy import CHINA_TZ, CyclePolicy, Level
from models.working_days import add_working_days, is_working_day


def complete_dossier(policy: CyclePolicy, level: Level) -> Dossier:
    """A realistic dossier that passes every pre-check of ``policy`` at ``level``.

    Everything the rules count is derived from the policy, so the sample stays valid when a
    cycle changes its numbers; the rest is ordinary teaching-career content.
    """
    rules = policy.continuing_education
    certificates: list[TrainingCertificate] = []
    for year in rules.years:
        certificates.append(
            TrainingCertificate(
                year=year,
                kind=CourseKind.professional,
                hours=Decimal(rules.min_professional_hours_per_year),
                source=CertificateSource.system
                if year >= rules.system_professional_certificates_from
                else CertificateSource.manual,
            )
        )
        public_hours = rules.min_hours_per_year - rules.min_professional_hours_per_year
        if public_hours > 0:
            certificates.append(
                TrainingCertificate(
                    year=year,
                    kind=CourseKind.public,
                    hours=Decimal(public_hours),
                    source=CertificateSource.system
                    if year >= rules.system_public_certificates_from
                    else CertificateSource.manual,
                )
            )

    # The employer publicizes from the first working day of the application window.
    start = policy.deadlines.window_opens.astimezone(CHINA_TZ).date()
    while not is_working_day(start, policy.calendar_overrides):
        start += timedelta(days=1)
    days = policy.employer_publicity_working_days
    end = add_working_days(start, days - 1, policy.calendar_overrides) if days > 1 else start

    minimum = PutonghuaGrade.parse(policy.putonghua_min_grade)
    grade = min(minimum, PutonghuaGrade.second_a, key=lambda g: g.rank)

    papers = [
        Paper(
            id="p1",
            title="新时代党校教学中的案例式教学探索",
            journal="西部社会科学（示例）",
            cn="65-1234/C",
            issn="1234-5678",
            tier=JournalTier.cssci,
            character_count=8600,
        )
    ]
    if level in (Level.deputy_senior, Level.senior):
        papers.append(
            Paper(
                id="p2",
                title="基层党组织建设的实践路径研究",
                journal="边疆党校学报（示例）",
                cn="65-4321/D",
                issn="8765-4321",
                tier=JournalTier.provincial,
                character_count=6200,
            )
        )

    return Dossier(
        employer_publicity=PublicityPeriod(start=start, end=end),
        training_certificates=certificates,
        putonghua_grade=grade,
        education=EducationProof(degree_certificate=True, chsi_record=True),
        masking=MaskingConfirmations(name_masked=True, photo_masked=True, employer_masked=True),
        attachments=set(Attachment),
        papers=papers,
        projects=[ResearchProject(title="阿克苏地区党员干部教育培训质量评估研究", concluded=True)],
        teaching_years=[
            TeachingYear(year=year, required_hours=Decimal(240), delivered_hours=Decimal(256))
            for year in rules.years
        ],
    )


__all__ = ["complete_dossier"]

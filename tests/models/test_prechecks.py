"""Submission pre-checks (rules 8–16) at their boundaries."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from models.dossier import (
    Attachment,
    CertificateSource,
    CourseKind,
    Dossier,
    EducationExemption,
    EducationProof,
    GrassrootsService,
    GrassrootsServiceKind,
    InServiceDegree,
    IssueType,
    JournalTier,
    MaskingConfirmations,
    Paper,
    PublicationKind,
    PublicationStatus,
    PublicityPeriod,
    PutonghuaGrade,
    ResearchProject,
    TeachingYear,
    TrainingCertificate,
)
from models.errors import CalendarYearUnknown
from models.findings import Finding, Severity, blocking
from models.policy import Level, load_policy
from models.prechecks import (
    check_continuing_education,
    check_employer_publicity,
    check_research_output,
    check_teaching_workload,
    run_prechecks,
)
from zhiping.samples import complete_dossier

POLICY = load_policy("2024-aksu-party-school")
LEVEL = Level.intermediate


def dossier(**changes: Any) -> Dossier:
    """The complete sample with some fields replaced."""
    return complete_dossier(POLICY, LEVEL).model_copy(update=changes)


def codes(findings: list[Finding]) -> list[str]:
    return [finding.code for finding in findings]


def severity_of(findings: list[Finding], code: str) -> Severity:
    return next(f.severity for f in findings if f.code == code)


def certs(*specs: tuple[int, CourseKind, int, CertificateSource]) -> list[TrainingCertificate]:
    return [TrainingCertificate(year=y, kind=k, hours=Decimal(h), source=s) for y, k, h, s in specs]


PRO, PUB = CourseKind.professional, CourseKind.public
SYS, MAN = CertificateSource.system, CertificateSource.manual


# --- the sample ------------------------------------------------------------------------


@pytest.mark.parametrize("level", list(Level))
def test_complete_dossier_has_no_findings(level: Level) -> None:
    findings = run_prechecks(complete_dossier(POLICY, level), level, POLICY)
    assert blocking(findings) == []
    assert findings == []


def test_every_finding_names_a_clause_and_a_chinese_message() -> None:
    findings = run_prechecks(Dossier(), LEVEL, POLICY)
    assert findings and all(f.clause.startswith("§") and f.message for f in findings)
    assert all(f.code.isupper() for f in findings)


# --- rule 8: employer publicity --------------------------------------------------------


def _publicity(start: date, end: date) -> list[str]:
    d = dossier(employer_publicity=PublicityPeriod(start=start, end=end))
    return codes(check_employer_publicity(d, LEVEL, POLICY))


def test_publicity_of_exactly_five_working_days_passes() -> None:
    assert _publicity(date(2024, 7, 22), date(2024, 7, 26)) == []  # Mon..Fri


def test_publicity_of_four_working_days_blocks() -> None:
    d = dossier(employer_publicity=PublicityPeriod(start=date(2024, 7, 22), end=date(2024, 7, 28)))
    assert _publicity(date(2024, 7, 22), date(2024, 7, 25)) == ["EMPLOYER_PUBLICITY_TOO_SHORT"]
    assert _publicity(date(2024, 7, 20), date(2024, 7, 25)) == ["EMPLOYER_PUBLICITY_TOO_SHORT"]
    assert check_employer_publicity(d, LEVEL, POLICY) == []  # weekend days are simply not counted


def test_publicity_over_national_day_counts_adjusted_workdays() -> None:
    # 2024-09-29 (Sun) was a working day, Oct 1-7 were off, 2024-10-12 (Sat) was a working day.
    assert _publicity(date(2024, 9, 28), date(2024, 10, 8)) == ["EMPLOYER_PUBLICITY_TOO_SHORT"]
    assert _publicity(date(2024, 9, 29), date(2024, 10, 8)) == ["EMPLOYER_PUBLICITY_TOO_SHORT"]
    assert _publicity(date(2024, 9, 29), date(2024, 10, 9)) == ["EMPLOYER_PUBLICITY_TOO_SHORT"]
    assert _publicity(date(2024, 9, 29), date(2024, 10, 10)) == []  # 29, 30, 8, 9, 10
    assert _publicity(date(2024, 10, 1), date(2024, 10, 11)) == ["EMPLOYER_PUBLICITY_TOO_SHORT"]
    assert _publicity(date(2024, 10, 1), date(2024, 10, 12)) == []  # 8..12, Saturday included


def test_missing_publicity_blocks() -> None:
    findings = check_employer_publicity(dossier(employer_publicity=None), LEVEL, POLICY)
    assert codes(findings) == ["EMPLOYER_PUBLICITY_MISSING"]
    assert findings[0].severity is Severity.blocking


def test_publicity_in_unknown_calendar_year_is_refused() -> None:
    d = dossier(employer_publicity=PublicityPeriod(start=date(2099, 7, 1), end=date(2099, 7, 9)))
    with pytest.raises(CalendarYearUnknown):
        run_prechecks(d, LEVEL, POLICY)


def test_publicity_end_before_start_is_invalid() -> None:
    with pytest.raises(ValidationError):
        PublicityPeriod(start=date(2024, 7, 26), end=date(2024, 7, 22))


# --- rule 9: continuing education -------------------------------------------------------


def _ce(certificates: list[TrainingCertificate], **changes: Any) -> list[Finding]:
    """The 2024 year replaced by ``certificates``; 2021-2023 stay complete."""
    kept = [c for c in dossier().training_certificates if c.year != 2024]
    d = dossier(training_certificates=kept + certificates, **changes)
    return check_continuing_education(d, LEVEL, POLICY)


def test_ninety_hours_pass_eighty_nine_block() -> None:
    assert _ce(certs((2024, PRO, 60, SYS), (2024, PUB, 30, SYS))) == []
    findings = _ce(certs((2024, PRO, 60, SYS), (2024, PUB, 29, SYS)))
    assert codes(findings) == ["CE_HOURS_SHORT"]
    assert findings[0].severity is Severity.blocking
    assert "2024" in findings[0].message


def test_sixty_professional_hours_pass_fifty_nine_block() -> None:
    assert _ce(certs((2024, PRO, 60, SYS), (2024, PUB, 40, SYS))) == []
    findings = _ce(certs((2024, PRO, 59, SYS), (2024, PUB, 41, SYS)))
    assert codes(findings) == ["CE_PROFESSIONAL_HOURS_SHORT"]


def test_half_hours_count() -> None:
    halves = [
        TrainingCertificate(year=2024, kind=PUB, hours=Decimal("29.5"), source=SYS),
        TrainingCertificate(year=2024, kind=PUB, hours=Decimal("0.5"), source=SYS),
    ]
    assert _ce([*certs((2024, PRO, 60, SYS)), *halves]) == []


def test_a_missing_year_blocks() -> None:
    kept = [c for c in dossier().training_certificates if c.year != 2022]
    findings = check_continuing_education(dossier(training_certificates=kept), LEVEL, POLICY)
    assert codes(findings) == ["CE_HOURS_SHORT", "CE_PROFESSIONAL_HOURS_SHORT"]


def test_manual_public_certificate_2022_refused_2021_accepted() -> None:
    others = [c for c in dossier().training_certificates if c.year not in (2021, 2022)]
    ok = certs(
        (2021, PRO, 60, SYS), (2021, PUB, 30, MAN), (2022, PRO, 60, SYS), (2022, PUB, 30, SYS)
    )
    assert (
        check_continuing_education(dossier(training_certificates=others + ok), LEVEL, POLICY) == []
    )
    refused = certs(
        (2021, PRO, 60, SYS), (2021, PUB, 30, SYS), (2022, PRO, 60, SYS), (2022, PUB, 30, MAN)
    )
    findings = check_continuing_education(
        dossier(training_certificates=others + refused), LEVEL, POLICY
    )
    # The refused certificate's hours do not count, so 2022 is also short.
    assert codes(findings) == ["CE_CERTIFICATE_NOT_FROM_SYSTEM", "CE_HOURS_SHORT"]
    assert all(f.severity is Severity.blocking for f in findings)


def test_manual_professional_certificate_2021_refused() -> None:
    others = [c for c in dossier().training_certificates if c.year != 2021]
    d = dossier(training_certificates=others + certs((2021, PRO, 60, MAN), (2021, PUB, 30, MAN)))
    assert codes(check_continuing_education(d, LEVEL, POLICY)) == [
        "CE_CERTIFICATE_NOT_FROM_SYSTEM",
        "CE_HOURS_SHORT",
        "CE_PROFESSIONAL_HOURS_SHORT",
    ]


def test_approved_exemption_replaces_the_check() -> None:
    exemption = EducationExemption(reason="2022-2024 年参加“访惠聚”驻村工作", approved=True)
    findings = check_continuing_education(
        dossier(training_certificates=[], education_exemption=exemption), LEVEL, POLICY
    )
    assert codes(findings) == ["CE_EXEMPTION_USED"]
    assert findings[0].severity is Severity.advisory


def test_unapproved_exemption_does_not_replace_the_check() -> None:
    exemption = EducationExemption(reason="访惠聚驻村", approved=False)
    findings = check_continuing_education(
        dossier(training_certificates=[], education_exemption=exemption), LEVEL, POLICY
    )
    assert codes(findings)[0] == "CE_EXEMPTION_NOT_APPROVED"
    assert codes(findings).count("CE_HOURS_SHORT") == len(POLICY.continuing_education.years)


# --- rule 10: Putonghua -----------------------------------------------------------------


def test_lowest_grade_passes() -> None:
    d = Dossier.model_validate({**dossier().model_dump(), "putonghua_grade": "三级乙等"})
    assert d.putonghua_grade is PutonghuaGrade.third_b
    assert run_prechecks(d, LEVEL, POLICY) == []


def test_grade_below_policy_minimum_blocks() -> None:
    strict = POLICY.model_copy(update={"putonghua_min_grade": "二级乙等"})
    assert run_prechecks(dossier(putonghua_grade=PutonghuaGrade.second_b), LEVEL, strict) == []
    findings = run_prechecks(dossier(putonghua_grade=PutonghuaGrade.third_a), LEVEL, strict)
    assert codes(findings) == ["PUTONGHUA_GRADE_TOO_LOW"]
    assert findings[0].severity is Severity.blocking


def test_unknown_grade_is_not_accepted() -> None:
    with pytest.raises(ValidationError):
        Dossier.model_validate({"putonghua_grade": "三级丙等"})


def test_missing_grade_blocks() -> None:
    assert codes(run_prechecks(dossier(putonghua_grade=None), LEVEL, POLICY)) == [
        "PUTONGHUA_GRADE_MISSING"
    ]


def test_policy_with_unknown_minimum_grade_is_a_configuration_error() -> None:
    broken = POLICY.model_copy(update={"putonghua_min_grade": "四级"})
    with pytest.raises(ValueError, match="unknown Putonghua grade"):
        run_prechecks(dossier(), LEVEL, broken)


# --- rule 11: education proof ------------------------------------------------------------


@pytest.mark.parametrize(
    ("proof", "expected"),
    [
        (EducationProof(degree_certificate=True, chsi_record=True), []),
        (EducationProof(degree_certificate=True, online_status_report=True), []),
        (
            EducationProof(degree_certificate=True, graduate_registration_form=True),
            ["EDUCATION_GRADUATE_FORM_USED"],
        ),
        (EducationProof(degree_certificate=True), ["EDUCATION_VERIFICATION_MISSING"]),
        (EducationProof(chsi_record=True), ["EDUCATION_CERTIFICATE_MISSING"]),
        (
            EducationProof(),
            ["EDUCATION_CERTIFICATE_MISSING", "EDUCATION_VERIFICATION_MISSING"],
        ),
    ],
)
def test_education_proof(proof: EducationProof, expected: list[str]) -> None:
    findings = run_prechecks(dossier(education=proof), LEVEL, POLICY)
    assert codes(findings) == expected
    assert codes(blocking(findings)) == [c for c in expected if c != "EDUCATION_GRADUATE_FORM_USED"]


# --- rule 12: masking ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("name_masked", "MASKING_NAME_UNCONFIRMED"),
        ("photo_masked", "MASKING_PHOTO_UNCONFIRMED"),
        ("employer_masked", "MASKING_EMPLOYER_UNCONFIRMED"),
    ],
)
def test_each_masking_item_must_be_confirmed(field: str, code: str) -> None:
    masking = dossier().masking.model_copy(update={field: False})
    findings = run_prechecks(dossier(masking=masking), LEVEL, POLICY)
    assert codes(findings) == [code]
    assert findings[0].severity is Severity.blocking


def test_classified_material_must_be_declassified() -> None:
    confirmed = {"name_masked": True, "photo_masked": True, "employer_masked": True}
    raw = MaskingConfirmations(**confirmed, has_classified_material=True)
    done = raw.model_copy(update={"classified_material_declassified": True})
    assert codes(run_prechecks(dossier(masking=raw), LEVEL, POLICY)) == [
        "CLASSIFIED_NOT_DECLASSIFIED"
    ]
    assert run_prechecks(dossier(masking=done), LEVEL, POLICY) == []


# --- rule 13: attachments -----------------------------------------------------------------


@pytest.mark.parametrize("missing", list(Attachment))
def test_each_attachment_is_required(missing: Attachment) -> None:
    findings = run_prechecks(dossier(attachments=set(Attachment) - {missing}), LEVEL, POLICY)
    assert codes(findings) == [f"ATTACHMENT_MISSING_{missing.value.upper()}"]
    assert findings[0].severity is Severity.blocking
    assert missing.label in findings[0].message


def test_commitment_letter_code_is_stable() -> None:
    findings = run_prechecks(
        dossier(attachments=set(Attachment) - {Attachment.commitment_letter}), LEVEL, POLICY
    )
    assert codes(findings) == ["ATTACHMENT_MISSING_COMMITMENT_LETTER"]


# --- rules 14-15: research output ---------------------------------------------------------


def paper(**changes: Any) -> Paper:
    base = Paper(
        id="x",
        title="党校课堂教学改革研究",
        journal="某学报",
        cn="65-1111/G",
        issn="1111-2222",
        tier=JournalTier.pku_core,
        character_count=5000,
    )
    return base.model_copy(update=changes)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, []),
        ({"cn": None}, []),  # ISSN alone suffices
        ({"issue_type": IssueType.supplement}, ["PAPER_SPECIAL_ISSUE"]),
        ({"issue_type": IssueType.sub_issue}, ["PAPER_SPECIAL_ISSUE"]),
        ({"status": PublicationStatus.acceptance_letter}, ["PAPER_NOT_PUBLISHED"]),
        ({"status": PublicationStatus.proof}, ["PAPER_NOT_PUBLISHED"]),
        ({"cn": None, "issn": " "}, ["PAPER_NO_PUBLICATION_NUMBER"]),
        ({"kind": PublicationKind.book}, ["PAPER_NO_PUBLICATION_NUMBER"]),
        ({"kind": PublicationKind.book, "isbn": "978-7-0000-0000-0"}, []),
    ],
)
def test_paper_eligibility_is_advisory(changes: dict[str, Any], expected: list[str]) -> None:
    findings = run_prechecks(dossier(papers=[paper(**changes)]), LEVEL, POLICY)
    assert codes(findings) == expected
    assert blocking(findings) == []


def test_projects() -> None:
    projects = [
        ResearchProject(title="未结项课题", concluded=False),
        ResearchProject(title="结项课题", concluded=True),
        ResearchProject(title="涉密课题甲", concluded=True, classified=True, internal_print=True),
        ResearchProject(
            title="涉密课题乙",
            concluded=True,
            classified=True,
            internal_print=True,
            expert_appraisal=True,
            conclusion_certificate=True,
        ),
    ]
    findings = check_research_output(dossier(projects=projects), LEVEL, POLICY)
    assert codes(findings) == ["PROJECT_NOT_CONCLUDED", "PROJECT_CLASSIFIED_PROOF_INCOMPLETE"]
    assert all(f.severity is Severity.advisory for f in findings)
    assert "专家鉴定结论、结项证书" in findings[1].message


# --- rule 16: teaching workload -------------------------------------------------------------

STUDENT = InServiceDegree(approved=True, first_year=2023)


def _workload(
    years: list[TeachingYear], papers: list[Paper] | None = None, **changes: Any
) -> list[Finding]:
    d = Dossier.model_validate(
        {
            **dossier(**changes).model_dump(),
            "teaching_years": [y.model_dump() for y in years],
            "papers": [p.model_dump() for p in papers or []],
        }
    )
    return check_teaching_workload(d, LEVEL, POLICY)


def year(y: int, required: int, delivered: int, **changes: Any) -> TeachingYear:
    return TeachingYear(
        year=y, required_hours=Decimal(required), delivered_hours=Decimal(delivered), **changes
    )


def test_shortfall_is_advisory() -> None:
    assert _workload([year(2023, 240, 240)]) == []
    findings = _workload([year(2023, 240, 239)])
    assert codes(findings) == ["WORKLOAD_SHORTFALL"]
    assert findings[0].severity is Severity.advisory


def test_grassroots_service_reduces_the_load() -> None:
    service = GrassrootsService(kind=GrassrootsServiceKind.fanghuiju, reduction_hours=Decimal(200))
    assert _workload([year(2022, 240, 40, grassroots_service=service)]) == []
    assert codes(_workload([year(2022, 240, 39, grassroots_service=service)])) == [
        "WORKLOAD_SHORTFALL"
    ]


def test_grassroots_teaching_is_not_counted_twice() -> None:
    service = GrassrootsService(kind=GrassrootsServiceKind.preschool_teaching, reduction_hours=200)
    findings = _workload(
        [year(2022, 240, 60, grassroots_service=service, grassroots_teaching_hours=Decimal(21))]
    )
    assert codes(findings) == ["WORKLOAD_GRASSROOTS_DOUBLE_COUNTED", "WORKLOAD_SHORTFALL"]


def test_degree_reduction_only_in_approved_first_year() -> None:
    first = year(2023, 240, 120, degree_reduction_hours=Decimal(120))
    assert _workload([first], in_service_degree=STUDENT) == []
    unapproved = STUDENT.model_copy(update={"approved": False})
    assert codes(_workload([first], in_service_degree=unapproved)) == [
        "WORKLOAD_DEGREE_REDUCTION_INVALID",
        "WORKLOAD_SHORTFALL",
    ]
    second = year(2024, 240, 120, degree_reduction_hours=Decimal(120))
    assert codes(_workload([second], in_service_degree=STUDENT)) == [
        "WORKLOAD_DEGREE_REDUCTION_INVALID",
        "WORKLOAD_SHORTFALL",
    ]


def test_paper_conversion_rates_come_from_the_policy() -> None:
    # 3,000 characters: 30 hours in a national core journal, 18 in a provincial one.
    core = paper(id="c", character_count=3000, used_for_workload=True)
    assert (
        _workload(
            [year(2023, 240, 210, converted_paper_ids=["c"])], [core], in_service_degree=STUDENT
        )
        == []
    )
    short = core.model_copy(update={"character_count": 2999})
    assert codes(
        _workload(
            [year(2023, 240, 210, converted_paper_ids=["c"])], [short], in_service_degree=STUDENT
        )
    ) == ["WORKLOAD_SHORTFALL"]
    provincial = core.model_copy(update={"tier": JournalTier.provincial})
    assert (
        _workload(
            [year(2023, 240, 222, converted_paper_ids=["c"])],
            [provincial],
            in_service_degree=STUDENT,
        )
        == []
    )
    assert codes(
        _workload(
            [year(2023, 240, 221, converted_paper_ids=["c"])],
            [provincial],
            in_service_degree=STUDENT,
        )
    ) == ["WORKLOAD_SHORTFALL"]


def test_converted_paper_is_not_research_output() -> None:
    # A converted paper in a supplement: rule 14 stays silent, rule 16 refuses the conversion.
    flawed = paper(id="s", issue_type=IssueType.supplement, used_for_workload=True)
    findings = run_prechecks(
        dossier(
            papers=[flawed],
            in_service_degree=STUDENT,
            teaching_years=[year(2023, 240, 240, converted_paper_ids=["s"])],
        ),
        LEVEL,
        POLICY,
    )
    assert codes(findings) == ["WORKLOAD_PAPER_NOT_CONVERTIBLE"]


def test_converted_paper_still_claimed_as_research_is_double_counted() -> None:
    claimed = paper(id="c", used_for_workload=False)
    findings = _workload(
        [year(2023, 240, 240, converted_paper_ids=["c"])], [claimed], in_service_degree=STUDENT
    )
    assert codes(findings) == ["PAPER_DOUBLE_COUNTED"]
    assert findings[0].severity is Severity.advisory


def test_paper_converted_in_two_years_counts_once() -> None:
    core = paper(id="c", character_count=3000, used_for_workload=True)
    years = [
        year(2023, 240, 210, converted_paper_ids=["c"]),
        year(2024, 240, 210, converted_paper_ids=["c"]),
    ]
    findings = _workload(years, [core], in_service_degree=STUDENT)
    assert codes(findings) == ["PAPER_DOUBLE_COUNTED", "WORKLOAD_SHORTFALL"]
    assert "2024" in findings[1].message


def test_conversion_needs_an_approved_in_service_degree() -> None:
    core = paper(id="c", character_count=3000, used_for_workload=True)
    findings = _workload([year(2023, 240, 210, converted_paper_ids=["c"])], [core])
    assert codes(findings) == ["WORKLOAD_CONVERSION_NOT_ALLOWED", "WORKLOAD_SHORTFALL"]


def test_other_journal_cannot_be_converted() -> None:
    other = paper(id="o", tier=JournalTier.other, used_for_workload=True)
    findings = _workload(
        [year(2023, 240, 240, converted_paper_ids=["o"])], [other], in_service_degree=STUDENT
    )
    assert codes(findings) == ["WORKLOAD_PAPER_NOT_CONVERTIBLE"]


def test_paper_marked_for_workload_but_never_converted() -> None:
    findings = _workload([year(2023, 240, 240)], [paper(id="c", used_for_workload=True)])
    assert codes(findings) == ["WORKLOAD_PAPER_NOT_CONVERTED"]


def test_conversion_of_an_unknown_paper_is_invalid() -> None:
    with pytest.raises(ValidationError):
        Dossier(teaching_years=[year(2023, 240, 240, converted_paper_ids=["nope"])])


def test_employer_publicity_must_be_over_before_submission() -> None:
    """§4(二) "经公示无异议的按程序提交": not on the publicity's last day, only after it."""
    sample = dossier()
    period = sample.employer_publicity
    assert period is not None
    on_last_day = run_prechecks(sample, LEVEL, POLICY, submitted_on=period.end)
    assert "EMPLOYER_PUBLICITY_NOT_OVER" in codes(on_last_day)
    assert severity_of(on_last_day, "EMPLOYER_PUBLICITY_NOT_OVER") is Severity.blocking
    day_after = run_prechecks(sample, LEVEL, POLICY, submitted_on=period.end + timedelta(days=1))
    assert codes(day_after) == []

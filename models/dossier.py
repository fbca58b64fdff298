"""What an applicant submits (申报材料), as the pre-checks see it.

Only the facts the submission rules need are modelled; personal data (name, ID number)
lives elsewhere. Every collection defaults to empty so a draft can be built piece by piece;
the pre-checks, not the model, decide what is missing.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Hours = Decimal
"""Class or study hours (学时/标准课时); half hours occur, so not ``int``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublicityPeriod(_Model):
    """The employer's internal publicity (单位内部公示), both days inclusive (附件1)."""

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> PublicityPeriod:
        if self.end < self.start:
            raise ValueError("publicity end must not be before its start")
        return self


class CourseKind(StrEnum):
    """Continuing-education course kind."""

    professional = "professional"
    """专业课"""
    public = "public"
    """公需课"""

    @property
    def label(self) -> str:
        return {"professional": "专业课", "public": "公需课"}[self.value]


class CertificateSource(StrEnum):
    """Where a certificate came from: recent years must come from the system (§4.1.4)."""

    system = "system"
    manual = "manual"


class TrainingCertificate(_Model):
    """One continuing-education certificate (继续教育培训合格证书)."""

    year: int
    kind: CourseKind
    hours: Hours = Field(gt=0)
    source: CertificateSource


class EducationExemption(_Model):
    """The approved exemption form (免学审批表, 附件4), e.g. for 访惠聚 village work."""

    reason: str
    approved: bool = False
    """True once the competent office signed and sealed the 审核意见."""


class PutonghuaGrade(StrEnum):
    """Putonghua proficiency grades, declared from high to low (the order is the rank)."""

    first_a = "first_a"
    first_b = "first_b"
    second_a = "second_a"
    second_b = "second_b"
    third_a = "third_a"
    third_b = "third_b"

    @property
    def label(self) -> str:
        return _PUTONGHUA_LABELS[self]

    @property
    def rank(self) -> int:
        """0 for the highest grade; larger is lower."""
        return list(PutonghuaGrade).index(self)

    @classmethod
    def parse(cls, text: str) -> PutonghuaGrade:
        """Accept an English value or the Chinese label printed on the certificate."""
        cleaned = text.strip()
        for grade in cls:
            if cleaned in (grade.value, grade.label):
                return grade
        raise ValueError(f"unknown Putonghua grade {text!r}")


_PUTONGHUA_LABELS = {
    PutonghuaGrade.first_a: "一级甲等",
    PutonghuaGrade.first_b: "一级乙等",
    PutonghuaGrade.second_a: "二级甲等",
    PutonghuaGrade.second_b: "二级乙等",
    PutonghuaGrade.third_a: "三级甲等",
    PutonghuaGrade.third_b: "三级乙等",
}


class EducationProof(_Model):
    """Uploaded education evidence (§4.1.2)."""

    degree_certificate: bool = False
    """学历（学位）证书 scans."""
    chsi_record: bool = False
    """学信网《学历证书电子注册备案表》."""
    online_status_report: bool = False
    """学信网《学籍在线验证报告》."""
    graduate_registration_form: bool = False
    """人事档案中的《毕业生登记表》, only when CHSI cannot be queried."""


class MaskingConfirmations(_Model):
    """The applicant's blind-review confirmations (§4.1.3)."""

    name_masked: bool = False
    photo_masked: bool = False
    employer_masked: bool = False
    has_classified_material: bool = False
    classified_material_declassified: bool = False


class Attachment(StrEnum):
    """Items of the "其他附件或证明材料" section (§4.1.6)."""

    unit_publicity = "unit_publicity"
    publicity_result = "publicity_result"
    recommendation_report = "recommendation_report"
    commitment_letter = "commitment_letter"
    putonghua_certificate = "putonghua_certificate"

    @property
    def label(self) -> str:
        return {
            "unit_publicity": "单位公示",
            "publicity_result": "公示结果",
            "recommendation_report": "推荐报告",
            "commitment_letter": "个人承诺书（附件3）",
            "putonghua_certificate": "普通话等级证书",
        }[self.value]


class PublicationKind(StrEnum):
    """A journal article needs CN/ISSN, a book an ISBN (§5.5)."""

    article = "article"
    book = "book"


class PublicationStatus(StrEnum):
    """Only ``published`` counts; an acceptance letter or proof does not (§5.5)."""

    published = "published"
    acceptance_letter = "acceptance_letter"
    """用稿通知"""
    proof = "proof"
    """清样"""


class IssueType(StrEnum):
    """The issue an article appeared in; everything but ``regular`` does not count (§5.7)."""

    regular = "regular"
    supplement = "supplement"
    """增刊"""
    special_issue = "special_issue"
    """特刊"""
    special_column = "special_column"
    """专刊"""
    album = "album"
    """专辑"""
    sub_issue = "sub_issue"
    """副刊"""

    @property
    def label(self) -> str:
        return {
            "regular": "正刊",
            "supplement": "增刊",
            "special_issue": "特刊",
            "special_column": "专刊",
            "album": "专辑",
            "sub_issue": "副刊",
        }[self.value]


class JournalTier(StrEnum):
    """Journal standing; the first three are national core journals (§5.6)."""

    pku_core = "pku_core"
    """北京大学《中文核心期刊要目总览》"""
    cssci = "cssci"
    """南京大学 CSSCI 来源期刊"""
    party_school_core = "party_school_core"
    """中央党校（国家行政学院）核心期刊"""
    provincial = "provincial"
    """省级学术期刊"""
    other = "other"

    @property
    def is_national_core(self) -> bool:
        return self in (JournalTier.pku_core, JournalTier.cssci, JournalTier.party_school_core)


class Paper(_Model):
    """A paper or book claimed as research output or converted to teaching load."""

    id: str = Field(min_length=1)
    """Stable within the dossier; teaching-load conversions refer to it."""
    title: str
    journal: str
    """Journal name, or the publisher of a book."""
    kind: PublicationKind = PublicationKind.article
    cn: str | None = None
    issn: str | None = None
    isbn: str | None = None
    status: PublicationStatus = PublicationStatus.published
    issue_type: IssueType = IssueType.regular
    tier: JournalTier = JournalTier.other
    character_count: int = Field(default=0, ge=0)
    used_for_workload: bool = False
    """The applicant withdraws it from research output to make up teaching load (§5.4)."""


class ResearchProject(_Model):
    """A research project (课题); only concluded ones count (§5.8)."""

    title: str
    concluded: bool = False
    classified: bool = False
    """A classified report that cannot be published; then the three proofs below apply."""
    internal_print: bool = False
    """内部铅印本"""
    expert_appraisal: bool = False
    """专家鉴定结论"""
    conclusion_certificate: bool = False
    """结项证书"""


class GrassrootsServiceKind(StrEnum):
    """Grassroots service that reduces a year's teaching load (§5.1)."""

    secondment = "secondment"
    """下基层（挂职）锻炼"""
    fanghuiju = "fanghuiju"
    """“访惠聚”驻村"""
    village_temple = "village_temple"
    """驻村管寺"""
    preschool_teaching = "preschool_teaching"
    """南疆学前教育支教"""
    inland_service = "inland_service"
    """内地服务管理"""


class GrassrootsService(_Model):
    """Grassroots service in one year and the teaching load it waives."""

    kind: GrassrootsServiceKind
    reduction_hours: Hours = Field(ge=0)


class InServiceDegree(_Model):
    """In-service master's or doctoral study (在职攻读硕士、博士学位, §5.4)."""

    doctoral: bool = False
    approved: bool = False
    """经组织批准: without it neither the reduction nor the conversion applies."""
    first_year: int
    """The calendar year of the first year of study, the one whose load is reduced."""


class TeachingYear(_Model):
    """One year's teaching load, with its reductions and paper conversions (§5.1–§5.4)."""

    year: int
    required_hours: Hours = Field(ge=0)
    delivered_hours: Hours = Field(ge=0)
    grassroots_service: GrassrootsService | None = None
    grassroots_teaching_hours: Hours = Field(default=Decimal(0), ge=0)
    """Part of ``delivered_hours`` given as the grassroots service itself (支教、讲学)."""
    degree_reduction_hours: Hours = Field(default=Decimal(0), ge=0)
    converted_paper_ids: list[str] = Field(default_factory=list)


class Dossier(_Model):
    """The submitted dossier: what rules 8–16 of the submission pre-checks look at."""

    employer_publicity: PublicityPeriod | None = None
    training_certificates: list[TrainingCertificate] = Field(default_factory=list)
    education_exemption: EducationExemption | None = None
    putonghua_grade: PutonghuaGrade | None = None
    education: EducationProof = Field(default_factory=EducationProof)
    masking: MaskingConfirmations = Field(default_factory=MaskingConfirmations)
    attachments: set[Attachment] = Field(default_factory=set)
    papers: list[Paper] = Field(default_factory=list)
    projects: list[ResearchProject] = Field(default_factory=list)
    in_service_degree: InServiceDegree | None = None
    teaching_years: list[TeachingYear] = Field(default_factory=list)

    @field_validator("putonghua_grade", mode="before")
    @classmethod
    def _grade_from_label(cls, value: Any) -> Any:
        return PutonghuaGrade.parse(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _references_resolve(self) -> Dossier:
        ids = [paper.id for paper in self.papers]
        if len(ids) != len(set(ids)):
            raise ValueError("paper ids must be unique")
        for year in self.teaching_years:
            unknown = set(year.converted_paper_ids) - set(ids)
            if unknown:
                raise ValueError(f"teaching year {year.year} converts unknown papers {unknown}")
        return self

    def paper(self, paper_id: str) -> Paper:
        return next(paper for paper in self.papers if paper.id == paper_id)


__all__ = [
    "Attachment",
    "CertificateSource",
    "CourseKind",
    "Dossier",
    "EducationExemption",
    "EducationProof",
    "GrassrootsService",
    "GrassrootsServiceKind",
    "Hours",
    "InServiceDegree",
    "IssueType",
    "JournalTier",
    "MaskingConfirmations",
    "Paper",
    "PublicationKind",
    "PublicationStatus",
    "PublicityPeriod",
    "PutonghuaGrade",
    "ResearchProject",
    "TeachingYear",
    "TrainingCertificate",
]

"""Submission pre-checks (rules 8–16): pure functions from a dossier to findings.

Each rule of the notice lives in exactly one function with the signature of ``Rule``;
``run_prechecks`` runs them all in order. Every number comes from the cycle policy. A
missing hard requirement blocks the submission; what a reviewer should weigh (papers and
projects, which are not hard conditions, and teaching load) travels as advisory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

from models.dossier import (
    Attachment,
    CertificateSource,
    CourseKind,
    Dossier,
    IssueType,
    JournalTier,
    Paper,
    PublicationKind,
    PublicationStatus,
    PutonghuaGrade,
    TeachingYear,
)
from models.findings import Finding, Severity
from models.policy import CyclePolicy, Level
from models.working_days import count_working_days

Rule = Callable[[Dossier, Level, CyclePolicy], list[Finding]]


def _blocking(code: str, clause: str, message: str) -> Finding:
    return Finding(code=code, severity=Severity.blocking, message=message, clause=clause)


def _advisory(code: str, clause: str, message: str) -> Finding:
    return Finding(code=code, severity=Severity.advisory, message=message, clause=clause)


def _h(hours: Decimal) -> str:
    """Hours without trailing zeros or exponent: 90, 34.5."""
    return f"{hours.normalize():f}"


def _present(text: str | None) -> bool:
    return bool(text and text.strip())


def check_employer_publicity(dossier: Dossier, level: Level, policy: CyclePolicy) -> list[Finding]:
    """Rule 8: the employer publicized the application for enough working days (§4(二))."""
    required = policy.employer_publicity_working_days
    period = dossier.employer_publicity
    if period is None:
        return [
            _blocking(
                "EMPLOYER_PUBLICITY_MISSING",
                "§4(二)",
                f"未填写单位内部公示起止日期：用人单位须在单位内部公示不少于 {required} 个工作日，"
                "请填写公示起止日期，并上传单位公示及公示结果。",
            )
        ]
    days = count_working_days(period.start, period.end, policy.calendar_overrides)
    if days < required:
        return [
            _blocking(
                "EMPLOYER_PUBLICITY_TOO_SHORT",
                "§4(二)",
                f"单位内部公示期 {period.start} 至 {period.end} 仅含 {days} 个工作日，"
                f"少于规定的 {required} 个工作日（法定节假日不计，调休上班日计入）："
                "请用人单位延长或重新公示后再提交。",
            )
        ]
    return []


def check_continuing_education(
    dossier: Dossier, level: Level, policy: CyclePolicy
) -> list[Finding]:
    """Rule 9: hours per year from admissible certificates, unless exempted (§4.1.4, §4(五))."""
    rules = policy.continuing_education
    exemption = dossier.education_exemption
    if exemption is not None and exemption.approved:
        return [
            _advisory(
                "CE_EXEMPTION_USED",
                "§4(五)",
                f"已上传经审核的免除继续教育学习申请表（附件4，免学理由：{exemption.reason}），"
                "不再核对各年度继续教育学时；请审核人员核验审批表的审核意见和公章。",
            )
        ]
    findings: list[Finding] = []
    if exemption is not None:
        findings.append(
            _advisory(
                "CE_EXEMPTION_NOT_APPROVED",
                "§4(五)",
                "上传的免除继续教育学习申请表（附件4）尚无审核意见和公章，不能免除继续教育学时要求："
                "请由审核部门签署意见并盖章后重新上传，或补齐各年度学时。",
            )
        )
    admissible = []
    for certificate in dossier.training_certificates:
        system_from = (
            rules.system_professional_certificates_from
            if certificate.kind is CourseKind.professional
            else rules.system_public_certificates_from
        )
        kind = certificate.kind.label
        if certificate.source is CertificateSource.manual and certificate.year >= system_from:
            findings.append(
                _blocking(
                    "CE_CERTIFICATE_NOT_FROM_SYSTEM",
                    "§4.1.4",
                    f"{certificate.year} 年{kind}合格证书（{_h(certificate.hours)} 学时）"
                    f"为手动上传，不予认可：{system_from} 年及以后的{kind}证书"
                    "须从系统获取，请删除该证书并从系统导入。",
                )
            )
        else:
            admissible.append(certificate)
    for year in rules.years:
        of_year = [c for c in admissible if c.year == year]
        total = sum((c.hours for c in of_year), Decimal(0))
        professional = sum(
            (c.hours for c in of_year if c.kind is CourseKind.professional), Decimal(0)
        )
        if total < rules.min_hours_per_year:
            findings.append(
                _blocking(
                    "CE_HOURS_SHORT",
                    "§4(五)",
                    f"{year} 年继续教育有效学时为 {_h(total)}，"
                    f"不足 {rules.min_hours_per_year} 学时："
                    "请补充该年度的培训合格证书；符合免学条件的，请上传免学审批表（附件4）。",
                )
            )
        if professional < rules.min_professional_hours_per_year:
            findings.append(
                _blocking(
                    "CE_PROFESSIONAL_HOURS_SHORT",
                    "§4(五)",
                    f"{year} 年专业课有效学时为 {_h(professional)}，"
                    f"不足 {rules.min_professional_hours_per_year} 学时："
                    "请补充该年度的专业课培训合格证书；符合免学条件的，请上传免学审批表（附件4）。",
                )
            )
    return findings


def check_putonghua(dossier: Dossier, level: Level, policy: CyclePolicy) -> list[Finding]:
    """Rule 10: a Putonghua grade at least the policy's minimum (§4.1.5).

    Raises:
        ValueError: the policy names a grade that does not exist (a configuration error).
    """
    minimum = PutonghuaGrade.parse(policy.putonghua_min_grade)
    grade = dossier.putonghua_grade
    if grade is None:
        return [
            _blocking(
                "PUTONGHUA_GRADE_MISSING",
                "§4.1.5",
                "未填写普通话等级：事业单位专业技术人员申报职称须上传普通话等级证书，"
                f"等级不得低于{minimum.label}。",
            )
        ]
    if grade.rank > minimum.rank:
        return [
            _blocking(
                "PUTONGHUA_GRADE_TOO_LOW",
                "§4.1.5",
                f"普通话等级为{grade.label}，低于要求的{minimum.label}："
                "请取得符合要求的普通话等级证书后再申报。",
            )
        ]
    return []


def check_education_proof(dossier: Dossier, level: Level, policy: CyclePolicy) -> list[Finding]:
    """Rule 11: certificates plus a CHSI record, or the graduate form as last resort (§4.1.2)."""
    proof = dossier.education
    findings: list[Finding] = []
    if not proof.degree_certificate:
        findings.append(
            _blocking(
                "EDUCATION_CERTIFICATE_MISSING",
                "§4.1.2",
                "未上传学历（学位）证书：请上传证书原件的正向、清晰扫描件。",
            )
        )
    if proof.chsi_record or proof.online_status_report:
        return findings
    if proof.graduate_registration_form:
        findings.append(
            _advisory(
                "EDUCATION_GRADUATE_FORM_USED",
                "§4.1.2",
                "以人事档案中的《毕业生登记表》代替学信网《学历证书电子注册备案表》"
                "或《学籍在线验证报告》：仅限学信网无法查询的学历，请审核人员核实。",
            )
        )
    else:
        findings.append(
            _blocking(
                "EDUCATION_VERIFICATION_MISSING",
                "§4.1.2",
                "未上传学信网（www.chsi.com.cn）《学历证书电子注册备案表》或《学籍在线验证报告》："
                "请下载后上传；学信网无法查询的，请扫描上传人事档案中的《毕业生登记表》。",
            )
        )
    return findings


def check_masking(dossier: Dossier, level: Level, policy: CyclePolicy) -> list[Finding]:
    """Rule 12: every blind-review masking item confirmed, classified material declassified."""
    masking = dossier.masking
    items = (
        (masking.name_masked, "MASKING_NAME_UNCONFIRMED", "本人姓名"),
        (masking.photo_masked, "MASKING_PHOTO_UNCONFIRMED", "本人照片"),
        (masking.employer_masked, "MASKING_EMPLOYER_UNCONFIRMED", "工作单位"),
    )
    findings = [
        _blocking(
            code,
            "§4.1.3",
            f"未确认遮盖{label}：评审采用盲评模式，所有填写内容和上传附件中涉及{label}的信息均须遮盖，"
            "请检查后按系统提示勾选该遮盖项。",
        )
        for confirmed, code, label in items
        if not confirmed
    ]
    if masking.has_classified_material and not masking.classified_material_declassified:
        findings.append(
            _blocking(
                "CLASSIFIED_NOT_DECLASSIFIED",
                "§4.1.3",
                "申报材料含涉密内容，但未确认已作脱密处理：涉密材料须经脱密处理后方可上传。",
            )
        )
    return findings


def check_attachments(dossier: Dossier, level: Level, policy: CyclePolicy) -> list[Finding]:
    """Rule 13: the other required attachments are all uploaded (§4.1.6)."""
    return [
        _blocking(
            f"ATTACHMENT_MISSING_{attachment.value.upper()}",
            "§4.1.6",
            f"未上传{attachment.label}：请上传至“其他附件或证明材料”相应栏目。",
        )
        for attachment in Attachment
        if attachment not in dossier.attachments
    ]


def _paper_defect(paper: Paper) -> tuple[str, str, str] | None:
    """Why a paper is not admissible research output, as (code, clause, reason), or None."""
    if paper.status is not PublicationStatus.published:
        return "PAPER_NOT_PUBLISHED", "§5.5", "仅取得用稿通知或清样，尚未公开发表"
    if paper.kind is PublicationKind.book and not _present(paper.isbn):
        return "PAPER_NO_PUBLICATION_NUMBER", "§5.5", "未填写 ISBN 书号"
    if paper.kind is PublicationKind.article:
        if not (_present(paper.cn) or _present(paper.issn)):
            return "PAPER_NO_PUBLICATION_NUMBER", "§5.5", "未填写 CN 或 ISSN 刊号"
        if paper.issue_type is not IssueType.regular:
            return "PAPER_SPECIAL_ISSUE", "§5.7", f"发表在{paper.issue_type.label}上"
    return None


def check_research_output(dossier: Dossier, level: Level, policy: CyclePolicy) -> list[Finding]:
    """Rules 14–15: papers and projects that will not count (advisory: not hard conditions).

    Papers withdrawn for teaching-load conversion are left to ``check_teaching_workload``.
    """
    findings: list[Finding] = []
    for paper in dossier.papers:
        defect = None if paper.used_for_workload else _paper_defect(paper)
        if defect is not None:
            code, clause, reason = defect
            findings.append(
                _advisory(
                    code,
                    clause,
                    f"论文/著作《{paper.title}》{reason}，不计入科研成果"
                    "（论文不是硬性条件，不影响提交）；如已正式发表，请补充刊号或书号及正刊证明。",
                )
            )
    for project in dossier.projects:
        if not project.concluded:
            findings.append(
                _advisory(
                    "PROJECT_NOT_CONCLUDED",
                    "§5.8",
                    f"课题《{project.title}》尚未结项，不计入科研成果；如已结项，请上传结项证书。",
                )
            )
            continue
        proofs = (
            (project.internal_print, "内部铅印本"),
            (project.expert_appraisal, "专家鉴定结论"),
            (project.conclusion_certificate, "结项证书"),
        )
        missing = [label for present, label in proofs if not present]
        if project.classified and missing:
            findings.append(
                _advisory(
                    "PROJECT_CLASSIFIED_PROOF_INCOMPLETE",
                    "§5.8",
                    f"涉密课题《{project.title}》缺少{'、'.join(missing)}，不计入科研成果："
                    "涉密研究报告以内部铅印本、专家鉴定结论及结项证书为准。",
                )
            )
    return findings


def _conversion_rate(paper: Paper, policy: CyclePolicy) -> int | None:
    """Class hours per 1,000 characters, or None when the journal does not qualify (§5.4)."""
    rates = policy.teaching_workload
    if paper.tier.is_national_core:
        return rates.hours_per_1000_chars_national_core
    if paper.tier is JournalTier.provincial:
        return rates.hours_per_1000_chars_provincial
    return None


def check_teaching_workload(dossier: Dossier, level: Level, policy: CyclePolicy) -> list[Finding]:
    """Rule 16: reductions, paper conversion and no double counting (§5.1, §5.3, §5.4)."""
    findings: list[Finding] = []
    degree = dossier.in_service_degree
    degree_approved = degree is not None and degree.approved
    converted: set[str] = set()
    for year in sorted(dossier.teaching_years, key=lambda y: y.year):
        reduction = Decimal(0)
        delivered = year.delivered_hours
        if year.grassroots_service is not None:
            reduction += year.grassroots_service.reduction_hours
            if year.grassroots_teaching_hours:
                delivered = max(Decimal(0), delivered - year.grassroots_teaching_hours)
                findings.append(
                    _advisory(
                        "WORKLOAD_GRASSROOTS_DOUBLE_COUNTED",
                        "§5.3",
                        f"{year.year} 年已按服务基层减免教学工作量，"
                        "其中作为服务基层（支教、讲学）完成的 "
                        f"{_h(year.grassroots_teaching_hours)} 课时不再重复计入教学工作量。",
                    )
                )
        if year.degree_reduction_hours:
            if degree is not None and degree.approved and year.year == degree.first_year:
                reduction += year.degree_reduction_hours
            else:
                findings.append(
                    _advisory(
                        "WORKLOAD_DEGREE_REDUCTION_INVALID",
                        "§5.4",
                        f"{year.year} 年申报在职攻读学位减免 "
                        f"{_h(year.degree_reduction_hours)} 课时，"
                        "不予计算：仅经组织批准在职攻读硕士、博士学位者的第一年可减免教学工作量，"
                        "请上传组织批准材料并核对年度。",
                    )
                )
        credited, notes = _converted_hours(dossier, year, policy, degree_approved, converted)
        findings += notes
        required = max(Decimal(0), year.required_hours - reduction)
        if delivered + credited < required:
            findings.append(
                _advisory(
                    "WORKLOAD_SHORTFALL",
                    "§5.4",
                    f"{year.year} 年应完成 {_h(required)} 标准课时（已计减免 {_h(reduction)}），"
                    f"计入完成 {_h(delivered)}、论文折算 {_h(credited)}，"
                    f"尚差 {_h(required - delivered - credited)} 课时：请补充教学工作量证明。",
                )
            )
    listed = {paper_id for year in dossier.teaching_years for paper_id in year.converted_paper_ids}
    for paper in dossier.papers:
        if paper.used_for_workload and paper.id not in listed:
            findings.append(
                _advisory(
                    "WORKLOAD_PAPER_NOT_CONVERTED",
                    "§5.4",
                    f"论文《{paper.title}》标记为用于折算教学工作量，但未在任何年度折算中使用："
                    "请在相应年度选择该论文，或取消标记以计为科研成果。",
                )
            )
    return findings


def _converted_hours(
    dossier: Dossier,
    year: TeachingYear,
    policy: CyclePolicy,
    degree_approved: bool,
    converted: set[str],
) -> tuple[Decimal, list[Finding]]:
    """Hours credited for one year's converted papers (part of rule 16).

    ``converted`` collects the papers already credited, so a paper counts only once.
    """
    findings: list[Finding] = []
    if year.converted_paper_ids and not degree_approved:
        findings.append(
            _advisory(
                "WORKLOAD_CONVERSION_NOT_ALLOWED",
                "§5.4",
                f"{year.year} 年以论文折算教学工作量，不予计算："
                "仅经组织批准在职攻读硕士、博士学位者可用科研成果折算；"
                "如有批准材料请补充，否则请取消折算。",
            )
        )
        return Decimal(0), findings
    credited = Decimal(0)
    for paper_id in year.converted_paper_ids:
        paper = dossier.paper(paper_id)
        if paper_id in converted:
            findings.append(
                _advisory(
                    "PAPER_DOUBLE_COUNTED",
                    "§5.4",
                    f"论文《{paper.title}》已在其他年度折算教学工作量，"
                    f"{year.year} 年不再重复折算。",
                )
            )
            continue
        converted.add(paper_id)
        if not paper.used_for_workload:
            findings.append(
                _advisory(
                    "PAPER_DOUBLE_COUNTED",
                    "§5.4",
                    f"论文《{paper.title}》已用于折算 {year.year} 年教学工作量，"
                    "折算后不再计为科研成果：请在论文信息中标记“用于折算教学工作量”。",
                )
            )
        defect = _paper_defect(paper)
        rate = _conversion_rate(paper, policy)
        if defect is not None or rate is None:
            reason = defect[2] if defect else "未发表在国家级核心期刊或省级学术期刊上"
            findings.append(
                _advisory(
                    "WORKLOAD_PAPER_NOT_CONVERTIBLE",
                    "§5.4",
                    f"论文《{paper.title}》{reason}，不能折算教学工作量。",
                )
            )
            continue
        credited += Decimal(paper.character_count) * rate / 1000
    return credited, findings


RULES: tuple[Rule, ...] = (
    check_employer_publicity,
    check_continuing_education,
    check_putonghua,
    check_education_proof,
    check_masking,
    check_attachments,
    check_research_output,
    check_teaching_workload,
)


def check_employer_publicity_over(dossier: Dossier, submitted_on: date) -> list[Finding]:
    """Rule 8: the employer submits only after its publicity ended without objection (§4(二))."""
    period = dossier.employer_publicity
    if period is None or period.end < submitted_on:
        return []
    return [
        _blocking(
            "EMPLOYER_PUBLICITY_NOT_OVER",
            "§4(二)",
            f"单位内部公示期至 {period.end} 结束，须公示期满且无异议后方可提交（今天是 {submitted_on}）。",
        )
    ]


def run_prechecks(
    dossier: Dossier, level: Level, policy: CyclePolicy, submitted_on: date | None = None
) -> list[Finding]:
    """All submission pre-checks, in rule order; the dossier may be submitted iff none block.

    ``submitted_on`` (the submission's day in China) adds the checks that depend on it.

    Raises:
        CalendarYearUnknown: the employer publicity falls in a year without a known calendar.
    """
    findings = [finding for rule in RULES for finding in rule(dossier, level, policy)]
    if submitted_on is not None:
        findings += check_employer_publicity_over(dossier, submitted_on)
    return findings


__all__ = [
    "RULES",
    "Rule",
    "check_attachments",
    "check_continuing_education",
    "check_education_proof",
    "check_employer_publicity",
    "check_employer_publicity_over",
    "check_masking",
    "check_putonghua",
    "check_research_output",
    "check_teaching_workload",
    "run_prechecks",
]

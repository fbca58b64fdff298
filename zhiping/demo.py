"""A demo cycle: a few applications of the 2024 cycle driven end to end.

The cycle is rehearsed on the cycle clock at one business day per real second, starting
on 2024-08-26, so the submission cutoff, resubmission windows, reminders, the fee deadline
and a publicity period over the 2024 National Day all act by themselves within a minute.
People's steps (submitting, reviewing, paying, the defense, the meeting, an objection)
are sent as updates at their business times; everything else is the workflows' own doing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from models.clock import CycleClock
from models.commands import (
    ApplicationStatus,
    DefenseExemption,
    DefenseResult,
    DefenseSchedule,
    Disqualification,
    MeetingEnrolment,
    MeetingResult,
    ObjectionInput,
    ObjectionResolution,
    PaymentInput,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    application_workflow_id,
)
from models.identity import person_key
from models.policy import CHINA_TZ, CyclePolicy, Level, load_policy
from workflows import ApplicationWorkflow
from zhiping.samples import complete_dossier
from zhiping.settings import Settings

DEMO_START = datetime(2024, 8, 26, 9, 0, tzinfo=CHINA_TZ)
DEMO_SPEED = 86_400.0
"""One business day per real second."""


def _at(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=CHINA_TZ)


@dataclass(frozen=True)
class Applicant:
    key: str
    level: Level
    id_number: str
    story: str


@dataclass(frozen=True)
class Step:
    at: datetime
    applicant: str
    update: Callable[..., object]
    payload: BaseModel | None = None
    """None: submit the sample dossier."""


APPLICANTS = [
    Applicant(
        "D1", Level.intermediate, "653001198503120011", "中级：一次通过，公示跨国庆假期后评审通过"
    ),
    Applicant(
        "D2",
        Level.deputy_senior,
        "653001197807150023",
        "副高级：退回修改、答辩、公示异议不成立，评审通过",
    ),
    Applicant("D3", Level.junior, "653001199601010035", "初级：截止前未提交，视为放弃"),
    Applicant("D4", Level.intermediate, "653001198809090047", "中级：未按期缴费，申报失效"),
    Applicant(
        "D5", Level.deputy_senior, "653001198011110059", "副高级：退回后 2 日内未重新提交，不予受理"
    ),
    Applicant("D6", Level.senior, "653001197203030061", "正高级：免答辩，评审会未通过"),
    Applicant(
        "D7", Level.intermediate, "653001199002020073", "中级：学历造假，取消资格并禁申 3 年"
    ),
]

W = ApplicationWorkflow
STEPS = [
    Step(_at(8, 26, 9, 30), "D1", W.submit),
    Step(_at(8, 26, 10), "D2", W.submit),
    Step(_at(8, 26, 11), "D4", W.submit),
    Step(_at(8, 26, 14), "D5", W.submit),
    Step(_at(8, 26, 15), "D6", W.submit),
    Step(_at(8, 26, 16), "D7", W.submit),
    Step(
        _at(8, 27, 10),
        "D2",
        W.return_for_revision,
        ReviewDecision(actor="reviewer:R01", reason="请补充学信网《学历证书电子注册备案表》"),
    ),
    Step(
        _at(8, 27, 11),
        "D5",
        W.return_for_revision,
        ReviewDecision(actor="reviewer:R01", reason="继续教育证书缺 2023 年专业课"),
    ),
    Step(_at(8, 27, 15), "D4", W.accept, ReviewDecision(actor="reviewer:R02")),
    Step(_at(8, 28, 10), "D1", W.accept, ReviewDecision(actor="reviewer:R02")),
    Step(_at(8, 28, 16), "D2", W.submit),
    Step(
        _at(8, 28, 17),
        "D7",
        W.disqualify,
        Disqualification(actor="ops:O01", reason="经学信网核验，学历证书系伪造"),
    ),
    Step(_at(8, 29, 10), "D2", W.accept, ReviewDecision(actor="reviewer:R01")),
    Step(_at(8, 29, 11), "D6", W.accept, ReviewDecision(actor="reviewer:R02")),
    Step(
        _at(8, 30, 9),
        "D6",
        W.exempt_from_defense,
        DefenseExemption(actor="ops:O01", reason="符合阿地人社传〔2024〕13号免答辩条款"),
    ),
    Step(
        _at(9, 2, 10),
        "D1",
        W.record_payment,
        PaymentInput(transaction_id="QR-20240902-001", amount=Decimal("300")),
    ),
    Step(
        _at(9, 2, 11),
        "D1",
        W.record_payment,
        PaymentInput(transaction_id="QR-20240902-002", amount=Decimal("400")),
    ),
    Step(
        _at(9, 3, 10),
        "D2",
        W.record_payment,
        PaymentInput(transaction_id="BANK-20240903-007", amount=Decimal("700"), channel="bank"),
    ),
    Step(
        _at(9, 3, 10, 5),
        "D2",
        W.record_payment,
        PaymentInput(transaction_id="BANK-20240903-007", amount=Decimal("700"), channel="bank"),
    ),
    Step(
        _at(9, 4, 10),
        "D6",
        W.record_payment,
        PaymentInput(transaction_id="QR-20240904-003", amount=Decimal("700")),
    ),
    Step(
        _at(9, 5, 10),
        "D2",
        W.schedule_defense,
        DefenseSchedule(
            session_id="DS-2024-1",
            at=_at(9, 20, 9),
            place="地委党校教学楼 301",
            panel=["专家甲", "专家乙", "专家丙"],
        ),
    ),
    Step(
        _at(9, 20, 11), "D2", W.record_defense_result, DefenseResult(passed=True, reason="答辩合格")
    ),
    Step(_at(9, 25, 9), "D1", W.enter_meeting, MeetingEnrolment(meeting_id="M-2024")),
    Step(_at(9, 25, 9, 1), "D2", W.enter_meeting, MeetingEnrolment(meeting_id="M-2024")),
    Step(_at(9, 25, 9, 2), "D6", W.enter_meeting, MeetingEnrolment(meeting_id="M-2024")),
    Step(
        _at(9, 27, 15),
        "D1",
        W.record_meeting_result,
        MeetingResult(meeting_id="M-2024", passed=True, votes_for=9, experts_present=11),
    ),
    Step(
        _at(9, 27, 15, 1),
        "D2",
        W.record_meeting_result,
        MeetingResult(meeting_id="M-2024", passed=True, votes_for=8, experts_present=11),
    ),
    Step(
        _at(9, 27, 15, 2),
        "D6",
        W.record_meeting_result,
        MeetingResult(meeting_id="M-2024", passed=False, votes_for=5, experts_present=11),
    ),
    Step(
        _at(9, 30, 10),
        "D2",
        W.file_objection,
        ObjectionInput(objection_id="OBJ-1", summary="来电反映其任职年限不足"),
    ),
    Step(
        _at(10, 8, 10),
        "D2",
        W.resolve_objection,
        ObjectionResolution(
            objection_id="OBJ-1", upheld=False, reason="经核查任职年限符合要求，异议不成立"
        ),
    ),
]


async def run_demo(
    client: Client, settings: Settings, say: Callable[[str], None], speed: float = DEMO_SPEED
) -> list[ApplicationStatus]:
    """Start the demo's applications, drive their steps, wait until every one is final."""
    policy: CyclePolicy = load_policy("2024-aksu-party-school")
    clock = CycleClock.rehearse(DEMO_START, datetime.now(UTC), speed)
    run = datetime.now(CHINA_TZ).strftime("%m%d%H%M%S")
    secret = settings.person_key_secret.get_secret_value().encode()
    handles: dict[str, WorkflowHandle[ApplicationWorkflow, ApplicationStatus]] = {}
    say(
        f"演示评审周期：{policy.title}"
        f"（演示时钟：1 秒 = {speed / 86400:g} 天，自 {DEMO_START:%Y-%m-%d %H:%M} 起）"
    )
    for applicant in APPLICANTS:
        application_id = f"DEMO{run}-{applicant.key}"
        handles[applicant.key] = await client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=application_id,
                level=applicant.level,
                policy=policy,
                person_key=person_key(applicant.id_number, secret),
                created_by="platform",
                clock=clock,
            ),
            id=application_workflow_id(policy.cycle_id, application_id),
            task_queue=settings.task_queue,
        )
        say(f"  {application_id}：{applicant.level.label}，{applicant.story}")

    for number, step in enumerate(STEPS):
        delay = (clock.real_time(step.at) - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        handle = handles[step.applicant]
        level = next(a.level for a in APPLICANTS if a.key == step.applicant)
        payload = step.payload or SubmitInput(dossier=complete_dossier(policy, level))
        try:
            await handle.execute_update(step.update, payload, id=f"demo-{run}-{number}")  # type: ignore[call-overload]
        except WorkflowUpdateFailedError as error:
            cause = error.cause
            say(
                f"  ✗ 已拒绝 {handle.id.rsplit(':', 1)[1]}：{getattr(cause, 'type', '')} {getattr(cause, 'message', cause)}"
            )
        except RPCError as error:  # the application has already ended
            say(f"  ✗ 已拒绝 {handle.id.rsplit(':', 1)[1]}：申报已结束（{error}）")

    results = [await handle.result() for handle in handles.values()]
    return results


__all__ = ["APPLICANTS", "STEPS", "run_demo"]

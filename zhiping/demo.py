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
from typing import Any

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
    ObjectionInput,
    ObjectionResolution,
    PaymentInput,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    application_workflow_id,
)
from models.identity import person_key
from models.meeting import anonymous_codes
from models.meeting_commands import (
    Attendance,
    Ballot,
    CloseMeeting,
    MeetingRun,
    MeetingView,
    OpenMeeting,
    meeting_workflow_id,
    new_code_secret,
)
from models.policy import CHINA_TZ, CyclePolicy, Level, load_policy
from workflows import ApplicationWorkflow, MeetingWorkflow
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
    target: str
    """An applicant's key, or ``MEETING`` for the evaluation meeting."""
    update: Callable[..., object] | None = None
    """None: the applicant submits the sample dossier; for the meeting, open it."""
    payload: BaseModel | None = None


class Votes(BaseModel):
    """The committee's ballots: yes votes per applicant key, out of the experts present."""

    yes: dict[str, int]


MEETING = "MEETING"
EXPERTS = [f"专家{n:02d}" for n in range(1, 12)]
PRESENT = EXPERTS[:9]

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
    Applicant("D6", Level.senior, "653001197203030061", "正高级：免答辩，评审会票数不足，未通过"),
    Applicant(
        "D7", Level.intermediate, "653001199002020073", "中级：学历造假，取消资格并禁申 3 年"
    ),
    Applicant("D8", Level.deputy_senior, "653001197905050085", "副高级：免答辩，评审通过"),
    Applicant("D9", Level.deputy_senior, "653001198106060097", "副高级：免答辩，评审通过"),
    Applicant(
        "D10",
        Level.deputy_senior,
        "65300119820707010X",
        "副高级：票数过三分之二，但超出 75% 通过率上限，未通过",
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
    *(Step(_at(8, 26, 17, n), key, W.submit) for n, key in enumerate(("D8", "D9", "D10"))),
    *(
        Step(_at(8, 28, 11, n), key, W.accept, ReviewDecision(actor="reviewer:R03"))
        for n, key in enumerate(("D8", "D9", "D10"))
    ),
    *(
        Step(
            _at(8, 30, 10, n),
            key,
            W.exempt_from_defense,
            DefenseExemption(actor="ops:O01", reason="符合阿地人社传〔2024〕13号免答辩条款"),
        )
        for n, key in enumerate(("D8", "D9", "D10"))
    ),
    *(
        Step(
            _at(9, 4, 11, n),
            key,
            W.record_payment,
            PaymentInput(transaction_id=f"QR-20240904-1{n}", amount=Decimal("700")),
        )
        for n, key in enumerate(("D8", "D9", "D10"))
    ),
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
    # The evaluation meeting: opened for the cycle, it enrols whoever waits for it.
    Step(_at(9, 25, 9), MEETING),
    Step(
        _at(9, 27, 9),
        MEETING,
        MeetingWorkflow.record_attendance,
        Attendance(experts_present=PRESENT),
    ),
    Step(
        _at(9, 27, 10),
        MEETING,
        MeetingWorkflow.record_ballot,
        Votes(yes={"D1": 9, "D2": 8, "D6": 5, "D8": 9, "D9": 7, "D10": 6}),
    ),
    Step(_at(9, 27, 15), MEETING, MeetingWorkflow.close, CloseMeeting(actor="ops:O01")),
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


class _Demo:
    """The demo's people: applicants, reviewers, ops, the payment channel and the committee."""

    def __init__(
        self, client: Client, settings: Settings, say: Callable[[str], None], speed: float
    ):
        base = load_policy("2024-aksu-party-school")
        self.run = datetime.now(CHINA_TZ).strftime("%m%d%H%M%S")
        # A cycle of its own, so the meeting enrols only this run's applications.
        self.policy: CyclePolicy = base.model_copy(
            update={"cycle_id": f"demo-{self.run}", "title": f"{base.title}（演示）"}
        )
        self.client, self.settings, self.say = client, settings, say
        self.clock = CycleClock.rehearse(DEMO_START, datetime.now(UTC), speed)
        self.handles: dict[str, WorkflowHandle[ApplicationWorkflow, ApplicationStatus]] = {}
        self.meeting: WorkflowHandle[MeetingWorkflow, MeetingView] | None = None
        self.code_secret = new_code_secret()
        """The demo plays every expert, so it alone may know who is behind each code."""

    async def start_applications(self) -> None:
        secret = self.settings.person_key_secret.get_secret_value().encode()
        for applicant in APPLICANTS:
            application_id = f"DEMO{self.run}-{applicant.key}"
            self.handles[applicant.key] = await self.client.start_workflow(
                ApplicationWorkflow.run,
                StartApplication(
                    application_id=application_id,
                    level=applicant.level,
                    policy=self.policy,
                    person_key=person_key(applicant.id_number, secret),
                    created_by="platform",
                    clock=self.clock,
                ),
                id=application_workflow_id(self.policy.cycle_id, application_id),
                task_queue=self.settings.task_queue,
            )
            self.say(f"  {application_id}：{applicant.level.label}，{applicant.story}")

    async def open_meeting(self) -> None:
        self.meeting = await self.client.start_workflow(
            MeetingWorkflow.run,
            MeetingRun(
                meeting=OpenMeeting(
                    meeting_id="M-2024",
                    policy=self.policy,
                    held_at=_at(9, 27, 9),
                    committee_size=len(EXPERTS),
                    opened_by="ops:O01",
                    clock=self.clock,
                    code_secret=self.code_secret,
                )
            ),
            id=meeting_workflow_id(self.policy.cycle_id, "M-2024"),
            task_queue=self.settings.task_queue,
        )
        view = await self._enrolled()
        levels = "、".join(f"{c.code}（{c.level.label}）" for c in view.candidates)
        self.say(f"  评审会 M-2024 已开启，候选人（匿名编号）：{levels}")

    async def _enrolled(self) -> MeetingView:
        assert self.meeting is not None
        for _ in range(600):  # enrolment takes a moment: it runs through visibility
            view = await self.meeting.query(MeetingWorkflow.view)
            if view.candidates:
                return view
            await asyncio.sleep(0.05)
        raise RuntimeError("评审会未能登记任何候选人")

    async def codes(self) -> dict[str, str]:
        """Applicant key → anonymous code, for the enrolled. Only the demo, playing every
        expert, needs to know who is behind a code."""
        enrolled = {
            key: handle.id
            for key, handle in self.handles.items()
            if (await handle.query(ApplicationWorkflow.status)).meeting_id == "M-2024"
        }
        codes = anonymous_codes("M-2024", list(enrolled.values()), self.code_secret)
        return {key: codes[workflow_id] for key, workflow_id in enrolled.items()}

    async def perform(self, number: int, step: Step) -> None:
        if step.target == MEETING:
            await self._meeting_step(number, step)
            return
        handle = self.handles[step.target]
        level = next(a.level for a in APPLICANTS if a.key == step.target)
        payload = step.payload or SubmitInput(dossier=complete_dossier(self.policy, level))
        update = step.update or ApplicationWorkflow.submit
        await self._send(handle, update, payload, f"demo-{self.run}-{number}")

    async def _meeting_step(self, number: int, step: Step) -> None:
        if step.update is None:
            await self.open_meeting()
            return
        assert self.meeting is not None
        if isinstance(step.payload, Votes):
            codes = await self.codes()
            for index, expert in enumerate(PRESENT):
                votes = {codes[k]: index < yes for k, yes in step.payload.yes.items() if k in codes}
                await self._send(
                    self.meeting,
                    step.update,
                    Ballot(expert_id=expert, votes=votes),
                    f"demo-{self.run}-{number}-{index}",
                )
            self.say(f"  评审会 M-2024：{len(PRESENT)} 位到会专家已全部投票")
            return
        result = await self._send(
            self.meeting, step.update, step.payload, f"demo-{self.run}-{number}"
        )
        if isinstance(result, MeetingView) and result.closed:
            for tally in result.tallies:
                verdict = (
                    "通过"
                    if tally.passed
                    else ("超出通过率上限" if tally.passes_vote else "未达三分之二")
                )
                self.say(
                    f"  评审会结果 {tally.code}（{tally.level.label}）：赞成 {tally.votes_for}/{len(PRESENT)}，{verdict}"
                )

    async def _send(
        self, handle: WorkflowHandle[Any, Any], update: Any, payload: Any, update_id: str
    ) -> object:
        try:
            return await handle.execute_update(update, payload, id=update_id)
        except WorkflowUpdateFailedError as error:
            cause = error.cause
            self.say(
                f"  ✗ 已拒绝 {handle.id.rsplit(':', 1)[1]}：{getattr(cause, 'type', '')} {getattr(cause, 'message', cause)}"
            )
        except RPCError as error:  # the workflow has already ended
            self.say(f"  ✗ 已拒绝 {handle.id.rsplit(':', 1)[1]}：已结束（{error}）")
        return None


async def run_demo(
    client: Client, settings: Settings, say: Callable[[str], None], speed: float = DEMO_SPEED
) -> list[ApplicationStatus]:
    """Start the demo's applications, drive every step at its business time, and wait
    until every application is final."""
    demo = _Demo(client, settings, say, speed)
    say(
        f"演示评审周期：{demo.policy.title}"
        f"（演示时钟：1 秒 = {speed / 86400:g} 天，自 {DEMO_START:%Y-%m-%d %H:%M} 起）"
    )
    await demo.start_applications()
    for number, step in enumerate(sorted(STEPS, key=lambda s: s.at)):
        delay = (demo.clock.real_time(step.at) - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        await demo.perform(number, step)
    if demo.meeting is not None:
        await demo.meeting.result()
    return [await handle.result() for handle in demo.handles.values()]


__all__ = ["APPLICANTS", "STEPS", "run_demo"]

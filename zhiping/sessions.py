"""Evaluation meetings and defense sessions for the HTTP API and the CLI.

Like :mod:`zhiping.service` for applications, this layer only starts, updates, queries
and lists workflows (``MeetingWorkflow``, ``DefenseSessionWorkflow``): each workflow stays
the single writer of its meeting or session. Workflow ids are deterministic
(``meeting:<cycle>:<meeting>``, ``defense:<cycle>:<session>``), so one id names one
meeting of a cycle for ever; listing goes through Temporal visibility, filtered by
workflow type and by the cycle in the workflow id.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, Field, field_validator
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from models.clock import CycleClock
from models.commands import application_workflow_id
from models.defense_commands import (
    CloseDefenseSession,
    DefenseOutcome,
    DefenseSessionView,
    OpenDefenseSession,
    defense_session_workflow_id,
)
from models.errors import DomainError
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
from models.policy import CyclePolicy, load_policy
from zhiping.service import refusal_from

V = TypeVar("V", bound=BaseModel)

NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_NAME = re.compile(NAME)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
OPEN_WAIT_SECONDS = 10.0
"""How long opening waits for enrolment (meeting) or scheduling (session) to finish."""

MEETING_UPDATES: dict[str, type[BaseModel]] = {
    "record_attendance": Attendance,
    "record_ballot": Ballot,
    "close": CloseMeeting,
}
"""The meeting's updates and the input each takes."""
DEFENSE_UPDATES: dict[str, type[BaseModel]] = {
    "record_result": DefenseOutcome,
    "close": CloseDefenseSession,
}
"""The defense session's updates and the input each takes."""

_STATUS_LABELS = {
    WorkflowExecutionStatus.RUNNING: "进行中",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "进行中",
    WorkflowExecutionStatus.COMPLETED: "已结束",
    WorkflowExecutionStatus.FAILED: "失败",
    WorkflowExecutionStatus.CANCELED: "已取消",
    WorkflowExecutionStatus.TERMINATED: "已终止",
    WorkflowExecutionStatus.TIMED_OUT: "已超时",
}


def _in_range(value: datetime) -> datetime:
    """Refuse instants no meeting is held at (and whose arithmetic could overflow)."""
    try:
        inside = EARLIEST <= value < LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise ValueError("时间须在 2000 年至 2099 年之间")
    return value


class MeetingOpening(BaseModel):
    """Open an evaluation meeting for a cycle: it enrols whoever waits for the meeting."""

    meeting_id: str = Field(pattern=NAME, description="评审会编号（本周期内唯一）")
    held_at: AwareDatetime = Field(description="开会时间（带时区，例如 +08:00）")
    committee_size: int = Field(ge=1, le=200, description="评审委员会人数（决定法定到会人数）")

    @field_validator("held_at")
    @classmethod
    def _held_at(cls, held_at: datetime) -> datetime:
        return _in_range(held_at)


class DefenseSessionOpening(BaseModel):
    """Open a defense session: when, where, before whom, and which applications."""

    session_id: str = Field(pattern=NAME, description="答辩场次编号（本周期内唯一）")
    at: AwareDatetime = Field(description="答辩时间（带时区，例如 +08:00）")
    place: str = Field(min_length=1, max_length=200, description="答辩地点")
    panel: list[str] = Field(
        default_factory=list, max_length=50, description="答辩专家组（专家编号）"
    )
    application_ids: list[str] = Field(
        min_length=1, max_length=500, description="参加本场答辩的申报编号（须处于待答辩）"
    )
    clock: CycleClock | None = Field(
        default=None, description="演练时钟（与申报的演练时钟一致）；省略即真实时间"
    )

    @field_validator("at")
    @classmethod
    def _at(cls, at: datetime) -> datetime:
        return _in_range(at)

    @field_validator("panel")
    @classmethod
    def _panel(cls, panel: list[str]) -> list[str]:
        if any(not 1 <= len(expert) <= 64 for expert in panel):
            raise ValueError("专家编号须为 1 至 64 个字符")
        return panel

    @field_validator("application_ids")
    @classmethod
    def _application_ids(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not _NAME.match(i)]
        if bad:
            raise ValueError(f"申报编号不合法：{'、'.join(bad[:5])}")
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"申报重复列出：{'、'.join(repeated)}")
        return ids

    @field_validator("clock")
    @classmethod
    def _clock(cls, clock: CycleClock | None) -> CycleClock | None:
        # A clock whose business time is already far off would overflow inside the
        # workflow; refuse it here, where the caller can still read why.
        if clock is not None:
            try:
                _in_range(clock.business_time(datetime.now(UTC)).astimezone(UTC))
            except (OverflowError, TypeError, ValueError):
                raise ValueError("演练时钟的当前业务时间须在 2000 年至 2099 年之间") from None
        return clock


class DefenseResultInput(BaseModel):
    """One applicant's defense result, named by its application id in the cycle."""

    application_id: str = Field(pattern=NAME, description="申报编号")
    passed: bool = Field(description="答辩通过（true）或未通过（false）")
    reason: str | None = Field(default=None, max_length=2000, description="说明（未通过须填写）")


class SessionSummary(BaseModel):
    """One meeting or defense session as visibility lists it (no query to the workflow)."""

    cycle_id: str
    workflow_id: str
    status: str
    """The workflow's status: ``running``, ``completed``, ``terminated``, …"""
    status_label: str
    started_at: datetime | None
    ended_at: datetime | None


class MeetingSummary(SessionSummary):
    meeting_id: str


class DefenseSessionSummary(SessionSummary):
    session_id: str


@dataclass(frozen=True)
class _Kind:
    """What differs between meetings and defense sessions."""

    workflow_type: str
    workflow_id: Callable[[str, str], str]
    view: type[BaseModel]
    updates: dict[str, type[BaseModel]]
    noun: str
    not_found: str
    closed: str
    exists: str


MEETING = _Kind(
    workflow_type="MeetingWorkflow",
    workflow_id=meeting_workflow_id,
    view=MeetingView,
    updates=MEETING_UPDATES,
    noun="评审会",
    not_found="MEETING_NOT_FOUND",
    closed="MEETING_CLOSED",
    exists="MEETING_EXISTS",
)
DEFENSE = _Kind(
    workflow_type="DefenseSessionWorkflow",
    workflow_id=defense_session_workflow_id,
    view=DefenseSessionView,
    updates=DEFENSE_UPDATES,
    noun="答辩场次",
    not_found="DEFENSE_SESSION_NOT_FOUND",
    closed="DEFENSE_SESSION_CLOSED",
    exists="DEFENSE_SESSION_EXISTS",
)


def _not_found(kind: _Kind, cycle_id: str, key: str) -> DomainError:
    return DomainError(
        kind.not_found,
        f"未找到评审周期 {cycle_id} 中编号为 {key} 的{kind.noun}",
        cycle_id=cycle_id,
        id=key,
    )


async def _start(
    kind: _Kind, client: Client, task_queue: str, cycle_id: str, key: str, arg: BaseModel
) -> None:
    try:
        await client.start_workflow(
            kind.workflow_type,
            arg,
            id=kind.workflow_id(cycle_id, key),
            task_queue=task_queue,
            # One id names one meeting (session) of a cycle, also after it ended.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise DomainError(
            kind.exists,
            f"评审周期 {cycle_id} 中编号为 {key} 的{kind.noun}已存在",
            cycle_id=cycle_id,
            id=key,
        ) from None


async def _view(kind: _Kind, client: Client, cycle_id: str, key: str) -> Any:
    handle = client.get_workflow_handle(kind.workflow_id(cycle_id, key))
    try:
        return await handle.query("view", result_type=kind.view)
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise _not_found(kind, cycle_id, key) from None
        raise


async def _update(
    kind: _Kind,
    client: Client,
    cycle_id: str,
    key: str,
    update: str,
    payload: BaseModel,
    update_id: str | None,
) -> Any:
    expected = kind.updates.get(update)
    if expected is None:
        raise DomainError("UNKNOWN_ACTION", f"未知的操作：{update}", action=update)
    if not isinstance(payload, expected):
        raise TypeError(f"{update} takes {expected.__name__}, not {type(payload).__name__}")
    handle = client.get_workflow_handle(kind.workflow_id(cycle_id, key))
    try:
        return await handle.execute_update(update, payload, id=update_id, result_type=kind.view)
    except WorkflowUpdateFailedError as error:
        refusal = refusal_from(error)
        if refusal is None:
            raise
        raise refusal from None
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
    # Unknown, or a workflow that has ended (which takes no more updates).
    try:
        await handle.describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise _not_found(kind, cycle_id, key) from None
        raise
    raise DomainError(
        kind.closed,
        f"{kind.noun} {key} 已结束，不能再执行操作",
        cycle_id=cycle_id,
        id=key,
    )


async def _list(kind: _Kind, client: Client, cycle_id: str) -> list[tuple[str, SessionSummary]]:
    if not _NAME.match(cycle_id):  # it goes into a visibility query
        raise DomainError("INVALID_INPUT", f"评审周期编号不合法：{cycle_id}", field="cycle_id")
    prefix = kind.workflow_id(cycle_id, "")
    query = (
        f"WorkflowType = '{kind.workflow_type}' AND WorkflowId STARTS_WITH '{prefix}'"
        " AND ExecutionStatus != 'ContinuedAsNew'"
    )
    found: dict[str, tuple[str, SessionSummary]] = {}
    async for execution in client.list_workflows(query):
        status = execution.status or WorkflowExecutionStatus.RUNNING
        key = execution.id.removeprefix(prefix)
        found.setdefault(
            execution.id,
            (
                key,
                SessionSummary(
                    cycle_id=cycle_id,
                    workflow_id=execution.id,
                    status=status.name.lower(),
                    status_label=_STATUS_LABELS.get(status, status.name.lower()),
                    started_at=execution.start_time,
                    ended_at=execution.close_time,
                ),
            ),
        )
    return sorted(found.values(), key=lambda item: item[0])


def load_cycle_policy(cycle_id: str) -> CyclePolicy:
    """The cycle's policy file; a meeting or session needs it to open.

    Raises:
        DomainError: ``CYCLE_NOT_FOUND`` (also for an id that is no plain name).
    """
    try:
        if _NAME.match(cycle_id):
            return load_policy(cycle_id)
    except FileNotFoundError:
        pass
    raise DomainError("CYCLE_NOT_FOUND", f"未找到评审周期 {cycle_id} 的政策文件", cycle_id=cycle_id)


async def _view_once(
    fetch: Callable[[], Awaitable[V]], done: Callable[[V], bool], wait: float
) -> V:
    """The view once ``done`` holds for it, or as it is after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        view = await fetch()
        if done(view) or time.monotonic() >= deadline:
            return view
        await asyncio.sleep(0.05)


# -- evaluation meetings ---------------------------------------------------------------------


async def open_meeting(
    client: Client,
    task_queue: str,
    policy: CyclePolicy,
    opening: MeetingOpening,
    *,
    opened_by: str = "ops",
    wait: float = OPEN_WAIT_SECONDS,
) -> MeetingView:
    """Start the meeting's workflow; return its view once enrolment is done (or ``wait`` passed).

    Raises:
        DomainError: ``MEETING_EXISTS``.
    """
    meeting = OpenMeeting(
        meeting_id=opening.meeting_id,
        policy=policy,
        held_at=opening.held_at,
        committee_size=opening.committee_size,
        opened_by=opened_by,
        code_secret=new_code_secret(),
    )
    await _start(
        MEETING,
        client,
        task_queue,
        policy.cycle_id,
        opening.meeting_id,
        MeetingRun(meeting=meeting),
    )
    return await _view_once(
        lambda: meeting_view(client, policy.cycle_id, opening.meeting_id),
        lambda view: view.enrolled,
        wait,
    )


async def meeting_view(client: Client, cycle_id: str, meeting_id: str) -> MeetingView:
    """The meeting's blind view (its ``view`` query): codes and levels, never a person.

    Raises:
        DomainError: ``MEETING_NOT_FOUND``.
    """
    view: MeetingView = await _view(MEETING, client, cycle_id, meeting_id)
    return view


async def update_meeting(
    client: Client,
    cycle_id: str,
    meeting_id: str,
    update: str,
    payload: BaseModel,
    update_id: str | None = None,
) -> MeetingView:
    """Send one update (:data:`MEETING_UPDATES`); ``update_id`` makes a repeat a no-op.

    Raises:
        DomainError: the meeting's own refusal (``QUORUM_NOT_MET``, ``TIE_AT_CAP_LINE``, …),
            ``MEETING_NOT_FOUND``, or ``MEETING_CLOSED`` once its workflow has ended.
    """
    view: MeetingView = await _update(
        MEETING, client, cycle_id, meeting_id, update, payload, update_id
    )
    return view


async def list_meetings(client: Client, cycle_id: str) -> list[MeetingSummary]:
    """The cycle's meetings, from visibility (a just-opened one may take a moment to show)."""
    return [
        MeetingSummary(meeting_id=key, **summary.model_dump())
        for key, summary in await _list(MEETING, client, cycle_id)
    ]


# -- defense sessions ------------------------------------------------------------------------


async def open_defense_session(
    client: Client,
    task_queue: str,
    policy: CyclePolicy,
    opening: DefenseSessionOpening,
    *,
    opened_by: str = "ops",
    wait: float = OPEN_WAIT_SECONDS,
) -> DefenseSessionView:
    """Start the session's workflow; return its view once every applicant has been asked
    (``ready``), or when ``wait`` has passed.

    Raises:
        DomainError: ``DEFENSE_SESSION_EXISTS``.
    """
    cycle_id = policy.cycle_id
    session = OpenDefenseSession(
        session_id=opening.session_id,
        policy=policy,
        at=opening.at,
        place=opening.place,
        panel=opening.panel,
        application_workflow_ids=[
            application_workflow_id(cycle_id, application_id)
            for application_id in opening.application_ids
        ],
        clock=opening.clock or CycleClock(),
        opened_by=opened_by,
    )
    await _start(DEFENSE, client, task_queue, cycle_id, opening.session_id, session)
    return await _view_once(
        lambda: defense_session_view(client, cycle_id, opening.session_id),
        lambda view: view.ready,
        wait,
    )


async def defense_session_view(
    client: Client, cycle_id: str, session_id: str
) -> DefenseSessionView:
    """The session's view (its ``view`` query).

    Raises:
        DomainError: ``DEFENSE_SESSION_NOT_FOUND``.
    """
    view: DefenseSessionView = await _view(DEFENSE, client, cycle_id, session_id)
    return view


async def update_defense_session(
    client: Client,
    cycle_id: str,
    session_id: str,
    update: str,
    payload: BaseModel,
    update_id: str | None = None,
) -> DefenseSessionView:
    """Send one update (:data:`DEFENSE_UPDATES`); ``update_id`` makes a repeat a no-op.

    Raises:
        DomainError: the session's own refusal (``NOT_IN_DEFENSE_SESSION``, …),
            ``DEFENSE_SESSION_NOT_FOUND``, or ``DEFENSE_SESSION_CLOSED`` once it has ended.
    """
    view: DefenseSessionView = await _update(
        DEFENSE, client, cycle_id, session_id, update, payload, update_id
    )
    return view


def defense_outcome(cycle_id: str, result: DefenseResultInput, actor: str) -> DefenseOutcome:
    """The session's ``record_result`` input for a result named by application id."""
    return DefenseOutcome(
        application_workflow_id=application_workflow_id(cycle_id, result.application_id),
        passed=result.passed,
        reason=result.reason,
        actor=actor,
    )


def application_id_of(cycle_id: str, workflow_id: str) -> str:
    """The application id inside an application workflow id (for display)."""
    return workflow_id.removeprefix(application_workflow_id(cycle_id, ""))


async def list_defense_sessions(client: Client, cycle_id: str) -> list[DefenseSessionSummary]:
    """The cycle's defense sessions, from visibility."""
    return [
        DefenseSessionSummary(session_id=key, **summary.model_dump())
        for key, summary in await _list(DEFENSE, client, cycle_id)
    ]


__all__ = [
    "DEFENSE_UPDATES",
    "MEETING_UPDATES",
    "DefenseResultInput",
    "DefenseSessionOpening",
    "DefenseSessionSummary",
    "MeetingOpening",
    "MeetingSummary",
    "SessionSummary",
    "application_id_of",
    "defense_outcome",
    "defense_session_view",
    "list_defense_sessions",
    "list_meetings",
    "load_cycle_policy",
    "meeting_view",
    "open_defense_session",
    "open_meeting",
    "update_defense_session",
    "update_meeting",
]

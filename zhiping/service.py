"""The one layer the CLI (and later the HTTP API) use to see and act on applications.

It only starts, updates and queries workflows and reads the SQL read model: the
workflow stays the single writer of an application's state.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities import Database
from models.clock import CycleClock
from models.commands import (
    ApplicationStatus,
    DeadlineChange,
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
    Withdrawal,
    application_workflow_id,
)
from models.errors import DomainError
from models.identity import person_key
from models.lifecycle import FINAL_STATES, STATE_LABELS, TRANSITIONS, State
from models.policy import Level, load_policy
from models.tables import Application

ACTIONS: dict[str, type[BaseModel]] = {
    "return_for_revision": ReviewDecision,
    "accept": ReviewDecision,
    "record_payment": PaymentInput,
    "schedule_defense": DefenseSchedule,
    "record_defense_result": DefenseResult,
    "exempt_from_defense": DefenseExemption,
    "file_objection": ObjectionInput,
    "resolve_objection": ObjectionResolution,
    "withdraw": Withdrawal,
    "disqualify": Disqualification,
    "change_deadlines": DeadlineChange,
}
"""Ops actions and the input each takes. ``submit`` is the applicant's, through the platform."""


class ApplicationRow(BaseModel):
    """One application as the read model knows it."""

    application_id: str
    cycle_id: str
    workflow_id: str
    level: str
    level_label: str
    state: str
    state_label: str
    submission_round: int
    fee_paid: bool
    updated_at: datetime
    next_deadline_at: datetime | None
    next_deadline_kind: str | None
    overdue: bool


def _row(app: Application, now: datetime) -> ApplicationRow:
    return ApplicationRow(
        application_id=app.application_id,
        cycle_id=app.cycle_id,
        workflow_id=app.workflow_id,
        level=app.level,
        level_label=Level(app.level).label,
        state=app.state,
        state_label=STATE_LABELS[State(app.state)],
        submission_round=app.submission_round,
        fee_paid=app.fee_paid,
        updated_at=app.updated_at,
        next_deadline_at=app.next_deadline_at,
        next_deadline_kind=app.next_deadline_kind,
        overdue=app.next_deadline_at is not None and app.next_deadline_at < now,
    )


async def list_applications(
    db: Database,
    *,
    cycle: str | None = None,
    stage: str | None = None,
    level: str | None = None,
    overdue: bool = False,
    due_within: timedelta | None = None,
    now: datetime,
) -> list[ApplicationRow]:
    """Applications from the read model, filtered; ``overdue`` = a deadline already passed."""
    query = select(Application).order_by(Application.cycle_id, Application.application_id)
    if cycle is not None:
        query = query.where(Application.cycle_id == cycle)
    if stage is not None:
        query = query.where(Application.state == stage)
    if level is not None:
        query = query.where(Application.level == level)
    if overdue:
        query = query.where(Application.next_deadline_at < now)
    if due_within is not None:
        query = query.where(
            Application.next_deadline_at >= now, Application.next_deadline_at <= now + due_within
        )
    async with db.sessions() as session:
        apps = (await session.scalars(query)).all()
    return [_row(app, now) for app in apps]


def _not_found(cycle_id: str, application_id: str) -> DomainError:
    return DomainError(
        "APPLICATION_NOT_FOUND",
        f"未找到评审周期 {cycle_id} 中编号为 {application_id} 的申报",
        cycle_id=cycle_id,
        application_id=application_id,
    )


async def application_status(
    client: Client, cycle_id: str, application_id: str
) -> ApplicationStatus:
    """The workflow's own view of one application (its ``status`` query)."""
    handle = client.get_workflow_handle(application_workflow_id(cycle_id, application_id))
    try:
        status: ApplicationStatus = await handle.query("status", result_type=ApplicationStatus)
        return status
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            raise _not_found(cycle_id, application_id) from None
        raise


async def perform(
    client: Client,
    cycle_id: str,
    application_id: str,
    action: str,
    payload: BaseModel,
    event_id: str | None = None,
) -> ApplicationStatus:
    """Send one ops action to the application's workflow; ``event_id`` makes a repeat a no-op.

    Raises:
        DomainError: the workflow refused (its code and zh-CN message), or there is no
            such (running) application.
    """
    expected = ACTIONS.get(action)
    if expected is None:
        raise DomainError("UNKNOWN_ACTION", f"未知的操作：{action}", action=action)
    if not isinstance(payload, expected):
        raise TypeError(f"{action} takes {expected.__name__}, not {type(payload).__name__}")
    return await _update(client, cycle_id, application_id, action, payload, event_id)


async def _update(
    client: Client,
    cycle_id: str,
    application_id: str,
    update: str,
    payload: BaseModel,
    event_id: str | None,
) -> ApplicationStatus:
    """One update to an application's workflow, refusals turned into ``DomainError``."""
    handle = client.get_workflow_handle(application_workflow_id(cycle_id, application_id))
    try:
        result: ApplicationStatus = await handle.execute_update(
            update, payload, id=event_id, result_type=ApplicationStatus
        )
        return result
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        if isinstance(cause, ApplicationError) and cause.type:
            raise DomainError(cause.type, cause.message) from None
        raise
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
    # Unknown, or a finished workflow (which takes no more updates).
    status = await application_status(client, cycle_id, application_id)
    raise DomainError(
        "APPLICATION_CLOSED",
        f"申报 {application_id} 已办结（{status.state_label}），不能再执行操作",
        state=status.state.value,
    )


async def start_application(
    client: Client,
    task_queue: str,
    cycle_id: str,
    application_id: str,
    level: Level,
    id_number: str,
    secret: bytes,
    *,
    created_by: str = "platform",
    clock: CycleClock | None = None,
) -> ApplicationStatus:
    """Start one application's workflow with the cycle's policy; return its first status.

    The ID number only becomes a keyed hash (``person_key``) here: it is never stored,
    logged or returned.

    Raises:
        DomainError: ``CYCLE_NOT_FOUND`` (no policy file for the cycle), ``INVALID_ID_NUMBER``,
            ``APPLICATION_EXISTS``.
    """
    try:
        policy = load_policy(cycle_id) if _is_plain_name(cycle_id) else None
    except FileNotFoundError:
        policy = None
    if policy is None:
        raise DomainError(
            "CYCLE_NOT_FOUND", f"未找到评审周期 {cycle_id} 的政策文件", cycle_id=cycle_id
        )
    start = StartApplication(
        application_id=application_id,
        level=level,
        policy=policy,
        person_key=person_key(id_number, secret),
        created_by=created_by,
        clock=clock or CycleClock(),
    )
    try:
        handle = await client.start_workflow(
            "ApplicationWorkflow",
            start,
            id=application_workflow_id(cycle_id, application_id),
            task_queue=task_queue,
            result_type=ApplicationStatus,
            # An application id is used once per cycle, also after the application ended.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise DomainError(
            "APPLICATION_EXISTS",
            f"评审周期 {cycle_id} 中编号为 {application_id} 的申报已存在",
            cycle_id=cycle_id,
            application_id=application_id,
        ) from None
    status: ApplicationStatus = await handle.query("status", result_type=ApplicationStatus)
    return status


def _is_plain_name(cycle_id: str) -> bool:
    """A cycle id names a file under ``policies/``; never a path of the caller's choosing."""
    return bool(cycle_id) and all(c.isascii() and (c.isalnum() or c in "-_") for c in cycle_id)


async def submit_application(
    client: Client,
    cycle_id: str,
    application_id: str,
    submission: SubmitInput,
    event_id: str | None = None,
) -> ApplicationStatus:
    """The applicant's ``submit`` (through the platform); refusals as in :func:`perform`."""
    return await _update(client, cycle_id, application_id, "submit", submission, event_id)


def deadline_change_id(change: DeadlineChange) -> str:
    """The update id of a cycle-wide change: the same change, rerun, applies once."""
    digest = hashlib.sha256(change.model_dump_json().encode()).hexdigest()[:24]
    return f"change_deadlines:{digest}"


async def extend_cycle_deadlines(
    client: Client, db: Database, cycle_id: str, change: DeadlineChange
) -> list[str]:
    """Apply ``change`` to every running application of the cycle; return their ids.

    Applications that finished in the meantime are skipped; any other refusal is raised.
    """
    final = [s.value for s in FINAL_STATES]
    query = (
        select(Application.application_id)
        .where(Application.cycle_id == cycle_id, Application.state.not_in(final))
        .order_by(Application.application_id)
    )
    async with db.sessions() as session:
        application_ids = list((await session.scalars(query)).all())
    event_id = deadline_change_id(change)
    changed: list[str] = []
    for application_id in application_ids:
        try:
            await perform(client, cycle_id, application_id, "change_deadlines", change, event_id)
        except DomainError as error:
            if error.code in {"APPLICATION_CLOSED", "TRANSITION_NOT_ALLOWED"}:
                continue
            raise
        changed.append(application_id)
    return changed


class _DiagramModel:
    """The model object ``GraphMachine`` binds its ``get_graph`` to."""

    get_graph: Any


def draw_lifecycle(status: ApplicationStatus, path: Path) -> Path:
    """Draw the lifecycle state machine with this application's path and state; return the file.

    The graph comes from the same transition table ``Lifecycle`` runs, so it cannot drift
    from the rules. The format follows the suffix (``.svg``, ``.png``, …); needs Graphviz ``dot``.
    """
    from transitions.extensions import GraphMachine

    model = _DiagramModel()
    machine = GraphMachine(
        model=model,
        states=[s.value for s in State],
        transitions=TRANSITIONS,
        initial=status.state.value,
        auto_transitions=False,
        graph_engine="graphviz",
        show_conditions=True,
        title=f"{status.cycle_id} / {status.application_id}：{status.state_label}",
    )
    styles = machine.model_graphs[id(model)]
    styles.reset_styling()
    for entry in status.history:
        if entry.trigger != "create":
            styles.set_previous_transition(entry.source.value, entry.dest.value)
    styles.set_node_style(status.state.value, "active")
    graph = model.get_graph()
    for state in State:
        graph.node(state.value, label=f"{STATE_LABELS[state]}\n{state.value}")
    fmt = path.suffix.lstrip(".").lower() or "svg"
    graph.format = fmt
    written = graph.render(outfile=path, cleanup=True)
    return Path(written)


__all__ = [
    "ACTIONS",
    "ApplicationRow",
    "application_status",
    "deadline_change_id",
    "draw_lifecycle",
    "extend_cycle_deadlines",
    "list_applications",
    "perform",
    "start_application",
    "submit_application",
]

"""The one layer the CLI (and later the HTTP API) use to see and act on applications.

It only starts, updates and queries workflows and reads the SQL read model: the
workflow stays the single writer of an application's state.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from temporalio.api.common.v1 import WorkflowExecution as WorkflowExecutionRef
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecution,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
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
from models.extension_commands import (
    ExtendDeadlines,
    ExtensionReport,
    deadline_change_update_id,
    deadline_extension_workflow_id,
)
from models.identity import person_key
from models.lifecycle import STATE_LABELS, TRANSITIONS, ApplicationRecord, Lifecycle, State
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
        query = query.where(Application.overdue_at(now))
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


def refusal_from(error: WorkflowUpdateFailedError) -> DomainError | None:
    """The workflow's own refusal (validator or handler) as a ``DomainError``, with its
    details; ``None`` when the update failed for another reason."""
    cause = error.cause
    if not (isinstance(cause, ApplicationError) and cause.type):
        return None
    details: dict[str, Any] = {}
    try:
        first = cause.details[0] if cause.details else None
    except Exception:  # undecodable details must not hide the refusal itself
        first = None
    if isinstance(first, dict):
        details = {str(k): v for k, v in first.items()}
    return DomainError(cause.type, cause.message, **details)


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
        return await _answer(
            handle.execute_update(update, payload, id=event_id, result_type=ApplicationStatus)
        )
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise
    # Unknown, or a finished workflow (which takes no more updates).
    status = await application_status(client, cycle_id, application_id)
    if update == "disqualify" and update in status.allowed_actions:
        return await _revoke(client, handle, payload, event_id)
    raise DomainError(
        "APPLICATION_CLOSED",
        f"申报 {application_id} 已办结（{status.state_label}），不能再执行操作",
        state=status.state.value,
    )


async def _task_queue(client: Client, workflow_id: str) -> str:
    """The task queue of the workflow's latest run (read raw: decoding the whole
    description would decode search attributes we do not need)."""
    raw = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecutionRef(workflow_id=workflow_id)
        )
    )
    return raw.execution_config.task_queue.name


async def _revoke(
    client: Client, handle: WorkflowHandle[Any, Any], payload: BaseModel, event_id: str | None
) -> ApplicationStatus:
    """Disqualify an ended application (fraud found later, 附件3: 取消已确认的资格): a new run
    of its workflow continues the ended run's record, started together with ``revoke``."""
    start = await handle.query("continuation", result_type=StartApplication)
    operation: WithStartWorkflowOperation[Any, ApplicationStatus] = WithStartWorkflowOperation(
        "ApplicationWorkflow",
        start,
        id=handle.id,
        task_queue=await _task_queue(client, handle.id),
        result_type=ApplicationStatus,
        # Another revocation already running: join it (the lifecycle then refuses ours).
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
    return await _answer(
        client.execute_update_with_start_workflow(
            "revoke",
            payload,
            start_workflow_operation=operation,
            id=event_id,
            result_type=ApplicationStatus,
        )
    )


async def _answer(update: Awaitable[Any]) -> ApplicationStatus:
    """The update's result; the workflow's refusal raised as its ``DomainError``."""
    try:
        result: ApplicationStatus = await update
        return result
    except WorkflowUpdateFailedError as error:
        refused = refusal_from(error)
        if refused is not None:
            raise refused from None
        raise


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


EXTENSION_BATCH = 50
"""Applications a deadline extension changes per workflow run before continuing as new."""


def deadline_change_id(change: DeadlineChange) -> str:
    """The update id of a cycle-wide change: the same change, rerun, applies once."""
    return deadline_change_update_id(change)


async def extend_cycle_deadlines(
    client: Client,
    db: Database,
    cycle_id: str,
    change: DeadlineChange,
    *,
    batch_size: int = EXTENSION_BATCH,
) -> list[str]:
    """Apply ``change`` to every running application of the cycle, durably; return their ids.

    A ``DeadlineExtensionWorkflow`` does the work, so a caller that dies half-way (an API
    crash) leaves no application behind: the workflow carries on by itself. Its id comes
    from the cycle and the change, so calling again with the same change attaches to that
    run, or returns its result, and changes nothing twice. Applications that ended in the
    meantime are skipped. The workflow finds the applications through visibility, which
    does not lag like the read model: ``db`` is no longer read.

    Raises:
        DomainError: the change is refused before anything starts, with the lifecycle's
            code (``DEADLINE_NOT_EXTENDED``, ``NO_DEADLINE_CHANGE``, ``DEADLINES_INCONSISTENT``,
            …), checked against the deadlines the applications started with. Or an
            application refused it while the workflow ran, because its deadlines had been
            extended beyond the change since; that code is raised after the workflow ends,
            the others keep their change, and ``details`` lists both.
    """
    if not _is_plain_name(cycle_id):
        raise DomainError("CYCLE_NOT_FOUND", f"未找到评审周期 {cycle_id}", cycle_id=cycle_id)
    workflow_id = deadline_extension_workflow_id(cycle_id, change)
    sample = await _running_application(client, cycle_id)
    if sample is None:  # nothing runs; an earlier run of this very change still answers
        earlier = await _earlier_extension(client, workflow_id)
        return [] if earlier is None else _changed(earlier)
    _check_deadline_change(await _start_input(client, sample), change)
    start = ExtendDeadlines(
        cycle_id=cycle_id,
        change=change,
        update_id=deadline_change_update_id(change),
        batch_size=batch_size,
    )
    try:
        handle = await client.start_workflow(
            "DeadlineExtensionWorkflow",
            start,
            id=workflow_id,
            # The worker that runs the cycle's applications runs their extension too.
            task_queue=sample.task_queue,
            result_type=ExtensionReport,
            # Running: attach to it. Completed: its result is the answer (below). Failed or
            # terminated: run again; each application's update id still applies it once.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id, result_type=ExtensionReport)
    report: ExtensionReport = await handle.result()
    return _changed(report)


async def _running_application(client: Client, cycle_id: str) -> WorkflowExecution | None:
    """Any one running application of the cycle (visibility), or None."""
    query = (
        f"WorkflowType = 'ApplicationWorkflow' AND Cycle = '{cycle_id}'"
        " AND ExecutionStatus = 'Running'"
    )
    async for execution in client.list_workflows(query, limit=1):
        return execution
    return None


async def _start_input(client: Client, execution: WorkflowExecution) -> StartApplication:
    """What an application was started with: its cycle's policy and deadlines."""
    handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
    async for event in handle.fetch_history_events(page_size=1):
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        [start] = await client.data_converter.decode(payloads, [StartApplication])
        if isinstance(start, StartApplication):
            return start
        break
    raise RuntimeError(f"no start input in the history of {execution.id}")


def _check_deadline_change(start: StartApplication, change: DeadlineChange) -> None:
    """Refuse a change the cycle's applications would refuse, before anything changes.

    The lifecycle's own rule (``check_deadline_change``), run on the deadlines the cycle's
    applications started with: a shortening, an empty change, a change that leaves the
    deadlines out of order.
    """
    record = ApplicationRecord(
        application_id=start.application_id,
        cycle_id=start.policy.cycle_id,
        level=start.level,
        deadlines=start.policy.deadlines,
    )
    Lifecycle(record, start.policy).check_deadline_change(change.changes())


async def _earlier_extension(client: Client, workflow_id: str) -> ExtensionReport | None:
    """The result of an earlier run of this extension, if one completed (or still runs)."""
    handle = client.get_workflow_handle(workflow_id, result_type=ExtensionReport)
    try:
        report: ExtensionReport = await handle.result()
    except WorkflowFailureError:
        return None
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
    return report


def _changed(report: ExtensionReport) -> list[str]:
    """The changed applications; an application's refusal (not just its end) is raised."""
    if report.refused:
        first = report.refused[0]
        raise DomainError(
            first.code,
            f"申报 {first.application_id} 未接受本次延期：{first.message}",
            changed=report.changed,
            refused=[r.application_id for r in report.refused],
        )
    return report.changed


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
    "EXTENSION_BATCH",
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

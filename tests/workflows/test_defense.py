"""DefenseSessionWorkflow on the real dev server.

Deputy-senior applications are driven to ``defense_pending`` (submit → accept → pay 700,
no exemption) on a cycle clock anchored before the cutoff; a session then schedules them,
takes results, fails the absent at close, and delivers every result exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import Database, ZhipingActivities
from activities.coordination import CoordinationActivities
from activities.webhooks import WebhookActivities
from models.clock import CycleClock
from models.commands import (
    ApplicationStatus,
    PaymentInput,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    Withdrawal,
    application_workflow_id,
)
from models.defense_commands import (
    ABSENT_REASON,
    CloseDefenseSession,
    DefenseDelivery,
    DefenseOutcome,
    DefenseScheduling,
    DefenseSessionView,
    DeliveryOutcome,
    OpenDefenseSession,
    defense_session_workflow_id,
)
from models.identity import person_key
from models.lifecycle import State
from models.policy import CHINA_TZ, CyclePolicy, Level, load_policy
from models.tables import NotificationOutbox
from workflows import WORKFLOWS, ApplicationWorkflow, DefenseSessionWorkflow
from zhiping.samples import complete_dossier

SECRET = b"defense-test-secret-0123456789"
SESSION_AT = datetime(2024, 8, 26, 9, 30, tzinfo=CHINA_TZ)
PLACE = "党校教学楼302室"
PANEL = ["P01", "P02", "P03", "P04", "P05"]

AppHandle = WorkflowHandle[ApplicationWorkflow, ApplicationStatus]
SessionHandle = WorkflowHandle[DefenseSessionWorkflow, DefenseSessionView]


class RecordingChannel:
    """Keeps (application id, template, body) of every notification delivered."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def deliver(self, row: NotificationOutbox) -> None:
        self.sent.append((row.application_id, row.template, row.body))


class GatedCoordination(CoordinationActivities):
    """Result deliveries wait while ``gate`` is clear: a closed session stays observable."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.gate = asyncio.Event()
        self.gate.set()

    @activity.defn
    async def deliver_defense_result(self, delivery: DefenseDelivery) -> DeliveryOutcome:
        await self.gate.wait()
        return await super().deliver_defense_result(delivery)


class Cycle:
    """One cycle (a fresh cycle id per test) with its applications and a worker."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        worker: Worker,
        channel: RecordingChannel,
        coordination: GatedCoordination,
    ) -> None:
        base = load_policy("2024-aksu-party-school")
        self.policy: CyclePolicy = base.model_copy(
            update={"cycle_id": f"t{uuid.uuid4().hex[:12]}-2024"}
        )
        self.env, self.worker = env, worker
        self.channel, self.coordination = channel, coordination
        self.clock = CycleClock.rehearse(
            datetime(2024, 8, 20, 9, tzinfo=CHINA_TZ), datetime.now(UTC)
        )
        self.started = 0

    async def paid(self, level: Level) -> AppHandle:
        """A new application, submitted, accepted and paid (no defense exemption)."""
        self.started += 1
        number = self.started
        application_id = f"A{number:03d}"
        handle = await self.env.client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=application_id,
                level=level,
                policy=self.policy,
                person_key=person_key(f"6530011980010{number:04d}1", SECRET),
                clock=self.clock,
            ),
            id=application_workflow_id(self.policy.cycle_id, application_id),
            task_queue=self.worker.task_queue,
        )
        await handle.execute_update(
            ApplicationWorkflow.submit, SubmitInput(dossier=complete_dossier(self.policy, level))
        )
        await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
        await handle.execute_update(
            ApplicationWorkflow.record_payment,
            PaymentInput(transaction_id=f"T{number}", amount=Decimal(self.policy.fee_for(level))),
        )
        return handle

    async def pending(self) -> AppHandle:
        """A deputy-senior application in ``defense_pending``."""
        handle = await self.paid(Level.deputy_senior)
        status = await handle.query(ApplicationWorkflow.status)
        assert status.state is State.defense_pending and status.defense_exemption is None
        assert [p.amount for p in status.payments] == [Decimal(700)]
        return handle

    async def open_session(self, session_id: str, handles: list[AppHandle]) -> SessionHandle:
        """Open a session and wait until every listed application has been asked."""
        handle = await self.env.client.start_workflow(
            DefenseSessionWorkflow.run,
            OpenDefenseSession(
                session_id=session_id,
                policy=self.policy,
                at=SESSION_AT,
                place=PLACE,
                panel=PANEL,
                application_workflow_ids=[h.id for h in handles],
                clock=self.clock,
            ),
            id=defense_session_workflow_id(self.policy.cycle_id, session_id),
            task_queue=self.worker.task_queue,
        )
        for _ in range(200):
            if (await handle.query(DefenseSessionWorkflow.view)).ready:
                return handle
            await asyncio.sleep(0.05)
        raise AssertionError("the session never finished scheduling")


@pytest_asyncio.fixture(loop_scope="session")
async def cycle(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Cycle]:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path}/zhiping.db")
    await db.create_schema()
    channel = RecordingChannel()
    coordination = GatedCoordination(dev_env.client)
    async with Worker(
        dev_env.client,
        task_queue=f"defense-{uuid.uuid4()}",
        workflows=list(WORKFLOWS),
        activities=[
            *ZhipingActivities(db, channel).all(),
            *coordination.all(),
            *WebhookActivities(db).all(),
        ],
    ) as worker:
        yield Cycle(dev_env, worker, channel, coordination)
    await db.dispose()


async def refused(code: str, call: object) -> None:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await call  # type: ignore[misc]
    assert getattr(info.value.cause, "type", None) == code, info.value.cause


def triggered(status: ApplicationStatus, trigger: str) -> list[str | None]:
    """The reasons of every history entry with ``trigger``."""
    return [e.reason for e in status.history if e.trigger == trigger]


async def test_session_schedules_takes_results_fails_the_absent_and_tells_each_once(
    cycle: Cycle,
) -> None:
    passes, fails, absent = [await cycle.pending() for _ in range(3)]
    intermediate = await cycle.paid(Level.intermediate)
    assert (await intermediate.query(ApplicationWorkflow.status)).state is State.awaiting_meeting

    session = await cycle.open_session("D1", [passes, fails, absent, intermediate])
    view = await session.query(DefenseSessionWorkflow.view)
    assert view.scheduled == [passes.id, fails.id, absent.id]
    assert [(r.application_workflow_id, r.code) for r in view.refused] == [
        (intermediate.id, "TRANSITION_NOT_ALLOWED")
    ]
    assert view.refused[0].message  # the application's zh-CN reason travels with the code

    # Every scheduled application shows the session and told its applicant.
    for handle in (passes, fails, absent):
        status = await handle.query(ApplicationWorkflow.status)
        assert status.state is State.defense_pending
        assert status.defense is not None
        assert (status.defense.session_id, status.defense.place) == ("D1", PLACE)
        assert status.defense.at == SESSION_AT and status.defense.panel == PANEL
        assert triggered(status, "schedule_defense") == [f"答辩 2024-08-26 09:30 {PLACE}"]
    untouched = await intermediate.query(ApplicationWorkflow.status)
    assert untouched.defense is None and not triggered(untouched, "schedule_defense")

    application_ids = {h.id.rsplit(":", 1)[1] for h in (passes, fails, absent)}
    for _ in range(100):
        told = {a for a, template, _ in cycle.channel.sent if template == "defense.scheduled"}
        if told == application_ids:
            break
        await asyncio.sleep(0.05)
    assert told == application_ids
    bodies = [b for _, template, b in cycle.channel.sent if template == "defense.scheduled"]
    assert all("2024-08-26 09:30" in b and PLACE in b for b in bodies)

    # A retried scheduling activity applies once (same update id).
    again = await cycle.coordination.schedule_defense_for(
        DefenseScheduling(workflow_id=passes.id, session_id="D1", at=SESSION_AT, place=PLACE)
    )
    assert again.scheduled
    status = await passes.query(ApplicationWorkflow.status)
    assert len(triggered(status, "schedule_defense")) == 1

    # Results: only for applicants of this session; a later result replaces an earlier one.
    await session.execute_update(
        DefenseSessionWorkflow.record_result,
        DefenseOutcome(application_workflow_id=passes.id, passed=True),
    )
    await session.execute_update(
        DefenseSessionWorkflow.record_result,
        DefenseOutcome(application_workflow_id=fails.id, passed=True),
    )
    await session.execute_update(
        DefenseSessionWorkflow.record_result,
        DefenseOutcome(application_workflow_id=fails.id, passed=False, reason="专业答辩未达要求"),
    )
    for outsider in (intermediate.id, "application:elsewhere:A999"):
        await refused(
            "NOT_IN_DEFENSE_SESSION",
            session.execute_update(
                DefenseSessionWorkflow.record_result,
                DefenseOutcome(application_workflow_id=outsider, passed=True),
            ),
        )

    # Close with deliveries held back, so the closed session can be asked again.
    cycle.coordination.gate.clear()
    closed = await session.execute_update(DefenseSessionWorkflow.close, CloseDefenseSession())
    assert closed.closed
    results = {r.application_workflow_id: r for r in closed.results}
    assert set(results) == {passes.id, fails.id, absent.id}
    assert (results[passes.id].passed, results[fails.id].passed) == (True, False)
    assert results[fails.id].reason == "专业答辩未达要求" and not results[fails.id].absent
    assert results[absent.id].absent and results[absent.id].reason == ABSENT_REASON
    await refused(
        "DEFENSE_SESSION_CLOSED",
        session.execute_update(
            DefenseSessionWorkflow.record_result,
            DefenseOutcome(application_workflow_id=absent.id, passed=True),
        ),
    )
    await refused(
        "DEFENSE_SESSION_CLOSED",
        session.execute_update(DefenseSessionWorkflow.close, CloseDefenseSession()),
    )
    assert (await absent.query(ApplicationWorkflow.status)).state is State.defense_pending
    cycle.coordination.gate.set()

    final = await session.result()
    assert final.results_delivered == 3
    assert all(r.delivery is DeliveryOutcome.delivered for r in final.results)
    expected = {
        passes.id: (State.awaiting_meeting, "答辩通过"),
        fails.id: (State.not_approved, "专业答辩未达要求"),
        absent.id: (State.not_approved, ABSENT_REASON),
    }
    for handle in (passes, fails, absent):
        status = await handle.query(ApplicationWorkflow.status)
        state, reason = expected[handle.id]
        assert status.state is state, handle.id
        assert triggered(status, "record_defense_result") == [reason], handle.id

    # A retried delivery (the activity ran again after its success) applies nothing more,
    # whether the application still runs (passed) or has ended (failed).
    for handle, passed in ((passes, True), (absent, False)):
        outcome = await cycle.coordination.deliver_defense_result(
            DefenseDelivery(workflow_id=handle.id, session_id="D1", passed=passed, reason="重试")
        )
        assert outcome is DeliveryOutcome.delivered
        status = await handle.query(ApplicationWorkflow.status)
        assert len(triggered(status, "record_defense_result")) == 1
    assert (await intermediate.query(ApplicationWorkflow.status)).state is State.awaiting_meeting


async def test_moved_and_withdrawn_applicants_are_not_failed_by_the_first_session(
    cycle: Cycle,
) -> None:
    moved, withdrawn, never = await cycle.pending(), await cycle.pending(), await cycle.pending()
    await never.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
    await never.result()  # ended, not merely in a final state
    first = await cycle.open_session("D1", [moved, withdrawn, never])
    view = await first.query(DefenseSessionWorkflow.view)
    assert view.scheduled == [moved.id, withdrawn.id]
    assert [(r.application_workflow_id, r.code) for r in view.refused] == [
        (never.id, "APPLICATION_ENDED")
    ]

    second = await cycle.open_session("D2", [moved])
    await withdrawn.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
    await withdrawn.result()
    await first.execute_update(DefenseSessionWorkflow.close, CloseDefenseSession())
    final = await first.result()
    deliveries = {r.application_workflow_id: r.delivery for r in final.results}
    assert deliveries == {
        moved.id: DeliveryOutcome.rescheduled,
        withdrawn.id: DeliveryOutcome.closed,
    }
    assert final.results_delivered == 0
    status = await moved.query(ApplicationWorkflow.status)
    assert status.state is State.defense_pending and not triggered(status, "record_defense_result")
    assert (await withdrawn.query(ApplicationWorkflow.status)).state is State.withdrawn

    await second.execute_update(
        DefenseSessionWorkflow.record_result,
        DefenseOutcome(application_workflow_id=moved.id, passed=True),
    )
    await second.execute_update(DefenseSessionWorkflow.close, CloseDefenseSession())
    assert (await second.result()).results_delivered == 1
    status = await moved.query(ApplicationWorkflow.status)
    assert status.state is State.awaiting_meeting
    assert triggered(status, "record_defense_result") == ["答辩通过"]

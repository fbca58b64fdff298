"""DeadlineExtensionWorkflow on the real dev server (it finds the applications through visibility).

Ops extends a cycle's deadlines through ``service.extend_cycle_deadlines``, as the CLI and the
HTTP API do. Each application must get the change exactly once: across continue-as-new, a
rerun of the same change, a caller that dies right after starting it, and a worker lost
after an update went through but before its activity reported back.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import Database, ZhipingActivities
from activities.coordination import CoordinationActivities
from activities.notifications import NullChannel
from models.clock import CycleClock
from models.commands import (
    ApplicationStatus,
    DeadlineChange,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    Withdrawal,
    application_workflow_id,
)
from models.errors import DomainError
from models.extension_commands import (
    ApplyDeadlineChange,
    DeadlineChangeResult,
    ExtendDeadlines,
    ExtensionProgress,
    ExtensionReport,
    deadline_change_update_id,
    deadline_extension_workflow_id,
)
from models.identity import person_key
from models.lifecycle import State
from models.policy import CHINA_TZ, CyclePolicy, Level, load_policy
from tests.conftest import describe_raw
from worker import build_worker
from workflows import ApplicationWorkflow, DeadlineExtensionWorkflow
from zhiping import service
from zhiping.samples import complete_dossier

SECRET = b"extension-test-secret-0123456789"
CUTOFF = datetime(2024, 9, 6, 18, tzinfo=CHINA_TZ)
FEE_DEADLINE = datetime(2024, 9, 20, tzinfo=CHINA_TZ)
REASON = "系统维护，延长申报与缴费截止时间"

AppHandle = WorkflowHandle[ApplicationWorkflow, ApplicationStatus]


class Cycle:
    """A fresh cycle id per test, its applications, and the task queue their worker polls."""

    def __init__(self, client: Client, db: Database) -> None:
        self.client, self.db = client, db
        self.policy: CyclePolicy = load_policy("2024-aksu-party-school").model_copy(
            update={"cycle_id": f"x{uuid.uuid4().hex[:12]}-2024"}
        )
        self.task_queue = f"extension-{uuid.uuid4()}"
        self.clock = CycleClock.rehearse(
            datetime(2024, 8, 20, 9, tzinfo=CHINA_TZ), datetime.now(UTC)
        )
        self.handles: dict[str, AppHandle] = {}

    @property
    def cycle_id(self) -> str:
        return self.policy.cycle_id

    def worker(self, **options: Any) -> Worker:
        """A worker for the cycle's task queue. One that stops mid-test should not cache
        workflows: its sticky queue would hold the next task until the sticky timeout."""
        return build_worker(
            self.client, ZhipingActivities(self.db, NullChannel()), self.task_queue, **options
        )

    async def start(self, application_id: str, stage: State = State.draft) -> AppHandle:
        """A new application, driven to ``draft``, ``under_review`` or ``fee_due``."""
        level = Level.intermediate
        handle = await self.client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=application_id,
                level=level,
                policy=self.policy,
                person_key=person_key(f"6530011980010{len(self.handles):04d}1", SECRET),
                clock=self.clock,
            ),
            id=application_workflow_id(self.cycle_id, application_id),
            task_queue=self.task_queue,
        )
        self.handles[application_id] = handle
        if stage in {State.under_review, State.fee_due}:
            await handle.execute_update(
                ApplicationWorkflow.submit,
                SubmitInput(dossier=complete_dossier(self.policy, level)),
            )
        if stage is State.fee_due:
            await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
        status = await handle.query(ApplicationWorkflow.status)
        assert status.state is stage
        return handle

    async def end(self, application_id: str) -> None:
        """Withdraw an application and wait until its workflow has completed."""
        handle = self.handles[application_id]
        await handle.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
        await handle.result()

    async def visible(self, running: int) -> None:
        """Wait until visibility lists ``running`` running applications of the cycle."""
        query = (
            f"WorkflowType = 'ApplicationWorkflow' AND Cycle = '{self.cycle_id}'"
            " AND ExecutionStatus = 'Running'"
        )
        for _ in range(200):
            if len([e async for e in self.client.list_workflows(query)]) == running:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"visibility never showed {running} running applications")

    async def settled(self) -> None:
        """Wait until no application has a workflow task or an activity under way.

        Before stopping a worker: a workflow task lost with it would only be retried after
        its 10 s timeout, which slows the test down but proves nothing more.
        """
        for _ in range(200):
            busy = [
                d
                for d in [await describe_raw(h) for h in self.handles.values()]
                if d.pending_activities or d.HasField("pending_workflow_task")
            ]
            if not busy:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the applications never settled: {busy}")

    async def changes(self, application_id: str) -> int:
        """How many ``change_deadlines`` entries the application's history holds."""
        status = await self.handles[application_id].query(ApplicationWorkflow.status)
        return sum(entry.trigger == "change_deadlines" for entry in status.history)

    async def accepted_changes(self, application_id: str) -> int:
        """``change_deadlines`` updates accepted, read from history (needs no worker)."""
        events = self.handles[application_id].fetch_history_events()
        return len(
            [
                e
                async for e in events
                if e.HasField("workflow_execution_update_accepted_event_attributes")
                and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
                == "change_deadlines"
            ]
        )

    async def runs(self, workflow_id: str) -> int:
        """How many runs (continue-as-new included) visibility knows under ``workflow_id``."""
        return len([e async for e in self.client.list_workflows(f"WorkflowId = '{workflow_id}'")])


@pytest_asyncio.fixture(loop_scope="session")
async def cycle(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Cycle]:
    # The extension never reads the read model: one SQLite file is enough for the workers.
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path}/zhiping.db")
    await db.create_schema()
    try:
        yield Cycle(dev_env.client, db)
    finally:
        await db.dispose()


def extension(
    submission_cutoff: datetime | None = None, fee_deadline: datetime | None = None
) -> DeadlineChange:
    return DeadlineChange(
        submission_cutoff=submission_cutoff, fee_deadline=fee_deadline, reason=REASON
    )


async def test_change_reaches_each_running_application_once(cycle: Cycle) -> None:
    change = extension(submission_cutoff=CUTOFF, fee_deadline=FEE_DEADLINE)
    workflow_id = deadline_extension_workflow_id(cycle.cycle_id, change)
    stages = [State.draft, State.draft, State.under_review, State.under_review, State.fee_due]
    running = [f"A{n}" for n in range(1, len(stages) + 1)]
    async with cycle.worker():
        for application_id, stage in zip(running, stages, strict=True):
            await cycle.start(application_id, stage)
        await cycle.start("W1")
        await cycle.end("W1")  # finished before the extension: not touched
        await cycle.visible(running=len(running))

        changed = await service.extend_cycle_deadlines(
            cycle.client, cycle.db, cycle.cycle_id, change, batch_size=2
        )
        assert changed == running
        assert await cycle.runs(workflow_id) == 3  # 2 + 2 + 1 applications: continued as new
        for application_id in running:
            assert await cycle.changes(application_id) == 1, application_id
        assert await cycle.changes("W1") == 0
        draft = await cycle.handles["A1"].query(ApplicationWorkflow.status)
        assert [d.at for d in draft.deadlines] == [CUTOFF]
        unpaid = await cycle.handles["A5"].query(ApplicationWorkflow.status)
        assert [d.at for d in unpaid.deadlines] == [FEE_DEADLINE]

        # The same change again: the completed run answers, nothing is sent twice.
        again = await service.extend_cycle_deadlines(
            cycle.client, cycle.db, cycle.cycle_id, change, batch_size=2
        )
        assert again == changed
        assert await cycle.runs(workflow_id) == 3
        for application_id in running:
            assert await cycle.changes(application_id) == 1, application_id

        # An application found running that ends before its turn is skipped, not refused.
        later = extension(fee_deadline=FEE_DEADLINE + timedelta(days=1))
        await cycle.end("A1")
        report = await cycle.client.execute_workflow(
            DeadlineExtensionWorkflow.run,
            ExtendDeadlines(
                cycle_id=cycle.cycle_id,
                change=later,
                update_id=deadline_change_update_id(later),
                carried=ExtensionProgress(pending=["A1", "A2"]),
            ),
            id=deadline_extension_workflow_id(cycle.cycle_id, later),
            task_queue=cycle.task_queue,
        )
        assert (report.changed, report.skipped, report.refused) == (["A2"], ["A1"], [])
        assert report.remaining == 0


async def test_extension_survives_the_caller_and_a_lost_worker(
    cycle: Cycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller dies right after starting and asks again; a worker dies after an update
    went through but before its activity reported; another worker finishes: each
    application is changed once, and both calls get the one run's answer."""
    running = [f"A{n}" for n in range(1, 6)]
    async with cycle.worker(max_cached_workflows=0):
        for application_id in running:
            await cycle.start(application_id)
        await cycle.visible(running=len(running))
        await cycle.settled()

    # No worker runs: the caller starts the workflow and dies waiting for its result.
    change = extension(submission_cutoff=CUTOFF)
    workflow_id = deadline_extension_workflow_id(cycle.cycle_id, change)
    caller = asyncio.create_task(
        service.extend_cycle_deadlines(cycle.client, cycle.db, cycle.cycle_id, change, batch_size=2)
    )
    handle = cycle.client.get_workflow_handle_for(DeadlineExtensionWorkflow.run, workflow_id)
    for _ in range(200):
        with contextlib.suppress(RPCError):
            await handle.describe()
            break
        await asyncio.sleep(0.05)
    caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await caller
    # The caller comes back and asks again: it attaches to the run under way.
    rerun = asyncio.create_task(
        service.extend_cycle_deadlines(cycle.client, cycle.db, cycle.cycle_id, change)
    )

    # A worker takes it up and is lost mid-way: its third update goes through, then it hangs.
    calls = 0
    lost = asyncio.Event()

    class LostMidWay(CoordinationActivities):
        @activity.defn(name="apply_deadline_change")
        async def apply_deadline_change(self, apply: ApplyDeadlineChange) -> DeadlineChangeResult:
            nonlocal calls
            calls += 1
            if calls <= 2:
                return await super().apply_deadline_change(apply)
            if calls == 3:  # goes through, but is never reported
                await super().apply_deadline_change(apply)
                lost.set()
            await asyncio.Event().wait()  # until the worker goes away
            raise AssertionError("unreachable")

    with monkeypatch.context() as patch:
        patch.setattr("worker.CoordinationActivities", LostMidWay)
        async with cycle.worker(max_cached_workflows=0):
            await asyncio.wait_for(lost.wait(), timeout=10)
            progress = await handle.query(DeadlineExtensionWorkflow.progress)
            assert len(progress.changed) == 2 and progress.remaining == 3
            await cycle.settled()
    assert sorted([await cycle.accepted_changes(a) for a in running]) == [0, 0, 1, 1, 1]
    assert not rerun.done()  # still waiting for the one run

    # Another worker finishes the job: the update that went through is not applied again.
    async with cycle.worker():
        report: ExtensionReport = await asyncio.wait_for(handle.result(), timeout=20)
        assert (report.changed, report.skipped, report.refused) == (running, [], [])
        for application_id in running:
            assert await cycle.changes(application_id) == 1, application_id
        assert await asyncio.wait_for(rerun, timeout=10) == running
        assert await cycle.runs(workflow_id) == 3  # 2 + (2 lost, then done) + 1: one chain


async def test_a_shortening_is_refused_before_anything_starts(cycle: Cycle) -> None:
    async with cycle.worker():
        for application_id in ("A1", "A2"):
            await cycle.start(application_id)
        await cycle.visible(running=2)
        published = cycle.policy.deadlines.submission_cutoff
        refusals = {
            "DEADLINE_NOT_EXTENDED": extension(submission_cutoff=published - timedelta(hours=1)),
            "NO_DEADLINE_CHANGE": extension(),
            "DEADLINES_INCONSISTENT": extension(submission_cutoff=FEE_DEADLINE),
        }
        for code, change in refusals.items():
            with pytest.raises(DomainError) as info:
                await service.extend_cycle_deadlines(cycle.client, cycle.db, cycle.cycle_id, change)
            assert info.value.code == code and info.value.message
            workflow_id = deadline_extension_workflow_id(cycle.cycle_id, change)
            with pytest.raises(RPCError) as missing:
                await cycle.client.get_workflow_handle(workflow_id).describe()
            assert missing.value.status is RPCStatusCode.NOT_FOUND
        for application_id in ("A1", "A2"):
            assert await cycle.changes(application_id) == 0
            status = await cycle.handles[application_id].query(ApplicationWorkflow.status)
            assert [d.at for d in status.deadlines] == [published]
        # A cycle with no running application has nothing to change.
        nobody = extension(submission_cutoff=CUTOFF)
        assert (
            await service.extend_cycle_deadlines(cycle.client, cycle.db, "x-nobody", nobody) == []
        )

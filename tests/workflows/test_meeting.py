"""MeetingWorkflow on the real dev server (enrolment goes through visibility).

The applications are driven to ``awaiting_meeting`` on a cycle clock anchored before the
cutoff; the meeting then enrols them, takes attendance and ballots, applies the 2/3 rule
and the deputy-senior cap, and delivers every result exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import Database, ZhipingActivities
from activities.notifications import NullChannel
from models.clock import CycleClock
from models.commands import (
    ApplicationStatus,
    DefenseExemption,
    PaymentInput,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    Withdrawal,
    application_workflow_id,
)
from models.identity import person_key
from models.lifecycle import State
from models.meeting_commands import (
    Attendance,
    Ballot,
    CloseMeeting,
    MeetingRun,
    MeetingView,
    OpenMeeting,
    meeting_workflow_id,
)
from models.policy import CHINA_TZ, CyclePolicy, Level, load_policy
from worker import build_worker
from workflows import ApplicationWorkflow, MeetingWorkflow
from zhiping.samples import complete_dossier

REPO = Path(__file__).resolve().parents[2]
SECRET = b"meeting-test-secret-0123456789"
EXPERTS = [f"E{n:02d}" for n in range(1, 12)]  # a committee of 11


class Cycle:
    """One cycle (a fresh cycle id per test) with its applications and a worker."""

    def __init__(self, env: WorkflowEnvironment, worker: Worker | _QueueOnly) -> None:
        base = load_policy("2024-aksu-party-school")
        self.policy: CyclePolicy = base.model_copy(
            update={"cycle_id": f"t{uuid.uuid4().hex[:12]}-2024"}
        )
        self.env, self.worker = env, worker
        self.clock = CycleClock.rehearse(
            datetime(2024, 8, 20, 9, tzinfo=CHINA_TZ), datetime.now(UTC)
        )
        self.id_numbers: list[str] = []

    def client_handle(
        self, workflow_id: str
    ) -> WorkflowHandle[ApplicationWorkflow, ApplicationStatus]:
        return self.env.client.get_workflow_handle_for(ApplicationWorkflow.run, workflow_id)

    async def waiting(self, level: Level) -> WorkflowHandle[ApplicationWorkflow, ApplicationStatus]:
        """A new application driven to ``awaiting_meeting``."""
        number = len(self.id_numbers) + 1
        id_number = f"6530011980010{number:04d}1"
        self.id_numbers.append(id_number)
        application_id = f"A{number:03d}"
        handle = await self.env.client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=application_id,
                level=level,
                policy=self.policy,
                person_key=person_key(id_number, SECRET),
                clock=self.clock,
            ),
            id=application_workflow_id(self.policy.cycle_id, application_id),
            task_queue=self.worker.task_queue,
        )
        await handle.execute_update(
            ApplicationWorkflow.submit, SubmitInput(dossier=complete_dossier(self.policy, level))
        )
        await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
        if self.policy.defense_required(level):
            await handle.execute_update(
                ApplicationWorkflow.exempt_from_defense, DefenseExemption(reason="免答辩条款")
            )
        status = await handle.execute_update(
            ApplicationWorkflow.record_payment,
            PaymentInput(transaction_id=f"T{number}", amount=Decimal(self.policy.fee_for(level))),
        )
        assert status.state is State.awaiting_meeting
        return handle

    async def open_meeting(
        self, expected: int, batch: int = 100
    ) -> WorkflowHandle[MeetingWorkflow, MeetingView]:
        """Open the meeting once visibility shows ``expected`` waiting applications."""
        query = f"Cycle='{self.policy.cycle_id}' AND Stage='awaiting_meeting'"
        for _ in range(100):
            if len([w async for w in self.env.client.list_workflows(query)]) == expected:
                break
            await asyncio.sleep(0.1)
        handle = await self.env.client.start_workflow(
            MeetingWorkflow.run,
            MeetingRun(
                meeting=OpenMeeting(
                    meeting_id="M1",
                    policy=self.policy,
                    held_at=datetime(2024, 9, 27, 9, tzinfo=CHINA_TZ),
                    committee_size=len(EXPERTS),
                    clock=self.clock,
                    delivery_batch=batch,
                )
            ),
            id=meeting_workflow_id(self.policy.cycle_id, "M1"),
            task_queue=self.worker.task_queue,
        )
        for _ in range(200):
            view = await handle.query(MeetingWorkflow.view)
            if view.candidates:
                return handle
            await asyncio.sleep(0.05)
        raise AssertionError("nobody was enrolled")


@pytest_asyncio.fixture(loop_scope="session")
async def cycle(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Cycle]:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path}/zhiping.db")
    await db.create_schema()
    activities = ZhipingActivities(db, NullChannel())
    async with build_worker(dev_env.client, activities, f"meeting-{uuid.uuid4()}") as worker:
        yield Cycle(dev_env, worker)
    await db.dispose()


async def vote(
    meeting: WorkflowHandle[MeetingWorkflow, MeetingView], present: int, yes: dict[str, int]
) -> None:
    """``present`` experts attend; candidate ``code`` gets ``yes[code]`` yes votes."""
    experts = EXPERTS[:present]
    await meeting.execute_update(
        MeetingWorkflow.record_attendance, Attendance(experts_present=experts)
    )
    for index, expert in enumerate(experts):
        votes = {code: index < count for code, count in yes.items()}
        await meeting.execute_update(
            MeetingWorkflow.record_ballot, Ballot(expert_id=expert, votes=votes)
        )


async def refused(code: str, call: object) -> None:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await call  # type: ignore[misc]
    assert getattr(info.value.cause, "type", None) == code, info.value.cause


async def test_meeting_caps_deputy_senior_and_tells_every_application_once(cycle: Cycle) -> None:
    deputies = [await cycle.waiting(Level.deputy_senior) for _ in range(7)]
    middles = [await cycle.waiting(Level.intermediate) for _ in range(2)]
    withdrawn = await cycle.waiting(Level.deputy_senior)
    await withdrawn.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
    meeting = await cycle.open_meeting(expected=9)
    view = await meeting.query(MeetingWorkflow.view)
    assert len(view.candidates) == 9  # the withdrawn application is not enrolled
    assert view.rules.caps == {"deputy_senior": 5} and view.rules.quorum_required == 8

    by_level: dict[Level, list[str]] = {}
    for candidate in view.candidates:
        by_level.setdefault(candidate.level, []).append(candidate.code)
    deputy_votes = dict(zip(by_level[Level.deputy_senior], [9, 7, 8, 6, 9, 8, 6], strict=True))
    middle_votes = dict(zip(by_level[Level.intermediate], [6, 5], strict=True))
    await vote(meeting, 9, {**deputy_votes, **middle_votes})
    closed = await meeting.execute_update(MeetingWorkflow.close, CloseMeeting())
    passed = {t.code for t in closed.tallies if t.passed}
    assert passed & set(deputy_votes) == {c for c, v in deputy_votes.items() if v >= 7}
    assert passed & set(middle_votes) == {c for c, v in middle_votes.items() if v == 6}

    final = await meeting.result()
    assert final.results_delivered == 9
    states = []
    for handle in [*deputies, *middles]:
        status = await handle.query(ApplicationWorkflow.status)
        told = [e for e in status.history if e.trigger == "record_meeting_result"]
        assert len(told) == 1, handle.id
        states.append(status.state)
    assert states.count(State.publicity) == 6 and states.count(State.not_approved) == 3

    # Blind: nothing the committee sees names an application or a person.
    payloads = [view.model_dump_json(), closed.model_dump_json(), final.model_dump_json()]
    identities = [h.id for h in [*deputies, *middles, withdrawn]]
    identities += [h.id.rsplit(":", 1)[1] for h in [*deputies, *middles, withdrawn]]
    identities += cycle.id_numbers + [person_key(n, SECRET) for n in cycle.id_numbers]
    for payload in payloads:
        assert not [i for i in identities if i in payload]


async def test_without_quorum_the_meeting_cannot_vote(cycle: Cycle) -> None:
    await cycle.waiting(Level.intermediate)
    meeting = await cycle.open_meeting(expected=1)
    code = (await meeting.query(MeetingWorkflow.view)).candidates[0].code
    await meeting.execute_update(
        MeetingWorkflow.record_attendance, Attendance(experts_present=EXPERTS[:7])
    )
    await refused(
        "QUORUM_NOT_MET",
        meeting.execute_update(
            MeetingWorkflow.record_ballot, Ballot(expert_id="E01", votes={code: True})
        ),
    )
    await refused("QUORUM_NOT_MET", meeting.execute_update(MeetingWorkflow.close, CloseMeeting()))
    await meeting.terminate("test finished")


async def test_tie_on_the_cap_line_blocks_closing_until_revoted(cycle: Cycle) -> None:
    for _ in range(7):
        await cycle.waiting(Level.deputy_senior)
    meeting = await cycle.open_meeting(expected=7)
    codes = [c.code for c in (await meeting.query(MeetingWorkflow.view)).candidates]
    votes = dict(zip(codes, [9, 9, 8, 8, 7, 7, 6], strict=True))
    await vote(meeting, 9, votes)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await meeting.execute_update(MeetingWorkflow.close, CloseMeeting())
    assert getattr(info.value.cause, "type", None) == "TIE_AT_CAP_LINE"
    assert codes[4] in str(info.value.cause) and codes[5] in str(info.value.cause)
    # One expert changes their vote on one of the tied candidates: the tie is broken.
    await meeting.execute_update(
        MeetingWorkflow.record_ballot, Ballot(expert_id="E01", votes={codes[5]: False})
    )
    closed = await meeting.execute_update(MeetingWorkflow.close, CloseMeeting())
    assert [t.code for t in closed.tallies if t.passed] == codes[:5]
    await meeting.result()


async def test_results_are_delivered_across_continue_as_new(cycle: Cycle) -> None:
    handles = [await cycle.waiting(Level.junior) for _ in range(5)]
    meeting = await cycle.open_meeting(expected=5, batch=2)
    codes = [c.code for c in (await meeting.query(MeetingWorkflow.view)).candidates]
    await vote(meeting, 9, dict.fromkeys(codes, 9))
    await meeting.execute_update(MeetingWorkflow.close, CloseMeeting())
    final = await meeting.result()  # follows the continue-as-new chain
    assert final.results_delivered == 5
    runs = 0
    async for execution in cycle.env.client.list_workflows(f"WorkflowId='{meeting.id}'"):
        runs += 1
        assert execution.id == meeting.id
    assert runs == 3  # 2 + 2 + 1 results
    for handle in handles:
        status = await handle.query(ApplicationWorkflow.status)
        assert status.state is State.publicity
        assert sum(e.trigger == "record_meeting_result" for e in status.history) == 1


async def test_fan_out_survives_a_worker_killed_mid_way(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """kill -9 the worker while results go out; another worker finishes, each told once."""
    task_queue = f"kill-{uuid.uuid4()}"
    environment = {
        **os.environ,
        "ZHIPING_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "ZHIPING_TASK_QUEUE": task_queue,
        "ZHIPING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/zhiping.db",
        "ZHIPING_NOTIFICATION_CHANNEL": "none",
    }

    def start_worker() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"],
            cwd=REPO,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    first = start_worker()
    second: subprocess.Popen[bytes] | None = None
    try:
        cycle = Cycle(dev_env, _QueueOnly(task_queue))
        handles = [await cycle.waiting(Level.junior) for _ in range(24)]
        meeting = await cycle.open_meeting(expected=24)
        codes = [c.code for c in (await meeting.query(MeetingWorkflow.view)).candidates]
        await vote(meeting, 9, dict.fromkeys(codes, 9))
        await meeting.execute_update(MeetingWorkflow.close, CloseMeeting())
        delivered_at_kill = 0
        for _ in range(2000):
            delivered_at_kill = (await meeting.query(MeetingWorkflow.view)).results_delivered
            if delivered_at_kill >= 2:
                break
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert 2 <= delivered_at_kill < 24, delivered_at_kill
        second = start_worker()
        final = await asyncio.wait_for(meeting.result(), timeout=120)
        assert final.results_delivered == 24
        for handle in handles:
            status = await handle.query(ApplicationWorkflow.status)
            assert status.state is State.publicity, handle.id
            assert sum(e.trigger == "record_meeting_result" for e in status.history) == 1
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


class _QueueOnly:
    """Stands in for a Worker where only the task queue name is needed (workers run apart)."""

    def __init__(self, task_queue: str) -> None:
        self.task_queue = task_queue

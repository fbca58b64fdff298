"""Side effects survive activity retries: one read-model row, log row and message each.

Every activity here fails its first attempt, either after the real work committed (the
retry must find the rows and change nothing) or before doing anything (the retry does the
work). An application then goes through a full cycle with reminders, and the SQL tables
must hold exactly what the workflow's own history says, once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

import pytest
from sqlalchemy import func, select
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import Database, ZhipingActivities
from activities.webhooks import WebhookActivities
from models.commands import (
    ApplicationStatus,
    MeetingEnrolment,
    MeetingResult,
    PaymentInput,
    ReviewDecision,
    SubmitInput,
)
from models.lifecycle import State
from models.policy import CHINA_TZ, CyclePolicy, Level
from models.records import BanQuery, BanRecord, BanStatus, Notification, TransitionRecord
from models.tables import Application, NotificationOutbox, TransitionLog
from tests.conftest import Harness
from workflows import ApplicationWorkflow
from zhiping.samples import complete_dossier

T = TypeVar("T")
FailMode = Literal["after", "before"]

SCENARIO_TIMEOUT_S = 120
"""Generous: the scenario takes about a second on the time-skipping server."""


def at(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=CHINA_TZ)


class InjectedFailure(RuntimeError):
    """Raised by the wrapper on an activity's first attempt; Temporal retries it."""


class RecordingChannel:
    """A DeliveryChannel that remembers every message it was handed."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    async def deliver(self, row: NotificationOutbox) -> None:
        self.delivered.append(row.key)


class FlakyActivities:
    """The real activities under their registered names, each failing on attempt 1.

    ``fail="after"``: the real work runs and commits, then the attempt raises, so the retry
    meets rows that already exist. ``fail="before"``: the attempt raises before any work.
    """

    def __init__(self, db: Database, real: ZhipingActivities, fail: FailMode) -> None:
        self._db = db
        self._real = real
        self._fail = fail
        self.attempts: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
        """(activity, idempotency key) → the attempt numbers seen."""
        self.found_done_on_retry: list[bool] = []
        """For each retry of a write: whether its row was already there when it started."""
        self.failed_retries: list[str] = []
        """Retries that raised: a non-idempotent activity. Each ends the workflow at once."""

    def all(self) -> list[Callable[..., Any]]:
        return [self.record_transition, self.send_notification, self.check_ban, self.record_ban]

    async def _run(
        self,
        key: str,
        work: Callable[[], Awaitable[T]],
        already_done: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        info = activity.info()
        self.attempts[(info.activity_type, key)].append(info.attempt)
        if info.attempt > 1 and already_done is not None:
            self.found_done_on_retry.append(await already_done())
        if info.attempt == 1 and self._fail == "before":
            raise InjectedFailure(f"{info.activity_type} {key}: failing before the work")
        try:
            result = await work()
        except Exception as exc:
            if info.attempt == 1:
                raise
            # Without a cap the workflow would retry forever; fail it with the reason.
            self.failed_retries.append(
                f"{info.activity_type} {key} attempt {info.attempt}: {exc!r}"
            )
            raise ApplicationError(f"retry failed: {exc!r}", non_retryable=True) from exc
        if info.attempt == 1 and self._fail == "after":
            raise InjectedFailure(f"{info.activity_type} {key}: failing after the commit")
        return result

    async def _exists(self, statement: Any) -> bool:
        async with self._db.sessions() as session:
            return bool(await session.scalar(statement))

    @activity.defn(name="record_transition")
    async def record_transition(self, record: TransitionRecord) -> None:
        logged = (
            select(func.count())
            .select_from(TransitionLog)
            .where(
                TransitionLog.application_id == record.application_id,
                TransitionLog.seq == record.seq,
            )
        )
        await self._run(
            f"{record.application_id}:{record.seq}",
            lambda: self._real.record_transition(record),
            lambda: self._exists(logged),
        )

    @activity.defn(name="send_notification")
    async def send_notification(self, n: Notification) -> None:
        delivered = select(func.count()).where(
            NotificationOutbox.key == n.key, NotificationOutbox.delivered_at.is_not(None)
        )
        await self._run(
            n.key, lambda: self._real.send_notification(n), lambda: self._exists(delivered)
        )

    @activity.defn(name="check_ban")
    async def check_ban(self, q: BanQuery) -> BanStatus:
        return await self._run(f"{q.person_key}:{q.cycle_year}", lambda: self._real.check_ban(q))

    @activity.defn(name="record_ban")
    async def record_ban(self, b: BanRecord) -> None:
        await self._run(f"{b.person_key}:{b.application_id}", lambda: self._real.record_ban(b))


async def full_cycle(h: Harness) -> ApplicationStatus:
    """Draft with two cutoff reminders, a return and resubmission, fee with two reminders,
    payment, meeting, publicity, approved by the publicity timer."""
    await h.anchor(at(2024, 8, 26, 9, 0, 0))
    handle = await h.start(level=Level.intermediate)
    dossier = SubmitInput(dossier=complete_dossier(h.policy, Level.intermediate))
    await h.sleep_until(at(2024, 8, 30, 9, 0, 0))  # reminders 2024-08-27 18:00, 08-29 18:00
    await handle.execute_update(ApplicationWorkflow.submit, dossier)
    await handle.execute_update(
        ApplicationWorkflow.return_for_revision, ReviewDecision(reason="请补充继续教育证书")
    )
    assert (await handle.execute_update(ApplicationWorkflow.submit, dossier)).submission_round == 2
    status = await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
    assert status.state is State.fee_due
    await h.sleep_until(at(2024, 9, 15, 12, 0, 0))  # reminders 2024-09-13 00:00, 09-15 00:00
    status = await handle.execute_update(
        ApplicationWorkflow.record_payment,
        PaymentInput(transaction_id="QR-1", amount=Decimal("400")),
    )
    assert status.state is State.awaiting_meeting
    await handle.execute_update(
        ApplicationWorkflow.enter_meeting, MeetingEnrolment(meeting_id="M1")
    )
    await h.sleep_until(at(2024, 9, 27, 10, 0, 0))
    status = await handle.execute_update(
        ApplicationWorkflow.record_meeting_result, MeetingResult(meeting_id="M1", passed=True)
    )
    assert status.state is State.publicity
    await h.sleep_until(at(2024, 10, 11, 0, 0, 1))
    return await handle.result()


@pytest.mark.parametrize("fail", ["after", "before"])
async def test_retried_effects_leave_exactly_one_row_each(
    env: WorkflowEnvironment, db: Database, policy: CyclePolicy, fail: FailMode
) -> None:
    channel = RecordingChannel()
    flaky = FlakyActivities(db, ZhipingActivities(db, channel), fail)
    worker = Worker(
        env.client,
        task_queue=f"test-effects-{uuid.uuid4()}",
        workflows=[ApplicationWorkflow],
        activities=[*flaky.all(), *WebhookActivities(db).all()],
    )
    async with worker:
        harness = Harness(env, worker, policy)
        try:
            async with asyncio.timeout(SCENARIO_TIMEOUT_S):
                result = await full_cycle(harness)
        except Exception:
            if flaky.failed_retries:
                pytest.fail(f"retried activities were not idempotent: {flaky.failed_retries}")
            raise
        finally:
            await harness.close()

    assert result.state is State.approved
    assert result.history[-1].trigger == "end_publicity"
    app_id = result.application_id

    # Every activity really was retried: each invocation failed once, then succeeded.
    assert flaky.attempts, "no activity ran through the wrapper"
    assert {tuple(seen) for seen in flaky.attempts.values()} == {(1, 2)}, dict(flaky.attempts)
    sent_keys = {key for (name, key) in flaky.attempts if name == "send_notification"}
    recorded_seqs = {key for (name, key) in flaky.attempts if name == "record_transition"}
    assert recorded_seqs == {f"{app_id}:{entry.seq}" for entry in result.history}
    # The retry met the first attempt's rows ("after") or none ("before").
    assert len(flaky.found_done_on_retry) == len(sent_keys) + len(recorded_seqs)
    assert set(flaky.found_done_on_retry) == {fail == "after"}

    async with db.sessions() as session:
        log = (
            await session.execute(
                select(
                    TransitionLog.seq,
                    TransitionLog.trigger,
                    TransitionLog.source,
                    TransitionLog.dest,
                )
                .where(TransitionLog.application_id == app_id)
                .order_by(TransitionLog.seq, TransitionLog.id)
            )
        ).all()
        log_rows = await session.scalar(select(func.count()).select_from(TransitionLog))
        applications = (await session.scalars(select(Application))).all()
        outbox = (await session.scalars(select(NotificationOutbox))).all()

    # Audit log: the workflow's history, entry for entry, nothing twice.
    expected_log = [(e.seq, e.trigger, e.source.value, e.dest.value) for e in result.history]
    assert [tuple(row) for row in log] == expected_log
    assert log_rows == len(expected_log)

    # Read model: one row, at the final state and the last seq.
    assert len(applications) == 1
    (row,) = applications
    assert row.application_id == app_id
    assert row.state == State.approved.value
    assert row.last_seq == result.history[-1].seq
    assert row.submission_round == 2 and row.fee_paid
    assert row.next_deadline_at is None

    # Outbox: one row per key the workflow sent, each delivered exactly once.
    keys = [message.key for message in outbox]
    assert len(keys) == len(set(keys))
    assert set(keys) == sent_keys
    assert all(message.application_id == app_id for message in outbox)
    assert all(message.delivered_at is not None for message in outbox)
    assert all(message.attempts == 1 for message in outbox), [(m.key, m.attempts) for m in outbox]
    assert Counter(channel.delivered) == Counter(keys)
    state_changes = [e for e in result.history if e.source != e.dest or e.trigger == "create"]
    assert sorted(m.key for m in outbox if m.template.startswith("state.")) == sorted(
        f"{row.workflow_id}:transition:{e.seq}" for e in state_changes
    )
    reminders = Counter(m.template for m in outbox if m.template.startswith("reminder."))
    assert reminders == {"reminder.submission_cutoff": 2, "reminder.fee_deadline": 2}

"""Several worker processes on one task queue, as docker-compose runs them.

Two ``python -m worker`` processes share the work of many applications; one is killed
with ``kill -9`` half-way, and the other finishes every application with no transition,
notification or outbound event lost or doubled. SIGTERM drains a worker: the activity it
is running completes before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities import Database
from models.clock import CycleClock
from models.commands import (
    PaymentInput,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    application_workflow_id,
)
from models.identity import person_key
from models.lifecycle import State
from models.policy import CHINA_TZ, Level, load_policy
from models.tables import Application, NotificationOutbox, TransitionLog, WebhookDelivery
from models.webhooks import SubscribeInput
from tests.test_webhooks import Receiver, eventually, running
from workflows import ApplicationWorkflow
from zhiping import subscriptions
from zhiping.samples import complete_dossier

REPO = Path(__file__).resolve().parents[1]
SECRET = "workers-webhook-secret-0123"
APPLICATIONS = 16
TRIGGERS = ["create", "submit", "accept", "open_fee", "record_payment", "route_after_payment"]


@contextmanager
def workers(
    env: WorkflowEnvironment, db: Database, queue: str, count: int
) -> Iterator[list[subprocess.Popen[bytes]]]:
    environment = {
        **os.environ,
        "ZHIPING_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "ZHIPING_DATABASE_URL": db.url,
        "ZHIPING_TASK_QUEUE": queue,
        "ZHIPING_NOTIFICATION_CHANNEL": "log",
        "ZHIPING_WORKER_SHUTDOWN_GRACE_SECONDS": "20",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "worker"],
            cwd=REPO,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


async def activity_identities(client: Client, workflow_id: str) -> set[str]:
    """The identities of the workers that started this workflow's activities."""
    identities = set()
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            identities.add(event.activity_task_started_event_attributes.identity)
    return identities


@pytest.mark.databases("postgresql")
async def test_a_killed_worker_loses_and_doubles_nothing(
    dev_env: WorkflowEnvironment, db: Database
) -> None:
    client, queue = dev_env.client, f"workers-{uuid.uuid4()}"
    policy = load_policy("2024-aksu-party-school").model_copy(
        update={"cycle_id": f"k{uuid.uuid4().hex[:8]}-2024"}
    )
    clock = CycleClock.rehearse(datetime(2024, 8, 26, 9, tzinfo=CHINA_TZ), datetime.now(UTC))
    receiver = Receiver(SECRET)
    with running(receiver), workers(dev_env, db, queue, 2) as (first, second):
        await subscriptions.subscribe(
            client, queue, SubscribeInput(subscription_id="feed", url=receiver.url, secret=SECRET)
        )

        async def drive(number: int) -> None:
            application_id = f"K{number:02d}"
            handle = await client.start_workflow(
                ApplicationWorkflow.run,
                StartApplication(
                    application_id=application_id,
                    level=Level.intermediate,
                    policy=policy,
                    person_key=person_key(f"6530011980010{number:04d}1", b"k" * 16),
                    clock=clock,
                ),
                id=application_workflow_id(policy.cycle_id, application_id),
                task_queue=queue,
            )
            dossier = complete_dossier(policy, Level.intermediate)
            await handle.execute_update(ApplicationWorkflow.submit, SubmitInput(dossier=dossier))
            await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
            status = await handle.execute_update(
                ApplicationWorkflow.record_payment,
                PaymentInput(transaction_id=f"T{number}", amount=Decimal("400.00")),
            )
            assert status.state is State.awaiting_meeting

        driving = asyncio.gather(*(drive(n) for n in range(1, APPLICATIONS + 1)))
        # Kill the first worker once the work is well under way (a quarter of the events
        # out) and both workers have taken some, in the middle of whatever it is doing.
        await eventually(lambda: len(receiver.received) >= APPLICATIONS * 6 // 4, "progress")
        pids = {str(first.pid), str(second.pid)}
        for _ in range(100):
            seen: set[str] = set()
            for n in range(1, APPLICATIONS + 1):
                with contextlib.suppress(RPCError):  # not started yet
                    seen |= await activity_identities(
                        client, application_workflow_id(policy.cycle_id, f"K{n:02d}")
                    )
            if pids <= {identity.split("@")[0] for identity in seen}:
                break
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = len(receiver.received)
        await asyncio.wait_for(driving, timeout=150)
        expected = {
            f"{application_workflow_id(policy.cycle_id, f'K{n:02d}')}:{seq}"
            for n in range(1, APPLICATIONS + 1)
            for seq in range(1, len(TRIGGERS) + 1)
        }
        await eventually(
            lambda: {r.body["id"] for r in receiver.received} >= expected, "every event", 120
        )
        # A POST the killed worker made may have arrived without being acknowledged to
        # Temporal: its retry (after the activity's timeout) sends it again.
        for _ in range(1200):
            async with db.sessions() as session:
                delivered = await session.scalar(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(WebhookDelivery.status == "delivered")
                )
            if delivered == len(expected):
                break
            await asyncio.sleep(0.1)
        assert second.poll() is None, "the surviving worker died"

    assert killed_at < len(expected), "the kill came after all the work was done"
    # Both workers really took work.
    identities: set[str] = set()
    for n in range(1, APPLICATIONS + 1):
        identities |= await activity_identities(
            client, application_workflow_id(policy.cycle_id, f"K{n:02d}")
        )
    assert {identity.split("@")[0] for identity in identities} >= pids

    async with db.sessions() as session:
        log = Counter(
            (row.application_id, row.seq, row.trigger)
            for row in (await session.scalars(select(TransitionLog))).all()
        )
        states = dict(
            (await session.execute(select(Application.application_id, Application.state))).all()
        )
        outbox = (await session.scalars(select(NotificationOutbox))).all()
        deliveries = (await session.scalars(select(WebhookDelivery))).all()
    # The audit log: each transition exactly once.
    assert log == Counter(
        (f"K{n:02d}", seq, trigger)
        for n in range(1, APPLICATIONS + 1)
        for seq, trigger in enumerate(TRIGGERS, start=1)
    )
    assert states == {f"K{n:02d}": "awaiting_meeting" for n in range(1, APPLICATIONS + 1)}
    # Notifications: one outbox row per state change, each delivered.
    assert len(outbox) == APPLICATIONS * len(TRIGGERS)
    assert all(message.delivered_at is not None for message in outbox)
    # Outbound events: every one arrived, in order per application. A repeat can only be
    # the at-least-once redelivery of a POST the killed worker had made; it carries the
    # same id, so the receiver keeps one.
    ids = [r.body["id"] for r in receiver.received]
    assert set(ids) == expected
    # Each repeat is another attempt of the same delivery activity (its attempt numbers
    # differ), never a second delivery started for an event already acknowledged.
    for event_id, count in Counter(ids).items():
        if count > 1:
            attempts = [r.attempt for r in receiver.received if r.body["id"] == event_id]
            assert len(set(attempts)) == len(attempts), (event_id, attempts)
    for n in range(1, APPLICATIONS + 1):
        first_seen = list(dict.fromkeys(receiver.ids(f"K{n:02d}")))
        assert [int(event_id.rsplit(":", 1)[1]) for event_id in first_seen] == list(
            range(1, len(TRIGGERS) + 1)
        )
    assert sorted(d.event_id for d in deliveries) == sorted(expected)  # one row per event
    assert {d.status for d in deliveries} == {"delivered"}


class SlowReceiver:
    """Acknowledges each POST only after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = threading.Event()
        self.completed = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.started.set()
                time.sleep(receiver.delay)
                self.send_response(204)
                self.end_headers()
                receiver.completed += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.databases("sqlite")
async def test_sigterm_drains_a_running_activity(
    dev_env: WorkflowEnvironment, db: Database
) -> None:
    client, queue = dev_env.client, f"drain-{uuid.uuid4()}"
    policy = load_policy("2024-aksu-party-school").model_copy(
        update={"cycle_id": f"d{uuid.uuid4().hex[:8]}-2024"}
    )
    receiver = SlowReceiver(delay=3.0)
    try:
        with workers(dev_env, db, queue, 1) as (worker,):
            await subscriptions.subscribe(
                client,
                queue,
                SubscribeInput(subscription_id="slow", url=receiver.url, secret=SECRET),
            )
            await client.start_workflow(
                ApplicationWorkflow.run,
                StartApplication(
                    application_id="D1",
                    level=Level.intermediate,
                    policy=policy,
                    person_key=person_key("653001198001010011", b"k" * 16),
                    clock=CycleClock.rehearse(
                        datetime(2024, 8, 26, 9, tzinfo=CHINA_TZ), datetime.now(UTC)
                    ),
                ),
                id=application_workflow_id(policy.cycle_id, "D1"),
                task_queue=queue,
            )
            # The first event's POST is in flight: SIGTERM now.
            assert await asyncio.to_thread(receiver.started.wait, 30)
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(worker.wait, 30)
        # The worker waited for the POST's answer, then exited (a clean exit, or the
        # interpreter-exit abort Python workers sometimes show after a clean shutdown).
        assert receiver.completed == 1
        assert code in (0, -signal.SIGABRT), code
        async with db.sessions() as session:
            (row,) = (await session.scalars(select(WebhookDelivery))).all()
        assert (row.status, row.attempts) == ("delivered", 1)
    finally:
        receiver.close()

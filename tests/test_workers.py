"""Several worker processes on one task queue, as docker-compose runs them.

Two ``python -m worker`` processes share the work of many applications; one is killed
with ``kill -9`` half-way, and the other finishes every application with no transition,
notification or outbound event lost or doubled. SIGTERM drains a worker: the activity it
is running completes before it exits.
"""

from __future__ import annotations

import asyncio
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
from temporalio.api.enums.v1 import PendingActivityState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
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
SEQS = range(1, len(TRIGGERS) + 1)


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


async def polling(client: Client, queue: str) -> set[str]:
    """The pids of the workers polling the queue for both workflow and activity tasks."""
    found = []
    for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
            )
        )
        found.append({poller.identity.split("@")[0] for poller in response.pollers})
    return found[0] & found[1]


async def deliveries_in_flight(client: Client, workflow_ids: list[str]) -> Counter[str]:
    """How many webhook deliveries each worker (by pid) is running right now."""
    running_on: Counter[str] = Counter()
    for workflow_id in workflow_ids:
        description = await client.get_workflow_handle(workflow_id).describe()
        for pending in description.raw_description.pending_activities:
            if (
                pending.activity_type.name == "deliver_webhook"
                and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            ):
                running_on[pending.last_worker_identity.split("@")[0]] += 1
    return running_on


@pytest.mark.databases("postgresql")
async def test_a_killed_worker_loses_and_doubles_nothing(
    dev_env: WorkflowEnvironment, db: Database
) -> None:
    client, queue = dev_env.client, f"workers-{uuid.uuid4()}"
    policy = load_policy("2024-aksu-party-school").model_copy(
        update={"cycle_id": f"k{uuid.uuid4().hex[:8]}-2024"}
    )
    clock = CycleClock.rehearse(datetime(2024, 8, 26, 9, tzinfo=CHINA_TZ), datetime.now(UTC))
    numbers = range(1, APPLICATIONS + 1)
    workflow_ids = [application_workflow_id(policy.cycle_id, f"K{n:02d}") for n in numbers]
    # The receiver answers the first APPLICATIONS events, then holds every POST unanswered
    # until released: the workers are then in the middle of deliveries.
    receiver = Receiver(SECRET, hold_after=APPLICATIONS)
    with running(receiver), workers(dev_env, db, queue, 2) as (first, second):
        pids = {str(first.pid), str(second.pid)}
        for _ in range(600):  # both workers up and polling before any work exists
            if await polling(client, queue) == pids:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the two workers never both polled the task queue")
        await subscriptions.subscribe(
            client, queue, SubscribeInput(subscription_id="feed", url=receiver.url, secret=SECRET)
        )
        dossier = complete_dossier(policy, Level.intermediate)

        async def submit(number: int) -> None:
            handle = await client.start_workflow(
                ApplicationWorkflow.run,
                StartApplication(
                    application_id=f"K{number:02d}",
                    level=Level.intermediate,
                    policy=policy,
                    person_key=person_key(f"6530011980010{number:04d}1", b"k" * 16),
                    clock=clock,
                ),
                id=workflow_ids[number - 1],
                task_queue=queue,
            )
            await handle.execute_update(ApplicationWorkflow.submit, SubmitInput(dossier=dossier))

        async def accept_and_pay(number: int) -> None:
            handle = client.get_workflow_handle(workflow_ids[number - 1])
            await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
            status = await handle.execute_update(
                ApplicationWorkflow.record_payment,
                PaymentInput(transaction_id=f"T{number}", amount=Decimal("400.00")),
            )
            assert status.state is State.awaiting_meeting

        await asyncio.wait_for(asyncio.gather(*(submit(n) for n in numbers)), timeout=60)
        # Kill the first worker while both wait for the answers to POSTs that arrived (as
        # many held as in flight; a POST given up after its HTTP timeout stays counted).
        for _ in range(300):
            in_flight = await deliveries_in_flight(client, workflow_ids)
            if set(in_flight) >= pids and receiver.holding >= in_flight.total():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"both workers never held deliveries: {in_flight}")
        lost = in_flight[str(first.pid)]
        first.send_signal(signal.SIGKILL)
        first.wait()
        receiver.release.set()
        # The rest of each application's work comes after the kill, also to the workflows
        # the killed worker had cached.
        await asyncio.wait_for(asyncio.gather(*(accept_and_pay(n) for n in numbers)), 150)
        expected = {f"{workflow_id}:{seq}" for workflow_id in workflow_ids for seq in SEQS}
        await eventually(
            lambda: {r.body["id"] for r in receiver.received} >= expected, "every event", 120
        )
        # The POSTs the killed worker had made arrived without being acknowledged to
        # Temporal: their retries (after the activity's timeout) send them again.
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
        for n in numbers
        for seq, trigger in enumerate(TRIGGERS, start=1)
    )
    assert states == {f"K{n:02d}": "awaiting_meeting" for n in numbers}
    # Notifications: one outbox row per state change, each delivered.
    assert len(outbox) == APPLICATIONS * len(TRIGGERS)
    assert all(message.delivered_at is not None for message in outbox)
    # Outbound events: every one arrived, in order per application. A repeat can only be
    # the at-least-once redelivery of a POST the killed worker had made; it carries the
    # same id, so the receiver keeps one.
    ids = [r.body["id"] for r in receiver.received]
    assert set(ids) == expected
    # The POSTs the killed worker was waiting on were sent again: each repeat is another
    # attempt of the same delivery activity (its attempt numbers differ), never a second
    # delivery started for an event already acknowledged.
    repeats = {event_id for event_id, count in Counter(ids).items() if count > 1}
    assert len(repeats) >= lost
    for event_id in repeats:
        attempts = [r.attempt for r in receiver.received if r.body["id"] == event_id]
        assert len(set(attempts)) == len(attempts), (event_id, attempts)
    for n in numbers:
        first_seen = list(dict.fromkeys(receiver.ids(f"K{n:02d}")))
        assert [int(event_id.rsplit(":", 1)[1]) for event_id in first_seen] == list(SEQS)
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

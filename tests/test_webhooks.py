"""Outbound webhooks on the real dev server, to real HTTP receivers on loopback.

Every transition reaches each subscribed receiver once, signed, in order per application;
a receiver that is down for a while gets everything it missed once it is back, without
holding up another subscription; an application finishes only once its events are out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import Database
from models.clock import CycleClock
from models.commands import (
    Disqualification,
    PaymentInput,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    Withdrawal,
    application_workflow_id,
)
from models.errors import DomainError
from models.identity import person_key
from models.policy import CHINA_TZ, Level, load_policy
from models.webhooks import SIGNATURE_HEADER, SubscribeInput, UnsubscribeInput, sign
from tests.conftest import new_worker
from workflows import ApplicationWorkflow
from zhiping import service, subscriptions
from zhiping.samples import complete_dossier

SECRET = "receiver-secret-0123456789"
OTHER_SECRET = "payments-secret-0123456789"


@dataclass
class Received:
    body: dict[str, Any]
    signature_ok: bool
    attempt: str


@dataclass
class Receiver:
    """A webhook receiver on loopback that can go down and come back on the same port.

    With ``hold_after`` set, every POST after that many is recorded on arrival but answered
    only once ``release`` is set (``holding`` counts them): the sender has delivered it and
    waits for the answer.
    """

    secret: str
    received: list[Received] = field(default_factory=list)
    port: int = 0
    hold_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    holding: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(
                    Received(
                        body=json.loads(raw),
                        signature_ok=self.headers[SIGNATURE_HEADER] == sign(receiver.secret, raw),
                        attempt=self.headers["X-Zhiping-Attempt"],
                    )
                )
                if receiver.hold_after is not None and len(receiver.received) > receiver.hold_after:
                    receiver.holding += 1
                    receiver.release.wait(60)
                with contextlib.suppress(OSError):  # the sender may be gone by now
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self, application_id: str) -> list[str]:
        return [r.body["id"] for r in self.received if r.body["subject"] == application_id]

    def triggers(self, application_id: str) -> list[str]:
        return [
            r.body["data"]["trigger"] for r in self.received if r.body["subject"] == application_id
        ]


@contextmanager
def running(receiver: Receiver) -> Iterator[Receiver]:
    receiver.start()
    try:
        yield receiver
    finally:
        if receiver._server is not None:
            receiver.stop()


async def eventually(
    check: Callable[[], bool], what: str | Callable[[], str], timeout: float = 30.0
) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what if isinstance(what, str) else what()}")


async def delivery_logged(db: Database, subscription_id: str, application_id: str, n: int) -> None:
    """Wait until the delivery log shows ``n`` delivered events of the application: its row
    is written just after the receiver answered, a moment after the receiver saw it."""
    for _ in range(200):
        rows = await subscriptions.list_deliveries(
            db, subscription_id, application_id=application_id, status="delivered"
        )
        if len(rows) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{application_id}: fewer than {n} deliveries logged")


@pytest_asyncio.fixture(loop_scope="session")
async def worker(dev_env: WorkflowEnvironment, db: Database) -> AsyncIterator[Worker]:
    async with new_worker(dev_env.client, db) as w:
        yield w


class Cycle:
    def __init__(self, env: WorkflowEnvironment, worker: Worker) -> None:
        self.env, self.worker = env, worker
        self.policy = load_policy("2024-aksu-party-school").model_copy(
            update={"cycle_id": f"w{uuid.uuid4().hex[:8]}-2024"}
        )
        self.clock = CycleClock.rehearse(
            datetime(2024, 8, 26, 9, tzinfo=CHINA_TZ), datetime.now(UTC)
        )

    async def start(self, application_id: str) -> Any:
        return await self.env.client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=application_id,
                level=Level.intermediate,
                policy=self.policy,
                person_key=person_key(f"65300119800101{len(application_id):03d}1", b"k" * 16),
                clock=self.clock,
            ),
            id=application_workflow_id(self.policy.cycle_id, application_id),
            task_queue=self.worker.task_queue,
        )

    def submit(self) -> SubmitInput:
        return SubmitInput(dossier=complete_dossier(self.policy, Level.intermediate))


async def test_every_transition_reaches_each_receiver_once_in_order(
    dev_env: WorkflowEnvironment, worker: Worker, db: Database
) -> None:
    client, queue = dev_env.client, worker.task_queue
    cycle = Cycle(dev_env, worker)
    main, payments = Receiver(SECRET), Receiver(OTHER_SECRET)
    with running(main), running(payments):
        await subscriptions.subscribe(
            client,
            queue,
            SubscribeInput(subscription_id="platform", url=main.url, secret=SECRET),
        )
        await subscriptions.subscribe(
            client,
            queue,
            SubscribeInput(
                subscription_id="payments",
                url=payments.url,
                secret=OTHER_SECRET,
                event_types=["cn.zhiping.application.record_payment"],
            ),
        )
        listed = await subscriptions.list_subscriptions(client, queue)
        assert [s.subscription_id for s in listed] == ["payments", "platform"]
        assert all("secret" not in s.model_dump() for s in listed)

        a1 = await cycle.start("W1")
        await a1.execute_update(ApplicationWorkflow.submit, cycle.submit())
        await eventually(lambda: main.triggers("W1") == ["create", "submit"], "before the outage")

        # The platform's receiver goes down; the application moves on meanwhile.
        main.stop()
        await a1.execute_update(ApplicationWorkflow.accept, ReviewDecision(reason="材料齐全"))
        await a1.execute_update(
            ApplicationWorkflow.record_payment,
            PaymentInput(transaction_id="T1", amount=Decimal("400.00")),
        )
        a2 = await cycle.start("W2")
        await a2.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))

        # The payments subscription is not held up by the platform's outage.
        await eventually(lambda: payments.triggers("W1") == ["record_payment"], "payments lane")
        # The platform's deliveries are being retried (1 s, 2 s, … apart), none lost, and
        # only the head of each application's lane is tried.
        await asyncio.sleep(3.5)
        pending = await subscriptions.list_deliveries(db, "platform", status="pending")
        assert {row.application_id for row in pending} == {"W1", "W2"}
        assert all(row.attempts >= 2 and row.last_status_code is None for row in pending)
        # W2 is withdrawn, a final state, but its workflow waits for its events to go out.
        assert (await a2.describe()).status is WorkflowExecutionStatus.RUNNING

        main.start()  # back on the same port
        expected_w1 = ["create", "submit", "accept", "open_fee", "record_payment"]
        expected_w1.append("route_after_payment")
        # The next retry comes by the backoff (1 s, 2 s, 4 s, … after the first failure).
        await eventually(
            lambda: main.triggers("W1") == expected_w1,
            lambda: f"W1's events after the outage, got {main.triggers('W1')}",
            90,
        )
        await eventually(
            lambda: main.triggers("W2") == ["create", "withdraw"],
            lambda: f"W2's events, got {main.triggers('W2')}",
            90,
        )
        assert (await a2.result()).state.value == "withdrawn"

    for receiver in (main, payments):
        assert all(r.signature_ok for r in receiver.received)
        ids = [r.body["id"] for r in receiver.received]
        assert len(ids) == len(set(ids)), "an event arrived twice"
    w1 = [r.body for r in main.received if r.body["subject"] == "W1"]
    assert [e["data"]["seq"] for e in w1] == list(range(1, 7))
    assert [e["id"] for e in w1] == [
        f"{application_workflow_id(cycle.policy.cycle_id, 'W1')}:{n}" for n in range(1, 7)
    ]
    assert w1[2]["type"] == "cn.zhiping.application.accept"
    assert w1[2]["specversion"] == "1.0"
    assert w1[2]["data"]["from"] == "under_review" and w1[2]["data"]["to"] == "accepted"
    assert w1[2]["data"]["reason"] == "材料齐全"
    # A delivery retried during the outage says so; none of the payload is personal.
    assert any(int(r.attempt) > 1 for r in main.received)
    assert not {"name", "id_number", "person_key", "employer"} & set(w1[0]["data"])

    # The delivery log: each event once, delivered.
    await delivery_logged(db, "platform", "W1", 6)
    await delivery_logged(db, "platform", "W2", 2)
    delivered = await subscriptions.list_deliveries(db, "platform")
    assert sorted(row.event_id for row in delivered) == sorted(r.body["id"] for r in main.received)
    assert {row.status for row in delivered} == {"delivered"}
    # Application ids are unique within a cycle: the log filters by both.
    assert {row.cycle_id for row in delivered} == {cycle.policy.cycle_id}
    mine = await subscriptions.list_deliveries(
        db, "platform", cycle_id=cycle.policy.cycle_id, application_id="W2"
    )
    assert [row.seq for row in mine] == [1, 2]
    assert await subscriptions.list_deliveries(db, "platform", cycle_id="other-2024") == []


async def test_subscriptions_are_validated_and_removal_stops_delivery(
    dev_env: WorkflowEnvironment, worker: Worker, db: Database
) -> None:
    client, queue = dev_env.client, worker.task_queue
    with pytest.raises(ValidationError, match="未知的事件类型"):
        SubscribeInput(
            subscription_id="x", url="http://127.0.0.1/", secret=SECRET, event_types=["nope"]
        )
    with pytest.raises(ValidationError):
        SubscribeInput(subscription_id="x", url="ftp://127.0.0.1/", secret=SECRET)
    with pytest.raises(ValidationError):
        SubscribeInput(subscription_id="x", url="http://127.0.0.1/", secret="short")

    receiver = Receiver(SECRET)
    cycle = Cycle(dev_env, worker)
    with running(receiver):
        inp = SubscribeInput(subscription_id="p", url=receiver.url, secret=SECRET)
        first = await subscriptions.subscribe(client, queue, inp)
        assert await subscriptions.subscribe(client, queue, inp) == first  # a repeat: no change
        with pytest.raises(DomainError) as refused:
            await subscriptions.subscribe(
                client, queue, inp.model_copy(update={"secret": OTHER_SECRET})
            )
        assert refused.value.code == "SUBSCRIPTION_EXISTS"

        app = await cycle.start("U1")
        await eventually(lambda: receiver.triggers("U1") == ["create"], "before removal")
        receiver.stop()
        await app.execute_update(ApplicationWorkflow.submit, cycle.submit())
        await asyncio.sleep(1.5)  # the submit event is being retried
        await subscriptions.unsubscribe(client, queue, UnsubscribeInput(subscription_id="p"))
        with pytest.raises(DomainError) as missing:
            await subscriptions.unsubscribe(client, queue, UnsubscribeInput(subscription_id="p"))
        assert missing.value.code == "SUBSCRIPTION_NOT_FOUND"
        receiver.start()
        await app.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
        # The queued event is dropped at its next attempt; the workflow then finishes.
        assert (await app.result()).state.value == "withdrawn"
    assert receiver.triggers("U1") == ["create"]
    rows = await subscriptions.list_deliveries(db, "p")
    assert [(r.seq, r.status) for r in rows] == [(1, "delivered"), (2, "dropped")]
    assert await subscriptions.list_subscriptions(client, queue) == []


async def test_the_listen_command_checks_signatures_and_prints_events() -> None:
    """``zhiping webhooks listen``, the receiver the README uses to try subscriptions out."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    zhiping = Path(sys.executable).with_name("zhiping")
    process = await asyncio.create_subprocess_exec(
        str(zhiping),
        "webhooks",
        "listen",
        "--port",
        str(port),
        "--secret",
        SECRET,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), timeout=30)  # listening
        body = json.dumps(
            {
                "id": "application:c:A1:2",
                "type": "cn.zhiping.application.submit",
                "data": {"from": "draft", "to_label": "评委会审核中"},
            }
        ).encode()
        url = f"http://127.0.0.1:{port}/"
        async with httpx.AsyncClient() as http:
            signed = await http.post(
                url, content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)}
            )
            forged = await http.post(url, content=body, headers={SIGNATURE_HEADER: "sha256=0"})
        assert (signed.status_code, forged.status_code) == (204, 401)
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=10)).decode()
        assert "application:c:A1:2" in line and "draft → 评委会审核中" in line
    finally:
        process.terminate()
        await process.wait()


async def test_a_revocation_after_the_end_is_delivered_as_the_next_event(
    dev_env: WorkflowEnvironment, worker: Worker, db: Database
) -> None:
    """Disqualifying an ended application runs its workflow again: its event carries the
    next seq (a receiver deduplicating on the id must not take it for a repeat)."""
    client, queue = dev_env.client, worker.task_queue
    cycle = Cycle(dev_env, worker)
    receiver = Receiver(SECRET)
    with running(receiver):
        await subscriptions.subscribe(
            client, queue, SubscribeInput(subscription_id="feed", url=receiver.url, secret=SECRET)
        )
        app = await cycle.start("R1")
        await app.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
        assert (await app.result()).state.value == "withdrawn"
        status = await service.perform(
            client,
            cycle.policy.cycle_id,
            "R1",
            "disqualify",
            Disqualification(reason="申报材料系伪造"),
        )
        assert status.state.value == "disqualified"
        await eventually(
            lambda: receiver.triggers("R1") == ["create", "withdraw", "disqualify"],
            lambda: f"R1's events, got {receiver.triggers('R1')}",
        )
    workflow_id = application_workflow_id(cycle.policy.cycle_id, "R1")
    assert receiver.ids("R1") == [f"{workflow_id}:{seq}" for seq in (1, 2, 3)]
    revoked = receiver.received[-1].body
    assert revoked["data"]["from"] == "withdrawn" and revoked["data"]["to"] == "disqualified"
    assert all(r.signature_ok for r in receiver.received)

"""Prometheus metrics: one endpoint of the worker with the SDK's and the application's own.

On the real dev server, ``run_worker`` with metrics enabled serves ``/metrics``; the
application's gauges match the database after applications move, notifications go out and
webhooks are delivered. With metrics disabled nothing listens. The counting itself is
checked exactly on hand-written rows, and a failing database keeps the last values.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update
from temporalio.testing import WorkflowEnvironment

from activities import Database
from models.clock import CycleClock
from models.commands import StartApplication, SubmitInput, Withdrawal, application_workflow_id
from models.identity import person_key
from models.policy import CHINA_TZ, Level, load_policy
from models.tables import (
    Application,
    NotificationOutbox,
    WebhookDelivery,
    WebhookSubscription,
)
from models.webhooks import SubscribeInput
from tests.test_webhooks import Receiver, running
from worker import run_worker
from workflows import ApplicationWorkflow
from zhiping import subscriptions
from zhiping.metrics import AppMetrics, metrics_runtime
from zhiping.samples import complete_dossier
from zhiping.settings import Settings

SECRET = "metrics-receiver-secret-0123"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_settings(env: WorkflowEnvironment, database_url: str, *, enabled: bool) -> Settings:
    return Settings(
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=env.client.namespace,
        task_queue=f"metrics-{uuid.uuid4()}",
        database_url=database_url,
        notification_channel="none",
        worker_shutdown_grace_seconds=5,
        metrics_enabled=enabled,
        metrics_host="127.0.0.1",
        metrics_port=free_port(),
        metrics_refresh_seconds=0.2,
    )


@asynccontextmanager
async def worker_running(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def scrape(port: int) -> tuple[set[str], Samples]:
    """The endpoint's metric families and samples (``service_name`` left out), parsed with
    the Prometheus client's own parser: anything malformed fails here."""
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    families, samples = set(), {}
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "service_name")
            samples[(sample.name, labels)] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_one_endpoint_serves_the_sdk_and_the_application_metrics(
    dev_env: WorkflowEnvironment, database_url: str, db: Database
) -> None:
    started = time.time()
    settings = make_settings(dev_env, database_url, enabled=True)
    client, queue, port = dev_env.client, settings.task_queue, settings.metrics_port
    policy = load_policy("2024-aksu-party-school").model_copy(
        update={"cycle_id": f"m{uuid.uuid4().hex[:8]}-2024"}
    )
    cycle = policy.cycle_id
    # 2024-08-26 business time: every deadline of this cycle lies in the real past.
    clock = CycleClock.rehearse(datetime(2024, 8, 26, 9, tzinfo=CHINA_TZ), datetime.now(UTC))
    receiver = Receiver(SECRET)

    async def start(application_id: str, n: int) -> Any:
        return await client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=application_id,
                level=Level.intermediate,
                policy=policy,
                person_key=person_key(f"65300119800101{n:03d}1", b"k" * 16),
                clock=clock,
            ),
            id=application_workflow_id(cycle, application_id),
            task_queue=queue,
        )

    with running(receiver):
        async with worker_running(settings):
            await subscriptions.subscribe(
                client,
                queue,
                SubscribeInput(subscription_id="platform", url=receiver.url, secret=SECRET),
            )
            submit = SubmitInput(dossier=complete_dossier(policy, Level.intermediate))
            m1, m2, m3, _m4 = [await start(f"M{n}", n) for n in range(1, 5)]
            await m1.execute_update(ApplicationWorkflow.submit, submit)
            await m2.execute_update(ApplicationWorkflow.submit, submit)
            await m3.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
            # M1, M2 create+submit, M3 create+withdraw, M4 create: 7 events.
            await eventually(lambda: len(receiver.received) == 7, "every webhook delivered")

            # Once the work is done, the gauges reach what the database says.
            for _ in range(150):
                families, samples = await scrape(port)
                async with db.sessions() as session:
                    rows = (
                        await session.execute(
                            select(
                                Application.application_id, Application.next_deadline_kind
                            ).where(Application.cycle_id == cycle)
                        )
                    ).all()
                    outbox = {
                        "delivered" if delivered else "pending": (n, attempts)
                        for delivered, n, attempts in await session.execute(
                            select(
                                NotificationOutbox.delivered_at.is_not(None),
                                func.count(),
                                func.sum(NotificationOutbox.attempts),
                            ).group_by(NotificationOutbox.delivered_at.is_not(None))
                        )
                    }
                scraped_outbox = {
                    status: (
                        value(samples, "zhiping_notifications", status=status),
                        value(samples, "zhiping_notification_attempts", status=status),
                    )
                    for status in ("delivered", "pending")
                }
                if (
                    value(samples, "zhiping_applications", cycle=cycle, stage="under_review") == 2
                    and value(
                        samples,
                        "zhiping_webhook_deliveries",
                        subscription="platform",
                        status="delivered",
                    )
                    == 7
                    and scraped_outbox == {s: outbox.get(s, (0, 0)) for s in scraped_outbox}
                ):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the gauges never matched the database: {samples}")

    # (a) The SDK's own metrics, from its Rust core, on the same endpoint.
    for family in (
        "temporal_request",
        "temporal_worker_task_slots_available",
        "temporal_workflow_task_schedule_to_start_latency",
        "temporal_activity_execution_latency",
    ):
        assert family in families, f"{family} missing from {sorted(families)}"

    # (b) The application's, counted in the database.
    stages = {
        stage: value(samples, "zhiping_applications", cycle=cycle, stage=stage)
        for stage in ("draft", "under_review", "withdrawn", "approved")
    }
    assert stages == {"draft": 1, "under_review": 2, "withdrawn": 1, "approved": 0}
    kinds = dict(rows)
    assert kinds == {
        "M1": "review_due",
        "M2": "review_due",
        "M3": None,  # withdrawn: no deadline
        "M4": "submission_cutoff",
    }
    # The open ones have a 2024 deadline, in the real past: overdue; M3 is final.
    for kind, count in (("review_due", 2), ("submission_cutoff", 1)):
        overdue = value(samples, "zhiping_applications_overdue", cycle=cycle, deadline_kind=kind)
        assert overdue == count, kind
    delivered = value(samples, "zhiping_notifications", status="delivered")
    assert delivered is not None and delivered >= 4, "each start and submit notifies"
    assert (
        value(
            samples,
            "zhiping_webhook_delivery_attempts",
            subscription="platform",
            status="delivered",
        )
        == 7
    )
    for status in ("pending", "dropped"):
        assert (
            value(samples, "zhiping_webhook_deliveries", subscription="platform", status=status)
            == 0
        )
    assert value(samples, "zhiping_metrics_refresh_errors_total") == 0
    last_refresh = value(samples, "zhiping_metrics_last_refresh_timestamp_seconds")
    assert last_refresh is not None and last_refresh > started


@pytest.mark.databases("sqlite")
async def test_nothing_listens_when_metrics_are_disabled(
    dev_env: WorkflowEnvironment, database_url: str
) -> None:
    settings = make_settings(dev_env, database_url, enabled=False)
    policy = load_policy("2024-aksu-party-school").model_copy(
        update={"cycle_id": f"m{uuid.uuid4().hex[:8]}-2024"}
    )
    async with worker_running(settings):
        handle = await dev_env.client.start_workflow(
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
            task_queue=settings.task_queue,
        )
        await handle.execute_update(ApplicationWorkflow.withdraw, Withdrawal())  # it runs
        with pytest.raises(httpx.ConnectError):
            await scrape(settings.metrics_port)


NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


async def test_counts_are_exact_and_a_failing_database_keeps_the_last_values(
    db: Database,
) -> None:
    past, future = NOW - timedelta(hours=1), NOW + timedelta(days=3)

    def app(application_id: str, state: str, due: datetime | None, kind: str | None) -> Application:
        return Application(
            application_id=application_id,
            cycle_id="c-2026",
            workflow_id=f"wf-{application_id}",
            level="intermediate",
            state=state,
            submission_round=1,
            fee_paid=False,
            last_seq=1,
            updated_at=past,
            next_deadline_at=due,
            next_deadline_kind=kind,
            deadlines=[],
        )

    def note(key: str, delivered: bool, attempts: int) -> NotificationOutbox:
        return NotificationOutbox(
            key=key,
            application_id="A1",
            cycle_id="c-2026",
            recipient="applicant",
            template="t",
            params={},
            body="…",
            created_at=past,
            delivered_at=past if delivered else None,
            attempts=attempts,
        )

    def delivery(sub: str, event: str, status: str, attempts: int) -> WebhookDelivery:
        return WebhookDelivery(
            subscription_id=sub,
            event_id=event,
            event_type="cn.zhiping.application.create",
            cycle_id="c-2026",
            application_id="A1",
            seq=1,
            status=status,
            attempts=attempts,
            first_attempt_at=past,
            last_attempt_at=past,
        )

    async with db.sessions() as session, session.begin():
        session.add_all(
            [
                app("A1", "under_review", past, "review_due"),  # overdue
                app("A2", "fee_due", past, "fee_deadline"),  # overdue
                app("A3", "fee_due", past, "fee_deadline"),  # overdue
                app("A4", "draft", future, "submission_cutoff"),  # not yet
                app("A5", "abandoned", past, "submission_cutoff"),  # final: never overdue
                app("A6", "awaiting_meeting", None, None),  # no deadline
                note("n1", True, 1),
                note("n2", True, 2),
                note("n3", False, 3),
                delivery("platform", "e1", "delivered", 1),
                delivery("platform", "e2", "delivered", 2),
                delivery("platform", "e3", "pending", 5),
                delivery("platform", "e4", "dropped", 1),
                WebhookSubscription(
                    subscription_id="quiet",
                    url="http://127.0.0.1:1/",
                    event_types=["cn.zhiping.application.*"],
                    secret="s" * 16,
                    active=True,
                    created_at=past,
                ),
            ]
        )

    settings = Settings(metrics_host="127.0.0.1", metrics_port=free_port())
    runtime = metrics_runtime(settings)
    metrics = AppMetrics(runtime.metric_meter, db, now=lambda: NOW)
    assert await metrics.refresh()
    _, samples = await scrape(settings.metrics_port)

    def app_metric(name: str, **labels: str) -> float | None:
        return value(samples, name, cycle="c-2026", **labels)

    assert app_metric("zhiping_applications", stage="fee_due") == 2
    assert app_metric("zhiping_applications", stage="under_review") == 1
    assert app_metric("zhiping_applications", stage="approved") == 0  # every stage is there
    assert app_metric("zhiping_applications_overdue", deadline_kind="fee_deadline") == 2
    assert app_metric("zhiping_applications_overdue", deadline_kind="review_due") == 1
    assert app_metric("zhiping_applications_overdue", deadline_kind="submission_cutoff") is None
    assert value(samples, "zhiping_notifications", status="delivered") == 2
    assert value(samples, "zhiping_notifications", status="pending") == 1
    assert value(samples, "zhiping_notification_attempts", status="delivered") == 3
    assert value(samples, "zhiping_notification_attempts", status="pending") == 3
    expected = {
        ("platform", "delivered"): (2, 3),
        ("platform", "pending"): (1, 5),
        ("platform", "dropped"): (1, 1),
        ("quiet", "delivered"): (0, 0),  # subscribed, nothing sent yet
        ("quiet", "pending"): (0, 0),
    }
    for (sub, status), (n, attempts) in expected.items():
        labels = {"subscription": sub, "status": status}
        assert value(samples, "zhiping_webhook_deliveries", **labels) == n
        assert value(samples, "zhiping_webhook_delivery_attempts", **labels) == attempts
    assert value(samples, "zhiping_metrics_refresh_errors_total") == 0

    # A1 is accepted: nobody is overdue on review_due any more, and that series reads 0.
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(Application)
            .where(Application.application_id == "A1")
            .values(state="accepted", next_deadline_at=future, next_deadline_kind="fee_deadline")
        )
    assert await metrics.refresh()
    _, samples = await scrape(settings.metrics_port)
    assert app_metric("zhiping_applications_overdue", deadline_kind="review_due") == 0
    assert app_metric("zhiping_applications", stage="under_review") == 0

    # The database fails: the refresh is counted as an error, the gauges keep their values.
    async with db.engine.begin() as connection:
        await connection.execute(text("DROP TABLE webhook_deliveries"))
    assert not await metrics.refresh()
    _, after = await scrape(settings.metrics_port)
    assert value(after, "zhiping_metrics_refresh_errors_total") == 1
    unchanged = {k: v for k, v in samples.items() if k[0] != "zhiping_metrics_refresh_errors_total"}
    assert {k: after[k] for k in unchanged} == unchanged

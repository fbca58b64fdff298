"""Prometheus metrics of a worker process: the Temporal SDK's and the application's own.

One endpoint, ``http://<metrics_host>:<metrics_port>/metrics``, served by the Temporal SDK
itself. The SDK's Rust core has a Prometheus exporter (``PrometheusConfig``) that serves
every metric recorded on its runtime's meter: the SDK's own (``temporal_*``: task slots,
poll and schedule-to-start latencies, workflow and activity completions, requests…) and any
metric created on ``Runtime.metric_meter``. So the application's gauges are created on that
same meter, and there is nothing to merge: no second HTTP server, no internal port whose
text is concatenated with ``prometheus_client``'s, no ``MetricBuffer`` to drain and map.

The application's metrics are counted in the SQL database, not in the process, so every
worker replica reports the same truth (aggregate replicas with ``max``, never ``sum``).
A background task refreshes them every ``metrics_refresh_seconds``. A refresh that fails
(the database is down) is logged and counted in ``zhiping_metrics_refresh_errors_total``;
the gauges keep their last values, and ``zhiping_metrics_last_refresh_timestamp_seconds``
shows how old they are. The worker carries on either way.

What the exporter cannot do is forget a series, so a label set that disappears (a stage
no application is in any more, a deadline kind nobody is overdue on) is set to 0 rather
than dropped. Every series also carries the runtime's ``service_name`` label.

Overdue compares ``next_deadline_at`` with the real time now. A rehearsed cycle (the demo,
tests) keeps its deadlines in its own business time, so its open applications count as
overdue as soon as its dates lie in the past.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select
from temporalio.common import MetricGauge, MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from activities.database import Database
from models.lifecycle import State
from models.tables import Application, NotificationOutbox, WebhookDelivery, WebhookSubscription
from zhiping.settings import Settings

log = logging.getLogger("zhiping.metrics")

NOTIFICATION_STATUSES = ("delivered", "pending")
WEBHOOK_STATUSES = ("pending", "delivered", "dropped")
"""The values of ``WebhookDelivery.status``."""
NO_DEADLINE_KIND = "unknown"

Labels = tuple[tuple[str, str], ...]
"""A series' label set, as sorted ``(name, value)`` pairs."""


def bind_address(settings: Settings) -> str:
    """``host:port`` for the exporter; an IPv6 host goes in brackets."""
    host = settings.metrics_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{settings.metrics_port}"


def metrics_runtime(settings: Settings) -> Runtime:
    """A Temporal runtime that serves Prometheus ``/metrics`` on ``metrics_host:metrics_port``.

    Hand it to ``connect(settings, runtime=...)``: the client and every worker made from it
    record on it. The port is bound here: a taken port raises ``ValueError`` at once, and it
    is released when the runtime is garbage-collected. Create one per process.
    """
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address(settings))))


@dataclass(frozen=True)
class Snapshot:
    """What the database says at one instant, as ``labels → value`` per metric."""

    applications: dict[Labels, int] = field(default_factory=dict)
    overdue: dict[Labels, int] = field(default_factory=dict)
    notifications: dict[Labels, int] = field(default_factory=dict)
    notification_attempts: dict[Labels, int] = field(default_factory=dict)
    webhook_deliveries: dict[Labels, int] = field(default_factory=dict)
    webhook_delivery_attempts: dict[Labels, int] = field(default_factory=dict)


def _labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


async def read_snapshot(db: Database, now: datetime) -> Snapshot:
    """Count applications, overdue deadlines, notifications and webhook deliveries.

    Every cycle in the read model gets every stage (0 where empty), every subscription
    every delivery status, so a query for one of them finds a series even at 0.
    """
    snapshot = Snapshot()
    async with db.sessions() as session:
        per_stage = await session.execute(
            select(Application.cycle_id, Application.state, func.count()).group_by(
                Application.cycle_id, Application.state
            )
        )
        counts = {(cycle, state): n for cycle, state, n in per_stage}
        for cycle in sorted({cycle for cycle, _ in counts}):
            for state in State:
                snapshot.applications[_labels(cycle=cycle, stage=state.value)] = counts.get(
                    (cycle, state.value), 0
                )

        overdue = await session.execute(
            select(Application.cycle_id, Application.next_deadline_kind, func.count())
            .where(Application.overdue_at(now))
            .group_by(Application.cycle_id, Application.next_deadline_kind)
        )
        for cycle, kind, n in overdue:
            labels = _labels(cycle=cycle, deadline_kind=kind or NO_DEADLINE_KIND)
            snapshot.overdue[labels] = snapshot.overdue.get(labels, 0) + n

        delivered = NotificationOutbox.delivered_at.is_not(None)
        outbox = await session.execute(
            select(
                delivered, func.count(), func.coalesce(func.sum(NotificationOutbox.attempts), 0)
            ).group_by(delivered)
        )
        for status in NOTIFICATION_STATUSES:
            snapshot.notifications[_labels(status=status)] = 0
            snapshot.notification_attempts[_labels(status=status)] = 0
        for is_delivered, n, attempts in outbox:
            status = "delivered" if is_delivered else "pending"
            snapshot.notifications[_labels(status=status)] += n
            snapshot.notification_attempts[_labels(status=status)] += int(attempts)

        subscriptions = set(
            (await session.scalars(select(WebhookSubscription.subscription_id))).all()
        )
        deliveries = (
            await session.execute(
                select(
                    WebhookDelivery.subscription_id,
                    WebhookDelivery.status,
                    func.count(),
                    func.coalesce(func.sum(WebhookDelivery.attempts), 0),
                ).group_by(WebhookDelivery.subscription_id, WebhookDelivery.status)
            )
        ).all()
        subscriptions |= {subscription for subscription, *_ in deliveries}
        for subscription in sorted(subscriptions):
            for status in WEBHOOK_STATUSES:
                labels = _labels(subscription=subscription, status=status)
                snapshot.webhook_deliveries[labels] = 0
                snapshot.webhook_delivery_attempts[labels] = 0
        for subscription, status, n, attempts in deliveries:
            labels = _labels(subscription=subscription, status=status)
            snapshot.webhook_deliveries[labels] = n
            snapshot.webhook_delivery_attempts[labels] = int(attempts)
    return snapshot


class _GaugeFamily:
    """A gauge whose series are replaced as a whole; a vanished series is set to 0."""

    def __init__(self, gauge: MetricGauge) -> None:
        self._gauge = gauge
        self._seen: set[Labels] = set()

    def replace(self, values: Mapping[Labels, int]) -> None:
        for labels in self._seen - values.keys():
            self._gauge.set(0, dict(labels))
        for labels, value in values.items():
            self._gauge.set(value, dict(labels))
        self._seen |= values.keys()


class AppMetrics:
    """The application's metrics on a Temporal metric meter, refreshed from the database."""

    def __init__(
        self,
        meter: MetricMeter,
        db: Database,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._now = now
        self._families: dict[str, _GaugeFamily] = {
            name: _GaugeFamily(meter.create_gauge(f"zhiping_{name}", description))
            for name, description in (
                ("applications", "Applications per cycle and stage (lifecycle state)"),
                (
                    "applications_overdue",
                    "Applications not in a final state whose next deadline has passed",
                ),
                ("notifications", "Notification outbox messages by status"),
                ("notification_attempts", "Delivery attempts of the outbox messages, by status"),
                ("webhook_deliveries", "Webhook deliveries per subscription and status"),
                (
                    "webhook_delivery_attempts",
                    "Webhook delivery attempts per subscription and status",
                ),
            )
        }
        self._errors = meter.create_counter(
            "zhiping_metrics_refresh_errors_total",
            "Refreshes of the zhiping_* gauges that failed (the last values are kept)",
        )
        self._errors.add(0)
        self._last_refresh = meter.create_gauge_float(
            "zhiping_metrics_last_refresh_timestamp_seconds",
            "Unix time of the last successful refresh of the zhiping_* gauges",
        )

    async def refresh(self) -> bool:
        """Read the database and set every gauge; on failure log, count and keep the values."""
        now = self._now()
        try:
            snapshot = await read_snapshot(self._db, now)
        except Exception as error:  # the worker must outlive its database's outages
            self._errors.add(1)
            log.warning("metrics refresh failed, keeping the last values: %r", error)
            return False
        self._families["applications"].replace(snapshot.applications)
        self._families["applications_overdue"].replace(snapshot.overdue)
        self._families["notifications"].replace(snapshot.notifications)
        self._families["notification_attempts"].replace(snapshot.notification_attempts)
        self._families["webhook_deliveries"].replace(snapshot.webhook_deliveries)
        self._families["webhook_delivery_attempts"].replace(snapshot.webhook_delivery_attempts)
        self._last_refresh.set(now.timestamp())
        return True

    async def run(self, interval: float) -> None:
        """Refresh now and then every ``interval`` seconds, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval)


@asynccontextmanager
async def app_metrics(
    runtime: Runtime | None, db: Database, settings: Settings
) -> AsyncIterator[AppMetrics | None]:
    """Refresh the application's metrics on ``runtime``'s meter while the block runs.

    With no runtime (metrics disabled) this does nothing.
    """
    if runtime is None:
        yield None
        return
    metrics = AppMetrics(runtime.metric_meter, db)
    task = asyncio.create_task(metrics.run(settings.metrics_refresh_seconds))
    try:
        yield metrics
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["AppMetrics", "Snapshot", "app_metrics", "metrics_runtime", "read_snapshot"]

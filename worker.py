"""The Temporal worker process: registers the workflows and activities, nothing else."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities import Database, ZhipingActivities, channel_from_name
from activities.coordination import CoordinationActivities
from activities.webhooks import WebhookActivities
from workflows import WORKFLOWS
from zhiping.client import connect
from zhiping.metrics import app_metrics, metrics_runtime
from zhiping.settings import Settings, get_settings


def build_worker(
    client: Client, activities: ZhipingActivities, task_queue: str, **options: object
) -> Worker:
    """A worker for every zhiping workflow and activity on ``task_queue``."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS),
        activities=[
            *activities.all(),
            *CoordinationActivities(client).all(),
            *WebhookActivities(activities.database).all(),
        ],
        **options,  # type: ignore[arg-type]
    )


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then drain gracefully."""
    db = Database.from_url(settings.database_url)
    await db.create_schema()
    # Metrics (ZHIPING_METRICS_ENABLED): the client's runtime serves Prometheus /metrics,
    # and app_metrics below keeps the application's gauges on it (zhiping/metrics.py).
    runtime = metrics_runtime(settings) if settings.metrics_enabled else None
    client = await connect(settings, runtime=runtime)
    activities = ZhipingActivities(db, channel_from_name(settings.notification_channel))
    worker = build_worker(
        client,
        activities,
        settings.task_queue,
        # Drain: stop polling, let running activities (a webhook POST, an outbox write)
        # finish for up to this long, and only then cancel what is left for a retry.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_seconds),
    )
    async with worker, app_metrics(runtime, db, settings):
        logging.getLogger("zhiping.worker").info(
            "worker polling task queue %s at %s", settings.task_queue, settings.temporal_address
        )
        await stop.wait()
    await db.dispose()


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM drains like Ctrl-C
        loop.add_signal_handler(sig, stop.set)
    await run_worker(settings, stop)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(get_settings()))


if __name__ == "__main__":
    main()

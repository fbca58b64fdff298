"""Health check of one worker replica (docker-compose.yml): is this container polling?

A worker process can be alive and still useless (lost its connection, stuck). Temporal knows
better: it lists the pollers it saw on a task queue, each named ``<pid>@<hostname>`` by the
Python SDK. In Compose the hostname is the container's own, so a replica is healthy when a
poller with its hostname asked for workflow tasks within the last two minutes (a long poll
lasts about a minute). Exit status 0 is healthy, 1 is not.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from zhiping.client import connect
from zhiping.settings import get_settings

FRESH = timedelta(minutes=2)


def polling(pollers: Iterable[PollerInfo], hostname: str, now: datetime) -> bool:
    """Whether a poller of ``hostname`` polled within :data:`FRESH` before ``now``."""
    return any(
        poller.identity.endswith(f"@{hostname}")
        and now - poller.last_access_time.ToDatetime(tzinfo=UTC) <= FRESH
        for poller in pollers
    )


async def _check() -> bool:
    settings = get_settings()
    client = await connect(settings)
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=settings.temporal_namespace,
            task_queue=TaskQueue(name=settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        timeout=timedelta(seconds=5),
    )
    return polling(response.pollers, socket.gethostname(), datetime.now(UTC))


def main() -> None:
    try:
        healthy = asyncio.run(_check())
    except Exception as error:  # any failure to ask is "unhealthy", with the reason
        print(f"unhealthy: {error!r}", file=sys.stderr)
        sys.exit(1)
    if not healthy:
        print(f"unhealthy: no recent poller from {socket.gethostname()}", file=sys.stderr)
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()

"""The one client factory, used by the worker, the stack, the CLI and the tests."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from zhiping.settings import Settings


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A Temporal client that speaks pydantic models.

    ``runtime``: the SDK runtime the client and its workers record metrics on; the worker
    passes ``zhiping.metrics.metrics_runtime(settings)`` when metrics are enabled. ``None``
    is the SDK's default runtime, which exports nothing.
    """
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )


__all__ = ["connect"]

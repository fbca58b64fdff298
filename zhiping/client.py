"""The one client factory, used by the worker, the stack, the CLI and the tests."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from zhiping.settings import Settings


async def connect(settings: Settings) -> Client:
    """A Temporal client that speaks pydantic models."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


__all__ = ["connect"]

"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis): no input gets a 5xx.

The app runs in-process (``schemathesis.openapi.from_asgi``) against the real dev server
and a worker, both on a loop of their own in a background thread. Every operation gets a
bounded number of generated requests with an ops token (``/events``: integration).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.checks import not_a_server_error
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities import Database, ZhipingActivities
from activities.notifications import NullChannel
from tests.conftest import SECRET
from worker import build_worker
from workflows.visibility import dev_server_flags
from zhiping.api import create_app
from zhiping.binaries import find_binary
from zhiping.settings import Settings

TOKENS = {"t-ops": "ops", "t-int": "integration"}


class _Stack:
    """The dev server and a worker on their own event loop, until ``stop``."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.database_url = f"sqlite+aiosqlite:///{data}/zhiping.db"
        self.task_queue = f"fuzz-{uuid.uuid4()}"
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=find_binary("temporal"),
                dev_server_extra_args=dev_server_flags(),
                ip="127.0.0.1",
                port=self.port,
                data_converter=pydantic_data_converter,
            )
        except BaseException as error:
            self._error = error
            self._ready.set()
            raise
        db = Database.from_url(self.database_url)
        try:
            await db.create_schema()
            worker = build_worker(env.client, ZhipingActivities(db, NullChannel()), self.task_queue)
            async with worker:
                self._ready.set()
                await self._stop.wait()
        finally:
            await db.dispose()
            await env.shutdown()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        shutil.rmtree(self.data, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The schema is loaded at import (schemathesis parametrizes from it); the stack the app
# talks to starts with the module's first test.
STACK = _Stack(Path(tempfile.mkdtemp(prefix="zhiping-fuzz-")))
APP = create_app(
    Settings(
        temporal_address=STACK.address,
        database_url=STACK.database_url,
        task_queue=STACK.task_queue,
        person_key_secret=SecretStr(SECRET.decode()),
        api_tokens=TOKENS,
        event_secrets={"platform": SecretStr("s-platform")},
    )
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def stack() -> Iterator[_Stack]:
    STACK.start()
    try:
        yield STACK
    finally:
        STACK.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case: Any) -> None:
    token = "t-int" if case.path == "/events" else "t-ops"
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error]
    )

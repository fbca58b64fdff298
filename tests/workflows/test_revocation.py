"""Fraud found after an application ended (附件3): "取消已确认的资格".

An approved application's workflow has ended; disqualifying it starts a new run of the
same workflow id that continues the ended record, applies the disqualification with all
its effects (audit log, read model, notification, 3-year ban) and ends again.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy

from activities import Database
from models.commands import (
    ApplicationStatus,
    Disqualification,
    MeetingResult,
    Withdrawal,
    application_workflow_id,
)
from models.errors import DomainError
from models.lifecycle import State
from models.tables import Application, FraudBan, NotificationOutbox, TransitionLog
from tests.conftest import Harness
from tests.workflows.test_application import at, submit, to_meeting
from workflows import ApplicationWorkflow
from zhiping import service


async def approved(harness: Harness) -> ApplicationStatus:
    """An application through meeting and publicity; its workflow has ended."""
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_meeting(harness)
    await harness.sleep_until(at(2024, 9, 27, 10, 0, 0))
    await handle.execute_update(
        ApplicationWorkflow.record_meeting_result, MeetingResult(meeting_id="M1", passed=True)
    )
    await harness.sleep_until(at(2024, 10, 11, 0, 0, 1))
    result = await handle.result()
    assert result.state is State.approved
    return result


async def test_an_approved_application_found_fraudulent_is_disqualified_and_barred(
    harness: Harness, db: Database
) -> None:
    client, cycle = harness.env.client, harness.policy.cycle_id
    before = await approved(harness)
    app = before.application_id
    assert "disqualify" in before.allowed_actions

    status = await service.perform(
        client, cycle, app, "disqualify", Disqualification(reason="学历证书系伪造")
    )
    assert status.state is State.disqualified
    last = status.history[-1]
    assert (last.seq, last.trigger, last.source, last.dest) == (
        before.history[-1].seq + 1,
        "disqualify",
        State.approved,
        State.disqualified,
    )
    assert status.history[:-1] == before.history
    # The application's workflow id now answers with the continuing run, ended again.
    handle = client.get_workflow_handle(
        application_workflow_id(cycle, app), result_type=ApplicationStatus
    )
    assert (await handle.result()).state is State.disqualified
    assert "disqualify" not in status.allowed_actions

    async with db.sessions() as session:
        log = (
            await session.scalars(
                select(TransitionLog)
                .where(TransitionLog.cycle_id == cycle, TransitionLog.application_id == app)
                .order_by(TransitionLog.seq)
            )
        ).all()
        row = await session.get(Application, (cycle, app))
        bans = (await session.scalars(select(FraudBan))).all()
        notices = (
            await session.scalars(
                select(NotificationOutbox.template).where(NotificationOutbox.application_id == app)
            )
        ).all()
    assert [entry.seq for entry in log] == [entry.seq for entry in status.history]
    assert log[-1].reason == "学历证书系伪造"
    assert row is not None and (row.state, row.last_seq) == ("disqualified", last.seq)
    assert [(b.application_id, b.from_year, b.until_year) for b in bans] == [(app, 2024, 2027)]
    assert "state.disqualified" in notices

    # Once disqualified, nothing more: a second disqualification is refused.
    with pytest.raises(DomainError) as again:
        await service.perform(client, cycle, app, "disqualify", Disqualification(reason="再次"))
    assert again.value.code == "APPLICATION_CLOSED"

    # The ban reaches the person's application in a later cycle year.
    later = harness.policy.model_copy(update={"cycle_id": "2026-aksu", "year": 2026})
    refused = await (await harness.start(policy=later)).result()
    assert refused.state is State.rejected
    assert refused.history[-1].trigger == "refuse_banned"


async def test_of_two_revocations_at_once_the_later_finds_it_done(
    harness: Harness, db: Database
) -> None:
    """Both read the ended run's record; the second starts only after the first run has
    ended too. It continues from the newest record, so nothing is applied twice and the
    application still reads as disqualified."""
    client, cycle = harness.env.client, harness.policy.cycle_id
    await harness.anchor(at(2024, 8, 26, 9, 0, 0))
    handle = await harness.start()
    await submit(handle, harness.policy)
    await handle.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
    withdrawn = await handle.result()
    outdated = await handle.query(ApplicationWorkflow.continuation)
    assert outdated.resume is not None and outdated.resume.state is State.withdrawn

    first = await service.perform(
        client, cycle, withdrawn.application_id, "disqualify", Disqualification(reason="伪造")
    )
    assert first.state is State.disqualified
    await client.get_workflow_handle(handle.id).result()

    late = WithStartWorkflowOperation(
        ApplicationWorkflow.run,
        outdated,
        id=handle.id,
        task_queue=harness.worker.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await client.execute_update_with_start_workflow(
            ApplicationWorkflow.revoke,
            Disqualification(reason="再次"),
            start_workflow_operation=late,
        )
    assert getattr(refused.value.cause, "type", None) == "TRANSITION_NOT_ALLOWED"
    final = await (await late.workflow_handle()).result()
    assert final.state is State.disqualified and final.history == first.history
    async with db.sessions() as session:
        bans = (await session.scalars(select(FraudBan))).all()
        seqs = (
            await session.scalars(
                select(TransitionLog.seq).where(
                    TransitionLog.application_id == withdrawn.application_id
                )
            )
        ).all()
    assert len(bans) == 1 and sorted(seqs) == [e.seq for e in first.history]


async def test_a_plain_disqualify_waits_until_a_continuing_run_has_its_record(
    harness: Harness,
) -> None:
    """Sent with the start of a continuing run, before it has read the newest record,
    ``disqualify`` is refused as busy (``revoke`` is the update that waits for it)."""
    client = harness.env.client
    await harness.anchor(at(2024, 8, 26, 9, 0, 0))
    handle = await harness.start()
    await handle.execute_update(ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
    await handle.result()
    start = WithStartWorkflowOperation(
        ApplicationWorkflow.run,
        await handle.query(ApplicationWorkflow.continuation),
        id=handle.id,
        task_queue=harness.worker.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await client.execute_update_with_start_workflow(
            ApplicationWorkflow.disqualify,
            Disqualification(reason="伪造"),
            start_workflow_operation=start,
        )
    assert getattr(refused.value.cause, "type", None) == "APPLICATION_BUSY"
    # That run changes nothing and ends with the record it continued.
    assert (await (await start.workflow_handle()).result()).state is State.withdrawn

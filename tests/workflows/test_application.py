"""ApplicationWorkflow on the real time-skipping server: every rule and timer at its boundary.

The cycle clock is anchored so that Temporal's "now" stands for an instant of the 2024
cycle; ``harness.sleep_until`` skips server time to a business instant.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities import Database
from models.clock import CycleClock
from models.commands import (
    ApplicationStatus,
    DeadlineChange,
    DefenseExemption,
    DefenseResult,
    DefenseSchedule,
    Disqualification,
    MeetingEnrolment,
    MeetingResult,
    ObjectionInput,
    ObjectionResolution,
    PaymentInput,
    ReviewDecision,
    StartApplication,
    SubmitInput,
    Withdrawal,
    application_workflow_id,
)
from models.dossier import IssueType
from models.identity import person_key
from models.lifecycle import State
from models.policy import CHINA_TZ, CyclePolicy, Level
from models.tables import NotificationOutbox, TransitionLog
from tests.conftest import SECRET, Harness, describe_raw, new_worker
from workflows import ApplicationWorkflow
from zhiping.samples import complete_dossier

Handle = WorkflowHandle[ApplicationWorkflow, ApplicationStatus]


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=CHINA_TZ)


async def idle(handle: Handle) -> None:
    """Wait until no activity of ``handle`` is in flight.

    The time-skipping test server leaks its time-skipping lock when an update is rejected
    while an activity is running, stalling every later time skip; a real server does not.
    """
    while True:
        raw = await describe_raw(handle)
        if not raw.pending_activities and not raw.HasField("pending_workflow_task"):
            return
        await asyncio.sleep(0.05)


async def refused(code: str | set[str], handle: Handle, call: object) -> None:
    """The update is refused with ``code`` (the validator's ApplicationError type)."""
    await idle(handle)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await call  # type: ignore[misc]
    codes = {code} if isinstance(code, str) else code
    assert getattr(info.value.cause, "type", None) in codes, info.value.cause


async def finishing(handle: Handle, update: Any, arg: Any) -> ApplicationStatus:
    """Send an update that ends the application; return the final status.

    The test server cannot report an update's outcome once its workflow has completed,
    so wait for acceptance and read the workflow's result instead.
    """
    await handle.start_update(update, arg, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    return await handle.result()


async def refused_after_close(call: object) -> None:
    """An update to an application whose workflow has ended is refused."""
    with pytest.raises((WorkflowUpdateFailedError, RPCError)):
        await call  # type: ignore[misc]


async def submit(
    handle: Handle, policy: CyclePolicy, level: Level = Level.intermediate
) -> ApplicationStatus:
    return await handle.execute_update(
        ApplicationWorkflow.submit, SubmitInput(dossier=complete_dossier(policy, level))
    )


async def state(handle: Handle) -> State:
    return (await handle.query(ApplicationWorkflow.status)).state


async def to_fee_due(h: Harness, level: Level = Level.intermediate) -> Handle:
    handle = await h.start(level=level)
    await submit(handle, h.policy, level)
    status = await handle.execute_update(ApplicationWorkflow.accept, ReviewDecision())
    assert status.state is State.fee_due
    return handle


async def pay(handle: Handle, amount: str, txn: str = "T1") -> ApplicationStatus:
    return await handle.execute_update(
        ApplicationWorkflow.record_payment, PaymentInput(transaction_id=txn, amount=Decimal(amount))
    )


async def to_meeting(h: Harness, level: Level = Level.intermediate) -> Handle:
    handle = await to_fee_due(h, level)
    await pay(handle, str(h.policy.fee_for(level)))
    status = await handle.execute_update(
        ApplicationWorkflow.enter_meeting, MeetingEnrolment(meeting_id="M1")
    )
    assert status.state is State.in_meeting
    return handle


# -- submission cutoff (§3(一)) --------------------------------------------------------------


async def test_submit_one_second_before_cutoff_counts_and_at_cutoff_is_refused(
    harness: Harness,
) -> None:
    await harness.anchor(at(2024, 8, 30, 17, 59, 0))
    early, late = await harness.start(), await harness.start()
    await harness.sleep_until(at(2024, 8, 30, 17, 59, 59))
    status = await submit(early, harness.policy)
    assert status.state is State.under_review and status.submission_round == 1
    await harness.sleep_until(at(2024, 8, 30, 18, 0, 0))
    # Refused by the cutoff rule, or (if the cutoff timer already ran) by the state.
    await refused(
        {"SUBMISSION_CUTOFF_PASSED", "TRANSITION_NOT_ALLOWED"}, late, submit(late, harness.policy)
    )
    result = await late.result()
    assert result.state is State.abandoned
    assert result.history[-1].trigger == "expire_cutoff"
    assert result.history[-1].at >= at(2024, 8, 30, 18, 0, 0)
    assert await state(early) is State.under_review


async def test_submit_refused_by_the_validator_leaves_no_trace(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 30, 17, 0, 0))
    handle = await harness.start()
    incomplete = complete_dossier(harness.policy, Level.intermediate).model_copy(
        update={"putonghua_grade": None}
    )
    await refused(
        "PRECHECKS_FAILED",
        handle,
        handle.execute_update(ApplicationWorkflow.submit, SubmitInput(dossier=incomplete)),
    )
    await submit(handle, harness.policy)  # a later valid submission is round 1
    history = (await handle.fetch_history()).events
    updates = [
        e
        for e in history
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    ]
    assert len(updates) == 1
    status = await handle.query(ApplicationWorkflow.status)
    assert status.state is State.under_review and status.submission_round == 1


async def test_advisory_findings_travel_with_the_submission(harness: Harness) -> None:
    """Rule 14: a paper in a supplement does not count, but does not block either."""
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await harness.start()
    dossier = complete_dossier(harness.policy, Level.intermediate)
    papers = [p.model_copy(update={"issue_type": IssueType.supplement}) for p in dossier.papers]
    status = await handle.execute_update(
        ApplicationWorkflow.submit,
        SubmitInput(dossier=dossier.model_copy(update={"papers": papers})),
    )
    assert status.state is State.under_review and status.submission_round == 1
    assert [(f.code, f.severity.value) for f in status.findings] == [
        ("PAPER_SPECIAL_ISSUE", "advisory")
    ] * len(papers)


async def test_extended_cutoff_keeps_a_waiting_application_alive(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 30, 12, 0, 0))
    extended, unchanged = await harness.start(), await harness.start()
    new_cutoff = at(2024, 9, 2, 18, 0, 0)
    status = await extended.execute_update(
        ApplicationWorkflow.change_deadlines,
        DeadlineChange(submission_cutoff=new_cutoff, reason="平台故障，延长申报"),
    )
    assert status.deadlines[0].at == new_cutoff
    await refused(
        "DEADLINE_NOT_EXTENDED",
        extended,
        extended.execute_update(
            ApplicationWorkflow.change_deadlines,
            DeadlineChange(submission_cutoff=at(2024, 8, 30, 17, 0, 0), reason="提前"),
        ),
    )
    await harness.sleep_until(at(2024, 8, 30, 18, 0, 1))
    assert (await unchanged.result()).state is State.abandoned
    assert await state(extended) is State.draft
    await harness.sleep_until(at(2024, 9, 2, 17, 59, 59))
    assert (await submit(extended, harness.policy)).state is State.under_review


async def test_cutoff_reminders_are_sent_while_relevant(harness: Harness, db: Database) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    early = await harness.start()
    await harness.sleep_until(at(2024, 8, 29, 9, 0, 0))
    late = await harness.start()  # the 3-day reminder is already past for it
    submitted = await harness.start()
    await submit(submitted, harness.policy)  # submitted: no reminder is relevant any more
    await harness.sleep_until(at(2024, 8, 30, 18, 0, 1))
    await early.result()
    await late.result()
    reminders = await _outbox(db, "reminder.submission_cutoff")
    by_app: dict[str, int] = {}
    for row in reminders:
        by_app[row.application_id] = by_app.get(row.application_id, 0) + 1
    early_id, late_id = early.id.rsplit(":", 1)[1], late.id.rsplit(":", 1)[1]
    assert by_app == {early_id: 2, late_id: 1}
    abandoned = await _outbox(db, "state.abandoned")
    assert len(abandoned) == 2
    for row in abandoned:
        assert "2024-08-30 18:00" in row.body and "未提供" not in row.body


# -- revision rounds (§4.1.1) ----------------------------------------------------------------


async def test_return_on_the_third_submission_rejects(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 1, 9, 0, 0))
    handle = await harness.start()
    for round_ in (1, 2):
        await submit(handle, harness.policy)
        status = await handle.execute_update(
            ApplicationWorkflow.return_for_revision, ReviewDecision(reason=f"第{round_}次修改意见")
        )
        assert status.state is State.returned and status.submission_round == round_
    assert (await submit(handle, harness.policy)).submission_round == 3
    result = await finishing(
        handle, ApplicationWorkflow.return_for_revision, ReviewDecision(reason="仍不符合要求")
    )
    assert result.state is State.rejected


async def test_return_requires_a_reason(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 1, 9, 0, 0))
    handle = await harness.start()
    await submit(handle, harness.policy)
    await refused(
        "REASON_REQUIRED",
        handle,
        handle.execute_update(ApplicationWorkflow.return_for_revision, ReviewDecision()),
    )


async def test_resubmission_one_second_inside_and_outside_the_two_day_window(
    harness: Harness,
) -> None:
    await harness.anchor(at(2024, 8, 10, 10, 0, 0))
    inside, outside = await harness.start(), await harness.start()
    for handle in (inside, outside):
        await submit(handle, harness.policy)
        await handle.execute_update(
            ApplicationWorkflow.return_for_revision, ReviewDecision(reason="补充学历证明")
        )
    returned_at = (await inside.query(ApplicationWorkflow.status)).history[-1].at
    window_end = returned_at + timedelta(days=2)
    await harness.sleep_until(window_end - timedelta(seconds=1))
    assert (await submit(inside, harness.policy)).submission_round == 2
    await harness.sleep_until(window_end + timedelta(seconds=1))
    result = await outside.result()
    await refused_after_close(submit(outside, harness.policy))
    assert result.state is State.rejected
    assert result.history[-1].trigger == "expire_resubmission"


# -- fee (§4(六), §3(三)) -------------------------------------------------------------------


async def test_fee_one_second_before_and_after_the_deadline(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    in_time, too_late = await to_fee_due(harness), await to_fee_due(harness)
    await harness.sleep_until(at(2024, 9, 15, 23, 59, 59))
    assert (await pay(in_time, "400")).state is State.awaiting_meeting
    await harness.sleep_until(at(2024, 9, 16, 0, 0, 1))
    result = await too_late.result()
    await refused_after_close(pay(too_late, "400"))
    assert result.state is State.lapsed and not result.fee_paid


async def test_wrong_amount_refused_and_same_transaction_counted_once(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_fee_due(harness, Level.deputy_senior)
    await refused("PAYMENT_AMOUNT_MISMATCH", handle, pay(handle, "400"))
    await refused("PAYMENT_AMOUNT_MISMATCH", handle, pay(handle, "700.01"))
    first = await pay(handle, "700.00", txn="BANK-1")
    second = await pay(handle, "700", txn="BANK-1")
    assert first.state is second.state is State.defense_pending
    assert len(second.payments) == 1
    assert second.history == first.history
    await refused("PAYMENT_CONFLICT", handle, pay(handle, "400", txn="BANK-1"))


async def test_same_event_id_applies_once(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_fee_due(harness)
    payment = PaymentInput(transaction_id="QR-9", amount=Decimal("400"))
    one = await handle.execute_update(ApplicationWorkflow.record_payment, payment, id="evt-42")
    await idle(handle)
    two = await handle.execute_update(ApplicationWorkflow.record_payment, payment, id="evt-42")
    assert one == two


async def test_fee_reminders(harness: Harness, db: Database) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    unpaid, paid = await to_fee_due(harness), await to_fee_due(harness)
    await harness.sleep_until(at(2024, 9, 13, 12, 0, 0))  # after the 3-day reminder
    await pay(paid, "400")
    await harness.sleep_until(at(2024, 9, 16, 0, 0, 1))
    assert (await unpaid.result()).state is State.lapsed
    rows = await _outbox(db, "reminder.fee_deadline")
    unpaid_id, paid_id = unpaid.id.rsplit(":", 1)[1], paid.id.rsplit(":", 1)[1]
    assert sorted(r.application_id for r in rows) == sorted([unpaid_id, unpaid_id, paid_id])


# -- defense (§4(四)) -----------------------------------------------------------------------


async def test_defense_required_for_deputy_senior_not_for_intermediate(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    senior = await to_fee_due(harness, Level.deputy_senior)
    assert (await pay(senior, "700")).state is State.defense_pending
    await refused(
        "DEFENSE_NOT_SCHEDULED",
        senior,
        senior.execute_update(
            ApplicationWorkflow.record_defense_result, DefenseResult(passed=True)
        ),
    )
    await senior.execute_update(
        ApplicationWorkflow.schedule_defense,
        DefenseSchedule(session_id="D1", at=at(2024, 9, 20, 9, 0, 0), place="地委党校 3 号楼 201"),
    )
    status = await senior.execute_update(
        ApplicationWorkflow.record_defense_result, DefenseResult(passed=True)
    )
    assert status.state is State.awaiting_meeting

    middle = await to_fee_due(harness, Level.intermediate)
    await refused(
        "EXEMPTION_NOT_APPLICABLE",
        middle,
        middle.execute_update(
            ApplicationWorkflow.exempt_from_defense, DefenseExemption(reason="x")
        ),
    )
    assert (await pay(middle, "400")).state is State.awaiting_meeting


async def test_defense_exemption_is_recorded_with_its_reason(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_fee_due(harness, Level.senior)
    reason = "符合阿地人社传〔2024〕13号免答辩条款：获自治区级教学成果奖"
    await handle.execute_update(
        ApplicationWorkflow.exempt_from_defense, DefenseExemption(reason=reason)
    )
    status = await pay(handle, "700")
    assert status.state is State.awaiting_meeting
    assert status.defense_exemption == reason
    assert any(e.trigger == "exempt_from_defense" and e.reason == reason for e in status.history)


async def test_failed_defense_is_not_approved(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_fee_due(harness, Level.deputy_senior)
    await pay(handle, "700")
    await handle.execute_update(
        ApplicationWorkflow.schedule_defense,
        DefenseSchedule(session_id="D2", at=at(2024, 9, 20, 9, 0, 0), place="地委党校"),
    )
    result = await finishing(
        handle, ApplicationWorkflow.record_defense_result, DefenseResult(passed=False)
    )
    assert result.state is State.not_approved


# -- publicity and objections (§3(四), 附件1) ---------------------------------------------


async def test_publicity_over_national_day_ends_on_the_fifth_working_day(harness: Harness) -> None:
    # Published Fri 2024-09-27. Working days after it: Sun 09-29 (调休), Mon 09-30, then
    # 10-01..10-07 off, Tue 10-08, Wed 10-09, Thu 10-10 → the period ends 2024-10-11 00:00.
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_meeting(harness)
    await harness.sleep_until(at(2024, 9, 27, 10, 0, 0))
    status = await handle.execute_update(
        ApplicationWorkflow.record_meeting_result, MeetingResult(meeting_id="M1", passed=True)
    )
    assert status.state is State.publicity
    assert status.publicity_ends == at(2024, 10, 11, 0, 0, 0)
    await harness.sleep_until(at(2024, 10, 10, 23, 59, 59))
    assert await state(handle) is State.publicity
    await harness.sleep_until(at(2024, 10, 11, 0, 0, 1))
    result = await handle.result()
    assert result.state is State.approved
    assert result.history[-1].trigger == "end_publicity"


async def test_objection_upheld_disqualifies(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_meeting(harness)
    await harness.sleep_until(at(2024, 9, 27, 10, 0, 0))
    await handle.execute_update(
        ApplicationWorkflow.record_meeting_result, MeetingResult(meeting_id="M1", passed=True)
    )
    status = await handle.execute_update(
        ApplicationWorkflow.file_objection,
        ObjectionInput(objection_id="O1", summary="任职年限不足"),
    )
    assert status.state is State.under_investigation
    await harness.sleep_until(at(2024, 10, 12, 9, 0, 0))  # the period ends while investigating
    assert await state(handle) is State.under_investigation
    result = await finishing(
        handle,
        ApplicationWorkflow.resolve_objection,
        ObjectionResolution(objection_id="O1", upheld=True, reason="经核实任职年限不足"),
    )
    assert result.state is State.disqualified


async def test_objection_dismissed_returns_to_publicity_or_approves(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    early, late = await to_meeting(harness), await to_meeting(harness)
    await harness.sleep_until(at(2024, 9, 27, 10, 0, 0))
    for handle in (early, late):
        await handle.execute_update(
            ApplicationWorkflow.record_meeting_result, MeetingResult(meeting_id="M1", passed=True)
        )
        await handle.execute_update(
            ApplicationWorkflow.file_objection, ObjectionInput(objection_id="O", summary="举报")
        )
    await refused(
        "OBJECTION_NOT_OPEN",
        early,
        early.execute_update(
            ApplicationWorkflow.resolve_objection,
            ObjectionResolution(objection_id="nope", upheld=False, reason="x"),
        ),
    )
    status = await early.execute_update(
        ApplicationWorkflow.resolve_objection,
        ObjectionResolution(objection_id="O", upheld=False, reason="查无实据"),
    )
    assert status.state is State.publicity
    await harness.sleep_until(at(2024, 10, 14, 9, 0, 0))
    result = await finishing(
        late,
        ApplicationWorkflow.resolve_objection,
        ObjectionResolution(objection_id="O", upheld=False, reason="查无实据"),
    )
    assert result.state is State.approved
    assert result.history[-1].trigger == "resolve_objection"
    result = await early.result()
    assert result.state is State.approved
    assert result.history[-1].trigger == "end_publicity"


async def test_meeting_failure_is_not_approved(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_meeting(harness)
    await harness.sleep_until(at(2024, 9, 27, 10, 0, 0))
    result = await finishing(
        handle,
        ApplicationWorkflow.record_meeting_result,
        MeetingResult(meeting_id="M1", passed=False),
    )
    assert result.state is State.not_approved


# -- withdraw and fraud (附件3) ---------------------------------------------------------------


async def test_withdraw(harness: Harness) -> None:
    await harness.anchor(at(2024, 8, 5, 9, 0, 0))
    handle = await harness.start()
    await submit(handle, harness.policy)
    result = await finishing(handle, ApplicationWorkflow.withdraw, Withdrawal(reason="个人原因"))
    assert result.state is State.withdrawn and result.history[-1].actor == "applicant"


async def test_fraud_bars_the_person_for_exactly_the_three_following_years(
    harness: Harness,
) -> None:
    await harness.anchor(at(2024, 8, 5, 9, 0, 0))
    person, other = "65300119800101002X", "653001198001010038"
    handle = await harness.start(id_number=person)
    await submit(handle, harness.policy)
    result = await finishing(
        handle, ApplicationWorkflow.disqualify, Disqualification(reason="学历证书系伪造")
    )
    assert result.state is State.disqualified

    for year, barred in ((2025, True), (2026, True), (2027, True), (2028, False)):
        cycle = harness.policy.model_copy(
            update={"year": year, "cycle_id": f"{year}-aksu-party-school"}
        )
        again = await harness.start(id_number=person.lower(), policy=cycle)
        if barred:
            result = await again.result()
            assert result.state is State.rejected, year
            assert "2027" in (result.history[-1].reason or "")
        else:
            assert await state(again) is State.draft, year
            await finishing(again, ApplicationWorkflow.withdraw, Withdrawal())
        fine = await harness.start(id_number=other, policy=cycle)
        assert await state(fine) is State.draft
        await finishing(fine, ApplicationWorkflow.withdraw, Withdrawal())


# -- the read model and the outbox -------------------------------------------------------------


async def _outbox(db: Database, template: str | None = None) -> list[NotificationOutbox]:
    async with db.sessions() as session:
        query = select(NotificationOutbox)
        if template:
            query = query.where(NotificationOutbox.template == template)
        return list((await session.scalars(query)).all())


async def test_one_row_per_transition_and_notification(harness: Harness, db: Database) -> None:
    await harness.anchor(at(2024, 8, 20, 9, 0, 0))
    handle = await to_meeting(harness, Level.intermediate)
    await harness.sleep_until(at(2024, 9, 27, 10, 0, 0))
    await handle.execute_update(
        ApplicationWorkflow.record_meeting_result, MeetingResult(meeting_id="M1", passed=True)
    )
    await harness.sleep_until(at(2024, 10, 12, 0, 0, 0))
    result = await handle.result()
    app_id = result.application_id
    async with db.sessions() as session:
        seqs = (
            await session.scalars(
                select(TransitionLog.seq)
                .where(TransitionLog.application_id == app_id)
                .order_by(TransitionLog.seq)
            )
        ).all()
        count = await session.scalar(
            select(func.count())
            .select_from(NotificationOutbox)
            .where(NotificationOutbox.application_id == app_id)
        )
    assert list(seqs) == [entry.seq for entry in result.history]
    state_changes = [e for e in result.history if e.source != e.dest or e.trigger == "create"]
    assert count == len(state_changes)
    assert not [row.body for row in await _outbox(db) if "未提供" in row.body]


@pytest.mark.databases("sqlite")
async def test_an_update_sent_with_the_start_comes_after_the_creation(
    dev_env: WorkflowEnvironment, db: Database, policy: CyclePolicy
) -> None:
    """Update-with-start puts the withdraw in the very first workflow task, before run()
    begins: the creation must still be entry 1 (and event 1 for the webhooks)."""
    async with new_worker(dev_env.client, db) as worker:
        start = WithStartWorkflowOperation(
            ApplicationWorkflow.run,
            StartApplication(
                application_id="UWS1",
                level=Level.intermediate,
                policy=policy,
                person_key=person_key("653001198001010011", SECRET),
                clock=CycleClock.rehearse(at(2024, 8, 26, 9, 0, 0), datetime.now(UTC)),
            ),
            id=application_workflow_id(policy.cycle_id, "UWS1"),
            task_queue=worker.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
        status = await dev_env.client.execute_update_with_start_workflow(
            ApplicationWorkflow.withdraw,
            Withdrawal(reason="个人原因"),
            start_workflow_operation=start,
        )
        assert [(e.seq, e.trigger, e.source, e.dest) for e in status.history] == [
            (1, "create", State.draft, State.draft),
            (2, "withdraw", State.draft, State.withdrawn),
        ]
        assert (await (await start.workflow_handle()).result()).state is State.withdrawn

"""The lifecycle state machine at every rule boundary, with exact instants (no Temporal)."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from models.errors import DomainError
from models.findings import Finding, Severity
from models.lifecycle import (
    ACTION_LABELS,
    ACTIVE_STATES,
    AUTOMATIC_TRIGGERS,
    FINAL_STATES,
    TRANSITIONS,
    ApplicationRecord,
    DefenseSession,
    Lifecycle,
    Move,
    Objection,
    Payment,
    State,
)
from models.policy import CHINA_TZ, Level, load_policy

POLICY = load_policy("2024-aksu-party-school")

CUTOFF = datetime(2024, 8, 30, 18, 0, 0, tzinfo=CHINA_TZ)
WINDOW_OPENS = datetime(2024, 7, 22, 0, 0, 0, tzinfo=CHINA_TZ)
FEE_DEADLINE = datetime(2024, 9, 16, 0, 0, 0, tzinfo=CHINA_TZ)  # end of 2024-09-15
ONE_SECOND = timedelta(seconds=1)
TWO_DAYS = timedelta(days=2)

FEES = {
    Level.junior: Decimal("200"),
    Level.intermediate: Decimal("400"),
    Level.deputy_senior: Decimal("700"),
    Level.senior: Decimal("700"),
}


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=CHINA_TZ)


def current(lc: Lifecycle) -> State:
    """The state, read through a call so the type checker does not narrow it between moves."""
    return lc.current


def move(now: datetime, actor: str = "applicant", **kwargs: Any) -> Move:
    return Move(now=now, actor=actor, **kwargs)


def new(level: Level = Level.deputy_senior, state: State = State.draft) -> Lifecycle:
    record = ApplicationRecord(
        application_id="A0001",
        cycle_id=POLICY.cycle_id,
        level=level,
        state=state,
        deadlines=POLICY.deadlines,
    )
    return Lifecycle(record, POLICY)


def refused(lc: Lifecycle, trigger: str, m: Move, code: str) -> DomainError:
    """Both check() and fire() refuse with ``code`` and leave the record as it was."""
    before = lc.record.model_dump()
    with pytest.raises(DomainError) as checked:
        lc.check(trigger, m)
    assert checked.value.code == code
    with pytest.raises(DomainError) as fired:
        lc.fire(trigger, m)
    assert fired.value.code == code
    assert lc.record.model_dump() == before
    assert lc.state == before["state"]
    return fired.value


def blocking_finding() -> Finding:
    return Finding(
        code="PUTONGHUA_TOO_LOW",
        severity=Severity.blocking,
        message="普通话水平低于三级乙等",
        clause="§4.1.5",
    )


def advisory_finding() -> Finding:
    return Finding(
        code="PAPER_IN_SUPPLEMENT",
        severity=Severity.advisory,
        message="增刊论文不计入科研成果",
        clause="§5.7",
    )


def payment(amount: str | Decimal, txn: str = "TX-1", now: datetime | None = None) -> Payment:
    return Payment(
        transaction_id=txn,
        amount=Decimal(amount),
        channel="qr",
        at=now or at(2024, 9, 5, 10, 0, 0),
    )


# -- drivers: walk the machine to a state the ordinary way -------------------------------------


def submitted(level: Level = Level.deputy_senior) -> Lifecycle:
    lc = new(level)
    lc.fire("submit", move(at(2024, 8, 20, 10, 0, 0)))
    assert current(lc) is State.under_review
    return lc


def returned(lc: Lifecycle, now: datetime) -> Lifecycle:
    lc.fire("return_for_revision", move(now, "reviewer", reason="学历证明缺失"))
    return lc


def fee_due(level: Level = Level.deputy_senior) -> Lifecycle:
    lc = submitted(level)
    lc.fire("accept", move(at(2024, 8, 25, 9, 0, 0), "reviewer"))
    assert current(lc) is State.fee_due
    return lc


def paid(level: Level = Level.deputy_senior) -> Lifecycle:
    lc = fee_due(level)
    lc.fire(
        "record_payment",
        move(at(2024, 9, 5, 10, 0, 0), "payment", payment=payment(FEES[level])),
    )
    return lc


def defense_scheduled() -> Lifecycle:
    lc = paid(Level.deputy_senior)
    assert current(lc) is State.defense_pending
    session = DefenseSession(session_id="D1", at=at(2024, 9, 20, 9, 0, 0), place="报告厅")
    lc.fire("schedule_defense", move(at(2024, 9, 10, 9, 0, 0), "ops", defense=session))
    return lc


def in_meeting(level: Level = Level.intermediate) -> Lifecycle:
    lc = paid(level)
    assert current(lc) is State.awaiting_meeting
    lc.fire("enter_meeting", move(at(2024, 9, 26, 9, 0, 0), "ops", meeting_id="M-2024"))
    assert current(lc) is State.in_meeting
    return lc


PUBLISHED = datetime(2024, 9, 27, 10, 0, 0, tzinfo=CHINA_TZ)  # a Friday


def in_publicity(published: datetime = PUBLISHED) -> Lifecycle:
    lc = in_meeting()
    lc.fire("record_meeting_result", move(published, "committee", passed=True))
    assert current(lc) is State.publicity
    return lc


def objected(published: datetime = PUBLISHED) -> Lifecycle:
    lc = in_publicity(published)
    objection = Objection(
        objection_id="O1",
        summary="论文疑似代写",
        filed_at=at(2024, 9, 30, 11, 0, 0),
        filed_by="匿名",
    )
    lc.fire("file_objection", move(at(2024, 9, 30, 11, 0, 0), "ops", objection=objection))
    assert current(lc) is State.under_investigation
    return lc


# -- rule 1: submission window ---------------------------------------------------------------


def test_submit_one_second_before_cutoff_is_accepted() -> None:
    lc = new()
    entries = lc.fire("submit", move(CUTOFF - ONE_SECOND))
    assert current(lc) is State.under_review
    assert lc.record.state is State.under_review
    assert lc.record.submission_round == 1
    assert [(e.trigger, e.source, e.dest) for e in entries] == [
        ("submit", State.draft, State.under_review)
    ]


def test_submit_at_cutoff_is_refused_and_consumes_nothing() -> None:
    lc = new()
    error = refused(lc, "submit", move(CUTOFF), "SUBMISSION_CUTOFF_PASSED")
    assert "2024-08-30 18:00:00" in error.message
    assert current(lc) is State.draft
    assert lc.record.submission_round == 0
    assert lc.record.history == []


def test_pending_deadlines_per_state() -> None:
    lc = new()
    [cutoff] = lc.pending_deadlines()
    assert (cutoff.kind, cutoff.at, cutoff.automatic) == ("submission_cutoff", CUTOFF, True)
    lc.fire("submit", move(at(2024, 8, 20)))
    [review] = lc.pending_deadlines()
    assert (review.kind, review.at, review.automatic) == (
        "review_due",
        at(2024, 9, 11, 0, 0, 0),
        False,
    )
    for state in (State.awaiting_meeting, State.defense_pending, *FINAL_STATES):
        assert new(state=state).pending_deadlines() == []


def test_submit_before_window_opens_is_refused() -> None:
    lc = new()
    refused(lc, "submit", move(WINDOW_OPENS - ONE_SECOND), "WINDOW_NOT_OPEN")
    assert lc.record.submission_round == 0
    lc.fire("submit", move(WINDOW_OPENS))
    assert current(lc) is State.under_review


def test_submit_cutoff_is_an_instant_not_a_local_wall_clock() -> None:
    # 10:00:00 UTC is 18:00:00 +08:00: the cutoff itself.
    lc = new()
    refused(
        lc, "submit", move(datetime(2024, 8, 30, 10, 0, 0, tzinfo=UTC)), "SUBMISSION_CUTOFF_PASSED"
    )
    lc.fire("submit", move(datetime(2024, 8, 30, 9, 59, 59, tzinfo=UTC)))
    assert current(lc) is State.under_review


def test_expire_cutoff_fires_only_at_the_cutoff() -> None:
    lc = new()
    refused(lc, "expire_cutoff", move(CUTOFF - ONE_SECOND, "system"), "TRANSITION_NOT_ALLOWED")
    lc.fire("expire_cutoff", move(CUTOFF, "system"))
    assert current(lc) is State.abandoned
    assert lc.record.history[-1].trigger == "expire_cutoff"


# -- rule 2: returns and resubmission --------------------------------------------------------


def test_returns_on_rounds_one_and_two_then_rejected_on_round_three() -> None:
    lc = submitted()
    first_return = at(2024, 8, 21, 9, 0, 0)
    returned(lc, first_return)
    assert current(lc) is State.returned
    assert lc.record.returned_at == first_return
    assert lc.record.submission_round == 1

    lc.fire("submit", move(at(2024, 8, 22, 9, 0, 0)))
    assert current(lc) is State.under_review
    assert lc.record.submission_round == 2
    assert lc.record.returned_at is None

    returned(lc, at(2024, 8, 23, 9, 0, 0))
    assert current(lc) is State.returned
    lc.fire("submit", move(at(2024, 8, 24, 9, 0, 0)))
    assert lc.record.submission_round == 3

    returned(lc, at(2024, 8, 25, 9, 0, 0))
    assert current(lc) is State.rejected
    assert lc.record.history[-1].trigger == "return_for_revision"
    assert lc.record.history[-1].dest is State.rejected


def test_return_requires_a_reason() -> None:
    lc = submitted()
    refused(lc, "return_for_revision", move(at(2024, 8, 21), "reviewer"), "REASON_REQUIRED")
    refused(
        lc,
        "return_for_revision",
        move(at(2024, 8, 21), "reviewer", reason="   "),
        "REASON_REQUIRED",
    )


def test_resubmission_one_second_before_two_days_is_accepted() -> None:
    lc = submitted()
    returned_at = at(2024, 8, 21, 15, 30, 0)
    returned(lc, returned_at)
    lc.fire("submit", move(returned_at + TWO_DAYS - ONE_SECOND))
    assert current(lc) is State.under_review
    assert lc.record.submission_round == 2


def test_resubmission_at_two_days_is_refused() -> None:
    lc = submitted()
    returned_at = at(2024, 8, 21, 15, 30, 0)
    returned(lc, returned_at)
    error = refused(lc, "submit", move(returned_at + TWO_DAYS), "RESUBMISSION_WINDOW_CLOSED")
    assert "2024-08-23 15:30:00" in error.message
    assert current(lc) is State.returned
    assert lc.record.submission_round == 1
    assert lc.record.returned_at == returned_at


def test_resubmission_after_the_first_cutoff_is_still_allowed() -> None:
    # The cutoff binds the first submission only (§3(一)); the 2-day window binds the rest.
    lc = submitted()
    returned_at = CUTOFF - timedelta(hours=1)
    returned(lc, returned_at)
    lc.fire("submit", move(CUTOFF + timedelta(hours=1)))
    assert current(lc) is State.under_review


def test_expire_resubmission_fires_only_at_the_window_end() -> None:
    lc = submitted()
    returned_at = at(2024, 8, 21, 15, 30, 0)
    returned(lc, returned_at)
    [pending] = lc.pending_deadlines()
    assert pending.kind == "resubmission"
    assert pending.at == at(2024, 8, 23, 15, 30, 0)
    assert pending.automatic is True
    refused(
        lc,
        "expire_resubmission",
        move(returned_at + TWO_DAYS - ONE_SECOND, "system"),
        "TRANSITION_NOT_ALLOWED",
    )
    lc.fire("expire_resubmission", move(returned_at + TWO_DAYS, "system"))
    assert current(lc) is State.rejected


# -- pre-check findings ----------------------------------------------------------------------


def test_blocking_findings_refuse_the_first_submission_without_consuming_a_round() -> None:
    lc = new()
    finding = blocking_finding()
    error = refused(
        lc,
        "submit",
        move(at(2024, 8, 20), findings=[advisory_finding(), finding]),
        "PRECHECKS_FAILED",
    )
    assert error.details["findings"] == [finding.model_dump(mode="json")]
    assert finding.message in error.message
    assert current(lc) is State.draft
    assert lc.record.submission_round == 0
    assert lc.record.findings == []


def test_blocking_findings_refuse_a_resubmission_without_consuming_a_round() -> None:
    lc = submitted()
    returned_at = at(2024, 8, 21, 9, 0, 0)
    returned(lc, returned_at)
    refused(
        lc,
        "submit",
        move(at(2024, 8, 22, 9, 0, 0), findings=[blocking_finding()]),
        "PRECHECKS_FAILED",
    )
    assert current(lc) is State.returned
    assert lc.record.submission_round == 1
    assert lc.record.returned_at == returned_at
    lc.fire("submit", move(at(2024, 8, 22, 10, 0, 0)))
    assert lc.record.submission_round == 2


def test_advisory_findings_travel_with_the_dossier() -> None:
    lc = new()
    finding = advisory_finding()
    lc.fire("submit", move(at(2024, 8, 20), findings=[finding]))
    assert current(lc) is State.under_review
    assert lc.record.submission_round == 1
    assert lc.record.findings == [finding]


# -- rule 3: fee -----------------------------------------------------------------------------


def test_accept_opens_the_fee_automatically() -> None:
    lc = submitted()
    entries = lc.fire("accept", move(at(2024, 8, 25, 9, 0, 0), "reviewer"))
    assert current(lc) is State.fee_due
    assert [(e.trigger, e.source, e.dest, e.actor) for e in entries] == [
        ("accept", State.under_review, State.accepted, "reviewer"),
        ("open_fee", State.accepted, State.fee_due, "system"),
    ]
    assert [e.trigger for e in lc.record.history] == ["submit", "accept", "open_fee"]
    [pending] = lc.pending_deadlines()
    assert (pending.kind, pending.at, pending.automatic) == ("fee", FEE_DEADLINE, True)


@pytest.mark.parametrize(
    ("level", "wrong"),
    [
        (Level.deputy_senior, "400"),
        (Level.deputy_senior, "699.99"),
        (Level.senior, "700.01"),
        (Level.intermediate, "700"),
        (Level.junior, "400"),
    ],
)
def test_wrong_amount_is_refused(level: Level, wrong: str) -> None:
    lc = fee_due(level)
    error = refused(
        lc,
        "record_payment",
        move(at(2024, 9, 5), "payment", payment=payment(wrong)),
        "PAYMENT_AMOUNT_MISMATCH",
    )
    assert error.details == {"expected": str(FEES[level])}
    assert current(lc) is State.fee_due
    assert lc.record.payments == []
    assert lc.record.fee_paid is False


def test_missing_payment_is_refused() -> None:
    lc = fee_due()
    refused(lc, "record_payment", move(at(2024, 9, 5), "payment"), "PAYMENT_AMOUNT_MISMATCH")


@pytest.mark.parametrize("level", list(Level))
def test_exact_amount_to_the_fen_is_accepted(level: Level) -> None:
    lc = fee_due(level)
    amount = FEES[level].quantize(Decimal("0.01"))  # "700.00" equals 700
    lc.fire("record_payment", move(at(2024, 9, 5), "payment", payment=payment(amount)))
    assert lc.record.fee_paid is True
    assert lc.record.payments[0].amount == FEES[level]


def test_payment_one_second_before_fee_deadline_is_accepted() -> None:
    lc = fee_due()
    now = FEE_DEADLINE - ONE_SECOND
    lc.fire("record_payment", move(now, "payment", payment=payment("700", now=now)))
    assert current(lc) is State.defense_pending
    assert lc.record.fee_paid is True


def test_payment_at_fee_deadline_is_refused() -> None:
    lc = fee_due()
    error = refused(
        lc,
        "record_payment",
        move(FEE_DEADLINE, "payment", payment=payment("700", now=FEE_DEADLINE)),
        "FEE_DEADLINE_PASSED",
    )
    assert "2024-09-16 00:00:00" in error.message
    assert current(lc) is State.fee_due
    assert lc.record.payments == []


def test_expire_fee_fires_only_at_the_deadline() -> None:
    lc = fee_due()
    refused(lc, "expire_fee", move(FEE_DEADLINE - ONE_SECOND, "system"), "TRANSITION_NOT_ALLOWED")
    lc.fire("expire_fee", move(FEE_DEADLINE, "system"))
    assert current(lc) is State.lapsed


def test_duplicate_payment_is_found_by_transaction_id() -> None:
    lc = fee_due()
    assert lc.duplicate_payment("TX-1") is None
    first = payment("700", txn="TX-1")
    lc.fire("record_payment", move(at(2024, 9, 5), "payment", payment=first))
    assert lc.duplicate_payment("TX-1") == first
    assert lc.duplicate_payment("TX-2") is None
    # The machine never records a second payment: the application has moved on.
    refused(
        lc,
        "record_payment",
        move(at(2024, 9, 5), "payment", payment=first),
        "TRANSITION_NOT_ALLOWED",
    )
    assert lc.record.payments == [first]


# -- rule 4: routing after payment, defense --------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (Level.deputy_senior, State.defense_pending),
        (Level.senior, State.defense_pending),
        (Level.intermediate, State.awaiting_meeting),
        (Level.junior, State.awaiting_meeting),
    ],
)
def test_payment_routes_by_level(level: Level, expected: State) -> None:
    lc = fee_due(level)
    entries = lc.fire(
        "record_payment", move(at(2024, 9, 5), "payment", payment=payment(FEES[level]))
    )
    assert current(lc) is expected
    assert [(e.trigger, e.source, e.dest, e.actor) for e in entries] == [
        ("record_payment", State.fee_due, State.paid, "payment"),
        ("route_after_payment", State.paid, expected, "system"),
    ]


def test_exemption_recorded_beforehand_routes_deputy_senior_to_the_meeting() -> None:
    lc = fee_due(Level.deputy_senior)
    reason = "阿地人社传〔2024〕13号 免答辩条款"
    entries = lc.fire("exempt_from_defense", move(at(2024, 9, 1), "ops", reason=reason))
    assert current(lc) is State.fee_due
    assert lc.record.defense_exemption == reason
    assert [(e.trigger, e.source, e.dest) for e in entries] == [
        ("exempt_from_defense", State.fee_due, State.fee_due)
    ]
    lc.fire("record_payment", move(at(2024, 9, 5), "payment", payment=payment("700")))
    assert current(lc) is State.awaiting_meeting


def test_exemption_during_defense_pending_moves_to_the_meeting() -> None:
    lc = paid(Level.senior)
    assert current(lc) is State.defense_pending
    lc.fire("exempt_from_defense", move(at(2024, 9, 10), "ops", reason="免答辩条款"))
    assert current(lc) is State.awaiting_meeting


@pytest.mark.parametrize("level", [Level.intermediate, Level.junior])
def test_exemption_for_levels_without_defense_is_refused(level: Level) -> None:
    lc = fee_due(level)
    refused(
        lc,
        "exempt_from_defense",
        move(at(2024, 9, 1), "ops", reason="免答辩条款"),
        "EXEMPTION_NOT_APPLICABLE",
    )
    assert lc.record.defense_exemption is None


def test_exemption_without_reason_is_refused() -> None:
    lc = fee_due(Level.deputy_senior)
    refused(lc, "exempt_from_defense", move(at(2024, 9, 1), "ops"), "EXEMPTION_REASON_REQUIRED")


def test_defense_result_without_a_session_is_refused() -> None:
    lc = paid(Level.deputy_senior)
    assert current(lc) is State.defense_pending
    refused(
        lc,
        "record_defense_result",
        move(at(2024, 9, 20), "ops", passed=True),
        "DEFENSE_NOT_SCHEDULED",
    )
    assert lc.record.defense_passed is None


def test_defense_pass_moves_to_the_meeting() -> None:
    lc = defense_scheduled()
    assert current(lc) is State.defense_pending
    assert lc.record.defense is not None
    lc.fire("record_defense_result", move(at(2024, 9, 20, 12, 0, 0), "ops", passed=True))
    assert current(lc) is State.awaiting_meeting
    assert lc.record.defense_passed is True


def test_defense_fail_is_not_approved() -> None:
    lc = defense_scheduled()
    lc.fire("record_defense_result", move(at(2024, 9, 20, 12, 0, 0), "ops", passed=False))
    assert current(lc) is State.not_approved
    assert lc.record.defense_passed is False


# -- meeting and publicity (rule 7) ----------------------------------------------------------


def test_meeting_fail_is_not_approved() -> None:
    lc = in_meeting()
    assert lc.record.meeting_id == "M-2024"
    lc.fire("record_meeting_result", move(at(2024, 9, 26, 17), "committee", passed=False))
    assert current(lc) is State.not_approved
    assert lc.record.publicity_ends is None


def test_meeting_pass_starts_publicity_with_its_end() -> None:
    lc = in_meeting()
    # 2024-09-02 Mon: the 5 working days are Tue 3 .. Mon 9 (Sat 7, Sun 8 off).
    lc.fire("record_meeting_result", move(at(2024, 9, 2, 16, 0, 0), "committee", passed=True))
    assert current(lc) is State.publicity
    assert lc.record.publicity_ends == at(2024, 9, 10, 0, 0, 0)
    [pending] = lc.pending_deadlines()
    assert (pending.kind, pending.at) == ("publicity_end", at(2024, 9, 10, 0, 0, 0))


def test_meeting_pass_in_an_unknown_calendar_year_is_refused() -> None:
    lc = in_meeting()
    refused(
        lc,
        "record_meeting_result",
        move(at(2099, 1, 5, 10), "committee", passed=True),
        "CALENDAR_YEAR_UNKNOWN",
    )
    assert current(lc) is State.in_meeting
    assert lc.record.publicity_ends is None


def test_publicity_over_national_day_2024() -> None:
    # Published Fri 2024-09-27. Working days counted from the next day:
    #   Sat 09-28 off; Sun 09-29 ON (调休) -> 1; Mon 09-30 -> 2;
    #   Tue 10-01 .. Mon 10-07 off (国庆); Tue 10-08 -> 3; Wed 10-09 -> 4; Thu 10-10 -> 5.
    # The last working day is 2024-10-10, so the period ends at 2024-10-11T00:00+08:00.
    lc = in_publicity(at(2024, 9, 27, 10, 0, 0))
    assert lc.record.publicity_ends == datetime.fromisoformat("2024-10-11T00:00:00+08:00")


def test_end_publicity_fires_only_when_the_period_has_ended() -> None:
    lc = in_publicity()
    ends = at(2024, 10, 11, 0, 0, 0)
    refused(lc, "end_publicity", move(ends - ONE_SECOND, "system"), "TRANSITION_NOT_ALLOWED")
    lc.fire("end_publicity", move(ends, "system"))
    assert current(lc) is State.approved


def test_objection_upheld_disqualifies() -> None:
    lc = objected()
    lc.fire(
        "resolve_objection",
        move(at(2024, 10, 8, 10), "ops", objection_id="O1", upheld=True, reason="查实代写"),
    )
    assert current(lc) is State.disqualified
    [objection] = lc.record.objections
    assert objection.upheld is True
    assert objection.resolution == "查实代写"
    assert objection.resolved_at == at(2024, 10, 8, 10)


def test_objection_dismissed_before_period_end_returns_to_publicity() -> None:
    lc = objected()
    now = at(2024, 10, 11, 0, 0, 0) - ONE_SECOND
    lc.fire(
        "resolve_objection",
        move(now, "ops", objection_id="O1", upheld=False, reason="经核查不属实"),
    )
    assert current(lc) is State.publicity
    assert lc.record.objections[0].upheld is False
    assert lc.record.publicity_ends == at(2024, 10, 11, 0, 0, 0)


def test_objection_dismissed_after_period_end_approves() -> None:
    lc = objected()
    lc.fire(
        "resolve_objection",
        move(at(2024, 10, 11, 0, 0, 0), "ops", objection_id="O1", upheld=False, reason="不属实"),
    )
    assert current(lc) is State.approved


def test_objection_after_publicity_is_refused() -> None:
    lc = in_publicity()
    objection = Objection(
        objection_id="O9", summary="迟到的异议", filed_at=at(2024, 10, 11), filed_by="x"
    )
    refused(
        lc,
        "file_objection",
        move(at(2024, 10, 11, 0, 0, 0), "ops", objection=objection),
        "PUBLICITY_OVER",
    )


def test_resolving_an_unknown_or_resolved_objection_is_refused() -> None:
    lc = objected()
    refused(
        lc,
        "resolve_objection",
        move(at(2024, 10, 8), "ops", objection_id="NOPE", upheld=False, reason="x"),
        "OBJECTION_NOT_OPEN",
    )
    refused(
        lc,
        "resolve_objection",
        move(at(2024, 10, 8), "ops", objection_id="O1", upheld=False),
        "REASON_REQUIRED",
    )


# -- withdraw and disqualify -----------------------------------------------------------------


@pytest.mark.parametrize("state", ACTIVE_STATES, ids=str)
def test_withdraw_from_every_active_state(state: State) -> None:
    lc = new(state=state)
    entries = lc.fire("withdraw", move(at(2024, 9, 1), reason="个人原因"))
    assert current(lc) is State.withdrawn
    assert lc.record.state is State.withdrawn
    assert [(e.trigger, e.source, e.dest, e.reason) for e in entries] == [
        ("withdraw", state, State.withdrawn, "个人原因")
    ]


@pytest.mark.parametrize("state", sorted(FINAL_STATES), ids=str)
def test_withdraw_from_a_final_state_is_refused(state: State) -> None:
    lc = new(state=state)
    error = refused(lc, "withdraw", move(at(2024, 9, 1)), "TRANSITION_NOT_ALLOWED")
    assert state.label in error.message
    assert error.details["state"] == state.label
    assert error.details["trigger"] == "withdraw"
    expected = [] if state is State.disqualified else ["disqualify（认定弄虚作假并取消资格）"]
    assert error.details["allowed"] == expected
    for label in expected:
        assert label in error.message


def test_not_allowed_message_lists_allowed_actions_of_an_active_state() -> None:
    lc = submitted()
    error = refused(
        lc, "record_payment", move(at(2024, 8, 21), "payment"), "TRANSITION_NOT_ALLOWED"
    )
    assert error.details["state"] == "评委会审核中"
    assert set(error.details["allowed"]) == {
        f"{t}（{ACTION_LABELS[t]}）"
        for t in [
            "return_for_revision",
            "accept",
            "exempt_from_defense",
            "withdraw",
            "disqualify",
            "change_deadlines",
        ]
    }


def test_disqualify_from_approved() -> None:
    lc = in_publicity()
    lc.fire("end_publicity", move(at(2024, 10, 11), "system"))
    assert current(lc) is State.approved
    refused(lc, "disqualify", move(at(2024, 11, 1), "ops"), "REASON_REQUIRED")
    lc.fire("disqualify", move(at(2024, 11, 1), "ops", reason="查实论文造假"))
    assert current(lc) is State.disqualified
    assert lc.record.history[-1].source is State.approved
    assert lc.record.history[-1].reason == "查实论文造假"


def test_disqualified_is_terminal() -> None:
    lc = new(state=State.disqualified)
    refused(lc, "disqualify", move(at(2024, 11, 1), "ops", reason="x"), "TRANSITION_NOT_ALLOWED")
    assert lc.allowed_actions() == []


# -- allowed actions -------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(State), ids=str)
def test_allowed_actions_never_lists_automatic_triggers(state: State) -> None:
    lc = new(state=state)
    actions = lc.allowed_actions()
    assert not set(actions) & AUTOMATIC_TRIGGERS
    assert ("change_deadlines" in actions) is (not state.final)
    assert ("withdraw" in actions) is (not state.final)
    assert len(actions) == len(set(actions))


def test_allowed_actions_in_draft() -> None:
    assert new().allowed_actions() == [
        "submit",
        "exempt_from_defense",
        "withdraw",
        "disqualify",
        "change_deadlines",
    ]


# -- deadline changes ------------------------------------------------------------------------


def test_extending_the_cutoff_moves_the_pending_deadline_and_the_rule() -> None:
    lc = new()
    extended = at(2024, 9, 2, 18, 0, 0)
    entry = lc.change_deadlines({"submission_cutoff": extended}, move(at(2024, 8, 29), "ops"))
    assert (entry.trigger, entry.source, entry.dest, entry.actor) == (
        "change_deadlines",
        State.draft,
        State.draft,
        "ops",
    )
    assert lc.record.deadlines.submission_cutoff == extended
    [pending] = lc.pending_deadlines()
    assert (pending.kind, pending.at) == ("submission_cutoff", extended)
    refused(lc, "expire_cutoff", move(CUTOFF, "system"), "TRANSITION_NOT_ALLOWED")
    lc.fire("submit", move(CUTOFF))
    assert current(lc) is State.under_review
    # The cycle's policy is untouched: only this application's deadline moved.
    assert POLICY.deadlines.submission_cutoff == CUTOFF
    assert new().record.deadlines.submission_cutoff == CUTOFF


def test_extending_the_fee_deadline() -> None:
    lc = fee_due()
    extended = at(2024, 9, 20, 0, 0, 0)
    lc.change_deadlines({"fee_deadline": extended}, move(at(2024, 9, 14), "ops"))
    [pending] = lc.pending_deadlines()
    assert (pending.kind, pending.at) == ("fee", extended)
    lc.fire("record_payment", move(FEE_DEADLINE, "payment", payment=payment("700")))
    assert current(lc) is State.defense_pending


def test_shortening_a_deadline_is_refused() -> None:
    lc = new()
    before = lc.record.model_dump()
    with pytest.raises(DomainError) as raised:
        lc.change_deadlines({"submission_cutoff": CUTOFF - ONE_SECOND}, move(at(2024, 8, 1), "ops"))
    assert raised.value.code == "DEADLINE_NOT_EXTENDED"
    assert lc.record.model_dump() == before


def test_empty_deadline_change_is_refused() -> None:
    lc = new()
    with pytest.raises(DomainError) as raised:
        lc.change_deadlines({}, move(at(2024, 8, 1), "ops"))
    assert raised.value.code == "NO_DEADLINE_CHANGE"
    assert lc.record.history == []


def test_naive_or_inconsistent_deadline_change_is_refused() -> None:
    lc = new()
    before = lc.record.model_dump()
    with pytest.raises(DomainError) as naive:
        lc.change_deadlines({"fee_deadline": datetime(2024, 9, 20)}, move(at(2024, 8, 1), "ops"))
    assert naive.value.code == "DEADLINE_WITHOUT_OFFSET"
    with pytest.raises(DomainError) as inconsistent:
        lc.change_deadlines({"submission_cutoff": at(2024, 9, 17)}, move(at(2024, 8, 1), "ops"))
    assert inconsistent.value.code == "DEADLINES_INCONSISTENT"
    assert lc.record.model_dump() == before


@pytest.mark.parametrize("state", sorted(FINAL_STATES), ids=str)
def test_deadline_change_in_a_final_state_is_refused(state: State) -> None:
    lc = new(state=state)
    before = lc.record.model_dump()
    with pytest.raises(DomainError) as raised:
        lc.change_deadlines({"fee_deadline": at(2024, 9, 30)}, move(at(2024, 9, 1), "ops"))
    assert raised.value.code == "TRANSITION_NOT_ALLOWED"
    assert raised.value.details["trigger"] == "change_deadlines"
    assert lc.record.model_dump() == before


# -- check() is pure -------------------------------------------------------------------------

Setup = Callable[[], Lifecycle]

CHECKS: list[tuple[str, Setup, str, Move]] = [
    ("submit-ok", new, "submit", move(at(2024, 8, 20))),
    ("submit-late", new, "submit", move(CUTOFF)),
    ("submit-findings", new, "submit", move(at(2024, 8, 20), findings=[blocking_finding()])),
    ("return-ok", submitted, "return_for_revision", move(at(2024, 8, 21), "r", reason="改")),
    ("accept-ok", submitted, "accept", move(at(2024, 8, 21), "r")),
    (
        "pay-ok",
        fee_due,
        "record_payment",
        move(at(2024, 9, 5), "p", payment=payment("700")),
    ),
    (
        "pay-wrong",
        fee_due,
        "record_payment",
        move(at(2024, 9, 5), "p", payment=payment("400")),
    ),
    ("exempt-ok", fee_due, "exempt_from_defense", move(at(2024, 9, 1), "ops", reason="条款")),
    (
        "meeting-pass",
        in_meeting,
        "record_meeting_result",
        move(at(2024, 9, 27), "c", passed=True),
    ),
    (
        "resolve-ok",
        objected,
        "resolve_objection",
        move(at(2024, 10, 8), "ops", objection_id="O1", upheld=True, reason="查实"),
    ),
    ("expire-early", new, "expire_cutoff", move(CUTOFF - ONE_SECOND, "system")),
    ("withdraw-ok", submitted, "withdraw", move(at(2024, 8, 21))),
]


@pytest.mark.parametrize(
    ("setup", "trigger", "m"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS]
)
def test_check_never_changes_the_record(setup: Setup, trigger: str, m: Move) -> None:
    lc = setup()
    before = lc.record.model_dump()
    state = lc.state
    with contextlib.suppress(DomainError):
        lc.check(trigger, m)
    assert lc.record.model_dump() == before
    assert lc.state == state


def test_check_passes_exactly_when_fire_succeeds() -> None:
    for _, setup, trigger, m in CHECKS:
        checked, fired = setup(), setup()
        try:
            checked.check(trigger, m)
            ok = True
        except DomainError:
            ok = False
        try:
            fired.fire(trigger, m)
            fire_ok = True
        except DomainError:
            fire_ok = False
        assert ok is fire_ok, trigger


# -- history ---------------------------------------------------------------------------------


def test_history_entries_are_numbered_with_actor_reason_and_instant() -> None:
    lc = new()
    lc.created(move(at(2024, 7, 25, 9, 0, 0), "applicant"))
    lc.fire("submit", move(at(2024, 8, 20, 10, 0, 0), "applicant"))
    lc.fire(
        "return_for_revision",
        move(at(2024, 8, 21, 11, 0, 0), "reviewer-7", reason="补充学信网报告"),
    )
    lc.fire("submit", move(at(2024, 8, 22, 12, 0, 0), "applicant"))
    lc.fire("accept", move(at(2024, 8, 23, 13, 0, 0), "reviewer-7"))
    got = [(e.seq, e.trigger, e.source, e.dest, e.actor, e.reason, e.at) for e in lc.record.history]
    assert got == [
        (1, "create", State.draft, State.draft, "applicant", None, at(2024, 7, 25, 9, 0, 0)),
        (
            2,
            "submit",
            State.draft,
            State.under_review,
            "applicant",
            None,
            at(2024, 8, 20, 10, 0, 0),
        ),
        (
            3,
            "return_for_revision",
            State.under_review,
            State.returned,
            "reviewer-7",
            "补充学信网报告",
            at(2024, 8, 21, 11, 0, 0),
        ),
        (4, "submit", State.returned, State.under_review, "applicant", None, at(2024, 8, 22, 12)),
        (5, "accept", State.under_review, State.accepted, "reviewer-7", None, at(2024, 8, 23, 13)),
        (6, "open_fee", State.accepted, State.fee_due, "system", None, at(2024, 8, 23, 13)),
    ]
    assert lc.state_entered_at() == at(2024, 8, 23, 13)


def test_state_survives_a_rebuilt_lifecycle() -> None:
    lc = fee_due()
    again = Lifecycle(ApplicationRecord.model_validate(lc.record.model_dump()), POLICY)
    assert again.current is State.fee_due
    again.fire("record_payment", move(at(2024, 9, 5), "payment", payment=payment("700")))
    assert [e.seq for e in again.record.history] == list(range(1, 6))


# -- the graph -------------------------------------------------------------------------------


def _edges(lc: Lifecycle) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {s.value: set() for s in State}
    for event in lc._machine.events.values():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                graph[source].add(transition.dest or source)
    return graph


def test_machine_events_match_the_transition_table() -> None:
    table: dict[str, set[str]] = {s.value: set() for s in State}
    for row in TRANSITIONS:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        for source in sources:
            table[source].add(row["dest"] or source)
    assert _edges(new()) == table


def test_every_state_is_reachable_from_draft() -> None:
    graph = _edges(new())
    seen = {State.draft.value}
    queue = deque([State.draft.value])
    while queue:
        for dest in graph[queue.popleft()]:
            if dest not in seen:
                seen.add(dest)
                queue.append(dest)
    assert seen == {s.value for s in State}


def test_final_states_lead_nowhere_but_disqualified() -> None:
    graph = _edges(new())
    for state in FINAL_STATES:
        expected = set() if state is State.disqualified else {State.disqualified.value}
        assert graph[state.value] == expected, state


@pytest.mark.parametrize("state", ACTIVE_STATES, ids=str)
def test_every_non_final_state_has_withdraw(state: State) -> None:
    lc = new()
    assert "withdraw" in lc._machine.get_triggers(state.value)
    assert "disqualify" in lc._machine.get_triggers(state.value)


def test_states_and_labels_are_complete() -> None:
    assert set(ACTIVE_STATES) | FINAL_STATES == set(State)
    assert set(FINAL_STATES) == {
        State.approved,
        State.not_approved,
        State.abandoned,
        State.rejected,
        State.lapsed,
        State.withdrawn,
        State.disqualified,
    }
    for state in State:
        assert state.label
    assert set(ACTION_LABELS) >= AUTOMATIC_TRIGGERS

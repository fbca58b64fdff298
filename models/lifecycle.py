"""The lifecycle of one application: the only place the allowed moves are defined.

A ``transitions`` state machine over ``ApplicationRecord``. Guards are named after the
notice's rules. A *rule guard* that fails raises ``DomainError`` with a stable code (the
move is refused); a *routing condition* only picks between branches of one trigger
(``return_for_revision`` goes to ``returned`` or, on the last round, to ``rejected``).

``Lifecycle.check`` evaluates exactly what ``Lifecycle.fire`` would, without changing
anything: the workflow's update validators call it, the handlers call ``fire``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from transitions import EventData, Machine

from models.errors import DomainError, TransitionNotAllowed
from models.findings import Finding, Severity
from models.policy import CHINA_TZ, CyclePolicy, Deadlines, Level
from models.records import PendingDeadline


class State(StrEnum):
    draft = "draft"
    under_review = "under_review"
    returned = "returned"
    accepted = "accepted"
    fee_due = "fee_due"
    paid = "paid"
    defense_pending = "defense_pending"
    awaiting_meeting = "awaiting_meeting"
    in_meeting = "in_meeting"
    publicity = "publicity"
    under_investigation = "under_investigation"
    approved = "approved"
    not_approved = "not_approved"
    abandoned = "abandoned"
    rejected = "rejected"
    lapsed = "lapsed"
    withdrawn = "withdrawn"
    disqualified = "disqualified"

    @property
    def label(self) -> str:
        return STATE_LABELS[self]

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


STATE_LABELS: dict[State, str] = {
    State.draft: "填报中",
    State.under_review: "评委会审核中",
    State.returned: "退回修改",
    State.accepted: "已接收材料",
    State.fee_due: "待缴评审费",
    State.paid: "已缴费",
    State.defense_pending: "待专业水平答辩",
    State.awaiting_meeting: "待评审会",
    State.in_meeting: "评审会评审中",
    State.publicity: "公示中",
    State.under_investigation: "异议核查中",
    State.approved: "评审通过",
    State.not_approved: "评审未通过",
    State.abandoned: "视为放弃",
    State.rejected: "不予受理",
    State.lapsed: "逾期未缴费",
    State.withdrawn: "已撤回",
    State.disqualified: "取消资格",
}

FINAL_STATES = frozenset(
    {
        State.approved,
        State.not_approved,
        State.abandoned,
        State.rejected,
        State.lapsed,
        State.withdrawn,
        State.disqualified,
    }
)
ACTIVE_STATES = [s for s in State if s not in FINAL_STATES]

AUTOMATIC_TRIGGERS = frozenset(
    {
        "refuse_banned",
        "expire_cutoff",
        "expire_resubmission",
        "open_fee",
        "expire_fee",
        "route_after_payment",
        "end_publicity",
    }
)
"""Moves the system makes by itself; never offered to a person."""

ACTION_LABELS: dict[str, str] = {
    "submit": "提交申报材料",
    "return_for_revision": "退回修改",
    "accept": "接收材料",
    "record_payment": "确认缴费",
    "schedule_defense": "安排答辩",
    "record_defense_result": "登记答辩结果",
    "exempt_from_defense": "登记免答辩",
    "enter_meeting": "提交评审会",
    "record_meeting_result": "登记评审结果",
    "file_objection": "受理异议",
    "resolve_objection": "办结异议",
    "withdraw": "撤回申报",
    "disqualify": "认定弄虚作假并取消资格",
    "change_deadlines": "延长截止时间",
    "refuse_banned": "禁申期内不予受理",
    "expire_cutoff": "申报截止未提交",
    "expire_resubmission": "逾期未重新提交",
    "open_fee": "开放缴费",
    "expire_fee": "缴费截止未缴费",
    "route_after_payment": "缴费后分流",
    "end_publicity": "公示期满",
}


class Payment(BaseModel):
    transaction_id: str
    amount: Decimal
    channel: str
    at: datetime


class DefenseSession(BaseModel):
    session_id: str
    at: datetime
    place: str
    panel: list[str] = Field(default_factory=list)


class Objection(BaseModel):
    objection_id: str
    summary: str
    filed_at: datetime
    filed_by: str
    upheld: bool | None = None
    resolution: str | None = None
    resolved_at: datetime | None = None


class HistoryEntry(BaseModel):
    seq: int
    trigger: str
    source: State
    dest: State
    actor: str
    reason: str | None = None
    at: datetime


class ApplicationRecord(BaseModel):
    """Everything the lifecycle knows of one application (no personal data)."""

    application_id: str
    cycle_id: str
    level: Level
    state: State = State.draft
    submission_round: int = 0
    deadlines: Deadlines
    returned_at: datetime | None = None
    payments: list[Payment] = Field(default_factory=list)
    defense: DefenseSession | None = None
    defense_exemption: str | None = None
    defense_passed: bool | None = None
    meeting_id: str | None = None
    publicity_ends: datetime | None = None
    objections: list[Objection] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)

    @property
    def fee_paid(self) -> bool:
        return bool(self.payments)


@dataclass(frozen=True)
class Move:
    """One request to move: who, when, why, and what it carries."""

    now: datetime
    actor: str
    reason: str | None = None
    findings: list[Finding] = field(default_factory=list)
    payment: Payment | None = None
    defense: DefenseSession | None = None
    passed: bool | None = None
    meeting_id: str | None = None
    objection: Objection | None = None
    objection_id: str | None = None
    upheld: bool | None = None


def _move(event: EventData) -> Move:
    move = event.kwargs.get("move")
    if not isinstance(move, Move):
        raise TypeError("every trigger takes move=Move(...)")
    return move


def _fmt(instant: datetime) -> str:
    return instant.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


class Lifecycle:
    """The state machine bound to one ``ApplicationRecord``."""

    trigger: Callable[..., bool]
    """Bound by ``transitions``."""

    def __init__(self, record: ApplicationRecord, policy: CyclePolicy) -> None:
        self.record = record
        self.policy = policy
        self.state: str = record.state.value
        self._machine = Machine(
            model=self,
            states=[s.value for s in State],
            initial=record.state.value,
            transitions=TRANSITIONS,
            auto_transitions=False,
            send_event=True,
            after_state_change="_record_history",
        )

    # -- public surface -------------------------------------------------------------------

    @property
    def current(self) -> State:
        return State(self.state)

    def allowed_actions(self) -> list[str]:
        """Triggers a person may try now (their rule guards may still refuse)."""
        triggers = [
            t for t in self._machine.get_triggers(self.state) if t not in AUTOMATIC_TRIGGERS
        ]
        if not self.current.final:
            triggers.append("change_deadlines")
        return triggers

    def check(self, trigger: str, move: Move) -> None:
        """Raise ``DomainError`` unless ``fire(trigger, move)`` would succeed."""
        if trigger not in self._machine.get_triggers(self.state):
            raise TransitionNotAllowed(trigger, self.current.label, self._allowed_labels())
        if not getattr(self, f"may_{trigger}")(move=move):
            raise TransitionNotAllowed(trigger, self.current.label, self._allowed_labels())

    def fire(self, trigger: str, move: Move) -> list[HistoryEntry]:
        """Apply ``trigger``; return the history entries it (and any automatic moves) made."""
        self.check(trigger, move)
        before = len(self.record.history)
        self.trigger(trigger, move=move)
        self._run_automatic(move)
        return self.record.history[before:]

    def pending_deadlines(self) -> list[PendingDeadline]:
        """Deadlines still ahead in the current state, earliest first."""
        r, d = self.record, self.record.deadlines
        found: list[PendingDeadline] = []
        if self.current is State.draft:
            found.append(
                PendingDeadline(
                    kind="submission_cutoff",
                    at=d.submission_cutoff,
                    label="首次提交截止",
                    automatic=True,
                )
            )
        elif self.current is State.returned and r.returned_at is not None:
            found.append(
                PendingDeadline(
                    kind="resubmission",
                    at=self.resubmission_deadline(),
                    label="退回后重新提交截止",
                    automatic=True,
                )
            )
        elif self.current is State.under_review:
            found.append(
                PendingDeadline(
                    kind="review_due", at=d.review_ends, label="评委会审核截止", automatic=False
                )
            )
        elif self.current is State.fee_due:
            found.append(
                PendingDeadline(
                    kind="fee", at=d.fee_deadline, label="评审费缴费截止", automatic=True
                )
            )
        elif self.current is State.publicity and r.publicity_ends is not None:
            found.append(
                PendingDeadline(
                    kind="publicity_end", at=r.publicity_ends, label="公示期满", automatic=True
                )
            )
        return found

    def created(self, move: Move) -> HistoryEntry:
        """The first audit entry: who opened the application, and when."""
        return self._append_history("create", self.current, move)

    def change_deadlines(self, changes: dict[str, datetime], move: Move) -> HistoryEntry:
        """Ops extends cycle deadlines for this application; waiting timers follow.

        Only extensions: moving a deadline earlier would take time from applicants
        who planned by the published one.
        """
        self.check_deadline_change(changes)
        self.record.deadlines = self.record.deadlines.model_copy(update=changes)
        return self._append_history("change_deadlines", self.current, move)

    def check_deadline_change(self, changes: dict[str, datetime]) -> None:
        if self.current.final:
            raise TransitionNotAllowed(
                "change_deadlines", self.current.label, self._allowed_labels()
            )
        if not changes:
            raise DomainError("NO_DEADLINE_CHANGE", "未指定要延长的截止时间")
        for name, new in changes.items():
            old: datetime = getattr(self.record.deadlines, name)
            if new.tzinfo is None:
                raise DomainError("DEADLINE_WITHOUT_OFFSET", "截止时间须带时区偏移，例如 +08:00")
            if new < old:
                raise DomainError(
                    "DEADLINE_NOT_EXTENDED",
                    f"截止时间只能延长不能提前：{name} 现为 {_fmt(old)}，申请改为 {_fmt(new)}",
                )
        try:
            Deadlines.model_validate({**self.record.deadlines.model_dump(), **changes})
        except ValueError as exc:
            raise DomainError("DEADLINES_INCONSISTENT", f"截止时间前后矛盾：{exc}") from None

    def state_entered_at(self) -> datetime:
        """When the application entered its current state."""
        for entry in reversed(self.record.history):
            if entry.source != entry.dest or entry.trigger == "create":
                return entry.at
        raise ValueError("no history")

    def resubmission_deadline(self) -> datetime:
        if self.record.returned_at is None:
            raise ValueError("not returned")
        return self.record.returned_at + self.policy.resubmission_window

    def duplicate_payment(self, transaction_id: str) -> Payment | None:
        """Rule 3: a repeated confirmation of the same transaction counts once."""
        return next((p for p in self.record.payments if p.transaction_id == transaction_id), None)

    # -- rule guards (raise DomainError) ----------------------------------------------------

    def before_submission_cutoff(self, event: EventData) -> bool:
        """Rule 1 (§3(一)): the first submission reaches the committee before the cutoff."""
        move = _move(event)
        d = self.record.deadlines
        if move.now < d.window_opens:
            raise DomainError(
                "WINDOW_NOT_OPEN", f"申报尚未开始：申报时间自 {_fmt(d.window_opens)} 起"
            )
        if move.now >= d.submission_cutoff:
            raise DomainError(
                "SUBMISSION_CUTOFF_PASSED",
                f"已过首次提交截止时间（{_fmt(d.submission_cutoff)}），视为放弃本次申报资格",
            )
        return True

    def within_resubmission_window(self, event: EventData) -> bool:
        """Rule 2 (§4.1.1): a returned dossier is resubmitted within 2 days of the return."""
        deadline = self.resubmission_deadline()
        if _move(event).now >= deadline:
            raise DomainError(
                "RESUBMISSION_WINDOW_CLOSED",
                f"退回后重新提交的期限（{_fmt(deadline)}）已过，申报不予受理",
            )
        return True

    def no_blocking_findings(self, event: EventData) -> bool:
        """Rules 8–16: a dossier with a blocking pre-check finding is not submitted."""
        blocking = [f for f in _move(event).findings if f.severity is Severity.blocking]
        if blocking:
            raise DomainError(
                "PRECHECKS_FAILED",
                "申报材料未通过提交前检查，本次提交未计入提交次数："
                + "；".join(f.message for f in blocking),
                findings=[f.model_dump(mode="json") for f in blocking],
            )
        return True

    def exact_fee_amount(self, event: EventData) -> bool:
        """Rule 3 (§4(六)): the fee of the level, to the fen."""
        payment = _move(event).payment
        due = self.policy.fee_for(self.record.level)
        if payment is None or payment.amount != due:
            raise DomainError(
                "PAYMENT_AMOUNT_MISMATCH",
                f"缴费金额不符：{self.record.level.label}评审费应为 {due} 元，"
                f"收到 {payment.amount if payment else '—'} 元，已拒收",
                expected=str(due),
            )
        return True

    def before_fee_deadline(self, event: EventData) -> bool:
        """Rule 3 (§3(三)): the fee is confirmed before the fee deadline."""
        deadline = self.record.deadlines.fee_deadline
        if _move(event).now >= deadline:
            raise DomainError("FEE_DEADLINE_PASSED", f"已过评审费缴费截止时间（{_fmt(deadline)}）")
        return True

    def level_takes_defense(self, event: EventData) -> bool:
        """Rule 4 (§4(四)): only senior levels take the defense, so only they can be exempted."""
        if not self.policy.defense_required(self.record.level):
            raise DomainError(
                "EXEMPTION_NOT_APPLICABLE",
                f"{self.record.level.label}职称申报本就免于答辩，无需登记免答辩",
            )
        if not _move(event).reason:
            raise DomainError("EXEMPTION_REASON_REQUIRED", "登记免答辩须注明依据的条款与理由")
        return True

    def defense_scheduled(self, event: EventData) -> bool:
        """Rule 4: a defense result belongs to a scheduled defense session."""
        if self.record.defense is None:
            raise DomainError("DEFENSE_NOT_SCHEDULED", "尚未安排答辩，不能登记答辩结果")
        return True

    def objection_within_publicity(self, event: EventData) -> bool:
        """Rule 7: objections are taken during the publicity period."""
        ends = self.record.publicity_ends
        if ends is not None and _move(event).now >= ends:
            raise DomainError("PUBLICITY_OVER", f"公示期已于 {_fmt(ends)} 结束，不再受理异议")
        return True

    def objection_open(self, event: EventData) -> bool:
        """An objection is resolved once, and only one that was filed."""
        objection_id = _move(event).objection_id
        if not any(
            o.objection_id == objection_id and o.upheld is None for o in self.record.objections
        ):
            raise DomainError("OBJECTION_NOT_OPEN", f"没有待办结的异议（编号 {objection_id}）")
        return True

    def publicity_end_known(self, event: EventData) -> bool:
        """Rule 7: the publicity period can be computed (its working days are known)."""
        self.policy.publicity_end(_move(event).now)
        return True

    def submission_cutoff_reached(self, event: EventData) -> bool:
        return _move(event).now >= self.record.deadlines.submission_cutoff

    def resubmission_window_closed(self, event: EventData) -> bool:
        return _move(event).now >= self.resubmission_deadline()

    def fee_deadline_reached(self, event: EventData) -> bool:
        return _move(event).now >= self.record.deadlines.fee_deadline

    def publicity_period_ended(self, event: EventData) -> bool:
        ends = self.record.publicity_ends
        return ends is not None and _move(event).now >= ends

    def reason_given(self, event: EventData) -> bool:
        """Decisions against an applicant state why (修改意见, grounds)."""
        if not (_move(event).reason or "").strip():
            raise DomainError("REASON_REQUIRED", "请填写理由或修改意见")
        return True

    # -- routing conditions (pick a branch) --------------------------------------------------

    def submissions_remaining(self, event: EventData) -> bool:
        """Rule 2: a return before the last allowed submission leaves room to resubmit."""
        return self.record.submission_round < self.policy.max_submissions

    def defense_required(self, event: EventData) -> bool:
        """Rule 4: senior levels take the defense unless ops recorded an exemption."""
        return (
            self.policy.defense_required(self.record.level)
            and self.record.defense_exemption is None
        )

    def passed(self, event: EventData) -> bool:
        return _move(event).passed is True

    def upheld(self, event: EventData) -> bool:
        return _move(event).upheld is True

    # -- effects on the record -------------------------------------------------------------

    def _on_submit(self, event: EventData) -> None:
        move = _move(event)
        self.record.submission_round += 1
        self.record.returned_at = None
        self.record.findings = list(move.findings)

    def _on_return(self, event: EventData) -> None:
        self.record.returned_at = _move(event).now

    def _on_payment(self, event: EventData) -> None:
        payment = _move(event).payment
        assert payment is not None
        self.record.payments.append(payment)

    def _on_defense_scheduled(self, event: EventData) -> None:
        self.record.defense = _move(event).defense

    def _on_exemption(self, event: EventData) -> None:
        self.record.defense_exemption = _move(event).reason

    def _on_defense_result(self, event: EventData) -> None:
        self.record.defense_passed = _move(event).passed

    def _on_enter_meeting(self, event: EventData) -> None:
        self.record.meeting_id = _move(event).meeting_id

    def _on_publicity(self, event: EventData) -> None:
        self.record.publicity_ends = self.policy.publicity_end(_move(event).now)

    def _on_objection(self, event: EventData) -> None:
        objection = _move(event).objection
        assert objection is not None
        self.record.objections.append(objection)

    def _on_resolution(self, event: EventData) -> None:
        move = _move(event)
        for objection in self.record.objections:
            if objection.objection_id == move.objection_id and objection.upheld is None:
                objection.upheld = bool(move.upheld)
                objection.resolution = move.reason
                objection.resolved_at = move.now

    def _record_history(self, event: EventData) -> None:
        assert event.transition is not None
        self.record.state = State(self.state)
        self._append_history(event.event.name, State(event.transition.source), _move(event))

    def _append_history(self, trigger: str, source: State, move: Move) -> HistoryEntry:
        entry = HistoryEntry(
            seq=len(self.record.history) + 1,
            trigger=trigger,
            source=source,
            dest=self.current,
            actor=move.actor,
            reason=move.reason,
            at=move.now,
        )
        self.record.history.append(entry)
        return entry

    def _run_automatic(self, move: Move) -> None:
        """Moves that follow at once: accepted → fee_due, paid → defense or meeting."""
        system = Move(now=move.now, actor="system")
        if self.current is State.accepted:
            self.trigger("open_fee", move=system)
        if self.current is State.paid:
            self.trigger("route_after_payment", move=system)

    def _allowed_labels(self) -> list[str]:
        return [f"{t}（{ACTION_LABELS.get(t, t)}）" for t in self.allowed_actions()]


_ANY_ACTIVE = [s.value for s in ACTIVE_STATES]
_PRE_DEFENSE = ["draft", "under_review", "returned", "accepted", "fee_due"]

TRANSITIONS: list[dict[str, Any]] = [
    # §3(一), rules 8–16: first submission.
    {
        "trigger": "submit",
        "source": "draft",
        "dest": "under_review",
        "conditions": ["before_submission_cutoff", "no_blocking_findings"],
        "before": "_on_submit",
    },
    # §4.1.1: resubmission within the window.
    {
        "trigger": "submit",
        "source": "returned",
        "dest": "under_review",
        "conditions": ["within_resubmission_window", "no_blocking_findings"],
        "before": "_on_submit",
    },
    {"trigger": "refuse_banned", "source": "draft", "dest": "rejected"},
    {
        "trigger": "expire_cutoff",
        "source": "draft",
        "dest": "abandoned",
        "conditions": ["submission_cutoff_reached"],
    },
    {
        "trigger": "return_for_revision",
        "source": "under_review",
        "dest": "returned",
        "conditions": ["reason_given", "submissions_remaining"],
        "before": "_on_return",
    },
    {
        "trigger": "return_for_revision",
        "source": "under_review",
        "dest": "rejected",
        "conditions": ["reason_given"],
        "unless": ["submissions_remaining"],
    },
    {
        "trigger": "expire_resubmission",
        "source": "returned",
        "dest": "rejected",
        "conditions": ["resubmission_window_closed"],
    },
    {"trigger": "accept", "source": "under_review", "dest": "accepted"},
    {"trigger": "open_fee", "source": "accepted", "dest": "fee_due"},
    # §4(六), §3(三): exact fee before the deadline.
    {
        "trigger": "record_payment",
        "source": "fee_due",
        "dest": "paid",
        "conditions": ["exact_fee_amount", "before_fee_deadline"],
        "before": "_on_payment",
    },
    {
        "trigger": "expire_fee",
        "source": "fee_due",
        "dest": "lapsed",
        "conditions": ["fee_deadline_reached"],
    },
    # §4(四): defense for senior levels, unless exempted.
    {
        "trigger": "route_after_payment",
        "source": "paid",
        "dest": "defense_pending",
        "conditions": ["defense_required"],
    },
    {
        "trigger": "route_after_payment",
        "source": "paid",
        "dest": "awaiting_meeting",
        "unless": ["defense_required"],
    },
    {
        "trigger": "exempt_from_defense",
        "source": _PRE_DEFENSE,
        "dest": None,
        "conditions": ["level_takes_defense"],
        "before": "_on_exemption",
    },
    {
        "trigger": "exempt_from_defense",
        "source": "defense_pending",
        "dest": "awaiting_meeting",
        "conditions": ["level_takes_defense"],
        "before": "_on_exemption",
    },
    {
        "trigger": "schedule_defense",
        "source": "defense_pending",
        "dest": None,
        "before": "_on_defense_scheduled",
    },
    {
        "trigger": "record_defense_result",
        "source": "defense_pending",
        "dest": "awaiting_meeting",
        "conditions": ["defense_scheduled", "passed"],
        "before": "_on_defense_result",
    },
    {
        "trigger": "record_defense_result",
        "source": "defense_pending",
        "dest": "not_approved",
        "conditions": ["defense_scheduled"],
        "unless": ["passed"],
        "before": "_on_defense_result",
    },
    # §3(四), §4(七): the evaluation meeting and the publicity.
    {
        "trigger": "enter_meeting",
        "source": "awaiting_meeting",
        "dest": "in_meeting",
        "before": "_on_enter_meeting",
    },
    {
        "trigger": "record_meeting_result",
        "source": "in_meeting",
        "dest": "publicity",
        "conditions": ["passed", "publicity_end_known"],
        "before": "_on_publicity",
    },
    {
        "trigger": "record_meeting_result",
        "source": "in_meeting",
        "dest": "not_approved",
        "unless": ["passed"],
    },
    {
        "trigger": "end_publicity",
        "source": "publicity",
        "dest": "approved",
        "conditions": ["publicity_period_ended"],
    },
    {
        "trigger": "file_objection",
        "source": "publicity",
        "dest": "under_investigation",
        "conditions": ["objection_within_publicity"],
        "before": "_on_objection",
    },
    {
        "trigger": "resolve_objection",
        "source": "under_investigation",
        "dest": "disqualified",
        "conditions": ["objection_open", "reason_given", "upheld"],
        "before": "_on_resolution",
    },
    {
        "trigger": "resolve_objection",
        "source": "under_investigation",
        "dest": "approved",
        "conditions": ["objection_open", "reason_given", "publicity_period_ended"],
        "unless": ["upheld"],
        "before": "_on_resolution",
    },
    {
        "trigger": "resolve_objection",
        "source": "under_investigation",
        "dest": "publicity",
        "conditions": ["objection_open", "reason_given"],
        "unless": ["upheld", "publicity_period_ended"],
        "before": "_on_resolution",
    },
    # Any time: the applicant withdraws; fraud disqualifies (附件3).
    {"trigger": "withdraw", "source": _ANY_ACTIVE, "dest": "withdrawn"},
    {
        "trigger": "disqualify",
        "source": [s.value for s in State if s is not State.disqualified],
        "dest": "disqualified",
        "conditions": ["reason_given"],
    },
]


__all__ = [
    "ACTION_LABELS",
    "AUTOMATIC_TRIGGERS",
    "FINAL_STATES",
    "STATE_LABELS",
    "TRANSITIONS",
    "ApplicationRecord",
    "DefenseSession",
    "HistoryEntry",
    "Lifecycle",
    "Move",
    "Objection",
    "Payment",
    "State",
]

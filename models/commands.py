"""Inputs and outputs of the application workflow: one model per update and query.

New fields get defaults so running workflows and old callers keep working.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field

from models.clock import CycleClock
from models.dossier import Dossier
from models.findings import Finding
from models.lifecycle import (
    ApplicationRecord,
    DefenseSession,
    HistoryEntry,
    Objection,
    Payment,
    State,
)
from models.policy import CyclePolicy, Level
from models.records import PendingDeadline

Reason = Field(min_length=1, max_length=2000)


def application_workflow_id(cycle_id: str, application_id: str) -> str:
    """One workflow per application of a cycle."""
    return f"application:{cycle_id}:{application_id}"


class StartApplication(BaseModel):
    application_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    level: Level
    policy: CyclePolicy
    person_key: str = Field(
        min_length=16, description="keyed hash of the ID number, never the number"
    )
    created_by: str = "platform"
    clock: CycleClock = Field(default_factory=CycleClock)
    resume: ApplicationRecord | None = None
    """The record an ended run left: this run continues it, to disqualify the application
    for fraud found after it ended (附件3: 取消已确认的资格). See ``revoke``."""


class SubmitInput(BaseModel):
    dossier: Dossier
    actor: str = "applicant"


class ReviewDecision(BaseModel):
    actor: str = "reviewer"
    reason: str | None = Field(default=None, max_length=2000)
    """修改意见 for a return; optional for an acceptance."""


class PaymentInput(BaseModel):
    transaction_id: str = Field(min_length=1, max_length=128)
    amount: Decimal = Field(max_digits=12, decimal_places=2)
    channel: str = Field(default="qr", pattern=r"^(qr|bank)$")
    actor: str = "payment"


class DefenseSchedule(BaseModel):
    session_id: str = Field(min_length=1)
    at: datetime
    place: str = Field(min_length=1)
    panel: list[str] = Field(default_factory=list)
    actor: str = "ops"


class DefenseResult(BaseModel):
    passed: bool
    actor: str = "ops"
    reason: str | None = None


class DefenseExemption(BaseModel):
    reason: str = Reason
    """The clause of 阿地人社传〔2024〕13号 and why it applies."""
    actor: str = "ops"


class MeetingEnrolment(BaseModel):
    meeting_id: str = Field(min_length=1)
    actor: str = "ops"


class MeetingResult(BaseModel):
    meeting_id: str = Field(min_length=1)
    passed: bool
    votes_for: int | None = Field(default=None, ge=0)
    experts_present: int | None = Field(default=None, ge=0)
    actor: str = "committee"


class ObjectionInput(BaseModel):
    objection_id: str = Field(min_length=1)
    summary: str = Reason
    actor: str = "ops"


class ObjectionResolution(BaseModel):
    objection_id: str = Field(min_length=1)
    upheld: bool
    fraud: bool = False
    """Upheld because the material was false (附件3): also bars the person."""
    reason: str = Reason
    actor: str = "ops"


class Withdrawal(BaseModel):
    reason: str | None = None
    actor: str = "applicant"


class Disqualification(BaseModel):
    reason: str = Reason
    actor: str = "ops"


class DeadlineChange(BaseModel):
    submission_cutoff: datetime | None = None
    review_ends: datetime | None = None
    fee_deadline: datetime | None = None
    reason: str = Reason
    actor: str = "ops"

    def changes(self) -> dict[str, datetime]:
        return self.model_dump(
            include={"submission_cutoff", "review_ends", "fee_deadline"}, exclude_none=True
        )


class ApplicationStatus(BaseModel):
    """What ops, the applicant and integrations see of one application."""

    application_id: str
    cycle_id: str
    level: Level
    state: State
    state_label: str
    final: bool
    submission_round: int
    max_submissions: int
    fee_due_cny: Decimal
    fee_paid: bool
    now: datetime
    """The cycle clock when this status was taken."""
    deadlines: list[PendingDeadline]
    allowed_actions: list[str]
    findings: list[Finding]
    payments: list[Payment]
    defense: DefenseSession | None
    defense_exemption: str | None
    meeting_id: str | None
    publicity_ends: datetime | None
    objections: list[Objection]
    history: list[HistoryEntry]


__all__ = [
    "ApplicationStatus",
    "DeadlineChange",
    "DefenseExemption",
    "DefenseResult",
    "DefenseSchedule",
    "Disqualification",
    "MeetingEnrolment",
    "MeetingResult",
    "ObjectionInput",
    "ObjectionResolution",
    "PaymentInput",
    "ReviewDecision",
    "StartApplication",
    "SubmitInput",
    "Withdrawal",
    "application_workflow_id",
]

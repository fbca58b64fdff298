"""Inputs and outputs of the defense session workflow and of its cross-workflow activities.

A defense session (专业水平答辩, rule 4) gathers deputy-senior and senior applicants waiting
in ``defense_pending`` at one time and place before one panel. New fields get defaults so
running workflows and old callers keep working.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, Field, field_validator

from models.clock import CycleClock
from models.policy import CyclePolicy

ABSENT_REASON = "缺席答辩"
"""The result of a scheduled applicant with no result when the session closes."""


class DeliveryOutcome(StrEnum):
    """What became of one result once taken to its application."""

    delivered = "delivered"
    """Recorded by the application (also on a retry after success)."""
    refused = "refused"
    """The application refused it: it left ``defense_pending`` meanwhile (exempted, …)."""
    closed = "closed"
    """The application had ended (withdrawn, disqualified) before the result reached it."""
    rescheduled = "rescheduled"
    """The applicant was moved to another session since; that session owns the result."""


def defense_session_workflow_id(cycle_id: str, session_id: str) -> str:
    """One workflow per defense session of a cycle."""
    return f"defense:{cycle_id}:{session_id}"


def defense_actor(session_id: str) -> str:
    """The actor a session leaves in each application's history (also how a retry is recognised)."""
    return f"defense:{session_id}"


class OpenDefenseSession(BaseModel):
    """The workflow's input: when, where, before whom, and who is called."""

    session_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    policy: CyclePolicy
    at: AwareDatetime
    """Start of the session: an absolute instant with its offset (+08:00)."""
    place: str = Field(min_length=1, max_length=200)
    panel: list[str] = Field(default_factory=list, max_length=50)
    """The panel's experts (答辩专家组)."""
    application_workflow_ids: list[str] = Field(min_length=1, max_length=500)
    clock: CycleClock = Field(default_factory=CycleClock)
    opened_by: str = "ops"

    @field_validator("application_workflow_ids")
    @classmethod
    def _distinct(cls, ids: list[str]) -> list[str]:
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"申报重复列出：{'、'.join(repeated)}")
        if any(not i for i in ids):
            raise ValueError("申报工作流编号不能为空")
        return ids


class DefenseOutcome(BaseModel):
    """One applicant's result, as ops records it (a later one replaces an earlier one)."""

    application_workflow_id: str = Field(min_length=1)
    passed: bool
    reason: str | None = Field(default=None, max_length=2000)
    actor: str = "ops"


class CloseDefenseSession(BaseModel):
    actor: str = "ops"


class RefusedApplicant(BaseModel):
    """An application the session could not schedule, with the application's own code."""

    application_workflow_id: str
    code: str
    message: str


class RecordedResult(BaseModel):
    application_workflow_id: str
    passed: bool
    reason: str
    absent: bool = False
    recorded_by: str
    recorded_at: datetime
    delivery: DeliveryOutcome | None = None
    """Set once the result has been taken to the application."""


class DefenseSessionView(BaseModel):
    """What ops sees of a session."""

    session_id: str
    cycle_id: str
    at: datetime
    place: str
    panel: list[str]
    opened_by: str
    ready: bool
    """Every listed application has been asked; results and closing wait for this."""
    scheduled: list[str]
    refused: list[RefusedApplicant]
    results: list[RecordedResult]
    closed: bool
    closed_at: datetime | None
    closed_by: str | None
    results_delivered: int


# -- activities -----------------------------------------------------------------------------


class DefenseScheduling(BaseModel):
    workflow_id: str
    session_id: str
    at: datetime
    place: str
    panel: list[str] = Field(default_factory=list)


class SchedulingOutcome(BaseModel):
    scheduled: bool
    code: str | None = None
    message: str | None = None


class DefenseDelivery(BaseModel):
    workflow_id: str
    session_id: str
    passed: bool
    reason: str


__all__ = [
    "ABSENT_REASON",
    "CloseDefenseSession",
    "DefenseDelivery",
    "DefenseOutcome",
    "DefenseScheduling",
    "DefenseSessionView",
    "DeliveryOutcome",
    "OpenDefenseSession",
    "RecordedResult",
    "RefusedApplicant",
    "SchedulingOutcome",
    "defense_actor",
    "defense_session_workflow_id",
]

"""Inputs of the activities: what a workflow hands to the read model, outbox and registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from models.policy import Level


class PendingDeadline(BaseModel):
    """A deadline still ahead of an application."""

    kind: str
    """``submission_cutoff``, ``resubmission``, ``review_due``, ``fee``, ``publicity_end``."""
    at: datetime
    label: str
    """zh-CN description."""
    automatic: bool
    """True when the system acts on its own at ``at``; False when it only marks overdue."""


class TransitionRecord(BaseModel):
    """One transition of one application, for the read model and the audit log."""

    application_id: str
    cycle_id: str
    workflow_id: str
    seq: int = Field(ge=1, description="1, 2, … per application; the idempotency key")
    trigger: str
    source: str
    dest: str
    actor: str
    reason: str | None = None
    at: datetime
    level: Level
    submission_round: int
    fee_paid: bool
    deadlines: list[PendingDeadline] = Field(default_factory=list)
    record: dict[str, Any] | None = None
    """The whole ``ApplicationRecord`` after this transition (JSON, no personal data): a
    later run continues an ended application from the newest one."""


class Notification(BaseModel):
    """A message to a person, written to the outbox once per ``key``."""

    key: str
    """``<workflow id>:<what>``: the same key is never sent twice."""
    application_id: str
    cycle_id: str
    recipient: str = "applicant"
    template: str
    params: dict[str, str] = Field(default_factory=dict)
    created_at: datetime


class ApplicationKey(BaseModel):
    cycle_id: str
    application_id: str


class BanQuery(BaseModel):
    person_key: str
    cycle_year: int


class BanStatus(BaseModel):
    banned: bool
    until_year: int | None = None
    application_id: str | None = None


class BanRecord(BaseModel):
    """Fraud established: ``person_key`` may not apply in cycles ``from_year``..``until_year``."""

    person_key: str
    application_id: str
    cycle_id: str
    from_year: int
    until_year: int
    reason: str
    at: datetime


__all__ = [
    "ApplicationKey",
    "BanQuery",
    "BanRecord",
    "BanStatus",
    "Notification",
    "PendingDeadline",
    "TransitionRecord",
]

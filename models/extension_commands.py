"""Inputs and outputs of the cycle-wide deadline extension and of its activities.

One ``DeadlineChange`` (the same model a single application's ``change_deadlines`` takes)
goes to every running application of a cycle. Its digest names both the workflow and the
update id each application sees, so the same change started twice runs once and reaches
each application once. New fields get defaults so running workflows keep working.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from pydantic import BaseModel, Field

from models.commands import DeadlineChange


def _digest(change: DeadlineChange) -> str:
    return hashlib.sha256(change.model_dump_json().encode()).hexdigest()[:24]


def deadline_change_update_id(change: DeadlineChange) -> str:
    """The update id every application gets for this change: a repeat is applied once."""
    return f"change_deadlines:{_digest(change)}"


def deadline_extension_workflow_id(cycle_id: str, change: DeadlineChange) -> str:
    """One extension workflow per cycle and change: starting it again finds the same one."""
    return f"deadline-extension:{cycle_id}:{_digest(change)}"


class ChangeOutcome(StrEnum):
    """What became of the change at one application."""

    changed = "changed"
    """Applied (also on a retry after success: the update id answers with the first result)."""
    skipped = "skipped"
    """The application had ended meanwhile (APPLICATION_CLOSED / TRANSITION_NOT_ALLOWED)."""
    refused = "refused"
    """The application refused it for another reason (its code says why)."""


class RefusedApplication(BaseModel):
    application_id: str
    code: str
    message: str


class ExtensionProgress(BaseModel):
    """Carried across continue-as-new: who is still to be told, and what the others said."""

    pending: list[str]
    """Application ids not yet done, in order; the next batch is taken from the front."""
    changed: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    refused: list[RefusedApplication] = Field(default_factory=list)


class ExtendDeadlines(BaseModel):
    """The workflow's input: the cycle, the change, and (after continue-as-new) the progress."""

    cycle_id: str
    change: DeadlineChange
    update_id: str
    """The update id each application gets (``deadline_change_update_id(change)``)."""
    batch_size: int = Field(default=50, ge=1, le=500)
    """Applications changed per run (concurrently) before continuing as new."""
    carried: ExtensionProgress | None = None


class ExtensionReport(BaseModel):
    """The extension's result (and its ``progress`` query): application ids, sorted."""

    cycle_id: str
    update_id: str
    changed: list[str]
    skipped: list[str]
    refused: list[RefusedApplication]
    remaining: int
    """Applications still to be told; 0 in the result."""


# -- activities -----------------------------------------------------------------------------


class FindRunningApplications(BaseModel):
    cycle_id: str


class ApplyDeadlineChange(BaseModel):
    cycle_id: str
    application_id: str
    change: DeadlineChange
    update_id: str


class DeadlineChangeResult(BaseModel):
    outcome: ChangeOutcome
    code: str | None = None
    """The refusal's code when ``refused`` (or why it was ``skipped``)."""
    message: str | None = None


__all__ = [
    "ApplyDeadlineChange",
    "ChangeOutcome",
    "DeadlineChangeResult",
    "ExtendDeadlines",
    "ExtensionProgress",
    "ExtensionReport",
    "FindRunningApplications",
    "RefusedApplication",
    "deadline_change_update_id",
    "deadline_extension_workflow_id",
]

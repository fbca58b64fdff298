"""Inputs and outputs of the meeting workflow and of its cross-workflow activities."""

from __future__ import annotations

import secrets
from datetime import datetime

from pydantic import BaseModel, Field

from models.clock import CycleClock
from models.meeting import Candidate, MeetingRules, Tally
from models.policy import CyclePolicy, Level


def meeting_workflow_id(cycle_id: str, meeting_id: str) -> str:
    return f"meeting:{cycle_id}:{meeting_id}"


def new_code_secret() -> str:
    """A fresh random key for a meeting's anonymous codes."""
    return secrets.token_hex(16)


class OpenMeeting(BaseModel):
    meeting_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    policy: CyclePolicy
    held_at: datetime
    committee_size: int = Field(ge=1, le=200)
    opened_by: str = "ops"
    clock: CycleClock = Field(default_factory=CycleClock)
    delivery_batch: int = Field(default=100, ge=1)
    """Results delivered per run before continuing as new (bounds the history)."""
    code_secret: str = Field(default="", repr=False)
    """Keys the anonymous codes (:func:`models.meeting.anonymous_codes`); the opener draws
    it at random (:func:`new_code_secret`) and no view ever shows it."""


class Enrolled(BaseModel):
    """Carried across continue-as-new: who is a candidate and what is still to be told."""

    candidates: list[Candidate]
    workflow_ids: dict[str, str]
    """Code → application workflow id, to deliver results; never in a view."""
    ballots: dict[str, dict[str, bool]] = Field(default_factory=dict)
    present: list[str] = Field(default_factory=list)
    tallies: list[Tally] = Field(default_factory=list)
    delivered: list[str] = Field(default_factory=list)
    closed_at: datetime | None = None


class MeetingRun(BaseModel):
    """The workflow's input: the meeting, and (after continue-as-new) where it was."""

    meeting: OpenMeeting
    carried: Enrolled | None = None


class Attendance(BaseModel):
    experts_present: list[str] = Field(min_length=0, max_length=200)
    actor: str = "ops"


class Ballot(BaseModel):
    expert_id: str = Field(min_length=1)
    votes: dict[str, bool] = Field(min_length=1)
    """Candidate code → yes (赞成) / no (不赞成). A later ballot replaces earlier votes."""


class CloseMeeting(BaseModel):
    actor: str = "ops"


class MeetingView(BaseModel):
    """What the committee sees: anonymous codes and levels, never a person."""

    meeting_id: str
    cycle_id: str
    held_at: datetime
    rules: MeetingRules
    experts_present: int
    quorum_met: bool
    candidates: list[Candidate]
    ballots_received: int
    tallies: list[Tally]
    closed: bool
    results_delivered: int
    enrolled: bool = False
    """True once enrolment is done (``candidates`` is then final, possibly empty)."""


# -- activities -----------------------------------------------------------------------------


class FindCandidates(BaseModel):
    cycle_id: str


class CandidateRef(BaseModel):
    """Ops-side only: which application a code stands for. Never shown to the committee."""

    workflow_id: str
    level: Level


class Enrolment(BaseModel):
    workflow_id: str
    meeting_id: str


class ResultDelivery(BaseModel):
    workflow_id: str
    meeting_id: str
    passed: bool
    votes_for: int
    experts_present: int


__all__ = [
    "Attendance",
    "Ballot",
    "CandidateRef",
    "CloseMeeting",
    "Enrolled",
    "Enrolment",
    "FindCandidates",
    "MeetingRun",
    "MeetingView",
    "OpenMeeting",
    "ResultDelivery",
    "meeting_workflow_id",
    "new_code_secret",
]

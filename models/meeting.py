"""The evaluation meeting's rules (§4(七), 人社部令第40号): quorum, the vote, the pass-rate cap.

Pure functions over anonymous candidate codes: nothing here knows who a candidate is.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from pydantic import BaseModel, Field

from models.errors import DomainError
from models.policy import CyclePolicy, Level


class Candidate(BaseModel):
    """One application before the committee, known to it only by ``code``."""

    code: str
    level: Level


class Tally(BaseModel):
    code: str
    level: Level
    votes_for: int
    votes_against: int
    passes_vote: bool
    passed: bool = False
    """After the pass-rate cap."""


def anonymous_codes(meeting_id: str, keys: Sequence[str], secret: str = "") -> dict[str, str]:
    """Give each key a code ``C001``… in an order that reveals nothing about the key.

    With ``secret`` (the meeting's own random key, never shown) the order is a keyed hash,
    so someone who knows the meeting id and the workflow ids still cannot recompute who
    is which code. Without it (meetings opened before the key existed) it is a plain hash.
    """

    def rank(key: str) -> str:
        message = f"{meeting_id}\0{key}".encode()
        if secret:
            return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        return hashlib.sha256(message).hexdigest()

    ordered = sorted(keys, key=rank)
    return {key: f"C{number:03d}" for number, key in enumerate(ordered, start=1)}


def quorum_required(committee_size: int, policy: CyclePolicy) -> int:
    """Experts who must be present for the meeting to vote (at least the quorum fraction)."""
    return math.ceil(policy.quorum_fraction * committee_size)


def check_quorum(present: int, committee_size: int, policy: CyclePolicy) -> None:
    required = quorum_required(committee_size, policy)
    if present < required:
        raise DomainError(
            "QUORUM_NOT_MET",
            f"到会专家 {present} 人，不足评审委员会 {committee_size} 人的"
            f"{_fraction_zh(policy.quorum_fraction)}（至少 {required} 人），评审会不能表决",
            present=present,
            required=required,
        )


def passes_vote(votes_for: int, present: int, policy: CyclePolicy) -> bool:
    """A candidate passes with at least the vote fraction of the experts present."""
    return present > 0 and Fraction(votes_for, present) >= policy.vote_pass_fraction


def cap_for(level: Level, candidates: int, policy: CyclePolicy) -> int | None:
    """Most candidates of ``level`` that may pass (rounded down), or None when uncapped."""
    rate = policy.pass_rate_caps.get(level)
    return None if rate is None else math.floor(rate * candidates)


def decide(
    candidates: Sequence[Candidate],
    ballots: Mapping[str, Mapping[str, bool]],
    present: int,
    policy: CyclePolicy,
) -> list[Tally]:
    """Tally every candidate, then apply each level's pass-rate cap by votes.

    ``ballots`` maps expert → candidate code → yes/no. A tie across a cap line cannot be
    settled by rank: it raises ``TIE_AT_CAP_LINE`` naming the tied codes for a re-vote.
    """
    tallies: list[Tally] = []
    for candidate in candidates:
        yes = sum(1 for ballot in ballots.values() if ballot.get(candidate.code) is True)
        no = sum(1 for ballot in ballots.values() if ballot.get(candidate.code) is False)
        tallies.append(
            Tally(
                code=candidate.code,
                level=candidate.level,
                votes_for=yes,
                votes_against=no,
                passes_vote=passes_vote(yes, present, policy),
            )
        )
    for level in Level:
        of_level = [t for t in tallies if t.level is level]
        above = sorted((t for t in of_level if t.passes_vote), key=lambda t: -t.votes_for)
        limit = cap_for(level, len(of_level), policy)
        if limit is not None and len(above) > limit > 0:
            line = above[limit].votes_for
            if above[limit - 1].votes_for == line:
                tied = sorted(t.code for t in above if t.votes_for == line)
                raise DomainError(
                    "TIE_AT_CAP_LINE",
                    f"{level.label}通过率上限为 {limit} 人，候选人 {'、'.join(tied)} 得票相同"
                    f"（{line} 票）且跨越上限线，请对其重新投票",
                    level=level.value,
                    tied=tied,
                    limit=limit,
                )
        for tally in above[: len(above) if limit is None else limit]:
            tally.passed = True
    return tallies


class MeetingRules(BaseModel):
    """What the committee sees of the rules in force (for the blind view)."""

    committee_size: int = Field(ge=1)
    quorum_required: int
    vote_pass_fraction: str
    caps: dict[str, int]


def _fraction_zh(fraction: Fraction) -> str:
    return f"{fraction.denominator} 分之 {fraction.numerator}"


__all__ = [
    "Candidate",
    "MeetingRules",
    "Tally",
    "anonymous_codes",
    "cap_for",
    "check_quorum",
    "decide",
    "passes_vote",
    "quorum_required",
]

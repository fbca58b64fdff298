"""The meeting's rules at their boundaries (§4(七); 人社部令第40号 for quorum and the vote)."""

from __future__ import annotations

import pytest

from models.errors import DomainError
from models.meeting import (
    Candidate,
    anonymous_codes,
    cap_for,
    check_quorum,
    decide,
    passes_vote,
    quorum_required,
)
from models.policy import Level, load_policy

POLICY = load_policy("2024-aksu-party-school")


def ballots(experts: int, yes_by_code: dict[str, int]) -> dict[str, dict[str, bool]]:
    """``experts`` ballots in which candidate ``code`` gets ``yes_by_code[code]`` yes votes."""
    return {
        f"E{e:02d}": {code: e < yes for code, yes in yes_by_code.items()} for e in range(experts)
    }


def test_quorum_is_two_thirds_of_the_committee() -> None:
    assert quorum_required(11, POLICY) == 8  # 2/3 of 11 = 7.33 → 8
    assert quorum_required(9, POLICY) == 6
    check_quorum(6, 9, POLICY)
    with pytest.raises(DomainError) as info:
        check_quorum(5, 9, POLICY)
    assert info.value.code == "QUORUM_NOT_MET" and info.value.details["required"] == 6


def test_two_thirds_of_the_experts_present_at_the_boundary() -> None:
    assert passes_vote(6, 9, POLICY)  # 6/9 = 2/3
    assert not passes_vote(5, 9, POLICY)
    assert not passes_vote(0, 0, POLICY)


def test_seven_deputy_senior_candidates_above_the_threshold_exactly_five_pass() -> None:
    assert cap_for(Level.deputy_senior, 7, POLICY) == 5  # floor(7 × 75 %)
    votes = {"C001": 9, "C002": 7, "C003": 8, "C004": 6, "C005": 9, "C006": 8, "C007": 6}
    # 6 and 6 share the bottom, but the line lies between 7 (5th) and 6 (6th): no tie.
    candidates = [Candidate(code=code, level=Level.deputy_senior) for code in votes]
    tallies = decide(candidates, ballots(9, votes), 9, POLICY)
    assert all(t.passes_vote for t in tallies)
    assert {t.code for t in tallies if t.passed} == {"C001", "C005", "C003", "C006", "C002"}


def test_a_tie_on_the_cap_line_blocks_and_names_the_tied() -> None:
    votes = {"C001": 9, "C002": 9, "C003": 8, "C004": 8, "C005": 7, "C006": 7, "C007": 6}
    candidates = [Candidate(code=code, level=Level.deputy_senior) for code in votes]
    with pytest.raises(DomainError) as info:
        decide(candidates, ballots(9, votes), 9, POLICY)
    assert info.value.code == "TIE_AT_CAP_LINE"
    assert info.value.details["tied"] == ["C005", "C006"]
    assert "C005" in info.value.message and "C006" in info.value.message


def test_intermediate_candidates_are_uncapped() -> None:
    votes = {f"C{n:03d}": 9 for n in range(1, 8)}
    candidates = [Candidate(code=code, level=Level.intermediate) for code in votes]
    assert cap_for(Level.intermediate, 7, POLICY) is None
    assert all(t.passed for t in decide(candidates, ballots(9, votes), 9, POLICY))


def test_below_the_vote_threshold_fails_even_under_the_cap() -> None:
    votes = {"C001": 9, "C002": 5}
    candidates = [Candidate(code=code, level=Level.deputy_senior) for code in votes]
    tallies = {t.code: t for t in decide(candidates, ballots(9, votes), 9, POLICY)}
    assert tallies["C001"].passed and not tallies["C002"].passed
    assert tallies["C002"].votes_against == 4


def test_anonymous_codes_are_stable_and_do_not_follow_the_ids() -> None:
    ids = [f"application:c:A{n:03d}" for n in range(30)]
    codes = anonymous_codes("M1", ids)
    assert codes == anonymous_codes("M1", list(reversed(ids)))
    assert sorted(codes.values()) == [f"C{n:03d}" for n in range(1, 31)]
    assert [codes[i] for i in ids] != sorted(codes.values())


def test_keyed_codes_cannot_be_recomputed_without_the_meetings_secret() -> None:
    ids = [f"application:2024-aksu-party-school:A{n:03d}" for n in range(20)]
    keyed = anonymous_codes("M1", ids, "s3cret-of-the-meeting")
    assert keyed == anonymous_codes("M1", list(reversed(ids)), "s3cret-of-the-meeting")
    assert sorted(keyed.values()) == [f"C{n:03d}" for n in range(1, 21)]
    # Whoever knows the meeting id and the workflow ids but not the secret gets another
    # assignment (the plain hash), and so cannot tell who is which code.
    assert keyed != anonymous_codes("M1", ids)
    assert keyed != anonymous_codes("M1", ids, "another-secret")

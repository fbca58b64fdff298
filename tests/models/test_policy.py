"""The 2024 cycle policy, the working-day calendar, the cycle clock and person keys."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from pydantic import ValidationError

from models.clock import CycleClock
from models.errors import CalendarYearUnknown, DomainError
from models.identity import person_key
from models.policy import CHINA_TZ, CyclePolicy, Deadlines, Level, load_policy
from models.working_days import (
    CalendarOverride,
    add_working_days,
    count_working_days,
    is_working_day,
)

POLICY = load_policy("2024-aksu-party-school")
SECRET = b"test-secret-0123456789abcdef"
OTHER_SECRET = b"another-secret-0123456789abcdef"


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=CHINA_TZ)


# -- the shipped policy carries every value of DOMAIN.md -------------------------------------


def test_identity() -> None:
    assert POLICY.cycle_id == "2024-aksu-party-school"
    assert POLICY.year == 2024
    assert "2024" in POLICY.title


def test_load_by_name_and_by_path_agree() -> None:
    from models.policy import POLICY_DIR

    assert load_policy(POLICY_DIR / "2024-aksu-party-school.toml") == POLICY


def test_calendar_instants() -> None:
    d = POLICY.deadlines
    assert d.window_opens == datetime.fromisoformat("2024-07-22T00:00:00+08:00")
    assert d.submission_cutoff == datetime.fromisoformat("2024-08-30T18:00:00+08:00")
    assert d.review_starts == datetime.fromisoformat("2024-08-01T00:00:00+08:00")
    # Review "2024-08-01 .. 2024-09-10": due before 09-11 00:00.
    assert d.review_ends == datetime.fromisoformat("2024-09-11T00:00:00+08:00")
    # Fee "by 2024-09-15 (end of that day)".
    assert d.fee_deadline == datetime.fromisoformat("2024-09-16T00:00:00+08:00")
    for instant in (d.window_opens, d.submission_cutoff, d.review_starts, d.review_ends):
        assert instant.utcoffset() == timedelta(hours=8)
    assert d.fee_deadline.utcoffset() == timedelta(hours=8)
    # The cutoff is 10:00 UTC.
    assert d.submission_cutoff == datetime(2024, 8, 30, 10, 0, tzinfo=UTC)


def test_fees() -> None:
    assert POLICY.fees_cny == {
        Level.senior: Decimal("700"),
        Level.deputy_senior: Decimal("700"),
        Level.intermediate: Decimal("400"),
        Level.junior: Decimal("200"),
    }
    assert POLICY.fee_for(Level.senior) == Decimal("700")
    assert POLICY.fee_for(Level.deputy_senior) == Decimal("700")
    assert POLICY.fee_for(Level.intermediate) == Decimal("400")
    assert POLICY.fee_for(Level.junior) == Decimal("200")


def test_submissions_and_resubmission() -> None:
    assert POLICY.max_submissions == 3
    assert POLICY.resubmission_window == timedelta(days=2)


def test_defense_levels() -> None:
    assert set(POLICY.defense_levels) == {Level.deputy_senior, Level.senior}
    assert POLICY.defense_required(Level.senior) is True
    assert POLICY.defense_required(Level.deputy_senior) is True
    assert POLICY.defense_required(Level.intermediate) is False
    assert POLICY.defense_required(Level.junior) is False


def test_pass_rate_cap() -> None:
    assert POLICY.pass_rate_caps == {Level.deputy_senior: Fraction(3, 4)}
    cap = POLICY.pass_rate_caps[Level.deputy_senior]
    assert math.floor(7 * cap) == 5  # 7 candidates -> at most 5 (round down)
    assert math.floor(8 * cap) == 6
    assert Level.intermediate not in POLICY.pass_rate_caps
    assert Level.junior not in POLICY.pass_rate_caps


def test_vote_and_quorum() -> None:
    assert POLICY.vote_pass_fraction == Fraction(2, 3)
    assert POLICY.quorum_fraction == Fraction(2, 3)


def test_publicity_and_seniority() -> None:
    assert POLICY.publicity_working_days == 5
    assert POLICY.employer_publicity_working_days == 5
    assert POLICY.seniority_cutoff == date(2024, 12, 31)


def test_continuing_education() -> None:
    ce = POLICY.continuing_education
    assert ce.years == [2021, 2022, 2023, 2024]
    assert ce.min_hours_per_year == 90
    assert ce.min_professional_hours_per_year == 60
    assert ce.system_professional_certificates_from == 2021
    assert ce.system_public_certificates_from == 2022


def test_other_rules() -> None:
    assert POLICY.putonghua_min_grade == "三级乙等"
    assert POLICY.teaching_workload.hours_per_1000_chars_national_core == 10
    assert POLICY.teaching_workload.hours_per_1000_chars_provincial == 6
    assert POLICY.fraud_ban_years == 3
    assert POLICY.reminder_offsets == [timedelta(days=3), timedelta(days=1)]
    assert POLICY.calendar_overrides == []


def test_banned_years() -> None:
    banned = POLICY.banned_years(2024)
    assert list(banned) == [2024, 2025, 2026, 2027]
    assert 2027 in banned
    assert 2028 not in banned
    assert 2023 not in banned


# -- validation ------------------------------------------------------------------------------


def _raw() -> dict[str, Any]:
    return POLICY.model_dump(mode="json")


def test_json_round_trip_is_equal() -> None:
    dumped = POLICY.model_dump_json()
    again = CyclePolicy.model_validate_json(dumped)
    assert again == POLICY
    assert again.model_dump_json() == dumped


def test_naive_deadline_is_refused() -> None:
    raw = _raw()
    raw["deadlines"]["fee_deadline"] = "2024-09-16T00:00:00"
    with pytest.raises(ValidationError, match="explicit UTC offset"):
        CyclePolicy.model_validate(raw)
    with pytest.raises(ValidationError, match="explicit UTC offset"):
        Deadlines(
            window_opens=at(2024, 7, 22),
            submission_cutoff=datetime(2024, 8, 30, 18),
            review_starts=at(2024, 8, 1),
            review_ends=at(2024, 9, 11),
            fee_deadline=at(2024, 9, 16),
        )


def test_misordered_deadlines_are_refused() -> None:
    raw = _raw()
    raw["deadlines"]["submission_cutoff"] = "2024-07-21T00:00:00+08:00"
    with pytest.raises(ValidationError, match="window_opens must be before submission_cutoff"):
        CyclePolicy.model_validate(raw)


def test_missing_fee_is_refused() -> None:
    raw = _raw()
    del raw["fees_cny"]["junior"]
    with pytest.raises(ValidationError, match="junior"):
        CyclePolicy.model_validate(raw)


@pytest.mark.parametrize("bad", ["0", "3/2", "-1/3"])
def test_fraction_out_of_range_is_refused(bad: str) -> None:
    raw = _raw()
    raw["vote_pass_fraction"] = bad
    with pytest.raises(ValidationError):
        CyclePolicy.model_validate(raw)


def test_policy_is_frozen() -> None:
    with pytest.raises(ValidationError):
        POLICY.max_submissions = 4  # type: ignore[misc]


# -- working days ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2024, 9, 27), True),  # Friday
        (date(2024, 9, 28), False),  # Saturday
        (date(2024, 9, 29), True),  # Sunday, 调休 for National Day
        (date(2024, 9, 30), True),
        (date(2024, 10, 1), False),  # National Day
        (date(2024, 10, 7), False),  # Monday, still off
        (date(2024, 10, 8), True),
        (date(2024, 10, 12), True),  # Saturday, 调休
        (date(2024, 10, 13), False),  # Sunday
    ],
)
def test_is_working_day_2024(day: date, working: bool) -> None:
    assert is_working_day(day) is working


def test_unknown_year_is_refused() -> None:
    with pytest.raises(CalendarYearUnknown) as raised:
        is_working_day(date(2099, 1, 5))
    assert raised.value.code == "CALENDAR_YEAR_UNKNOWN"
    assert raised.value.details == {"year": 2099}
    assert "2099" in raised.value.message
    assert isinstance(raised.value, DomainError)
    with pytest.raises(CalendarYearUnknown):
        count_working_days(date(2098, 12, 30), date(2099, 1, 2))
    with pytest.raises(CalendarYearUnknown):
        add_working_days(date(2099, 1, 1), 1)


# 2099-01-01 is a Thursday.
OVERRIDE_2099 = CalendarOverride(
    year=2099,
    holidays=[date(2099, 1, 1), date(2099, 1, 2)],
    workdays=[date(2099, 1, 4)],
)


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2099, 1, 1), False),  # Thursday holiday
        (date(2099, 1, 2), False),  # Friday holiday
        (date(2099, 1, 3), False),  # plain Saturday
        (date(2099, 1, 4), True),  # Sunday made a workday
        (date(2099, 1, 5), True),  # plain Monday
        (date(2099, 1, 10), False),  # plain Saturday
    ],
)
def test_override_makes_an_unknown_year_work(day: date, working: bool) -> None:
    assert is_working_day(day, [OVERRIDE_2099]) is working


def test_override_only_covers_its_own_year() -> None:
    with pytest.raises(CalendarYearUnknown):
        is_working_day(date(2098, 12, 31), [OVERRIDE_2099])


def test_override_corrects_a_known_year() -> None:
    # An override replaces the library for its year: 2024-10-01 declared a workday.
    fix = CalendarOverride(year=2024, workdays=[date(2024, 10, 1)])
    assert is_working_day(date(2024, 10, 1), [fix]) is True


def test_policy_override_feeds_publicity_end() -> None:
    raw = POLICY.model_dump(mode="json")
    raw["calendar_overrides"] = [OVERRIDE_2099.model_dump(mode="json")]
    policy = CyclePolicy.model_validate(raw)
    # Published Wed 2098-12-31 is not counted; then 01-01 off, 01-02 off, 01-03 Sat off,
    # 01-04 Sun on (1), 01-05..01-08 Mon..Thu (2..5) -> ends 2099-01-09 00:00.
    # 2098-12-31 itself is never asked for, so the unknown 2098 does not matter.
    assert policy.publicity_end(at(2098, 12, 31, 10)) == at(2099, 1, 9, 0, 0, 0)


def test_count_working_days_boundaries() -> None:
    # Closed range: both ends count.
    assert count_working_days(date(2024, 9, 27), date(2024, 9, 27)) == 1
    assert count_working_days(date(2024, 9, 28), date(2024, 9, 28)) == 0
    assert count_working_days(date(2024, 10, 12), date(2024, 10, 12)) == 1
    assert count_working_days(date(2024, 9, 28), date(2024, 9, 27)) == 0  # empty
    # 09-27, 09-29, 09-30, 10-08, 10-09, 10-10, 10-11
    assert count_working_days(date(2024, 9, 27), date(2024, 10, 11)) == 7
    assert count_working_days(date(2024, 10, 1), date(2024, 10, 7)) == 0
    # 2099: 01-01, 01-02 off; Sat 01-03 off; Sun 01-04 on; Mon..Fri 01-05..01-09 on; Sat 01-10 off.
    assert count_working_days(date(2099, 1, 1), date(2099, 1, 10), [OVERRIDE_2099]) == 6


def test_add_working_days_boundaries() -> None:
    # The start day is not counted, even when it is a working day.
    assert add_working_days(date(2024, 9, 27), 1) == date(2024, 9, 29)
    assert add_working_days(date(2024, 9, 27), 5) == date(2024, 10, 10)
    assert add_working_days(date(2024, 9, 30), 1) == date(2024, 10, 8)
    assert add_working_days(date(2024, 10, 1), 1) == date(2024, 10, 8)
    assert add_working_days(date(2024, 10, 11), 1) == date(2024, 10, 12)
    assert add_working_days(date(2099, 1, 1), 1, [OVERRIDE_2099]) == date(2099, 1, 4)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="at least 1"):
            add_working_days(date(2024, 9, 27), bad)


def test_add_and_count_agree() -> None:
    start = date(2024, 9, 20)
    for n in range(1, 15):
        end = add_working_days(start, n)
        assert count_working_days(start + timedelta(days=1), end) == n
        assert is_working_day(end)


def test_publicity_end_national_day() -> None:
    # See test_lifecycle: published 2024-09-27, last working day 10-10.
    assert POLICY.publicity_end(at(2024, 9, 27, 10)) == at(2024, 10, 11, 0, 0, 0)
    # Any instant of that China day gives the same end; 2024-09-27 16:00 UTC is 09-28 00:00.
    assert POLICY.publicity_end(at(2024, 9, 27, 23, 59, 59)) == at(2024, 10, 11)
    assert POLICY.publicity_end(datetime(2024, 9, 27, 16, tzinfo=UTC)) == at(2024, 10, 11)


# -- cycle clock -----------------------------------------------------------------------------


def test_clock_is_identity_by_default() -> None:
    clock = CycleClock()
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert clock.rehearsal is False
    assert clock.business_time(now) == now
    assert clock.real_time(now) == now
    assert clock.real_delay(timedelta(hours=2)) == timedelta(hours=2)


def test_clock_anchors_go_together() -> None:
    with pytest.raises(ValidationError):
        CycleClock(anchor_real=datetime(2026, 3, 1, tzinfo=UTC))
    with pytest.raises(ValidationError):
        CycleClock(anchor_business=at(2024, 8, 1))
    with pytest.raises(ValidationError):
        CycleClock.rehearse(at(2024, 8, 1), datetime(2026, 3, 1, tzinfo=UTC), speed=0)


REAL = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BUSINESS = at(2024, 8, 30, 17, 0, 0)


def test_rehearsal_at_speed_one() -> None:
    clock = CycleClock.rehearse(BUSINESS, REAL)
    assert clock.rehearsal is True
    assert clock.business_time(REAL) == BUSINESS
    assert clock.real_time(BUSINESS) == REAL
    assert clock.business_time(REAL + timedelta(hours=1)) == at(2024, 8, 30, 18, 0, 0)
    assert clock.real_time(at(2024, 8, 30, 18, 0, 0)) == REAL + timedelta(hours=1)
    assert clock.real_time(at(2024, 8, 30, 16, 0, 0)) == REAL - timedelta(hours=1)
    assert clock.real_delay(timedelta(minutes=5)) == timedelta(minutes=5)


def test_rehearsal_at_a_day_per_second() -> None:
    clock = CycleClock.rehearse(BUSINESS, REAL, speed=86400)
    assert clock.business_time(REAL + timedelta(seconds=1)) == BUSINESS + timedelta(days=1)
    assert clock.business_time(REAL + timedelta(seconds=16)) == BUSINESS + timedelta(days=16)
    assert clock.real_time(BUSINESS + timedelta(days=2)) == REAL + timedelta(seconds=2)
    assert clock.real_time(BUSINESS + timedelta(hours=12)) == REAL + timedelta(milliseconds=500)
    later = BUSINESS + timedelta(days=17)
    assert clock.business_time(clock.real_time(later)) == later
    assert clock.real_delay(timedelta(days=1)) == timedelta(seconds=1)


def test_real_delay_rounds_up_to_at_least_a_millisecond() -> None:
    fast = CycleClock.rehearse(BUSINESS, REAL, speed=86400)
    assert fast.real_delay(timedelta(0)) == timedelta(milliseconds=1)
    assert fast.real_delay(timedelta(seconds=1)) == timedelta(milliseconds=1)  # 0.0116 ms
    assert fast.real_delay(timedelta(seconds=87)) == timedelta(milliseconds=2)  # 1.007 ms
    assert fast.real_delay(timedelta(seconds=86.4)) == timedelta(milliseconds=1)  # exact
    slow = CycleClock()
    assert slow.real_delay(timedelta(microseconds=1)) == timedelta(milliseconds=1)
    assert slow.real_delay(timedelta(microseconds=1500)) == timedelta(milliseconds=2)
    assert slow.real_delay(timedelta(seconds=-5)) == timedelta(milliseconds=1)


@pytest.mark.parametrize("speed", [1.0, 3.0, 86400.0, 1_000_000.0])
def test_waiting_real_delay_never_wakes_before_the_business_deadline(speed: float) -> None:
    # The fee deadline seen from 2024-08-30 17:00: 16 days 7 hours, not a whole number of
    # real microseconds at most speeds. Waiting real_delay must reach it, never fall short.
    clock = CycleClock.rehearse(BUSINESS, REAL, speed=speed)
    for deadline in (at(2024, 9, 16), at(2024, 8, 30, 18), BUSINESS + timedelta(microseconds=7)):
        woke = clock.business_time(REAL + clock.real_delay(deadline - BUSINESS))
        assert woke >= deadline


def test_clock_json_round_trip() -> None:
    clock = CycleClock.rehearse(BUSINESS, REAL, speed=86400)
    assert CycleClock.model_validate_json(clock.model_dump_json()) == clock


# -- person keys -----------------------------------------------------------------------------

ID = "65300119800101001X"


def test_person_key_is_stable_hex() -> None:
    key = person_key(ID, SECRET)
    assert key == person_key(ID, SECRET)
    assert len(key) == 64
    int(key, 16)
    assert ID not in key


def test_person_key_depends_on_secret_and_number() -> None:
    assert person_key(ID, SECRET) != person_key(ID, OTHER_SECRET)
    assert person_key("653001198001010011", SECRET) != person_key("653001198001010012", SECRET)


def test_person_key_normalises_case_and_spaces() -> None:
    assert person_key("65300119800101001x", SECRET) == person_key(ID, SECRET)
    assert person_key(f"  {ID}\n", SECRET) == person_key(ID, SECRET)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "65300119800101001",  # 17
        "6530011980010100111",  # 19
        "6530011980010100X1",  # X not last
        "65300119800101001Y",
        "653001 19800101001X",
    ],
)
def test_person_key_refuses_malformed_numbers(bad: str) -> None:
    with pytest.raises(DomainError) as raised:
        person_key(bad, SECRET)
    assert raised.value.code == "INVALID_ID_NUMBER"


def test_person_key_refuses_a_short_secret() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        person_key(ID, b"short")

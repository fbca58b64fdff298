"""The cycle policy: every date, amount and limit of one evaluation cycle, from one TOML file.

Code never carries a date or an amount of the notice; it reads them from here. Deadlines
are absolute instants with an explicit offset; a deadline is met by an action strictly
before the instant ("截止 8 月 30 日 18:00": 17:59:59 is in time, 18:00:00 is late).
"""

from __future__ import annotations

import tomllib
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from models.working_days import CalendarOverride, add_working_days

CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
"""China has had no DST since 1991: a fixed offset is exact and works in the workflow sandbox."""

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"


class Level(StrEnum):
    """Title level applied for."""

    junior = "junior"
    intermediate = "intermediate"
    deputy_senior = "deputy_senior"
    senior = "senior"

    @property
    def label(self) -> str:
        return {
            "junior": "初级",
            "intermediate": "中级",
            "deputy_senior": "副高级",
            "senior": "正高级",
        }[self.value]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("deadline must carry an explicit UTC offset, e.g. +08:00")
    return value


Instant = Annotated[datetime, AfterValidator(_aware)]


def _fraction(value: Any) -> Fraction:
    fraction = Fraction(str(value))
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be in (0, 1]")
    return fraction


Ratio = Annotated[
    Fraction,
    PlainSerializer(lambda f: f"{f.numerator}/{f.denominator}", return_type=str),
]


class Deadlines(BaseModel):
    """The cycle's instants (ops may extend them while applications run)."""

    window_opens: Instant
    submission_cutoff: Instant = Field(description="first submission must arrive before this")
    review_starts: Instant
    review_ends: Instant = Field(description="the committee's first review is due before this")
    fee_deadline: Instant = Field(description="the evaluation fee must be confirmed before this")

    @model_validator(mode="after")
    def _ordered(self) -> Deadlines:
        if not self.window_opens < self.submission_cutoff:
            raise ValueError("window_opens must be before submission_cutoff")
        if not self.review_starts < self.review_ends:
            raise ValueError("review_starts must be before review_ends")
        if not self.submission_cutoff < self.fee_deadline:
            raise ValueError("fee_deadline must be after submission_cutoff")
        return self


class ContinuingEducation(BaseModel):
    """§4.1.4, §4(五): hours per year and which certificates must come from the system."""

    years: list[int]
    min_hours_per_year: int
    min_professional_hours_per_year: int
    system_professional_certificates_from: int
    system_public_certificates_from: int


class TeachingWorkload(BaseModel):
    """§5.4: standard class hours credited per 1,000 characters of a converted paper."""

    hours_per_1000_chars_national_core: int
    hours_per_1000_chars_provincial: int


class CyclePolicy(BaseModel):
    """One evaluation cycle's configuration (see ``policies/*.toml``)."""

    model_config = ConfigDict(frozen=True)

    cycle_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,62}$")
    year: int
    title: str
    deadlines: Deadlines
    resubmission_window: timedelta = Field(description="time to resubmit after a return (§4.1.1)")
    max_submissions: int = Field(ge=1, description="submissions to the committee (§4.1.1)")
    fees_cny: dict[Level, Decimal] = Field(description="evaluation fee per level (§4(六))")
    defense_levels: list[Level] = Field(description="levels that take the defense (§4(四))")
    pass_rate_caps: dict[Level, Annotated[Ratio, AfterValidator(_fraction)]] = Field(
        default_factory=dict, description="share of a level's candidates that may pass (§4(七))"
    )
    vote_pass_fraction: Annotated[Ratio, AfterValidator(_fraction)]
    quorum_fraction: Annotated[Ratio, AfterValidator(_fraction)]
    publicity_working_days: int = Field(ge=1, description="result publicity (§3(四), 附件1)")
    employer_publicity_working_days: int = Field(ge=1, description="employer publicity (§4(二))")
    seniority_cutoff: date
    continuing_education: ContinuingEducation
    putonghua_min_grade: str
    teaching_workload: TeachingWorkload
    fraud_ban_years: int = Field(ge=0, description="years barred after fraud (附件3)")
    reminder_offsets: list[timedelta] = Field(
        default_factory=lambda: [timedelta(days=3), timedelta(days=1)],
        description="reminders this long before the cutoff and the fee deadline",
    )
    calendar_overrides: list[CalendarOverride] = Field(default_factory=list)

    @field_validator("fees_cny")
    @classmethod
    def _every_level_has_a_fee(cls, fees: dict[Level, Decimal]) -> dict[Level, Decimal]:
        missing = [level.value for level in Level if level not in fees]
        if missing:
            raise ValueError(f"fees_cny misses {missing}")
        return fees

    def fee_for(self, level: Level) -> Decimal:
        return self.fees_cny[level]

    def defense_required(self, level: Level) -> bool:
        return level in self.defense_levels

    def publicity_end(self, published_at: datetime) -> datetime:
        """End of the result publicity: the instant after its last working day.

        Days are counted from the day after publication, so every counted day is a whole
        working day of publicity ("不少于 5 个工作日").
        """
        day = published_at.astimezone(CHINA_TZ).date()
        last = add_working_days(day, self.publicity_working_days, self.calendar_overrides)
        return datetime.combine(last + timedelta(days=1), time(), CHINA_TZ)

    def banned_years(self, fraud_cycle_year: int) -> range:
        """Cycle years in which a person found to have cheated may not apply (附件3).

        "从申报年度下一年度起 3 年内，不得申报": the three years after the cycle's year, plus
        the rest of that cycle itself.
        """
        return range(fraud_cycle_year, fraud_cycle_year + self.fraud_ban_years + 1)


def load_policy(path: str | Path) -> CyclePolicy:
    """Load and validate a cycle policy TOML file (a name resolves under ``policies/``)."""
    candidate = Path(path)
    if not candidate.suffix:
        candidate = POLICY_DIR / f"{candidate}.toml"
    with candidate.open("rb") as handle:
        return CyclePolicy.model_validate(tomllib.load(handle))


__all__ = ["CHINA_TZ", "CyclePolicy", "Deadlines", "Level", "load_policy"]

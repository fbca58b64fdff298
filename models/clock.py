"""The cycle clock: Temporal's time, or a rehearsal of a cycle in other (faster) time.

In production the clock is the identity: business time is Temporal's time. Training,
the demo and tests rehearse a cycle whose dates are not today (the 2024 cycle, in 2026)
by anchoring business time to a real instant and optionally running it faster. The
mapping is a pure function of Temporal's time, so workflow replay stays deterministic.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from pydantic import BaseModel, Field, model_validator


class CycleClock(BaseModel):
    anchor_real: datetime | None = None
    """A real (Temporal) instant…"""
    anchor_business: datetime | None = None
    """…and the business instant it stands for. Both unset: real time."""
    speed: float = Field(default=1.0, gt=0, le=1_000_000)
    """Business seconds per real second."""

    @model_validator(mode="after")
    def _both_or_neither(self) -> CycleClock:
        if (self.anchor_real is None) != (self.anchor_business is None):
            raise ValueError("anchor_real and anchor_business go together")
        return self

    @property
    def rehearsal(self) -> bool:
        return self.anchor_real is not None

    def business_time(self, real: datetime) -> datetime:
        if self.anchor_real is None or self.anchor_business is None:
            return real
        return self.anchor_business + (real - self.anchor_real) * self.speed

    def real_time(self, business: datetime) -> datetime:
        if self.anchor_real is None or self.anchor_business is None:
            return business
        return self.anchor_real + (business - self.anchor_business) / self.speed

    def real_delay(self, business_delay: timedelta) -> timedelta:
        """Real time to wait for ``business_delay`` to pass, rounded up to a millisecond."""
        millis = math.ceil(business_delay.total_seconds() * 1000 / self.speed)
        return timedelta(milliseconds=max(millis, 1))

    @classmethod
    def rehearse(cls, business_now: datetime, real_now: datetime, speed: float = 1.0) -> CycleClock:
        return cls(anchor_real=real_now, anchor_business=business_now, speed=speed)


__all__ = ["CycleClock"]

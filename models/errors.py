"""Domain errors: a stable English code plus a zh-CN message a user can read."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refused request. ``code`` is stable for programs, ``message`` is for people (zh-CN)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


class TransitionNotAllowed(DomainError):
    """The lifecycle does not allow this trigger in the current state."""

    def __init__(self, trigger: str, state: str, allowed: list[str]) -> None:
        super().__init__(
            "TRANSITION_NOT_ALLOWED",
            f"当前状态“{state}”下不允许执行操作“{trigger}”；可执行的操作：{'、'.join(allowed) or '无'}",
            trigger=trigger,
            state=state,
            allowed=allowed,
        )


class CalendarYearUnknown(DomainError):
    """Neither the holiday library nor the policy knows the working days of a year."""

    def __init__(self, year: int) -> None:
        super().__init__(
            "CALENDAR_YEAR_UNKNOWN",
            f"{year} 年的法定节假日与调休安排未知：请在评审周期政策文件中补充该年度的工作日历",
            year=year,
        )


__all__ = ["CalendarYearUnknown", "DomainError", "TransitionNotAllowed"]

"""Findings of the pre-checks at submission: what a rule found, where the notice says so."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Severity(StrEnum):
    blocking = "blocking"
    """Refuses the submission; no round is consumed."""
    advisory = "advisory"
    """Travels with the dossier to the reviewer."""


class Finding(BaseModel):
    code: str
    severity: Severity
    message: str
    """zh-CN, for the applicant and the reviewer."""
    clause: str
    """Where the notice says so, e.g. ``§4.1.5``."""


def blocking(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.blocking]


__all__ = ["Finding", "Severity", "blocking"]

"""How a domain refusal travels through Temporal."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    # Passed through like every models import: one DomainError class inside and outside
    # the sandbox, or ``except DomainError`` would miss the lifecycle's errors.
    from models.errors import DomainError


def refusal(error: DomainError) -> ApplicationError:
    """A domain error as Temporal carries it: the code is the error type, the zh-CN text the message."""
    return ApplicationError(error.message, error.details, type=error.code, non_retryable=True)


__all__ = ["refusal"]

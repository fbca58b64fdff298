"""What every workflow shares: how a refusal travels, how activities are called."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    # Passed through like every models import: one DomainError class inside and outside
    # the sandbox, or ``except DomainError`` would miss the lifecycle's errors.
    from models.errors import DomainError


ACTIVITY_TIMEOUT = timedelta(seconds=10)
"""Each side effect is one short database write or one update: an attempt lost with a
killed worker is retried elsewhere after this long."""
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
"""Side effects must happen eventually: retry without a cap on attempts (all idempotent)."""

WEBHOOK_TIMEOUT = timedelta(seconds=15)
"""Above the 10 s the receiver has to answer (``activities.webhooks.HTTP_TIMEOUT``)."""
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
)
"""A receiver is retried until it acknowledges (or is unsubscribed): 1 s, 2 s, 4 s … then
every 10 minutes, however long it is down."""


def refusal(error: DomainError) -> ApplicationError:
    """A domain error as Temporal carries it: the code is the error type, the zh-CN text the message."""
    return ApplicationError(error.message, error.details, type=error.code, non_retryable=True)


__all__ = ["ACTIVITY_RETRY", "ACTIVITY_TIMEOUT", "WEBHOOK_RETRY", "WEBHOOK_TIMEOUT", "refusal"]

"""Outbound webhook subscriptions for the CLI and the API.

Changes go through the :class:`~workflows.webhooks.WebhookRegistryWorkflow` (the single
writer); the delivery log is read from the SQL table the delivery activities keep.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy

from activities import Database
from models.tables import WebhookDelivery, WebhookSubscription
from models.webhooks import (
    RegistryState,
    SubscribeInput,
    SubscriptionView,
    UnsubscribeInput,
    subscription_not_found,
)
from workflows.webhooks import REGISTRY_WORKFLOW_ID, WebhookRegistryWorkflow
from zhiping.service import refusal_from


class DeliveryRow(BaseModel):
    """One event for one subscription, as the delivery log knows it."""

    subscription_id: str
    event_id: str
    event_type: str
    cycle_id: str
    application_id: str
    seq: int
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    first_attempt_at: datetime
    last_attempt_at: datetime
    delivered_at: datetime | None


async def _registry(
    client: Client, task_queue: str
) -> WorkflowHandle[WebhookRegistryWorkflow, None]:
    """The registry workflow, started on first use (a second start attaches to it)."""
    return await client.start_workflow(
        WebhookRegistryWorkflow.run,
        RegistryState(),
        id=REGISTRY_WORKFLOW_ID,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def _change(
    client: Client, task_queue: str, update: str, inp: BaseModel, event_id: str | None
) -> SubscriptionView:
    handle = await _registry(client, task_queue)
    try:
        view: SubscriptionView = await handle.execute_update(
            update, inp, id=event_id, result_type=SubscriptionView
        )
        return view
    except WorkflowUpdateFailedError as error:
        refused = refusal_from(error)
        if refused is not None:
            raise refused from None
        raise


async def subscribe(
    client: Client, task_queue: str, inp: SubscribeInput, event_id: str | None = None
) -> SubscriptionView:
    """Add a subscription; the same id with the same settings again changes nothing.

    Raises:
        DomainError: ``SUBSCRIPTION_EXISTS`` (same id, other settings).
    """
    return await _change(client, task_queue, "subscribe", inp, event_id)


async def unsubscribe(
    client: Client, task_queue: str, inp: UnsubscribeInput, event_id: str | None = None
) -> SubscriptionView:
    """Remove a subscription; events still queued for it are dropped, not sent.

    Raises:
        DomainError: ``SUBSCRIPTION_NOT_FOUND``.
    """
    return await _change(client, task_queue, "unsubscribe", inp, event_id)


async def list_subscriptions(client: Client, task_queue: str) -> list[SubscriptionView]:
    handle = await _registry(client, task_queue)
    return await handle.query(WebhookRegistryWorkflow.subscriptions)


async def get_subscription(
    client: Client, task_queue: str, subscription_id: str
) -> SubscriptionView:
    """Raises: DomainError ``SUBSCRIPTION_NOT_FOUND``."""
    for view in await list_subscriptions(client, task_queue):
        if view.subscription_id == subscription_id:
            return view
    raise subscription_not_found(subscription_id)


async def list_deliveries(
    db: Database,
    subscription_id: str,
    *,
    status: str | None = None,
    cycle_id: str | None = None,
    application_id: str | None = None,
    limit: int = 200,
) -> list[DeliveryRow]:
    """The delivery log of one subscription, oldest first; also of one since removed.

    Raises:
        DomainError: ``SUBSCRIPTION_NOT_FOUND`` (never subscribed).
    """
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if cycle_id is not None:
        query = query.where(WebhookDelivery.cycle_id == cycle_id)
    if application_id is not None:
        query = query.where(WebhookDelivery.application_id == application_id)
    query = query.order_by(WebhookDelivery.id).limit(limit)
    async with db.sessions() as session:
        if await session.get(WebhookSubscription, subscription_id) is None:
            raise subscription_not_found(subscription_id)
        rows = (await session.scalars(query)).all()
    return [DeliveryRow.model_validate(row, from_attributes=True) for row in rows]


__all__ = [
    "DeliveryRow",
    "get_subscription",
    "list_deliveries",
    "list_subscriptions",
    "subscribe",
    "unsubscribe",
]

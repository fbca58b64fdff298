"""WebhookRegistryWorkflow: the one writer of the outbound webhook subscriptions.

One per namespace (:data:`REGISTRY_WORKFLOW_ID`), started on first use and never ending.

Updates: ``subscribe`` (a new id, or the same id with the same settings again: no
change), ``unsubscribe``. Each is validated first and returns only once the SQL table the
delivery activities read has been written. Query: ``subscriptions`` (never the secrets).
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows._common import ACTIVITY_RETRY, ACTIVITY_TIMEOUT, refusal

with workflow.unsafe.imports_passed_through():
    from models.errors import DomainError
    from models.webhooks import (
        RegistryState,
        SubscribeInput,
        Subscription,
        SubscriptionRecord,
        SubscriptionView,
        UnsubscribeInput,
        subscription_not_found,
    )

REGISTRY_WORKFLOW_ID = "webhook-registry"


@workflow.defn
class WebhookRegistryWorkflow:
    @workflow.init
    def __init__(self, state: RegistryState) -> None:
        self._subscriptions = dict(state.subscriptions)
        self._writing = asyncio.Lock()
        """Table writes happen in the order the registry changed."""

    @workflow.run
    async def run(self, state: RegistryState) -> None:
        await workflow.wait_condition(
            lambda: (
                workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
            )
        )
        workflow.continue_as_new(RegistryState(subscriptions=self._subscriptions))

    @workflow.query
    def subscriptions(self) -> list[SubscriptionView]:
        return [self._subscriptions[key].view() for key in sorted(self._subscriptions)]

    @workflow.update
    async def subscribe(self, inp: SubscribeInput) -> SubscriptionView:
        existing = self._subscriptions.get(inp.subscription_id)
        if existing is not None:
            return existing.view()
        subscription = Subscription(
            subscription_id=inp.subscription_id,
            url=str(inp.url),
            event_types=inp.event_types,
            secret=inp.secret,
            description=inp.description,
            created_at=workflow.now(),
            created_by=inp.actor,
        )
        self._subscriptions[inp.subscription_id] = subscription
        async with self._writing:
            await self._save(subscription, active=True)
        return subscription.view()

    @subscribe.validator
    def validate_subscribe(self, inp: SubscribeInput) -> None:
        existing = self._subscriptions.get(inp.subscription_id)
        if existing is not None and (
            existing.url != str(inp.url)
            or existing.event_types != inp.event_types
            or existing.secret != inp.secret
        ):
            raise refusal(
                DomainError(
                    "SUBSCRIPTION_EXISTS",
                    f"订阅 {inp.subscription_id} 已存在且设置不同；请先取消订阅",
                    subscription_id=inp.subscription_id,
                )
            )

    @workflow.update
    async def unsubscribe(self, inp: UnsubscribeInput) -> SubscriptionView:
        subscription = self._subscriptions.pop(inp.subscription_id)
        async with self._writing:
            await self._save(subscription, active=False)
        return subscription.view()

    @unsubscribe.validator
    def validate_unsubscribe(self, inp: UnsubscribeInput) -> None:
        if inp.subscription_id not in self._subscriptions:
            raise refusal(subscription_not_found(inp.subscription_id))

    async def _save(self, subscription: Subscription, *, active: bool) -> None:
        await workflow.execute_activity(
            "save_subscription",
            SubscriptionRecord(subscription=subscription, active=active, at=workflow.now()),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )


__all__ = ["REGISTRY_WORKFLOW_ID", "WebhookRegistryWorkflow"]

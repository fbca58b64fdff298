"""Outbound webhooks: keep the subscription table, route events, deliver them signed.

Delivery is at-least-once: ``deliver_webhook`` raises on anything but a 2xx, and Temporal
retries it with backoff until the receiver acknowledges. A worker lost after the POST but
before the activity completed sends the same event again with the same ``id``, which the
receiver dedupes on. Each attempt is logged in ``webhook_deliveries`` for ops and metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.database import Database
from models.tables import WebhookDelivery, WebhookSubscription
from models.webhooks import (
    SIGNATURE_HEADER,
    ApplicationEvent,
    DeliveryResult,
    SubscriptionRecord,
    WebhookDeliveryInput,
    matches,
    sign,
)

HTTP_TIMEOUT = httpx.Timeout(10.0)
"""Per attempt; the activity's start-to-close timeout is longer."""
USER_AGENT = "zhiping-webhooks/1"


class WebhookActivities:
    """Register ``WebhookActivities(db).all()``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def all(self) -> list[Callable[..., Any]]:
        return [self.save_subscription, self.route_event, self.deliver_webhook]

    @activity.defn
    async def save_subscription(self, record: SubscriptionRecord) -> None:
        """Project the registry's subscription onto the table (idempotent upsert)."""
        sub = record.subscription
        values: dict[str, Any] = {
            "subscription_id": sub.subscription_id,
            "url": sub.url,
            "event_types": sub.event_types,
            "secret": sub.secret,
            "description": sub.description,
            "active": record.active,
            "created_at": sub.created_at,
            "removed_at": None if record.active else record.at,
        }
        upsert = self._db.insert(WebhookSubscription).values(**values)
        upsert = upsert.on_conflict_do_update(
            index_elements=["subscription_id"],
            set_={name: upsert.excluded[name] for name in values if name != "subscription_id"},
        )
        async with self._db.sessions.begin() as session:
            await session.execute(upsert)

    @activity.defn
    async def route_event(self, event: ApplicationEvent) -> list[str]:
        """The active subscriptions that want ``event``, in a stable order."""
        async with self._db.sessions() as session:
            rows = (
                await session.scalars(
                    select(WebhookSubscription)
                    .where(WebhookSubscription.active.is_(True))
                    .order_by(WebhookSubscription.subscription_id)
                )
            ).all()
        return [row.subscription_id for row in rows if matches(row.event_types, event.type)]

    @activity.defn
    async def deliver_webhook(self, inp: WebhookDeliveryInput) -> DeliveryResult:
        """POST the signed event; raise (and so retry) until a 2xx comes back."""
        event = inp.event
        now = datetime.now(UTC)
        async with self._db.sessions() as session:
            sub = await session.get(WebhookSubscription, inp.subscription_id)
        if sub is None or not sub.active:
            await self._log(inp, now, status="dropped", code=None, error="订阅已取消")
            return DeliveryResult(
                subscription_id=inp.subscription_id, event_id=event.id, outcome="dropped"
            )
        body = event.body()
        headers = {
            "Content-Type": "application/cloudevents+json; charset=utf-8",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(sub.secret, body),
            "X-Zhiping-Subscription": sub.subscription_id,
            "X-Zhiping-Attempt": str(activity.info().attempt),
        }
        try:
            # A client per attempt: nothing to close on shutdown, and deliveries are rare
            # enough (one per transition) that connection reuse does not matter.
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
                response = await http.post(sub.url, content=body, headers=headers)
        except httpx.HTTPError as error:
            await self._log(inp, now, status="pending", code=None, error=repr(error)[:500])
            raise ApplicationError(
                f"webhook {sub.subscription_id}: {error!r}", type="WebhookUnreachable"
            ) from error
        if not response.is_success:
            await self._log(
                inp, now, status="pending", code=response.status_code, error=response.text[:500]
            )
            raise ApplicationError(
                f"webhook {sub.subscription_id} answered {response.status_code}",
                type="WebhookRefused",
            )
        await self._log(inp, now, status="delivered", code=response.status_code, error=None)
        return DeliveryResult(
            subscription_id=inp.subscription_id, event_id=event.id, outcome="delivered"
        )

    async def _log(
        self,
        inp: WebhookDeliveryInput,
        now: datetime,
        *,
        status: str,
        code: int | None,
        error: str | None,
    ) -> None:
        """One row per (subscription, event): the latest attempt and the outcome."""
        event = inp.event
        insert = (
            self._db.insert(WebhookDelivery)
            .values(
                subscription_id=inp.subscription_id,
                event_id=event.id,
                event_type=event.type,
                cycle_id=event.cycle_id,
                application_id=event.application_id,
                seq=event.seq,
                status="pending",
                attempts=0,
                first_attempt_at=now,
                last_attempt_at=now,
            )
            .on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
        )
        change = (
            update(WebhookDelivery)
            .where(
                WebhookDelivery.subscription_id == inp.subscription_id,
                WebhookDelivery.event_id == event.id,
            )
            .values(
                status=status,
                attempts=WebhookDelivery.attempts + 1,
                last_status_code=code,
                last_error=error,
                last_attempt_at=now,
                delivered_at=now if status == "delivered" else None,
            )
        )
        async with self._db.sessions.begin() as session:
            await session.execute(insert)
            await session.execute(change)


__all__ = ["WebhookActivities"]

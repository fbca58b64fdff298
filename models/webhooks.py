"""Outbound events: webhook subscriptions and the CloudEvent each transition becomes.

Every transition of an application is published as a CloudEvents 1.0 event of type
``cn.zhiping.application.<trigger>`` (``…submit``, ``…accept``, ``…end_publicity``, …).
Its ``id`` is ``<workflow id>:<seq>``: unique, stable across retries, so a receiver
dedupes on it. The body is signed like inbound events: ``X-Zhiping-Signature:
sha256=<HMAC-SHA256 of the raw body with the subscription's secret>``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from models.errors import DomainError
from models.lifecycle import TRANSITIONS
from models.records import PendingDeadline

EVENT_TYPE_PREFIX = "cn.zhiping.application."
ALL_EVENTS = f"{EVENT_TYPE_PREFIX}*"
EVENT_TYPES: tuple[str, ...] = tuple(
    sorted(
        {f"{EVENT_TYPE_PREFIX}{t['trigger']}" for t in TRANSITIONS}
        | {f"{EVENT_TYPE_PREFIX}create", f"{EVENT_TYPE_PREFIX}change_deadlines"}
    )
)
"""Every type a transition can have: one per trigger of the state machine."""
SIGNATURE_HEADER = "X-Zhiping-Signature"
SUBSCRIPTION_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


def event_type(trigger: str) -> str:
    return f"{EVENT_TYPE_PREFIX}{trigger}"


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Zhiping-Signature`` value of ``body``: the same scheme both ways."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def matches(patterns: list[str], type_: str) -> bool:
    return any(fnmatch.fnmatchcase(type_, pattern) for pattern in patterns)


class SubscriptionSettings(BaseModel):
    """Where to send which events, signed with what (the body of ``PUT /webhooks/{id}``)."""

    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl = Field(description="接收地址（http 或 https）")
    event_types: list[str] = Field(
        default_factory=lambda: [ALL_EVENTS],
        min_length=1,
        max_length=len(EVENT_TYPES) + 1,
        description=f"事件类型，或 {ALL_EVENTS} 表示全部",
    )
    secret: str = Field(min_length=16, max_length=200, description="签名密钥（至少 16 个字符）")
    description: str | None = Field(default=None, max_length=500)

    @field_validator("event_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t != ALL_EVENTS and t not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"未知的事件类型：{', '.join(unknown)}")
        return sorted(set(value))


class SubscribeInput(SubscriptionSettings):
    """Ops subscribes a receiver to application events."""

    subscription_id: str = Field(pattern=SUBSCRIPTION_ID, description="订阅编号")
    actor: str = "ops"


class UnsubscribeInput(BaseModel):
    subscription_id: str = Field(pattern=SUBSCRIPTION_ID)
    actor: str = "ops"


class Subscription(BaseModel):
    """A subscription as the registry keeps it (with its secret)."""

    subscription_id: str
    url: str
    event_types: list[str]
    secret: str
    description: str | None = None
    created_at: datetime
    created_by: str

    def view(self) -> SubscriptionView:
        return SubscriptionView(**self.model_dump(exclude={"secret"}))


class SubscriptionView(BaseModel):
    """What anyone is shown of a subscription: never the secret."""

    subscription_id: str
    url: str
    event_types: list[str]
    description: str | None = None
    created_at: datetime
    created_by: str


class RegistryState(BaseModel):
    """The registry workflow's state, carried across continue-as-new."""

    subscriptions: dict[str, Subscription] = Field(default_factory=dict)


class SubscriptionRecord(BaseModel):
    """Activity input: project one subscription (or its removal) onto the SQL table."""

    subscription: Subscription
    active: bool
    at: datetime


class ApplicationEvent(BaseModel):
    """One transition as a CloudEvent (structured JSON)."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: dict[str, Any]

    def cloud_event(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time.isoformat(),
            "datacontenttype": "application/json",
            "data": self.data,
        }

    def body(self) -> bytes:
        """The exact bytes sent and signed (stable: the same event, the same body)."""
        return json.dumps(
            self.cloud_event(), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        ).encode()

    @property
    def seq(self) -> int:
        return int(self.data["seq"])

    @property
    def cycle_id(self) -> str:
        return str(self.data["cycle_id"])

    @property
    def application_id(self) -> str:
        return str(self.data["application_id"])


class WebhookDeliveryInput(BaseModel):
    """Activity input: deliver ``event`` to one subscription, retried until acknowledged."""

    subscription_id: str
    event: ApplicationEvent


class DeliveryResult(BaseModel):
    subscription_id: str
    event_id: str
    outcome: str
    """``delivered`` or ``dropped`` (the subscription was removed before delivery)."""


def transition_event(
    *,
    workflow_id: str,
    cycle_id: str,
    application_id: str,
    level: str,
    seq: int,
    trigger: str,
    source: str,
    dest: str,
    dest_label: str,
    actor: str,
    reason: str | None,
    at: datetime,
    submission_round: int,
    fee_paid: bool,
    deadlines: list[PendingDeadline],
) -> ApplicationEvent:
    """The CloudEvent of one transition: ids and states only, no personal data."""
    return ApplicationEvent(
        id=f"{workflow_id}:{seq}",
        source=f"/cycles/{cycle_id}/applications/{application_id}",
        type=event_type(trigger),
        subject=application_id,
        time=at,
        data={
            "cycle_id": cycle_id,
            "application_id": application_id,
            "level": level,
            "seq": seq,
            "trigger": trigger,
            "from": source,
            "to": dest,
            "to_label": dest_label,
            "actor": actor,
            "reason": reason,
            "submission_round": submission_round,
            "fee_paid": fee_paid,
            "deadlines": [d.model_dump(mode="json") for d in deadlines],
        },
    )


def subscription_not_found(subscription_id: str) -> DomainError:
    return DomainError(
        "SUBSCRIPTION_NOT_FOUND",
        f"未找到订阅 {subscription_id}",
        subscription_id=subscription_id,
    )


__all__ = [
    "ALL_EVENTS",
    "EVENT_TYPES",
    "SIGNATURE_HEADER",
    "ApplicationEvent",
    "DeliveryResult",
    "RegistryState",
    "SubscribeInput",
    "Subscription",
    "SubscriptionRecord",
    "SubscriptionSettings",
    "SubscriptionView",
    "UnsubscribeInput",
    "WebhookDeliveryInput",
    "event_type",
    "matches",
    "sign",
    "subscription_not_found",
    "transition_event",
]

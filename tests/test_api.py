"""The HTTP API against the real dev server, an in-process worker and a real SQLite read model.

Requests go through ``httpx.ASGITransport`` to the app that ``create_app`` builds from
explicit settings (never the environment). The cycle runs on a rehearsal clock, so the 2024
policy's dates are in the future for it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities import Database, ZhipingActivities
from activities.notifications import NullChannel
from models.clock import CycleClock
from models.commands import application_workflow_id
from models.policy import CHINA_TZ, CyclePolicy, Level
from models.webhooks import sign as event_signature
from tests.conftest import SECRET
from tests.test_webhooks import Receiver, delivery_logged, eventually, running
from worker import build_worker
from zhiping.api import PERSONAL_FIELDS, blind, create_app
from zhiping.samples import complete_dossier
from zhiping.settings import Settings

CYCLE = "2024-aksu-party-school"
BUSINESS_START = datetime(2024, 8, 26, 9, 0, tzinfo=CHINA_TZ)
TOKENS = {
    "t-ops": "ops",
    "t-int": "integration",
    "t-rev": "reviewer",
    "t-com": "committee",
    "t-emp": "employer",
    "t-a1": "applicant:A1",
    "t-a2": "applicant:A2",
}
WEBHOOK_SECRET = "webhook-secret-0123456789"
EVENT_SECRETS = {"platform": "s-platform-0123", "payment": "s-payment-4567"}
ROLE_TOKEN = {spec.replace(":", "-"): token for token, spec in TOKENS.items()}


@dataclass
class Api:
    http: httpx.AsyncClient
    policy: CyclePolicy
    db: Database
    clock: CycleClock
    client: Client

    def path(self, application_id: str | None = None, action: str | None = None) -> str:
        path = f"/cycles/{CYCLE}/applications"
        if application_id:
            path += f"/{application_id}"
        if action:
            path += f"/actions/{action}"
        return path

    async def call(
        self,
        method: str,
        path: str,
        role: str | None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if role is not None:
            all_headers["Authorization"] = f"Bearer {ROLE_TOKEN.get(role, role)}"
        return await self.http.request(method, path, json=body, headers=all_headers)

    async def create(self, application_id: str, level: Level = Level.intermediate) -> Any:
        response = await self.call(
            "POST",
            self.path(),
            "integration",
            {
                "application_id": application_id,
                "level": level.value,
                "id_number": "653001198001010011",
                "clock": self.clock.model_dump(mode="json"),
            },
        )
        assert response.status_code == 201, response.text
        return response.json()

    def dossier(self, level: Level = Level.intermediate) -> Any:
        return {"dossier": complete_dossier(self.policy, level).model_dump(mode="json")}

    async def event(
        self,
        source: str,
        event_id: str,
        event_type: str,
        data: Any,
        *,
        secret: str | None = None,
        role: str = "integration",
    ) -> httpx.Response:
        """POST one structured CloudEvent, signed with ``source``'s secret (or ``secret``)."""
        body = json.dumps(
            {
                "specversion": "1.0",
                "id": event_id,
                "source": source,
                "type": event_type,
                "datacontenttype": "application/json",
                "data": data,
            }
        ).encode()
        signature = event_signature(secret or EVENT_SECRETS[source], body)
        return await self.http.post(
            "/events",
            content=body,
            headers={
                "Authorization": f"Bearer {ROLE_TOKEN[role]}",
                "Content-Type": "application/cloudevents+json",
                "X-Zhiping-Signature": signature,
            },
        )


@pytest_asyncio.fixture(loop_scope="session")
async def api(
    dev_env: WorkflowEnvironment, db: Database, policy: CyclePolicy, tmp_path: Path
) -> AsyncIterator[Api]:
    task_queue = f"api-{uuid.uuid4()}"
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        database_url=db.url,  # the worker's database: SQLite or PostgreSQL
        task_queue=task_queue,
        person_key_secret=SecretStr(SECRET.decode()),
        api_tokens=TOKENS,
        event_secrets={source: SecretStr(secret) for source, secret in EVENT_SECRETS.items()},
    )
    app = create_app(settings)
    worker = build_worker(dev_env.client, ZhipingActivities(db, NullChannel()), task_queue)
    clock = CycleClock.rehearse(BUSINESS_START, datetime.now(UTC))
    async with (
        worker,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):
        try:
            yield Api(http, policy, db, clock, dev_env.client)
        finally:
            await app.state.backend.aclose()


def _keys(data: Any) -> set[str]:
    if isinstance(data, dict):
        return set(data) | {k for v in data.values() for k in _keys(v)}
    if isinstance(data, list):
        return {k for item in data for k in _keys(item)}
    return set()


async def test_a_cycle_driven_through_the_api(api: Api) -> None:
    created = await api.create("A1")
    assert created["state"] == "draft" and created["application_id"] == "A1"
    assert "653001198001010011" not in str(created)
    again = await api.call(
        "POST",
        api.path(),
        "ops",
        {"application_id": "A1", "level": "intermediate", "id_number": "653001198001010011"},
    )
    assert again.status_code == 409 and again.json()["code"] == "APPLICATION_EXISTS"

    submitted = await api.call("POST", api.path("A1", "submit"), "applicant-A1", api.dossier())
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["state"] == "under_review"

    # The same Idempotency-Key twice: the same answer, one transition.
    key = {"Idempotency-Key": f"review-{uuid.uuid4()}"}
    decision = {"reason": "材料齐全"}
    first = await api.call("POST", api.path("A1", "accept"), "reviewer", decision, key)
    second = await api.call("POST", api.path("A1", "accept"), "reviewer", decision, key)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["state"] == second.json()["state"] == "fee_due"
    assert first.json()["history"] == second.json()["history"]

    fee = api.policy.fee_for(Level.intermediate)
    wrong = await api.call(
        "POST",
        api.path("A1", "record_payment"),
        "integration",
        {"transaction_id": "T1", "amount": str(fee + 1)},
    )
    assert wrong.status_code == 422 and wrong.json()["code"] == "PAYMENT_AMOUNT_MISMATCH"
    paid = await api.call(
        "POST",
        api.path("A1", "record_payment"),
        "integration",
        {"transaction_id": "T1", "amount": str(fee)},
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["state"] == "awaiting_meeting" and paid.json()["fee_paid"] is True

    shown = await api.call("GET", api.path("A1"), "ops")
    history = shown.json()["history"]
    assert [(h["trigger"], h["actor"]) for h in history if h["actor"] != "system"] == [
        ("create", "integration"),
        ("submit", "applicant:A1"),
        ("accept", "reviewer"),
        ("record_payment", "integration"),
    ]

    for _ in range(200):
        listed = await api.call("GET", api.path(), "ops", None)
        rows = listed.json()
        if rows and rows[0]["state"] == "awaiting_meeting":
            break
        await asyncio.sleep(0.05)
    assert [(r["application_id"], r["state"]) for r in rows] == [("A1", "awaiting_meeting")]
    filtered = await api.http.get(
        api.path(),
        params={"stage": "draft", "level": "intermediate"},
        headers={"Authorization": "Bearer t-emp"},
    )
    assert filtered.status_code == 200 and filtered.json() == []

    policy = await api.call("GET", f"/cycles/{CYCLE}", "applicant-A1")
    assert policy.status_code == 200 and policy.json()["cycle_id"] == CYCLE

    docs = await api.http.get("/openapi.json")
    assert (
        "/cycles/{cycle_id}/applications/{application_id}/actions/submit" in (docs.json()["paths"])
    )


async def test_each_role_does_only_what_it_may(api: Api) -> None:
    await api.create("A1")
    await api.create("A2")
    forbidden = [
        ("GET", api.path("A2"), "applicant-A1", None, "NOT_OWN_APPLICATION"),
        ("POST", api.path("A2", "withdraw"), "applicant-A1", {}, "NOT_OWN_APPLICATION"),
        ("GET", api.path(), "applicant-A1", None, "FORBIDDEN"),
        ("POST", api.path("A1", "accept"), "applicant-A1", {}, "FORBIDDEN"),
        ("POST", api.path("A1", "accept"), "committee", {}, "FORBIDDEN"),
        ("POST", api.path("A1", "accept"), "integration", {}, "FORBIDDEN"),
        ("POST", api.path("A1", "submit"), "employer", api.dossier(), "FORBIDDEN"),
        ("POST", api.path("A1", "submit"), "reviewer", api.dossier(), "FORBIDDEN"),
        ("POST", api.path("A1", "withdraw"), "reviewer", {}, "FORBIDDEN"),
        ("POST", api.path("A1", "disqualify"), "integration", {"reason": "x"}, "FORBIDDEN"),
        ("POST", api.path(), "reviewer", {}, "FORBIDDEN"),
        (
            "POST",
            f"/cycles/{CYCLE}/deadline-extensions",
            "integration",
            {"reason": "x"},
            "FORBIDDEN",
        ),
    ]
    for method, path, role, body, code in forbidden:
        response = await api.call(method, path, role, body)
        assert response.status_code == 403, (method, path, role, response.text)
        assert response.json()["code"] == code, (method, path, role, response.text)
        assert response.json()["message"]

    for role in ("applicant-A1", "employer", "reviewer", "committee", "ops", "integration"):
        response = await api.call("GET", api.path("A1"), role)
        assert response.status_code == 200, (role, response.text)
    for role in ("reviewer", "committee"):
        seen = (await api.call("GET", api.path("A1"), role)).json()
        assert not _keys(seen) & PERSONAL_FIELDS
    assert blind({"a": [{"name": "张三", "employer": "某校", "level": "junior"}]}) == {
        "a": [{"level": "junior"}]
    }

    # The applicant withdraws its own application; the state moves once.
    withdrawn = await api.call("POST", api.path("A2", "withdraw"), "applicant-A2", {})
    assert withdrawn.status_code == 200 and withdrawn.json()["state"] == "withdrawn"
    # Once that workflow has ended, its id is not reused: a second create is refused.
    await api.client.get_workflow_handle(application_workflow_id(CYCLE, "A2")).result()
    reused = await api.call(
        "POST",
        api.path(),
        "ops",
        {"application_id": "A2", "level": "intermediate", "id_number": "653001198001010011"},
    )
    assert reused.status_code == 409 and reused.json()["code"] == "APPLICATION_EXISTS"

    # Ops extends the cycle's submission cutoff for every running application.
    cutoff = api.policy.deadlines.submission_cutoff.replace(day=31)
    extended = await api.call(
        "POST",
        f"/cycles/{CYCLE}/deadline-extensions",
        "ops",
        {"submission_cutoff": cutoff.isoformat(), "reason": "系统维护顺延"},
    )
    assert extended.status_code == 200, extended.text


async def test_errors_have_one_shape(api: Api) -> None:
    await api.create("A1")
    # 401: no token, a wrong token.
    for role in (None, "nope"):
        response = await api.call("GET", api.path("A1"), role)
        assert response.status_code == 401 and response.json()["code"] == "UNAUTHENTICATED"

    # 404: unknown application, cycle, action.
    missing = await api.call("GET", api.path("NOPE"), "ops")
    assert missing.status_code == 404 and missing.json()["code"] == "APPLICATION_NOT_FOUND"
    for method, path, body in (
        ("GET", "/cycles/no-such-cycle", None),
        (
            "POST",
            "/cycles/no-such-cycle/applications",
            {"application_id": "X", "level": "junior", "id_number": "653001198001010011"},
        ),
    ):
        response = await api.call(method, path, "ops", body)
        assert response.status_code == 404 and response.json()["code"] == "CYCLE_NOT_FOUND"
    unknown_action = await api.call("POST", api.path("A1", "promote"), "ops", {})
    assert unknown_action.status_code == 404 and unknown_action.json()["code"] == "NOT_FOUND"

    # 409: paying a draft names the state and what it allows.
    refused = await api.call(
        "POST", api.path("A1", "record_payment"), "ops", {"transaction_id": "T", "amount": "1"}
    )
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["code"] == "TRANSITION_NOT_ALLOWED" and "填报中" in body["message"]
    assert body["details"]["state"] == "draft" and body["details"]["state_label"] == "填报中"
    assert "submit" in body["details"]["allowed_actions"]

    # 422: a bad body, a bad ID number (never echoed), a path that is no id.
    bad = await api.call(
        "POST", api.path("A1", "record_payment"), "ops", {"transaction_id": "T", "amount": "abc"}
    )
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_INPUT"
    assert bad.json()["details"]["errors"][0]["loc"][-1] == "amount"
    bad_id = await api.call(
        "POST",
        api.path(),
        "ops",
        {"application_id": "A9", "level": "junior", "id_number": "65300119800101001Z"},
    )
    assert bad_id.status_code == 422 and bad_id.json()["code"] == "INVALID_ID_NUMBER"
    assert "65300119800101001Z" not in bad_id.text
    short_id = await api.call(
        "POST", api.path(), "ops", {"application_id": "A9", "level": "junior", "id_number": "6530"}
    )
    assert short_id.status_code == 422 and "6530" not in short_id.text.replace(CYCLE, "")
    not_json = await api.http.post(
        api.path("A1", "accept"),
        content=b"{",
        headers={"Authorization": "Bearer t-ops", "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422 and not_json.json()["code"] == "INVALID_INPUT"
    bad_path = await api.call("GET", f"/cycles/{CYCLE}/applications/..%2Fx", "ops")
    assert bad_path.status_code in {404, 422}
    for response in (bad, bad_id, short_id, not_json, missing, refused):
        assert set(response.json()) == {"code", "message", "details"}

    # Odd input is refused in the same shape, never with a 500.
    odd: list[tuple[str, str, Any]] = [
        ("GET", api.path() + "?now=2024-01-01T00:00", None),
        ("GET", api.path() + "?now=9999-12-31T23:00%2B08:00&due_within_days=3650", None),
        ("GET", api.path() + "?stage=nope&due_within_days=-1", None),
        ("POST", api.path("A1", "accept"), []),
        ("POST", api.path("A1", "submit"), {}),
        ("POST", api.path("A1", "submit"), {"dossier": {"name": 1}}),
        ("POST", api.path(), {"application_id": "A8", "level": "x", "clock": {"speed": 0}}),
        ("DELETE", api.path("A1"), None),
    ]
    for method, path, odd_body in odd:
        response = await api.call(method, path, "ops", odd_body)
        assert 400 <= response.status_code < 500, (method, path, response.text)
        assert set(response.json()) == {"code", "message", "details"}


async def test_temporal_unreachable_is_503(tmp_path: Path) -> None:
    settings = Settings(
        temporal_address="127.0.0.1:1",
        database_url=f"sqlite+aiosqlite:///{tmp_path}/none.db",
        api_tokens={"t": "ops"},
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        response = await http.get(
            f"/cycles/{CYCLE}/applications/A1", headers={"Authorization": "Bearer t"}
        )
    assert response.status_code == 503
    assert response.json()["code"] == "TEMPORAL_UNAVAILABLE"


async def test_cloudevents_apply_once_each(api: Api) -> None:
    created = {
        "cycle_id": CYCLE,
        "application_id": "E1",
        "level": "intermediate",
        "id_number": "653001198001010011",
        "clock": api.clock.model_dump(mode="json"),
    }
    submitted = {"cycle_id": CYCLE, "application_id": "E1", **api.dossier()}
    fee = api.policy.fee_for(Level.intermediate)
    paid = {
        "cycle_id": CYCLE,
        "application_id": "E1",
        "transaction_id": "PAY-1",
        "amount": str(fee),
        "channel": "bank",
    }
    steps = [
        ("platform", "evt-1", "cn.zhiping.application.created", created, 201, "draft"),
        ("platform", "evt-2", "cn.zhiping.application.submitted", submitted, 200, "under_review"),
    ]
    for source, event_id, event_type, data, code, state in steps:
        first = await api.event(source, event_id, event_type, data)
        again = await api.event(source, event_id, event_type, data)
        assert first.status_code == again.status_code == code, first.text
        assert first.json() == again.json()
        assert first.json()["state"] == state
    accepted = await api.call("POST", api.path("E1", "accept"), "reviewer", {})
    assert accepted.status_code == 200 and accepted.json()["state"] == "fee_due"

    # A bad signature, none at all, an unknown source: refused, nothing paid.
    refusals = [
        await api.event("payment", "pay-1", "cn.zhiping.payment.confirmed", paid, secret="x"),
        await api.event("nobody", "pay-1", "cn.zhiping.payment.confirmed", paid, secret="x"),
        await api.http.post(
            "/events",
            json={"specversion": "1.0", "id": "p", "source": "payment", "type": "t", "data": {}},
            headers={"Authorization": "Bearer t-int"},
        ),
    ]
    for refused in refusals:
        assert refused.status_code == 401 and refused.json()["code"] == "BAD_SIGNATURE"
    # Only integration may send events, even correctly signed.
    by_ops = await api.event("payment", "pay-1", "cn.zhiping.payment.confirmed", paid, role="ops")
    assert by_ops.status_code == 403
    shown = await api.call("GET", api.path("E1"), "ops")
    assert shown.json()["state"] == "fee_due" and shown.json()["fee_paid"] is False

    first = await api.event("payment", "pay-1", "cn.zhiping.payment.confirmed", paid)
    again = await api.event("payment", "pay-1", "cn.zhiping.payment.confirmed", paid)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json()
    assert first.json()["state"] == "awaiting_meeting" and first.json()["fee_paid"] is True

    history = (await api.call("GET", api.path("E1"), "ops")).json()["history"]
    triggers = [h["trigger"] for h in history if h["actor"] != "system"]
    assert triggers == ["create", "submit", "accept", "record_payment"], history

    # The same id from another source is another event: a second payment is refused (409).
    second = {**paid, "transaction_id": "PAY-2"}
    other = await api.event("platform", "pay-1", "cn.zhiping.payment.confirmed", second)
    assert other.status_code == 409 and other.json()["details"]["state"] == "awaiting_meeting"
    # Creating an existing application by a new event is still a creation of it: no second
    # workflow, the same application answers.
    recreated = await api.event("platform", "evt-9", "cn.zhiping.application.created", created)
    assert recreated.status_code == 201 and recreated.json()["state"] == "awaiting_meeting"

    # After the application has ended, a redelivered event it took gets the same answer
    # (and changes nothing); a new one is refused because the application is closed.
    withdrawn = await api.call("POST", api.path("E1", "withdraw"), "ops", {"reason": "个人原因"})
    assert withdrawn.status_code == 200, withdrawn.text
    await api.client.get_workflow_handle(application_workflow_id(CYCLE, "E1")).result()
    late = await api.event("payment", "pay-1", "cn.zhiping.payment.confirmed", paid)
    assert late.status_code == 200, late.text
    assert late.json() == first.json()
    new = await api.event("payment", "pay-3", "cn.zhiping.payment.confirmed", paid)
    assert new.status_code == 409 and new.json()["code"] == "APPLICATION_CLOSED"


async def test_cloudevents_refused_in_the_error_shape(api: Api) -> None:
    unknown = await api.event("platform", "u-1", "cn.zhiping.application.deleted", {})
    assert unknown.status_code == 422 and unknown.json()["code"] == "UNKNOWN_EVENT_TYPE"
    bad_data = await api.event(
        "payment",
        "p-1",
        "cn.zhiping.payment.confirmed",
        {"cycle_id": CYCLE, "application_id": "E2", "transaction_id": "T", "amount": "abc"},
    )
    assert bad_data.status_code == 422 and bad_data.json()["code"] == "INVALID_INPUT"
    missing = await api.event(
        "payment",
        "p-2",
        "cn.zhiping.payment.confirmed",
        {"cycle_id": CYCLE, "application_id": "E2", "transaction_id": "T", "amount": "1.00"},
    )
    assert missing.status_code == 404 and missing.json()["code"] == "APPLICATION_NOT_FOUND"
    for body in (b"{", b"[]", b'{"specversion": "0.3", "source": "platform"}'):
        response = await api.http.post(
            "/events",
            content=body,
            headers={
                "Authorization": "Bearer t-int",
                "Content-Type": "application/cloudevents+json",
                "X-Zhiping-Signature": event_signature(EVENT_SECRETS["platform"], body),
            },
        )
        assert response.status_code in {401, 422}, (body, response.text)
        assert set(response.json()) == {"code", "message", "details"}
    wrong_type = await api.http.post(
        "/events", content=b"x", headers={"Authorization": "Bearer t-int"}
    )
    assert wrong_type.status_code == 415


async def test_webhook_subscriptions_through_the_api(api: Api) -> None:
    receiver = Receiver(WEBHOOK_SECRET)
    path = "/webhooks/platform"
    body = {"url": "", "secret": WEBHOOK_SECRET, "description": "申报平台"}
    with running(receiver):
        body["url"] = receiver.url
        created = await api.call("PUT", path, "integration", body)
        assert created.status_code == 200, created.text
        assert created.json()["event_types"] == ["cn.zhiping.application.*"]
        assert "secret" not in created.json()
        again = await api.call("PUT", path, "ops", body)
        assert again.status_code == 200 and again.json() == created.json()
        changed = await api.call("PUT", path, "ops", {**body, "secret": "another-secret-0123456"})
        assert changed.status_code == 409 and changed.json()["code"] == "SUBSCRIPTION_EXISTS"
        bad_type = await api.call("PUT", "/webhooks/x", "ops", {**body, "event_types": ["x.y"]})
        assert bad_type.status_code == 422 and bad_type.json()["code"] == "INVALID_INPUT"
        for role in ("reviewer", "committee", "employer", "applicant-A1"):
            assert (await api.call("GET", "/webhooks", role)).status_code == 403
        listed = await api.call("GET", "/webhooks", "ops")
        assert [s["subscription_id"] for s in listed.json()] == ["platform"]
        missing = await api.call("GET", "/webhooks/nope", "ops")
        assert missing.status_code == 404 and missing.json()["code"] == "SUBSCRIPTION_NOT_FOUND"

        await api.create("A2")
        await api.call("POST", api.path("A2", "submit"), "applicant-A2", api.dossier())
        await api.call("POST", api.path("A2", "withdraw"), "applicant-A2", {"reason": "个人原因"})
        await eventually(
            lambda: receiver.triggers("A2") == ["create", "submit", "withdraw"], "A2's events"
        )
        await delivery_logged(api.db, "platform", "A2", 3)
        deliveries = await api.call("GET", f"{path}/deliveries?application_id=A2", "ops")
        assert [(d["seq"], d["status"]) for d in deliveries.json()] == [
            (1, "delivered"),
            (2, "delivered"),
            (3, "delivered"),
        ]
        removed = await api.call("DELETE", path, "ops")
        assert removed.status_code == 200
        kept = await api.call("GET", f"{path}/deliveries?application_id=A2", "ops")
        assert kept.status_code == 200 and len(kept.json()) == 3  # the log outlives it
        never = await api.call("GET", "/webhooks/nope/deliveries", "ops")
        assert never.status_code == 404 and never.json()["code"] == "SUBSCRIPTION_NOT_FOUND"
        gone = await api.call("DELETE", path, "ops")
        assert gone.status_code == 404 and gone.json()["code"] == "SUBSCRIPTION_NOT_FOUND"
    assert all(r.signature_ok for r in receiver.received)

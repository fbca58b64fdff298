"""Evaluation meetings and defense sessions through the HTTP API, on the real dev server.

Built on ``tests/test_api.py``: the same ``Api`` helper, tokens and rehearsal clock, plus
committee members' own tokens (``committee:<expert id>``), who may cast their own ballots.
Every application is driven to the meeting or the defense through the API alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from activities import Database, ZhipingActivities
from activities.notifications import NullChannel
from models.clock import CycleClock
from models.policy import CyclePolicy, Level
from tests.conftest import SECRET
from tests.test_api import BUSINESS_START, CYCLE, EVENT_SECRETS, TOKENS, Api, _keys
from worker import build_worker
from zhiping.api import PERSONAL_FIELDS, create_app
from zhiping.settings import Settings

# Meetings and sessions live in Temporal, not in the read model: one database is enough.
pytestmark = pytest.mark.databases("sqlite")

EXPERTS = ["E01", "E02", "E03"]
COMMITTEE_TOKENS = {f"t-com-{expert}": f"committee:{expert}" for expert in EXPERTS}
MEETINGS = f"/cycles/{CYCLE}/meetings"
SESSIONS = f"/cycles/{CYCLE}/defense-sessions"


@pytest_asyncio.fixture(loop_scope="session")
async def api(
    dev_env: WorkflowEnvironment, db: Database, policy: CyclePolicy
) -> AsyncIterator[Api]:
    """``tests/test_api.py``'s API, with a token per committee member."""
    task_queue = f"api-sessions-{uuid.uuid4()}"
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        database_url=db.url,  # the worker's database
        task_queue=task_queue,
        person_key_secret=SecretStr(SECRET.decode()),
        api_tokens={**TOKENS, **COMMITTEE_TOKENS},
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


async def paid(api: Api, application_id: str, level: Level) -> str:
    """Create, submit, accept and pay an application through the API; return its state."""
    await api.create(application_id, level)
    fee = str(api.policy.fee_for(level))
    steps: list[tuple[str, Any]] = [
        ("submit", api.dossier(level)),
        ("accept", {"reason": "材料齐全"}),
        ("record_payment", {"transaction_id": f"T-{application_id}", "amount": fee}),
    ]
    state = ""
    for action, body in steps:
        response = await api.call("POST", api.path(application_id, action), "ops", body)
        assert response.status_code == 200, response.text
        state = response.json()["state"]
    return str(state)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def states(api: Api, *application_ids: str) -> list[str]:
    return [(await api.call("GET", api.path(a), "ops")).json()["state"] for a in application_ids]


def assert_blind(response: httpx.Response) -> None:
    assert not _keys(response.json()) & PERSONAL_FIELDS, response.text
    assert "application:" not in response.text and "653001" not in response.text


async def test_a_meeting_driven_through_the_api(api: Api) -> None:
    for application_id in ("A1", "A2"):
        assert await paid(api, application_id, Level.intermediate) == "awaiting_meeting"

    async def visible() -> bool:  # the meeting enrols through visibility
        query = f"Cycle='{CYCLE}' AND Stage='awaiting_meeting'"
        return len([w async for w in api.client.list_workflows(query)]) == 2

    await eventually(visible, "both applications visible as awaiting the meeting")

    opening = {"meeting_id": "M1", "held_at": "2024-09-27T09:00:00+08:00", "committee_size": 3}
    opened = await api.call("POST", MEETINGS, "ops", opening)
    assert opened.status_code == 201, opened.text
    view = opened.json()
    assert view["rules"]["quorum_required"] == 2 and view["closed"] is False
    codes = [c["code"] for c in view["candidates"]]
    assert len(codes) == 2 and all(c.startswith("C") for c in codes)
    assert (await api.call("POST", MEETINGS, "ops", opening)).json()["code"] == "MEETING_EXISTS"
    assert await states(api, "A1", "A2") == ["in_meeting", "in_meeting"]

    def action(name: str) -> str:
        return f"{MEETINGS}/M1/actions/{name}"

    # One expert present: below the quorum of 2, no ballot and no closing.
    alone = await api.call("POST", action("record_attendance"), "ops", {"experts_present": ["E01"]})
    assert alone.status_code == 200 and alone.json()["quorum_met"] is False
    early = await api.call(
        "POST", action("record_ballot"), "ops", {"expert_id": "E01", "votes": {codes[0]: True}}
    )
    assert early.status_code == 422 and early.json()["code"] == "QUORUM_NOT_MET", early.text
    assert early.json()["details"] == {"present": 1, "required": 2}
    refused = await api.call("POST", action("close"), "ops", {})
    assert refused.status_code == 422 and refused.json()["code"] == "QUORUM_NOT_MET"

    present = await api.call(
        "POST", action("record_attendance"), "ops", {"experts_present": EXPERTS}
    )
    assert present.json()["quorum_met"] is True and present.json()["experts_present"] == 3

    # A committee member casts only their own ballot; the same key twice counts once.
    yes_no = {codes[0]: True, codes[1]: False}
    own = {"expert_id": "E01", "votes": yes_no}
    key = {"Idempotency-Key": f"ballot-{uuid.uuid4()}"}
    first = await api.call("POST", action("record_ballot"), "t-com-E01", own, key)
    again = await api.call("POST", action("record_ballot"), "t-com-E01", own, key)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json() and first.json()["ballots_received"] == 1
    assert_blind(first)
    for role in ("t-com-E02", "committee"):
        other = await api.call("POST", action("record_ballot"), role, own)
        assert other.status_code == 403 and other.json()["code"] == "NOT_OWN_BALLOT"
    for expert, votes in (("E02", yes_no), ("E03", {codes[0]: True, codes[1]: True})):
        ballot = {"expert_id": expert, "votes": votes}
        response = await api.call("POST", action("record_ballot"), "ops", ballot)
        assert response.status_code == 200, response.text
    unknown = await api.call(
        "POST", action("record_ballot"), "ops", {"expert_id": "E01", "votes": {"C999": True}}
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "UNKNOWN_CANDIDATE"

    closed = await api.call("POST", action("close"), "ops", {})
    assert closed.status_code == 200, closed.text
    tallies = {t["code"]: (t["votes_for"], t["passed"]) for t in closed.json()["tallies"]}
    assert tallies == {codes[0]: (3, True), codes[1]: (1, False)}

    async def told() -> bool:
        return sorted(await states(api, "A1", "A2")) == ["not_approved", "publicity"]

    await eventually(told, "each application told its result")
    late = await api.call("POST", action("close"), "ops", {})
    assert late.status_code == 409 and late.json()["code"] == "MEETING_CLOSED"

    async def listed() -> bool:
        rows = (await api.call("GET", MEETINGS, "committee")).json()
        return [r["meeting_id"] for r in rows] == ["M1"]

    await eventually(listed, "the meeting listed")
    seen = await api.call("GET", f"{MEETINGS}/M1", "committee")
    assert seen.status_code == 200 and seen.json()["closed"] is True
    assert_blind(seen)


async def test_a_defense_session_driven_through_the_api(api: Api) -> None:
    for application_id in ("D1", "D2", "D3"):
        assert await paid(api, application_id, Level.deputy_senior) == "defense_pending"
    await api.create("D4", Level.deputy_senior)  # still a draft: cannot be scheduled

    opening = {
        "session_id": "S1",
        "at": "2024-09-20T09:00:00+08:00",
        "place": "党校教学楼302室",
        "panel": ["P01", "P02", "P03"],
        "application_ids": ["D1", "D2", "D3", "D4", "NOPE"],
        "clock": api.clock.model_dump(mode="json"),
    }
    opened = await api.call("POST", SESSIONS, "ops", opening)
    assert opened.status_code == 201, opened.text
    view = opened.json()
    assert view["ready"] is True and len(view["scheduled"]) == 3
    assert {r["application_workflow_id"].rsplit(":", 1)[1]: r["code"] for r in view["refused"]} == {
        "D4": "TRANSITION_NOT_ALLOWED",
        "NOPE": "APPLICATION_NOT_FOUND",
    }
    assert (await api.call("POST", SESSIONS, "ops", opening)).status_code == 409

    def action(name: str) -> str:
        return f"{SESSIONS}/S1/actions/{name}"

    key = {"Idempotency-Key": f"result-{uuid.uuid4()}"}
    for _ in range(2):
        passed = await api.call(
            "POST", action("record_result"), "ops", {"application_id": "D1", "passed": True}, key
        )
        assert passed.status_code == 200 and len(passed.json()["results"]) == 1, passed.text
    failed = {"application_id": "D2", "passed": False, "reason": "答辩未达到要求"}
    assert (await api.call("POST", action("record_result"), "ops", failed)).status_code == 200
    outside = await api.call(
        "POST", action("record_result"), "ops", {"application_id": "D4", "passed": True}
    )
    assert outside.status_code == 422 and outside.json()["code"] == "NOT_IN_DEFENSE_SESSION"
    by_reviewer = await api.call("GET", f"{SESSIONS}/S1", "reviewer")
    assert by_reviewer.status_code == 200 and len(by_reviewer.json()["results"]) == 2
    assert not _keys(by_reviewer.json()) & PERSONAL_FIELDS

    closed = await api.call("POST", action("close"), "ops", {})
    assert closed.status_code == 200, closed.text
    results = {
        r["application_workflow_id"].rsplit(":", 1)[1]: (r["passed"], r["absent"], r["recorded_by"])
        for r in closed.json()["results"]
    }
    assert results == {
        "D1": (True, False, "ops"),
        "D2": (False, False, "ops"),
        "D3": (False, True, "ops"),
    }

    async def told() -> bool:
        return await states(api, "D1", "D2", "D3") == [
            "awaiting_meeting",
            "not_approved",
            "not_approved",
        ]

    await eventually(told, "each applicant told the result")
    again = await api.call("POST", action("close"), "ops", {})
    assert again.status_code == 409 and again.json()["code"] == "DEFENSE_SESSION_CLOSED"

    async def listed() -> bool:
        rows = (await api.call("GET", SESSIONS, "ops")).json()
        return [(r["session_id"], r["status"]) for r in rows] == [("S1", "completed")]

    await eventually(listed, "the session listed as completed")


async def test_session_roles_not_found_and_bad_input(api: Api) -> None:
    opening = {"meeting_id": "M9", "held_at": "2024-09-27T09:00:00+08:00", "committee_size": 3}
    session = {
        "session_id": "S9",
        "at": "2024-09-20T09:00:00+08:00",
        "place": "302",
        "application_ids": ["D1"],
    }
    forbidden: list[tuple[str, str, Any, tuple[str, ...]]] = [
        ("GET", MEETINGS, None, ("applicant-A1", "employer", "integration")),
        ("GET", f"{MEETINGS}/M9", None, ("applicant-A1", "employer", "integration")),
        ("POST", MEETINGS, opening, ("reviewer", "committee", "integration", "t-com-E01")),
        ("POST", f"{MEETINGS}/M9/actions/close", {}, ("reviewer", "committee", "employer")),
        (
            "POST",
            f"{MEETINGS}/M9/actions/record_attendance",
            {"experts_present": EXPERTS},
            ("committee", "t-com-E01", "integration"),
        ),
        (
            "POST",
            f"{MEETINGS}/M9/actions/record_ballot",
            {"expert_id": "E01", "votes": {"C001": True}},
            ("reviewer", "applicant-A1", "integration"),
        ),
        ("GET", SESSIONS, None, ("applicant-A1", "employer", "integration")),
        ("GET", f"{SESSIONS}/S9", None, ("applicant-A1", "employer")),
        ("POST", SESSIONS, session, ("reviewer", "committee", "integration")),
        (
            "POST",
            f"{SESSIONS}/S9/actions/record_result",
            {"application_id": "D1", "passed": True},
            ("reviewer", "committee", "integration"),
        ),
        ("POST", f"{SESSIONS}/S9/actions/close", {}, ("committee", "applicant-A1")),
    ]
    for method, path, body, roles in forbidden:
        for role in roles:
            response = await api.call(method, path, role, body)
            assert response.status_code == 403, (method, path, role, response.text)
            assert response.json()["code"] == "FORBIDDEN"

    not_found = [
        ("GET", f"{MEETINGS}/M9", None, "MEETING_NOT_FOUND"),
        ("POST", f"{MEETINGS}/M9/actions/close", {}, "MEETING_NOT_FOUND"),
        ("GET", f"{SESSIONS}/S9", None, "DEFENSE_SESSION_NOT_FOUND"),
        ("POST", f"{SESSIONS}/S9/actions/close", {}, "DEFENSE_SESSION_NOT_FOUND"),
        ("POST", "/cycles/no-such-cycle/meetings", opening, "CYCLE_NOT_FOUND"),
        ("POST", "/cycles/no-such-cycle/defense-sessions", session, "CYCLE_NOT_FOUND"),
        ("POST", f"{MEETINGS}/M9/actions/adjourn", {}, "NOT_FOUND"),
    ]
    for method, path, body, code in not_found:
        response = await api.call(method, path, "ops", body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == code, (path, response.text)
    for role in ("ops", "reviewer"):
        assert (await api.call("GET", MEETINGS, role)).json() == []
        assert (await api.call("GET", SESSIONS, role)).json() == []

    # Nobody waits for the meeting: it opens with no candidates, and closes once quorate.
    empty = await api.call("POST", MEETINGS, "ops", opening)
    assert empty.status_code == 201 and empty.json()["candidates"] == [], empty.text
    attendance = {"experts_present": EXPERTS[:2]}
    await api.call("POST", f"{MEETINGS}/M9/actions/record_attendance", "ops", attendance)
    closed = await api.call("POST", f"{MEETINGS}/M9/actions/close", "ops", {})
    assert closed.status_code == 200 and closed.json()["closed"] is True, closed.text

    bad: list[tuple[str, Any]] = [
        (MEETINGS, {**opening, "committee_size": 0}),
        (MEETINGS, {**opening, "held_at": "2024-09-27T09:00:00"}),
        (MEETINGS, {**opening, "held_at": "0001-01-01T00:00:00+14:00"}),
        (SESSIONS, {**session, "application_ids": ["D1", "D1"]}),
        (SESSIONS, {**session, "application_ids": []}),
        (
            SESSIONS,
            {
                **session,
                "clock": {
                    "anchor_real": "2000-01-01T00:00:00Z",
                    "anchor_business": "2024-01-01T00:00:00Z",
                    "speed": 1000000,
                },
            },
        ),
        (f"{MEETINGS}/M9/actions/record_ballot", {"expert_id": "E01", "votes": {}}),
    ]
    for path, body in bad:
        response = await api.call("POST", path, "ops", body)
        assert response.status_code == 422, (path, body, response.text)
        assert response.json()["code"] == "INVALID_INPUT"
        assert set(response.json()) == {"code", "message", "details"}

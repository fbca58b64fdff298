"""The HTTP API for integrations and ops (FastAPI; OpenAPI at ``/docs``).

Like the CLI it only starts, updates and queries workflows and reads the SQL read model,
all through :mod:`zhiping.service`: the workflow stays the single writer of an application.

Every caller presents a bearer token from ``Settings.api_tokens``; its role decides what it
may do (:data:`ACTION_ROLES`), reviewers and the committee only ever see :func:`blind`
data, and every error is ``{"code", "message" (zh-CN), "details"}``.
"""

import asyncio
import hmac
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities import Database
from models.clock import CycleClock
from models.commands import ApplicationStatus, DeadlineChange, PaymentInput, SubmitInput
from models.defense_commands import CloseDefenseSession, DefenseSessionView
from models.dossier import Dossier
from models.errors import DomainError
from models.lifecycle import State
from models.meeting_commands import Ballot, MeetingView
from models.policy import CyclePolicy, Level, load_policy
from models.webhooks import (
    SubscribeInput,
    SubscriptionSettings,
    SubscriptionView,
    UnsubscribeInput,
    sign,
)
from zhiping import service, sessions, subscriptions
from zhiping.client import connect
from zhiping.settings import Settings, get_settings

NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
CycleId = Annotated[str, Path(pattern=NAME, description="评审周期编号")]
ApplicationId = Annotated[str, Path(pattern=NAME, description="申报编号")]
MeetingId = Annotated[str, Path(pattern=NAME, description="评审会编号")]
SessionId = Annotated[str, Path(pattern=NAME, description="答辩场次编号")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="重复提交同一键只执行一次（用作工作流更新 ID）",
    ),
]


class Role(StrEnum):
    applicant = "applicant"
    employer = "employer"
    reviewer = "reviewer"
    committee = "committee"
    ops = "ops"
    integration = "integration"


ALL_ROLES = frozenset(Role)
ACTION_ROLES: dict[str, frozenset[Role]] = {
    "submit": frozenset({Role.applicant, Role.integration, Role.ops}),
    "return_for_revision": frozenset({Role.reviewer, Role.ops}),
    "accept": frozenset({Role.reviewer, Role.ops}),
    "record_payment": frozenset({Role.integration, Role.ops}),
    "withdraw": frozenset({Role.applicant, Role.ops}),
    **{
        action: frozenset({Role.ops})
        for action in service.ACTIONS
        if action not in {"return_for_revision", "accept", "record_payment", "withdraw"}
    },
}
"""Who may send each action. ``ops`` may do everything; reads are open to every role
(an applicant only its own application)."""
CREATE_ROLES = frozenset({Role.integration, Role.ops})
SESSION_READ_ROLES = frozenset({Role.ops, Role.reviewer, Role.committee})
"""Who may see meetings and defense sessions (reviewers and the committee: blind)."""
SESSION_OPEN_ROLES = frozenset({Role.ops})
MEETING_ACTION_ROLES: dict[str, frozenset[Role]] = {
    **{update: frozenset({Role.ops}) for update in sessions.MEETING_UPDATES},
    "record_ballot": frozenset({Role.ops, Role.committee}),
}
"""A committee member (token ``committee:<expert id>``) may cast only its own ballot."""
DEFENSE_ACTION_ROLES: dict[str, frozenset[Role]] = {
    update: frozenset({Role.ops}) for update in sessions.DEFENSE_UPDATES
}
LIST_ROLES = ALL_ROLES - {Role.applicant}
BLIND_ROLES = frozenset({Role.reviewer, Role.committee})
PERSONAL_FIELDS = frozenset(
    {
        "name",
        "full_name",
        "id_number",
        "person_key",
        "photo",
        "photo_url",
        "employer",
        "work_unit",
        "phone",
        "email",
        "address",
    }
)
"""Keys that never reach a reviewer or the committee, wherever they appear."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a role and, for an applicant, its application id."""

    role: Role
    subject: str | None = None

    @property
    def actor(self) -> str:
        """Who the workflow's history names: the caller's role, not what the body claims."""
        return f"{self.role}:{self.subject}" if self.subject else self.role.value


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class ErrorBody(BaseModel):
    code: str = Field(description="稳定的英文错误码")
    message: str = Field(description="中文说明")
    details: dict[str, Any] = Field(default_factory=dict)


class NewApplication(BaseModel):
    application_id: str = Field(pattern=NAME)
    level: Level
    id_number: str = Field(
        min_length=18,
        max_length=18,
        description="身份证号码：只保存其带密钥的哈希，不存储、不回显",
        json_schema_extra={"writeOnly": True},
    )
    clock: CycleClock | None = Field(
        default=None, description="演练时钟（培训、演示）；省略即真实时间"
    )


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode (``application/cloudevents+json``)."""

    model_config = ConfigDict(extra="allow")  # extension attributes are allowed and ignored

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=200, description="事件编号：同一来源内唯一")
    source: str = Field(min_length=1, max_length=200, description="来源，决定验签密钥")
    type: str = Field(min_length=1, max_length=200)
    datacontenttype: str | None = None
    subject: str | None = None
    time: datetime | None = None
    data: dict[str, Any]


class ApplicationCreated(NewApplication):
    """``cn.zhiping.application.created``: the create body and its cycle."""

    cycle_id: str = Field(pattern=NAME)


class ApplicationSubmitted(BaseModel):
    """``cn.zhiping.application.submitted``."""

    cycle_id: str = Field(pattern=NAME)
    application_id: str = Field(pattern=NAME)
    dossier: Dossier


class PaymentConfirmed(BaseModel):
    """``cn.zhiping.payment.confirmed``."""

    cycle_id: str = Field(pattern=NAME)
    application_id: str = Field(pattern=NAME)
    transaction_id: str = Field(min_length=1, max_length=128)
    amount: Decimal = Field(max_digits=12, decimal_places=2)
    channel: str = Field(default="qr", pattern=r"^(qr|bank)$")


EVENT_CREATED = "cn.zhiping.application.created"
EVENT_SUBMITTED = "cn.zhiping.application.submitted"
EVENT_PAYMENT = "cn.zhiping.payment.confirmed"
EVENT_TYPES = (EVENT_CREATED, EVENT_SUBMITTED, EVENT_PAYMENT)
EVENT_ROLES = frozenset({Role.integration})
EVENT_MEDIA_TYPES = frozenset({"application/cloudevents+json", "application/json"})


def _signature_ok(secret: SecretStr | None, body: bytes, header: str | None) -> bool:
    if secret is None or header is None:
        return False
    expected = sign(secret.get_secret_value(), body)
    return hmac.compare_digest(expected.encode(), header.strip().lower().encode())


SubscriptionId = Annotated[str, Path(pattern=NAME, description="订阅编号")]
WEBHOOK_ROLES = frozenset({Role.ops, Role.integration})


class DeadlineExtensionResult(BaseModel):
    cycle_id: str
    event_id: str
    changed: list[str]


def blind(data: Any) -> Any:
    """The one rule for what reviewers and the committee see: no personal field, anywhere.

    ``data`` is JSON-like (dicts, lists, scalars); the same shape comes back without any
    key of :data:`PERSONAL_FIELDS`.
    """
    if isinstance(data, dict):
        return {k: blind(v) for k, v in data.items() if k not in PERSONAL_FIELDS}
    if isinstance(data, list):
        return [blind(item) for item in data]
    return data


def _present(principal: Principal, data: Any, status_code: int = 200) -> JSONResponse:
    content = jsonable_encoder(data)
    if principal.role in BLIND_ROLES:
        content = blind(content)
    return JSONResponse(content, status_code=status_code)


def _error(status: int, code: str, message: str, details: dict[str, Any]) -> JSONResponse:
    body = ErrorBody(code=code, message=message, details=details)
    return JSONResponse(jsonable_encoder(body), status_code=status)


class _Backend:
    """The Temporal client and the read model, opened on first use (and so reported as
    503 rather than failing the app when Temporal is down)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._db: Database | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await connect(self.settings)
                except RuntimeError as error:
                    raise TemporalUnavailable(str(error)) from error
            return self._client

    def db(self) -> Database:
        if self._db is None:
            self._db = Database.from_url(self.settings.database_url)
        return self._db

    async def aclose(self) -> None:
        if self._db is not None:
            await self._db.dispose()
            self._db = None


class TemporalUnavailable(Exception):
    """Temporal could not be reached."""


def _parse_tokens(tokens: dict[str, str]) -> dict[str, Principal]:
    principals: dict[str, Principal] = {}
    for token, spec in tokens.items():
        role, _, subject = spec.partition(":")
        try:
            principals[token] = Principal(Role(role), subject or None)
        except ValueError:
            raise ValueError(f"api_tokens: unknown role {role!r}") from None
        if principals[token].role is Role.applicant and not subject:
            raise ValueError("api_tokens: an applicant token needs its application id")
    return principals


_bearer = HTTPBearer(auto_error=False, description="令牌对应角色：role[:subject]")


def _policy(cycle_id: str) -> CyclePolicy:
    try:
        return load_policy(cycle_id)
    except FileNotFoundError:
        raise DomainError(
            "CYCLE_NOT_FOUND", f"未找到评审周期 {cycle_id} 的政策文件", cycle_id=cycle_id
        ) from None


NOT_FOUND_CODES = frozenset(
    {
        "APPLICATION_NOT_FOUND",
        "CYCLE_NOT_FOUND",
        "MEETING_NOT_FOUND",
        "DEFENSE_SESSION_NOT_FOUND",
        "SUBSCRIPTION_NOT_FOUND",
    }
)
CONFLICT_CODES = frozenset(
    {
        "TRANSITION_NOT_ALLOWED",
        "APPLICATION_CLOSED",
        "APPLICATION_BUSY",
        "APPLICATION_EXISTS",
        "SUBSCRIPTION_EXISTS",
        "MEETING_EXISTS",
        "MEETING_NOT_READY",
        "MEETING_CLOSED",
        "DEFENSE_SESSION_EXISTS",
        "DEFENSE_SESSION_NOT_READY",
        "DEFENSE_SESSION_CLOSED",
    }
)


def _domain_status(code: str) -> int:
    if code in NOT_FOUND_CODES:
        return 404
    if code in CONFLICT_CODES:
        return 409
    return 422


def _validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Where and why, never the input itself (it may be an ID number)."""
    return [
        {
            "loc": [str(part) for part in e.get("loc", ())],
            "msg": e.get("msg"),
            "type": e.get("type"),
        }
        for e in errors
    ]


def _infrastructure(error: BaseException) -> JSONResponse:
    if isinstance(error, TemporalUnavailable) or (
        isinstance(error, RPCError)
        and error.status in {RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED}
    ):
        return _error(503, "TEMPORAL_UNAVAILABLE", "工作流服务暂不可用，请稍后重试", {})
    return _error(500, "INTERNAL_ERROR", "服务内部错误，请稍后重试或联系运维", {})


def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings``: its Temporal server, read model, tokens and secret."""
    principals = _parse_tokens(settings.api_tokens)
    backend = _Backend(settings)
    secret = settings.person_key_secret.get_secret_value().encode()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await backend.aclose()

    error_responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody} for status in (401, 403, 404, 409, 422, 503)
    }
    app = FastAPI(
        title="职评 zhiping API",
        description="职称评审申报：创建、查询、操作与评审周期（每份申报是一个 Temporal 工作流）",
        version="0.1.0",
        lifespan=lifespan,
        responses=error_responses,
    )
    app.state.backend = backend

    async def authenticate(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise ApiError(401, "UNAUTHENTICATED", "缺少访问令牌（Authorization: Bearer …）")
        for token, principal in principals.items():
            if hmac.compare_digest(token.encode(), credentials.credentials.encode()):
                return principal
        raise ApiError(401, "UNAUTHENTICATED", "访问令牌无效")

    def allow(roles: frozenset[Role]) -> Callable[[Principal], Awaitable[Principal]]:
        async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
            if principal.role not in roles:
                raise ApiError(
                    403,
                    "FORBIDDEN",
                    f"角色“{principal.role}”无权执行此操作",
                    role=principal.role.value,
                    allowed_roles=sorted(roles),
                )
            return principal

        return check

    def own(principal: Principal, application_id: str) -> None:
        if principal.role is Role.applicant and principal.subject != application_id:
            raise ApiError(403, "NOT_OWN_APPLICATION", "申报人只能查看和操作本人的申报")

    # -- errors ------------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.code, error.message, error.details)

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, error: DomainError) -> JSONResponse:
        return _error(_domain_status(error.code), error.code, error.message, error.details)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        details = {"errors": _validation_errors(error.errors())}
        return _error(422, "INVALID_INPUT", "请求参数不合法", details)

    @app.exception_handler(ValidationError)
    async def invalid_model(_: Request, error: ValidationError) -> JSONResponse:
        details = {"errors": _validation_errors(error.errors())}
        return _error(422, "INVALID_INPUT", "请求参数不合法", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: ("NOT_FOUND", "请求的资源不存在"),
            405: ("METHOD_NOT_ALLOWED", "不支持该请求方法"),
        }
        code, message = codes.get(error.status_code, ("HTTP_ERROR", "请求无法处理"))
        return _error(error.status_code, code, message, {})

    @app.middleware("http")
    async def infrastructure_failures(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            return await call_next(request)
        except Exception as error:
            return _infrastructure(error)

    # -- cycles ------------------------------------------------------------------------------

    @app.get("/cycles/{cycle_id}", response_model=CyclePolicy, tags=["cycles"])
    async def get_cycle(
        cycle_id: CycleId, principal: Annotated[Principal, Depends(allow(ALL_ROLES))]
    ) -> JSONResponse:
        """评审周期的政策：日期、费用、限额（来自政策文件）。"""
        return _present(principal, _policy(cycle_id))

    @app.post(
        "/cycles/{cycle_id}/deadline-extensions",
        response_model=DeadlineExtensionResult,
        tags=["cycles"],
    )
    async def extend_deadlines(
        cycle_id: CycleId,
        change: DeadlineChange,
        principal: Annotated[Principal, Depends(allow(frozenset({Role.ops})))],
    ) -> JSONResponse:
        """延长本周期所有在办申报的期限（只能延长）；同一变更重复提交只生效一次。"""
        _policy(cycle_id)
        change = change.model_copy(update={"actor": principal.actor})
        changed = await service.extend_cycle_deadlines(
            await backend.client(), backend.db(), cycle_id, change
        )
        result = DeadlineExtensionResult(
            cycle_id=cycle_id, event_id=service.deadline_change_id(change), changed=changed
        )
        return _present(principal, result)

    # -- applications ------------------------------------------------------------------------

    @app.post(
        "/cycles/{cycle_id}/applications",
        response_model=ApplicationStatus,
        status_code=201,
        tags=["applications"],
    )
    async def create_application(
        cycle_id: CycleId,
        new: NewApplication,
        principal: Annotated[Principal, Depends(allow(CREATE_ROLES))],
    ) -> JSONResponse:
        """创建申报（启动工作流）。身份证号码只用于计算带密钥的哈希。"""
        return await create(cycle_id, new, principal)

    async def create(
        cycle_id: str, new: NewApplication, principal: Principal, *, replay: bool = False
    ) -> JSONResponse:
        """Start the workflow; with ``replay`` (an event) an existing one answers as if just
        started, with its creation's time as ``now``."""
        _policy(cycle_id)
        client = await backend.client()
        try:
            status = await service.start_application(
                client,
                settings.task_queue,
                cycle_id,
                new.application_id,
                new.level,
                new.id_number,
                secret,
                created_by=principal.actor,
                clock=new.clock,
            )
        except DomainError as error:
            if not (replay and error.code == "APPLICATION_EXISTS"):
                raise
            status = await service.application_status(client, cycle_id, new.application_id)
        if replay:
            # One answer for every delivery of the event: the status as of its creation's
            # clock, not as of this (re)delivery.
            created_at = next((h.at for h in status.history if h.trigger == "create"), None)
            if created_at is not None:
                status = status.model_copy(update={"now": created_at})
        return _present(principal, status, status_code=201)

    @app.get(
        "/cycles/{cycle_id}/applications",
        response_model=list[service.ApplicationRow],
        tags=["applications"],
    )
    async def list_applications(
        cycle_id: CycleId,
        principal: Annotated[Principal, Depends(allow(LIST_ROLES))],
        stage: State | None = None,
        level: Level | None = None,
        overdue: Annotated[bool, Query(description="已有期限过期")] = False,
        due_within_days: Annotated[
            float | None, Query(ge=0, le=3650, description="N 天内有期限到期")
        ] = None,
        now: Annotated[
            datetime | None, Query(description="比较用的时间（带时区）；默认现在")
        ] = None,
    ) -> JSONResponse:
        """本周期的申报（读模型），可按阶段、级别、逾期、临近期限筛选。"""
        if now is not None and now.tzinfo is None:
            raise ApiError(422, "INVALID_INPUT", "时间必须带时区，例如 +08:00", field="now")
        moment = now or datetime.now(UTC)
        within = timedelta(days=due_within_days) if due_within_days is not None else None
        try:
            if within is not None:
                _ = moment + within  # refuse a window past datetime.max up front
        except OverflowError:
            raise ApiError(422, "INVALID_INPUT", "时间超出范围", field="now") from None
        rows = await service.list_applications(
            backend.db(),
            cycle=cycle_id,
            stage=stage.value if stage else None,
            level=level.value if level else None,
            overdue=overdue,
            due_within=within,
            now=moment,
        )
        return _present(principal, rows)

    @app.get(
        "/cycles/{cycle_id}/applications/{application_id}",
        response_model=ApplicationStatus,
        tags=["applications"],
    )
    async def get_application(
        cycle_id: CycleId,
        application_id: ApplicationId,
        principal: Annotated[Principal, Depends(allow(ALL_ROLES))],
    ) -> JSONResponse:
        """一份申报的当前状态、期限、可执行操作与时间线。"""
        own(principal, application_id)
        status = await service.application_status(await backend.client(), cycle_id, application_id)
        return _present(principal, status)

    async def act(
        cycle_id: str,
        application_id: str,
        action: str,
        body: BaseModel,
        principal: Principal,
        idempotency_key: str | None,
    ) -> JSONResponse:
        own(principal, application_id)
        client = await backend.client()
        if "actor" in type(body).model_fields:
            body = body.model_copy(update={"actor": principal.actor})
        try:
            if isinstance(body, SubmitInput):
                status = await service.submit_application(
                    client, cycle_id, application_id, body, idempotency_key
                )
            else:
                status = await service.perform(
                    client, cycle_id, application_id, action, body, idempotency_key
                )
        except DomainError as error:
            if error.code not in {"TRANSITION_NOT_ALLOWED", "APPLICATION_CLOSED"}:
                raise
            now = await service.application_status(client, cycle_id, application_id)
            raise ApiError(
                409,
                error.code,
                error.message,
                action=action,
                state=now.state.value,
                state_label=now.state_label,
                allowed_actions=now.allowed_actions,
            ) from None
        return _present(principal, status)

    def with_body(endpoint: Callable[..., Awaitable[JSONResponse]], model: type[BaseModel]) -> None:
        """Give ``endpoint``'s ``body`` parameter its model, so FastAPI validates and documents it."""
        signature = inspect.signature(endpoint)
        endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[
                p.replace(annotation=model) if p.name == "body" else p
                for p in signature.parameters.values()
            ]
        )

    def add_action(action: str, model: type[BaseModel]) -> None:
        roles = ACTION_ROLES[action]

        async def endpoint(
            cycle_id: CycleId,
            application_id: ApplicationId,
            body: Any,
            principal: Annotated[Principal, Depends(allow(roles))],
            idempotency_key: IdempotencyKey = None,
        ) -> JSONResponse:
            return await act(cycle_id, application_id, action, body, principal, idempotency_key)

        with_body(endpoint, model)
        app.post(
            f"/cycles/{{cycle_id}}/applications/{{application_id}}/actions/{action}",
            response_model=ApplicationStatus,
            tags=["actions"],
            name=action,
            summary=f"{action}（{'、'.join(sorted(roles))}）",
        )(endpoint)

    add_action("submit", SubmitInput)
    for action, model in service.ACTIONS.items():
        add_action(action, model)

    # -- evaluation meetings and defense sessions ------------------------------------------

    @app.post(
        "/cycles/{cycle_id}/meetings",
        response_model=MeetingView,
        status_code=201,
        tags=["meetings"],
    )
    async def open_meeting(
        cycle_id: CycleId,
        opening: sessions.MeetingOpening,
        principal: Annotated[Principal, Depends(allow(SESSION_OPEN_ROLES))],
    ) -> JSONResponse:
        """开评审会：登记本周期所有待评审会的申报（只给匿名编号），登记完成后返回评审会视图。"""
        view = await sessions.open_meeting(
            await backend.client(),
            settings.task_queue,
            _policy(cycle_id),
            opening,
            opened_by=principal.actor,
        )
        return _present(principal, view, status_code=201)

    @app.get(
        "/cycles/{cycle_id}/meetings",
        response_model=list[sessions.MeetingSummary],
        tags=["meetings"],
    )
    async def list_meetings(
        cycle_id: CycleId, principal: Annotated[Principal, Depends(allow(SESSION_READ_ROLES))]
    ) -> JSONResponse:
        """本周期的评审会（来自 Temporal 可见性；刚开的评审会可能稍后才出现）。"""
        return _present(principal, await sessions.list_meetings(await backend.client(), cycle_id))

    @app.get(
        "/cycles/{cycle_id}/meetings/{meeting_id}",
        response_model=MeetingView,
        tags=["meetings"],
    )
    async def get_meeting(
        cycle_id: CycleId,
        meeting_id: MeetingId,
        principal: Annotated[Principal, Depends(allow(SESSION_READ_ROLES))],
    ) -> JSONResponse:
        """评审会视图（匿名）：规则、到会人数、候选人编号与级别、已收选票、闭会后的计票结果。"""
        view = await sessions.meeting_view(await backend.client(), cycle_id, meeting_id)
        return _present(principal, view)

    def add_meeting_action(update: str, model: type[BaseModel]) -> None:
        roles = MEETING_ACTION_ROLES[update]

        async def endpoint(
            cycle_id: CycleId,
            meeting_id: MeetingId,
            body: Any,
            principal: Annotated[Principal, Depends(allow(roles))],
            idempotency_key: IdempotencyKey = None,
        ) -> JSONResponse:
            committee = principal.role is Role.committee
            if committee and isinstance(body, Ballot) and principal.subject != body.expert_id:
                raise ApiError(
                    403,
                    "NOT_OWN_BALLOT",
                    "评审委员只能提交本人的选票（令牌须绑定本人的专家编号）",
                    expert_id=body.expert_id,
                )
            if "actor" in type(body).model_fields:
                body = body.model_copy(update={"actor": principal.actor})
            view = await sessions.update_meeting(
                await backend.client(), cycle_id, meeting_id, update, body, idempotency_key
            )
            return _present(principal, view)

        with_body(endpoint, model)
        app.post(
            f"/cycles/{{cycle_id}}/meetings/{{meeting_id}}/actions/{update}",
            response_model=MeetingView,
            tags=["meetings"],
            name=f"meeting_{update}",
            summary=f"评审会 {update}（{'、'.join(sorted(roles))}）",
        )(endpoint)

    for update, model in sessions.MEETING_UPDATES.items():
        add_meeting_action(update, model)

    @app.post(
        "/cycles/{cycle_id}/defense-sessions",
        response_model=DefenseSessionView,
        status_code=201,
        tags=["defense sessions"],
    )
    async def open_defense_session(
        cycle_id: CycleId,
        opening: sessions.DefenseSessionOpening,
        principal: Annotated[Principal, Depends(allow(SESSION_OPEN_ROLES))],
    ) -> JSONResponse:
        """安排一场专业水平答辩：通知所列每位申报人；不能安排的申报连同原因列在 refused 中。"""
        view = await sessions.open_defense_session(
            await backend.client(),
            settings.task_queue,
            _policy(cycle_id),
            opening,
            opened_by=principal.actor,
        )
        return _present(principal, view, status_code=201)

    @app.get(
        "/cycles/{cycle_id}/defense-sessions",
        response_model=list[sessions.DefenseSessionSummary],
        tags=["defense sessions"],
    )
    async def list_defense_sessions(
        cycle_id: CycleId, principal: Annotated[Principal, Depends(allow(SESSION_READ_ROLES))]
    ) -> JSONResponse:
        """本周期的答辩场次（来自 Temporal 可见性）。"""
        listed = await sessions.list_defense_sessions(await backend.client(), cycle_id)
        return _present(principal, listed)

    @app.get(
        "/cycles/{cycle_id}/defense-sessions/{session_id}",
        response_model=DefenseSessionView,
        tags=["defense sessions"],
    )
    async def get_defense_session(
        cycle_id: CycleId,
        session_id: SessionId,
        principal: Annotated[Principal, Depends(allow(SESSION_READ_ROLES))],
    ) -> JSONResponse:
        """答辩场次：时间、地点、专家组、已安排与未能安排的申报、已登记的结果。"""
        view = await sessions.defense_session_view(await backend.client(), cycle_id, session_id)
        return _present(principal, view)

    def add_defense_action(update: str, model: type[BaseModel]) -> None:
        roles = DEFENSE_ACTION_ROLES[update]

        async def endpoint(
            cycle_id: CycleId,
            session_id: SessionId,
            body: Any,
            principal: Annotated[Principal, Depends(allow(roles))],
            idempotency_key: IdempotencyKey = None,
        ) -> JSONResponse:
            payload: BaseModel = body
            if isinstance(body, sessions.DefenseResultInput):
                payload = sessions.defense_outcome(cycle_id, body, principal.actor)
            elif "actor" in type(body).model_fields:
                payload = body.model_copy(update={"actor": principal.actor})
            view = await sessions.update_defense_session(
                await backend.client(), cycle_id, session_id, update, payload, idempotency_key
            )
            return _present(principal, view)

        with_body(endpoint, model)
        app.post(
            f"/cycles/{{cycle_id}}/defense-sessions/{{session_id}}/actions/{update}",
            response_model=DefenseSessionView,
            tags=["defense sessions"],
            name=f"defense_{update}",
            summary=f"答辩场次 {update}（{'、'.join(sorted(roles))}）",
        )(endpoint)

    add_defense_action("record_result", sessions.DefenseResultInput)
    add_defense_action("close", CloseDefenseSession)

    # -- outbound webhooks -------------------------------------------------------------------

    @app.put("/webhooks/{subscription_id}", response_model=SubscriptionView, tags=["webhooks"])
    async def put_webhook(
        subscription_id: SubscriptionId,
        body: SubscriptionSettings,
        principal: Annotated[Principal, Depends(allow(WEBHOOK_ROLES))],
    ) -> JSONResponse:
        """订阅申报状态变更事件：每次状态变更以签名的 CloudEvent POST 到 ``url``，
        按申报顺序投递，失败则退避重试直至 2xx。同一编号、同样设置重复提交不产生变化；
        设置不同则 409 ``SUBSCRIPTION_EXISTS``。"""
        inp = SubscribeInput(
            subscription_id=subscription_id, actor=principal.actor, **body.model_dump()
        )
        view = await subscriptions.subscribe(await backend.client(), settings.task_queue, inp)
        return _present(principal, view)

    @app.get("/webhooks", response_model=list[SubscriptionView], tags=["webhooks"])
    async def list_webhooks(
        principal: Annotated[Principal, Depends(allow(WEBHOOK_ROLES))],
    ) -> JSONResponse:
        """所有订阅（不含密钥）。"""
        client = await backend.client()
        return _present(
            principal, await subscriptions.list_subscriptions(client, settings.task_queue)
        )

    @app.get("/webhooks/{subscription_id}", response_model=SubscriptionView, tags=["webhooks"])
    async def get_webhook(
        subscription_id: SubscriptionId,
        principal: Annotated[Principal, Depends(allow(WEBHOOK_ROLES))],
    ) -> JSONResponse:
        """一个订阅（不含密钥）。"""
        client = await backend.client()
        view = await subscriptions.get_subscription(client, settings.task_queue, subscription_id)
        return _present(principal, view)

    @app.delete("/webhooks/{subscription_id}", response_model=SubscriptionView, tags=["webhooks"])
    async def delete_webhook(
        subscription_id: SubscriptionId,
        principal: Annotated[Principal, Depends(allow(WEBHOOK_ROLES))],
    ) -> JSONResponse:
        """取消订阅；尚未送达的事件不再投递（记为 dropped）。"""
        inp = UnsubscribeInput(subscription_id=subscription_id, actor=principal.actor)
        view = await subscriptions.unsubscribe(await backend.client(), settings.task_queue, inp)
        return _present(principal, view)

    @app.get(
        "/webhooks/{subscription_id}/deliveries",
        response_model=list[subscriptions.DeliveryRow],
        tags=["webhooks"],
    )
    async def list_webhook_deliveries(
        subscription_id: SubscriptionId,
        principal: Annotated[Principal, Depends(allow(WEBHOOK_ROLES))],
        status: Annotated[
            Literal["pending", "delivered", "dropped"] | None,
            Query(description="pending：重试中；delivered：已送达；dropped：已取消订阅"),
        ] = None,
        cycle_id: Annotated[str | None, Query(pattern=NAME, description="只看某个评审周期")] = None,
        application_id: Annotated[
            str | None, Query(pattern=NAME, description="只看某份申报（编号在评审周期内唯一）")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> JSONResponse:
        """投递记录：每个事件的尝试次数、最近一次应答与结果，最早的在前（已取消的订阅也可查）。"""
        rows = await subscriptions.list_deliveries(
            backend.db(),
            subscription_id,
            status=status,
            cycle_id=cycle_id,
            application_id=application_id,
            limit=limit,
        )
        return _present(principal, rows)

    # -- inbound events ----------------------------------------------------------------------

    @app.post(
        "/events",
        response_model=ApplicationStatus,
        tags=["events"],
        responses={201: {"model": ApplicationStatus}, 415: {"model": ErrorBody}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/cloudevents+json": {"schema": CloudEvent.model_json_schema()}
                },
            }
        },
    )
    async def receive_event(
        request: Request,
        principal: Annotated[Principal, Depends(allow(EVENT_ROLES))],
        signature: Annotated[
            str | None,
            Header(
                alias="X-Zhiping-Signature",
                max_length=200,
                description="sha256=<原始请求体的 HMAC-SHA256（十六进制），密钥按事件来源>",
            ),
        ] = None,
    ) -> JSONResponse:
        """接收申报平台与支付渠道的 CloudEvents 1.0 事件（结构化 JSON），验签后按
        ``source:id`` 只执行一次：重复投递得到同样的应答，不产生第二次效果。

        类型：``cn.zhiping.application.created``（201）、``cn.zhiping.application.submitted``、
        ``cn.zhiping.payment.confirmed``。
        """
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in EVENT_MEDIA_TYPES:
            raise ApiError(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "事件须为 application/cloudevents+json（结构化 JSON）",
                allowed=sorted(EVENT_MEDIA_TYPES),
            )
        raw = await request.body()
        try:
            envelope = json.loads(raw)
        except (ValueError, RecursionError):
            envelope = None
        source = envelope.get("source") if isinstance(envelope, dict) else None
        key = settings.event_secrets.get(source) if isinstance(source, str) else None
        if not _signature_ok(key, raw, signature):
            raise ApiError(401, "BAD_SIGNATURE", "事件签名缺失或无效（X-Zhiping-Signature）")
        event = CloudEvent.model_validate(envelope)
        event_id = f"{event.source}:{event.id}"
        if event.type == EVENT_CREATED:
            created = ApplicationCreated.model_validate(event.data)
            return await create(created.cycle_id, created, principal, replay=True)
        if event.type == EVENT_SUBMITTED:
            submitted = ApplicationSubmitted.model_validate(event.data)
            submission = SubmitInput(dossier=submitted.dossier)
            return await act(
                submitted.cycle_id,
                submitted.application_id,
                "submit",
                submission,
                principal,
                event_id,
            )
        if event.type == EVENT_PAYMENT:
            paid = PaymentConfirmed.model_validate(event.data)
            payment = PaymentInput(
                transaction_id=paid.transaction_id, amount=paid.amount, channel=paid.channel
            )
            return await act(
                paid.cycle_id, paid.application_id, "record_payment", payment, principal, event_id
            )
        raise ApiError(
            422,
            "UNKNOWN_EVENT_TYPE",
            f"不支持的事件类型：{event.type}",
            type=event.type,
            supported=list(EVENT_TYPES),
        )

    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory zhiping.api:app_from_env``: settings from ``ZHIPING_*``."""
    return create_app(get_settings())


def serve() -> None:
    """Serve the API on ``api_host:api_port`` (``python -m zhiping.api``)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port)


if __name__ == "__main__":
    serve()


__all__ = [
    "ACTION_ROLES",
    "DEFENSE_ACTION_ROLES",
    "EVENT_TYPES",
    "MEETING_ACTION_ROLES",
    "PERSONAL_FIELDS",
    "SESSION_READ_ROLES",
    "CloudEvent",
    "Principal",
    "Role",
    "app_from_env",
    "blind",
    "create_app",
]

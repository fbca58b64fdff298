"""The ``zhiping`` command: run the embedded stack, the worker, or the demo cycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError

from activities import Database
from models.commands import (
    ApplicationStatus,
    DeadlineChange,
    DefenseExemption,
    DefenseResult,
    DefenseSchedule,
    Disqualification,
    ObjectionInput,
    ObjectionResolution,
    PaymentInput,
    ReviewDecision,
    Withdrawal,
)
from models.defense_commands import CloseDefenseSession, DefenseSessionView, DeliveryOutcome
from models.errors import DomainError
from models.lifecycle import ACTION_LABELS, STATE_LABELS, State
from models.meeting_commands import Attendance, Ballot, CloseMeeting, MeetingView
from models.policy import CHINA_TZ, Level
from models.tables import TransitionLog
from models.webhooks import (
    ALL_EVENTS,
    SIGNATURE_HEADER,
    SubscribeInput,
    SubscriptionView,
    UnsubscribeInput,
    sign,
)
from zhiping import service, sessions, subscriptions
from zhiping.client import connect
from zhiping.settings import Settings, get_settings
from zhiping.stack import (
    PortInUse,
    describe_transition,
    embedded_stack,
    ensure_free,
    follow_transitions,
)

app = typer.Typer(
    help="职评 zhiping：职称评审全流程自动化（Temporal 工作流）", no_args_is_help=True
)
console = Console(soft_wrap=True)


def _print_transition(row: TransitionLog) -> None:
    console.print(describe_transition(row), highlight=False)


def _cancel_on_signals() -> None:
    """Ctrl-C and SIGTERM cancel the command, so the stack's clean-up (worker drain, dev
    server stop) always runs."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)


async def _up(settings: Settings, ui_port: int) -> None:
    ensure_free(settings.api_host, settings.api_port, "HTTP API ")
    _cancel_on_signals()
    async with embedded_stack(settings, ui_port=ui_port):
        console.print(
            f"Temporal 开发服务器：{settings.temporal_address}（数据：{settings.data_dir / 'temporal.db'}）"
        )
        console.print(f"Temporal UI：http://127.0.0.1:{ui_port}")
        console.print(f"工作进程：任务队列 {settings.task_queue}；读模型：{settings.database_url}")
        import uvicorn

        from zhiping.api import create_app

        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings),
                host=settings.api_host,
                port=settings.api_port,
                log_level="warning",
            )
        )
        api = asyncio.create_task(server.serve())
        console.print(
            f"HTTP API：http://{settings.api_host}:{settings.api_port}"
            f"（文档 /docs，接口描述 /openapi.json）"
        )
        console.print("按 Ctrl-C 停止。以下为实时状态变更：")
        stop = asyncio.Event()
        try:
            await follow_transitions(settings, _print_transition, stop)
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await api


async def _demo(settings: Settings, ui_port: int) -> None:
    from zhiping.demo import run_demo

    _cancel_on_signals()
    async with embedded_stack(settings, ui_port=ui_port):
        console.print(f"Temporal UI：http://127.0.0.1:{ui_port}")
        stop = asyncio.Event()
        follower = asyncio.create_task(follow_transitions(settings, _print_transition, stop))
        try:
            results = await run_demo(await connect(settings), settings, console.print)
            await asyncio.sleep(1.0)  # let the last audit rows be printed
        finally:
            stop.set()
            await follower
    table = Table(title="演示评审周期结果")
    for column in ("申报编号", "级别", "最终状态", "提交次数", "已缴费"):
        table.add_column(column)
    for status in results:
        table.add_row(
            status.application_id,
            status.level.label,
            status.state_label,
            str(status.submission_round),
            "是" if status.fee_paid else "否",
        )
    console.print(table)
    counts = Counter(status.state_label for status in results)
    console.print("；".join(f"{label} {count} 件" for label, count in counts.items()))


@app.command()
def up(ui_port: int = typer.Option(8233, help="Temporal UI 端口")) -> None:
    """启动本地全套服务（Temporal 开发服务器 + 工作进程），实时打印每一次状态变更。"""
    logging.basicConfig(level=logging.WARNING)
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(_up(get_settings(), ui_port))
    except PortInUse as error:
        raise _fail("PORT_IN_USE", str(error)) from None
    console.print("已停止。所有申报已持久化，重新启动后从原处继续。")


@app.command()
def demo(ui_port: int = typer.Option(8233, help="Temporal UI 端口")) -> None:
    """启动本地服务并运行一个演示评审周期（约一分钟），直到每件申报都有最终结果。"""
    logging.basicConfig(level=logging.WARNING)
    try:
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(_demo(get_settings(), ui_port))
    except PortInUse as error:
        raise _fail("PORT_IN_USE", str(error)) from None


@app.command()
def worker() -> None:
    """只运行工作进程（连接已有的 Temporal 服务器）。"""
    from worker import main as worker_main

    worker_main()


# -- ops: applications and cycles -------------------------------------------------------------

apps = typer.Typer(
    help="查看与办理申报：列表、详情、流程图，以及审核、缴费、答辩、异议等经办操作。",
    no_args_is_help=True,
)
cycles = typer.Typer(
    help="整个评审周期的操作，例如为所有在办申报延长截止时间。", no_args_is_help=True
)
app.add_typer(apps, name="apps")
app.add_typer(cycles, name="cycles")
err_console = Console(stderr=True, soft_wrap=True)

T = TypeVar("T")

JSON_OPTION = typer.Option(False, "--json", help="以 JSON 输出（供程序读取）")
EVENT_ID_OPTION = typer.Option(
    None, "--event-id", help="本次操作的唯一编号：用同一编号重复执行只生效一次"
)
ACTOR_OPTION = typer.Option("ops", "--actor", help="经办人（记入时间线）")


def _fail(code: str, message: str) -> typer.Exit:
    err_console.print(f"[red]{code}: {message}[/red]", highlight=False)
    return typer.Exit(1)


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one async step; a refusal or bad input becomes ``CODE: message`` and exit 1."""
    try:
        return asyncio.run(work())
    except DomainError as error:
        raise _fail(error.code, error.message) from None
    except ValidationError as error:
        problems = "；".join(
            f"{'.'.join(str(p) for p in e['loc']) or '输入'}：{e['msg']}" for e in error.errors()
        )
        raise _fail("INVALID_INPUT", f"输入不合法：{problems}") from None
    except RPCError as error:
        raise _fail("TEMPORAL_ERROR", f"Temporal 服务出错：{error.message}") from None
    except RuntimeError as error:  # e.g. the server is not reachable
        raise _fail("TEMPORAL_UNAVAILABLE", f"无法连接 Temporal 服务：{error}") from None


async def _with_client(use: Callable[[Client], Awaitable[T]]) -> T:
    return await use(await connect(get_settings()))


async def _with_db(use: Callable[[Database], Awaitable[T]]) -> T:
    db = Database.from_url(get_settings().database_url)
    try:
        return await use(db)
    finally:
        await db.dispose()


def _instant(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 instant; without an offset it is read as Beijing time (+08:00)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            "INVALID_INPUT", f"{option} 不是合法的时间：{value}（例如 2024-09-10T18:00+08:00）"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=CHINA_TZ)


def _fmt(instant: datetime | None) -> str:
    return instant.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M") if instant else "—"


def _time_left(at: datetime, now: datetime) -> str:
    delta = at - now
    overdue = delta < timedelta(0)
    hours = int(abs(delta).total_seconds() // 3600)
    days, hours = divmod(hours, 24)
    span = f"{days} 天 {hours} 小时" if days else f"{hours} 小时"
    return f"已逾期 {span}" if overdue else f"剩余 {span}"


def _action_label(action: str) -> str:
    return ACTION_LABELS.get(action, action)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2))


@apps.command("list")
def apps_list(
    cycle: str | None = typer.Option(None, "--cycle", help="只看这个评审周期"),
    stage: State | None = typer.Option(None, "--stage", help="只看处于这个状态的申报"),  # noqa: B008
    level: str | None = typer.Option(
        None, "--level", help="只看这个级别：junior, intermediate, deputy_senior, senior"
    ),
    overdue: bool = typer.Option(False, "--overdue", help="只看已过截止时间的申报"),
    due_within: float | None = typer.Option(
        None, "--due-within", metavar="DAYS", help="只看在这么多天内到期的申报"
    ),
    now: str | None = typer.Option(
        None, "--now", help="按这个时间判断是否逾期（默认：现在；演练周期时填演练时间）"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """列出申报（来自读模型），可按周期、状态、级别、逾期或即将到期筛选。"""
    moment = _instant(now, "--now") or datetime.now(UTC)
    rows = _run(
        lambda: _with_db(
            lambda db: service.list_applications(
                db,
                cycle=cycle,
                stage=stage.value if stage else None,
                level=level,
                overdue=overdue,
                due_within=timedelta(days=due_within) if due_within is not None else None,
                now=moment,
            )
        )
    )
    if as_json:
        _print_json([row.model_dump(mode="json") for row in rows])
        return
    table = Table(title=f"申报列表（共 {len(rows)} 件）")
    columns = ["申报编号", "级别", "状态", "提交次数", "已缴费", "下一截止", "剩余"]
    if cycle is None:
        columns.insert(0, "周期")
    for column in columns:
        table.add_column(column, no_wrap=column in {"周期", "申报编号", "状态"})
    for row in rows:
        due = row.next_deadline_at
        cells = [
            row.application_id,
            row.level_label,
            row.state_label,
            str(row.submission_round),
            "是" if row.fee_paid else "否",
            _fmt(due),
            _time_left(due, moment) if due else "—",
        ]
        if cycle is None:
            cells.insert(0, row.cycle_id)
        table.add_row(*cells, style="red" if row.overdue else None)
    console.print(table)


def _show(status: ApplicationStatus) -> None:
    console.print(
        f"[bold]申报 {status.application_id}[/bold]（评审周期 {status.cycle_id}，"
        f"{status.level.label}）",
        highlight=False,
    )
    console.print(
        f"状态：[bold]{status.state_label}[/bold]（{status.state.value}）"
        f"{'，已办结' if status.final else ''}",
        highlight=False,
    )
    console.print(
        f"提交轮次：{status.submission_round}/{status.max_submissions}；"
        f"评审费 {status.fee_due_cny} 元，{'已缴' if status.fee_paid else '未缴'}；"
        f"当前时间 {_fmt(status.now)}",
        highlight=False,
    )
    deadlines = Table(title="截止时间")
    for column in ("截止事项", "时间", "剩余", "到期处理"):
        deadlines.add_column(column)
    for d in status.deadlines:
        deadlines.add_row(
            d.label, _fmt(d.at), _time_left(d.at, status.now), "自动处理" if d.automatic else "提醒"
        )
    if status.publicity_ends and not any(d.kind == "publicity_end" for d in status.deadlines):
        deadlines.add_row("公示期满", _fmt(status.publicity_ends), "—", "—")
    console.print(deadlines if deadlines.row_count else "截止时间：无待到期的截止时间")
    actions = "；".join(f"{a}（{_action_label(a)}）" for a in status.allowed_actions)
    console.print(f"可执行操作：{actions or '无'}", highlight=False)
    for f in status.findings:
        console.print(
            f"检查结果 [{f.severity}] {f.code}：{f.message}（{f.clause}）", highlight=False
        )
    if status.defense:
        console.print(
            f"答辩：{status.defense.session_id}，{_fmt(status.defense.at)}，{status.defense.place}",
            highlight=False,
        )
    if status.defense_exemption:
        console.print(f"免答辩：{status.defense_exemption}", highlight=False)
    for o in status.objections:
        result = "待办结" if o.upheld is None else ("成立" if o.upheld else "不成立")
        console.print(f"异议 {o.objection_id}：{o.summary}（{result}）", highlight=False)
    timeline = Table(title="时间线")
    for column in ("#", "时间", "操作", "状态变化", "经办人", "理由"):
        timeline.add_column(column)
    for h in status.history:
        change = (
            STATE_LABELS[h.dest]
            if h.source == h.dest
            else f"{STATE_LABELS[h.source]} → {STATE_LABELS[h.dest]}"
        )
        label = "创建申报" if h.trigger == "create" else _action_label(h.trigger)
        timeline.add_row(str(h.seq), _fmt(h.at), label, change, h.actor, h.reason or "")
    console.print(timeline)


@apps.command("show")
def apps_show(
    cycle_id: str = typer.Argument(..., help="评审周期编号"),
    application_id: str = typer.Argument(..., help="申报编号"),
    as_json: bool = JSON_OPTION,
) -> None:
    """显示一件申报：状态、提交轮次、各截止时间及剩余时间、可执行操作、检查结果、完整时间线。"""
    status = _run(
        lambda: _with_client(lambda c: service.application_status(c, cycle_id, application_id))
    )
    if as_json:
        _print_json(status.model_dump(mode="json"))
    else:
        _show(status)


@apps.command("diagram")
def apps_diagram(
    cycle_id: str = typer.Argument(..., help="评审周期编号"),
    application_id: str = typer.Argument(..., help="申报编号"),
    output: Path = typer.Option(..., "-o", "--output", help="输出文件：.svg 或 .png"),  # noqa: B008
) -> None:
    """按状态机本身画出申报流程图：当前状态高亮（红），已走过的路径标为蓝色。"""
    if output.suffix.lower() not in {".svg", ".png"}:
        raise _fail("INVALID_INPUT", "输出文件须以 .svg 或 .png 结尾")
    status = _run(
        lambda: _with_client(lambda c: service.application_status(c, cycle_id, application_id))
    )
    written = service.draw_lifecycle(status, output)
    console.print(f"已生成流程图：{written}（当前状态：{status.state_label}）", highlight=False)


def _act(
    cycle_id: str,
    application_id: str,
    action: str,
    build: Callable[[], BaseModel],
    event_id: str | None,
) -> None:
    """Build the input, send the action, print the outcome in zh-CN."""

    async def work() -> ApplicationStatus:
        payload = build()
        client = await connect(get_settings())
        return await service.perform(client, cycle_id, application_id, action, payload, event_id)

    status = _run(work)
    console.print(
        f"已执行：{_action_label(action)}。申报 {application_id} 当前状态：{status.state_label}",
        highlight=False,
    )


CYCLE_ARG = typer.Argument(..., help="评审周期编号")
APP_ARG = typer.Argument(..., help="申报编号")


@apps.command("return")
def apps_return(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    reason: str = typer.Option(..., "--reason", help="修改意见（申请人会看到）"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """退回申报材料请申请人修改；最后一次提交时退回即不予受理。"""
    _act(
        cycle_id,
        application_id,
        "return_for_revision",
        lambda: ReviewDecision(actor=actor, reason=reason),
        event_id,
    )


@apps.command("accept")
def apps_accept(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    reason: str | None = typer.Option(None, "--reason", help="备注（可不填）"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """审核通过、接收申报材料；随后申请人进入缴费环节。"""
    _act(
        cycle_id,
        application_id,
        "accept",
        lambda: ReviewDecision(actor=actor, reason=reason),
        event_id,
    )


@apps.command("pay")
def apps_pay(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    transaction_id: str = typer.Option(..., "--transaction-id", help="缴费流水号"),
    amount: str = typer.Option(..., "--amount", help="实缴金额（元），须与该级别评审费一致"),
    channel: str = typer.Option("qr", "--channel", help="缴费方式：qr（扫码）或 bank（转账）"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """登记一笔评审费缴费；同一流水号重复登记只算一次。"""
    _act(
        cycle_id,
        application_id,
        "record_payment",
        lambda: PaymentInput.model_validate(
            {"transaction_id": transaction_id, "amount": amount, "channel": channel, "actor": actor}
        ),
        event_id,
    )


@apps.command("exempt")
def apps_exempt(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    reason: str = typer.Option(..., "--reason", help="免答辩所依据的条款与理由"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """登记免于专业水平答辩（仅副高级、正高级）。"""
    _act(
        cycle_id,
        application_id,
        "exempt_from_defense",
        lambda: DefenseExemption(reason=reason, actor=actor),
        event_id,
    )


@apps.command("schedule-defense")
def apps_schedule_defense(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    session_id: str = typer.Option(..., "--session-id", help="答辩场次编号"),
    at: str = typer.Option(..., "--at", help="答辩时间，例如 2024-10-15T09:00+08:00"),
    place: str = typer.Option(..., "--place", help="答辩地点"),
    panel: list[str] = typer.Option([], "--panel", help="答辩专家（可重复填写）"),  # noqa: B008
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """为待答辩的申报安排专业水平答辩。"""
    when = _instant(at, "--at")
    _act(
        cycle_id,
        application_id,
        "schedule_defense",
        lambda: DefenseSchedule(
            session_id=session_id, at=when, place=place, panel=panel, actor=actor
        ),
        event_id,
    )


@apps.command("defense-result")
def apps_defense_result(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    passed: bool = typer.Option(..., "--passed/--failed", help="答辩通过或未通过"),
    reason: str | None = typer.Option(None, "--reason", help="备注"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """登记答辩结果：通过则待评审会，未通过则评审未通过。"""
    _act(
        cycle_id,
        application_id,
        "record_defense_result",
        lambda: DefenseResult(passed=passed, reason=reason, actor=actor),
        event_id,
    )


@apps.command("objection")
def apps_objection(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    objection_id: str = typer.Option(..., "--objection-id", help="异议编号"),
    summary: str = typer.Option(..., "--summary", help="异议内容摘要"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """公示期内受理一件异议；申报转入异议核查。"""
    _act(
        cycle_id,
        application_id,
        "file_objection",
        lambda: ObjectionInput(objection_id=objection_id, summary=summary, actor=actor),
        event_id,
    )


@apps.command("resolve-objection")
def apps_resolve_objection(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    objection_id: str = typer.Option(..., "--objection-id", help="异议编号"),
    upheld: bool = typer.Option(..., "--upheld/--dismissed", help="异议成立或不成立"),
    fraud: bool = typer.Option(False, "--fraud", help="成立且属弄虚作假（将限制再次申报）"),
    reason: str = typer.Option(..., "--reason", help="核查结论"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """办结异议：成立则取消资格，不成立则回到公示（或公示已满则评审通过）。"""
    _act(
        cycle_id,
        application_id,
        "resolve_objection",
        lambda: ObjectionResolution(
            objection_id=objection_id, upheld=upheld, fraud=fraud, reason=reason, actor=actor
        ),
        event_id,
    )


@apps.command("withdraw")
def apps_withdraw(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    reason: str | None = typer.Option(None, "--reason", help="撤回原因"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """代申请人撤回申报（办结前任何时候）。"""
    _act(
        cycle_id,
        application_id,
        "withdraw",
        lambda: Withdrawal(reason=reason, actor=actor),
        event_id,
    )


@apps.command("disqualify")
def apps_disqualify(
    cycle_id: str = CYCLE_ARG,
    application_id: str = APP_ARG,
    reason: str = typer.Option(..., "--reason", help="认定弄虚作假的事实与依据"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """认定弄虚作假，取消资格（并按规定限制再次申报）。"""
    _act(
        cycle_id,
        application_id,
        "disqualify",
        lambda: Disqualification(reason=reason, actor=actor),
        event_id,
    )


@cycles.command("extend-deadlines")
def cycles_extend_deadlines(
    cycle_id: str = CYCLE_ARG,
    submission_cutoff: str | None = typer.Option(
        None, "--submission-cutoff", help="新的首次提交截止时间（ISO 8601）"
    ),
    review_ends: str | None = typer.Option(
        None, "--review-ends", help="新的评委会审核截止时间（ISO 8601）"
    ),
    fee_deadline: str | None = typer.Option(
        None, "--fee-deadline", help="新的缴费截止时间（ISO 8601）"
    ),
    reason: str = typer.Option(..., "--reason", help="延期原因（记入每件申报的时间线）"),
    actor: str = ACTOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """为该周期所有在办申报延长截止时间；同样的延期重复执行只生效一次。"""
    cutoff = _instant(submission_cutoff, "--submission-cutoff")
    review = _instant(review_ends, "--review-ends")
    fee = _instant(fee_deadline, "--fee-deadline")

    async def work() -> list[str]:
        change = DeadlineChange(
            submission_cutoff=cutoff,
            review_ends=review,
            fee_deadline=fee,
            reason=reason,
            actor=actor,
        )
        client = await connect(get_settings())
        return await _with_db(
            lambda db: service.extend_cycle_deadlines(client, db, cycle_id, change)
        )

    changed = _run(work)
    if as_json:
        _print_json({"cycle_id": cycle_id, "applications": changed})
        return
    console.print(
        f"已为评审周期 {cycle_id} 的 {len(changed)} 件在办申报延长截止时间："
        f"{'、'.join(changed) or '无'}",
        highlight=False,
    )


# -- ops: evaluation meetings and defense sessions ----------------------------------------------

meetings = typer.Typer(
    help="评审会：开会（自动登记本周期所有待评审会的申报）、登记到会专家、投票、闭会。"
    "评审会只显示候选人的匿名编号和级别。",
    no_args_is_help=True,
)
defense = typer.Typer(
    help="专业水平答辩场次：安排待答辩的申报、登记答辩结果、结束（未登记结果者按缺席答辩处理）。",
    no_args_is_help=True,
)
app.add_typer(meetings, name="meetings")
app.add_typer(defense, name="defense")

MEETING_ARG = typer.Argument(..., help="评审会编号")
SESSION_ARG = typer.Argument(..., help="答辩场次编号")


def _names(values: list[str]) -> list[str]:
    """Repeated options, each also allowed as a comma-separated list (E01,E02)."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _print_sessions(
    rows: list[sessions.MeetingSummary] | list[sessions.DefenseSessionSummary], title: str
) -> None:
    table = Table(title=f"{title}（共 {len(rows)} 个）")
    for column in ("编号", "状态", "开始", "结束"):
        table.add_column(column)
    for row in rows:
        key = row.meeting_id if isinstance(row, sessions.MeetingSummary) else row.session_id
        table.add_row(key, row.status_label, _fmt(row.started_at), _fmt(row.ended_at))
    console.print(table)


def _print_meeting(view: MeetingView) -> None:
    rules = view.rules
    console.print(
        f"[bold]评审会 {view.meeting_id}[/bold]（评审周期 {view.cycle_id}），"
        f"开会时间 {_fmt(view.held_at)}",
        highlight=False,
    )
    quorum = "已达法定人数" if view.quorum_met else "未达法定人数"
    console.print(
        f"评审委员会 {rules.committee_size} 人，法定到会 {rules.quorum_required} 人；"
        f"到会 {view.experts_present} 人（{quorum}）；通过须获到会专家 "
        f"{rules.vote_pass_fraction} 赞成",
        highlight=False,
    )
    levels = {candidate.level.value for candidate in view.candidates}
    caps = "；".join(
        f"{Level(level).label} {cap} 人" for level, cap in rules.caps.items() if level in levels
    )
    if caps:
        console.print(f"通过人数上限：{caps}", highlight=False)
    state = (
        f"已闭会，结果已送达 {view.results_delivered}/{len(view.candidates)} 件"
        if view.closed
        else "进行中"
    )
    console.print(f"已收选票 {view.ballots_received} 份；状态：{state}", highlight=False)
    if not view.candidates:
        console.print("候选人：无（登记时本周期没有待评审会的申报）", highlight=False)
        return
    tallies = {t.code: t for t in view.tallies}
    table = Table(title=f"候选人（共 {len(view.candidates)} 人，匿名编号）")
    for column in ("编号", "级别", "赞成", "不赞成", "结果"):
        table.add_column(column)
    for candidate in view.candidates:
        tally = tallies.get(candidate.code)
        if tally is None:
            table.add_row(candidate.code, candidate.level.label, "—", "—", "闭会后计票")
            continue
        verdict = "通过" if tally.passed else ("超出通过率上限" if tally.passes_vote else "未通过")
        table.add_row(
            candidate.code,
            candidate.level.label,
            str(tally.votes_for),
            str(tally.votes_against),
            verdict,
        )
    console.print(table)


def _session_update(
    send: Callable[[Client, str, str, str, BaseModel, str | None], Awaitable[T]],
    cycle_id: str,
    key: str,
    update: str,
    build: Callable[[], BaseModel],
    event_id: str | None,
) -> T:
    """One update to a meeting or defense session (``sessions.update_meeting`` or
    ``sessions.update_defense_session``); refusals print as every command's do."""

    async def work() -> T:
        payload = build()
        client = await connect(get_settings())
        return await send(client, cycle_id, key, update, payload, event_id)

    return _run(work)


@meetings.command("open")
def meetings_open(
    cycle_id: str = CYCLE_ARG,
    meeting_id: str = MEETING_ARG,
    held_at: str = typer.Option(..., "--held-at", help="开会时间，例如 2024-09-27T09:00+08:00"),
    committee_size: int = typer.Option(
        ..., "--committee-size", help="评审委员会人数（到会须达三分之二）"
    ),
    actor: str = ACTOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """开评审会：登记本周期所有待评审会的申报，给每人一个匿名编号。"""
    when = _instant(held_at, "--held-at")

    async def work() -> MeetingView:
        policy = sessions.load_cycle_policy(cycle_id)
        opening = sessions.MeetingOpening(
            meeting_id=meeting_id, held_at=when, committee_size=committee_size
        )
        settings = get_settings()
        client = await connect(settings)
        return await sessions.open_meeting(
            client, settings.task_queue, policy, opening, opened_by=actor
        )

    view = _run(work)
    if as_json:
        _print_json(view.model_dump(mode="json"))
        return
    console.print(
        f"已开评审会 {meeting_id}，登记候选人 {len(view.candidates)} 人。", highlight=False
    )
    _print_meeting(view)


@meetings.command("list")
def meetings_list(cycle_id: str = CYCLE_ARG, as_json: bool = JSON_OPTION) -> None:
    """列出本周期的评审会（来自 Temporal 可见性；刚开的评审会可能稍后才出现）。"""
    rows = _run(lambda: _with_client(lambda c: sessions.list_meetings(c, cycle_id)))
    if as_json:
        _print_json([row.model_dump(mode="json") for row in rows])
        return
    _print_sessions(rows, f"评审周期 {cycle_id} 的评审会")


@meetings.command("show")
def meetings_show(
    cycle_id: str = CYCLE_ARG, meeting_id: str = MEETING_ARG, as_json: bool = JSON_OPTION
) -> None:
    """显示评审会：规则、到会情况、候选人（匿名编号）、已收选票，闭会后的计票结果。"""
    view = _run(lambda: _with_client(lambda c: sessions.meeting_view(c, cycle_id, meeting_id)))
    if as_json:
        _print_json(view.model_dump(mode="json"))
    else:
        _print_meeting(view)


@meetings.command("attendance")
def meetings_attendance(
    cycle_id: str = CYCLE_ARG,
    meeting_id: str = MEETING_ARG,
    experts: list[str] = typer.Option(  # noqa: B008
        ..., "--expert", help="到会专家编号（可重复，或用逗号分隔：E01,E02）"
    ),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """登记到会专家（整份名单，替换之前的登记）；不足法定人数时不能投票和闭会。"""
    present = _names(experts)
    view = _session_update(
        sessions.update_meeting,
        cycle_id,
        meeting_id,
        "record_attendance",
        lambda: Attendance(experts_present=present, actor=actor),
        event_id,
    )
    quorum = "已达法定人数" if view.quorum_met else "未达法定人数，暂不能投票"
    console.print(
        f"已登记评审会 {meeting_id} 到会专家 {view.experts_present} 人"
        f"（法定到会 {view.rules.quorum_required} 人，{quorum}）。",
        highlight=False,
    )


@meetings.command("ballot")
def meetings_ballot(
    cycle_id: str = CYCLE_ARG,
    meeting_id: str = MEETING_ARG,
    expert: str = typer.Option(..., "--expert", help="投票的专家编号（须已登记到会）"),
    yes: list[str] = typer.Option(  # noqa: B008
        [], "--yes", help="赞成的候选人编号（可重复，或用逗号分隔：C001,C002）"
    ),
    no: list[str] = typer.Option(  # noqa: B008
        [], "--no", help="不赞成的候选人编号（可重复，或用逗号分隔）"
    ),
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """记录一位到会专家的选票；再次投票会替换该专家对这些候选人的表决（用于重新投票）。"""
    ayes, nays = _names(yes), _names(no)
    both = sorted(set(ayes) & set(nays))
    if both:
        raise _fail("INVALID_INPUT", f"候选人不能既赞成又不赞成：{'、'.join(both)}")
    if not ayes and not nays:
        raise _fail("INVALID_INPUT", "请用 --yes 或 --no 至少填写一位候选人的表决")
    votes = {**dict.fromkeys(ayes, True), **dict.fromkeys(nays, False)}
    view = _session_update(
        sessions.update_meeting,
        cycle_id,
        meeting_id,
        "record_ballot",
        lambda: Ballot(expert_id=expert, votes=votes),
        event_id,
    )
    console.print(
        f"已记录专家 {expert} 的选票（赞成 {len(ayes)} 人，不赞成 {len(nays)} 人）；"
        f"评审会 {meeting_id} 已收选票 {view.ballots_received} 份。",
        highlight=False,
    )


@meetings.command("close")
def meetings_close(
    cycle_id: str = CYCLE_ARG,
    meeting_id: str = MEETING_ARG,
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """闭会：计票，按通过率上限确定结果，并把结果送达每件申报（每件只送达一次）。"""
    view = _session_update(
        sessions.update_meeting,
        cycle_id,
        meeting_id,
        "close",
        lambda: CloseMeeting(actor=actor),
        event_id,
    )
    passed = sum(t.passed for t in view.tallies)
    console.print(
        f"评审会 {meeting_id} 已闭会：通过 {passed} 人，未通过 {len(view.tallies) - passed} 人；"
        "结果正在送达各申报。",
        highlight=False,
    )
    _print_meeting(view)


_DELIVERY_LABELS = {
    DeliveryOutcome.delivered: "已送达",
    DeliveryOutcome.refused: "申报拒收",
    DeliveryOutcome.closed: "申报已办结",
    DeliveryOutcome.rescheduled: "已改期到其他场次",
}


def _print_defense(view: DefenseSessionView) -> None:
    cycle_id = view.cycle_id
    console.print(
        f"[bold]答辩场次 {view.session_id}[/bold]（评审周期 {cycle_id}）："
        f"{_fmt(view.at)}，{view.place}",
        highlight=False,
    )
    console.print(f"答辩专家组：{'、'.join(view.panel) or '未填写'}", highlight=False)
    if view.closed:
        state = f"已结束（{_fmt(view.closed_at)}，{view.closed_by}）"
    else:
        state = "进行中" if view.ready else "正在通知申报人"
    console.print(
        f"状态：{state}；已安排 {len(view.scheduled)} 件，结果已送达 {view.results_delivered} 件",
        highlight=False,
    )
    results = {r.application_workflow_id: r for r in view.results}
    table = Table(title="答辩安排与结果")
    for column in ("申报编号", "结果", "说明", "登记人", "送达"):
        table.add_column(column)
    for workflow_id in view.scheduled:
        application_id = sessions.application_id_of(cycle_id, workflow_id)
        result = results.get(workflow_id)
        if result is None:
            table.add_row(application_id, "待登记", "", "", "")
            continue
        verdict = "缺席" if result.absent else ("通过" if result.passed else "未通过")
        table.add_row(
            application_id,
            verdict,
            result.reason,
            result.recorded_by,
            _DELIVERY_LABELS[result.delivery] if result.delivery else "待送达",
        )
    console.print(table)
    for refused in view.refused:
        application_id = sessions.application_id_of(cycle_id, refused.application_workflow_id)
        console.print(
            f"未能安排 {application_id}：{refused.code}：{refused.message}", highlight=False
        )


@defense.command("open")
def defense_open(
    cycle_id: str = CYCLE_ARG,
    session_id: str = SESSION_ARG,
    at: str = typer.Option(..., "--at", help="答辩时间，例如 2024-09-20T09:00+08:00"),
    place: str = typer.Option(..., "--place", help="答辩地点"),
    panel: list[str] = typer.Option(  # noqa: B008
        [], "--panel", help="答辩专家编号（可重复，或用逗号分隔）"
    ),
    applications: list[str] = typer.Option(  # noqa: B008
        ..., "--app", help="参加答辩的申报编号（可重复，或用逗号分隔；须处于待答辩）"
    ),
    actor: str = ACTOR_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """安排一场专业水平答辩：通知所列每位申报人时间地点；不能安排的申报连同原因列出。"""
    when = _instant(at, "--at")

    async def work() -> DefenseSessionView:
        policy = sessions.load_cycle_policy(cycle_id)
        opening = sessions.DefenseSessionOpening(
            session_id=session_id,
            at=when,
            place=place,
            panel=_names(panel),
            application_ids=_names(applications),
        )
        settings = get_settings()
        client = await connect(settings)
        return await sessions.open_defense_session(
            client, settings.task_queue, policy, opening, opened_by=actor
        )

    view = _run(work)
    if as_json:
        _print_json(view.model_dump(mode="json"))
        return
    console.print(
        f"已安排答辩场次 {session_id}：{len(view.scheduled)} 件已安排，"
        f"{len(view.refused)} 件未能安排。",
        highlight=False,
    )
    _print_defense(view)


@defense.command("list")
def defense_list(cycle_id: str = CYCLE_ARG, as_json: bool = JSON_OPTION) -> None:
    """列出本周期的答辩场次（来自 Temporal 可见性）。"""
    rows = _run(lambda: _with_client(lambda c: sessions.list_defense_sessions(c, cycle_id)))
    if as_json:
        _print_json([row.model_dump(mode="json") for row in rows])
        return
    _print_sessions(rows, f"评审周期 {cycle_id} 的答辩场次")


@defense.command("show")
def defense_show(
    cycle_id: str = CYCLE_ARG, session_id: str = SESSION_ARG, as_json: bool = JSON_OPTION
) -> None:
    """显示答辩场次：时间地点、专家组、已安排的申报及其结果、未能安排的申报。"""
    view = _run(
        lambda: _with_client(lambda c: sessions.defense_session_view(c, cycle_id, session_id))
    )
    if as_json:
        _print_json(view.model_dump(mode="json"))
    else:
        _print_defense(view)


@defense.command("result")
def defense_result(
    cycle_id: str = CYCLE_ARG,
    session_id: str = SESSION_ARG,
    application_id: str = APP_ARG,
    passed: bool = typer.Option(..., "--passed/--failed", help="答辩通过或未通过"),
    reason: str | None = typer.Option(None, "--reason", help="说明（未通过时请填写理由）"),
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """登记一位申报人的答辩结果；再次登记会替换之前的结果（结束前）。"""
    view = _session_update(
        sessions.update_defense_session,
        cycle_id,
        session_id,
        "record_result",
        lambda: sessions.defense_outcome(
            cycle_id,
            sessions.DefenseResultInput(
                application_id=application_id, passed=passed, reason=reason
            ),
            actor,
        ),
        event_id,
    )
    console.print(
        f"已登记 {application_id} 的答辩结果：{'通过' if passed else '未通过'}；"
        f"答辩场次 {session_id} 已登记 {len(view.results)}/{len(view.scheduled)} 件。",
        highlight=False,
    )


@defense.command("close")
def defense_close(
    cycle_id: str = CYCLE_ARG,
    session_id: str = SESSION_ARG,
    actor: str = ACTOR_OPTION,
    event_id: str | None = EVENT_ID_OPTION,
) -> None:
    """结束答辩场次：未登记结果的申报按缺席答辩（未通过）处理，结果送达每件申报。"""
    view = _session_update(
        sessions.update_defense_session,
        cycle_id,
        session_id,
        "close",
        lambda: CloseDefenseSession(actor=actor),
        event_id,
    )
    absent = sum(r.absent for r in view.results)
    passed = sum(r.passed for r in view.results)
    console.print(
        f"答辩场次 {session_id} 已结束：通过 {passed} 件，未通过 {len(view.results) - passed} 件"
        f"（其中缺席 {absent} 件）；结果正在送达各申报。",
        highlight=False,
    )
    _print_defense(view)


# -- the database: schema migrations ------------------------------------------------------------

database = typer.Typer(
    help="读模型数据库（ZHIPING_DATABASE_URL：SQLite 或 PostgreSQL）的结构迁移（Alembic）。",
    no_args_is_help=True,
)
app.add_typer(database, name="db")


@database.command("upgrade")
def db_upgrade() -> None:
    """把 ZHIPING_DATABASE_URL 指向的数据库升级到最新的结构版本；已是最新则不做任何改动。

    工作进程和 `zhiping up` 启动时也会自动执行同样的迁移。
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    url = get_settings().database_url
    shown = make_url(url).render_as_string(hide_password=True)

    async def work() -> tuple[str | None, str | None]:
        db = Database.from_url(url)
        try:
            before = await db.schema_revision()
            await db.create_schema()
            return before, await db.schema_revision()
        finally:
            await db.dispose()

    try:
        before, after = asyncio.run(work())
    except (SQLAlchemyError, OSError) as error:
        raise _fail("DATABASE_UNAVAILABLE", f"无法迁移数据库 {shown}：{error}") from None
    if before == after:
        console.print(f"数据库 {shown} 已是最新结构版本 {after}，无需迁移。", highlight=False)
    else:
        console.print(
            f"数据库 {shown} 已从结构版本 {before or '（空库）'} 升级到 {after}。", highlight=False
        )


# -- outbound webhooks -------------------------------------------------------------------------

webhooks = typer.Typer(
    help="出站事件订阅：每次状态变更以签名的 CloudEvent 推送给订阅方，按申报顺序、失败重试直至送达。",
    no_args_is_help=True,
)
app.add_typer(webhooks, name="webhooks")
SUBSCRIPTION_ARG = typer.Argument(..., help="订阅编号")


def _print_subscriptions(views: list[SubscriptionView]) -> None:
    table = Table(title=f"出站事件订阅（共 {len(views)} 个）")
    for column in ("订阅编号", "接收地址", "事件类型", "说明", "创建时间"):
        table.add_column(column)
    for view in views:
        table.add_row(
            view.subscription_id,
            view.url,
            "\n".join(view.event_types),
            view.description or "—",
            _fmt(view.created_at),
        )
    console.print(table)


@webhooks.command("add")
def webhooks_add(
    subscription_id: str = SUBSCRIPTION_ARG,
    url: str = typer.Option(..., "--url", help="接收地址（http 或 https），应答 2xx 即视为已送达"),
    event_types: list[str] = typer.Option(  # noqa: B008
        [ALL_EVENTS], "--type", help=f"事件类型，可重复；默认 {ALL_EVENTS}（全部）"
    ),
    secret: str = typer.Option(
        ..., "--secret", envvar="ZHIPING_WEBHOOK_SECRET", help="签名密钥（至少 16 个字符）"
    ),
    description: str | None = typer.Option(None, "--description", help="说明"),
    actor: str = typer.Option("ops", "--actor", help="记录在案的操作人"),
) -> None:
    """添加订阅；同一编号、同样设置重复添加不产生变化。"""

    async def work() -> SubscriptionView:
        inp = SubscribeInput(
            subscription_id=subscription_id,
            url=url,
            event_types=event_types,
            secret=secret,
            description=description,
            actor=actor,
        )
        settings = get_settings()
        return await subscriptions.subscribe(await connect(settings), settings.task_queue, inp)

    view = _run(work)
    console.print(f"已订阅 {view.subscription_id}：{view.url}", highlight=False)


@webhooks.command("list")
def webhooks_list(as_json: bool = JSON_OPTION) -> None:
    """列出所有订阅（不显示密钥）。"""
    settings = get_settings()
    views = _run(
        lambda: _with_client(lambda c: subscriptions.list_subscriptions(c, settings.task_queue))
    )
    if as_json:
        _print_json([view.model_dump(mode="json") for view in views])
    else:
        _print_subscriptions(views)


@webhooks.command("remove")
def webhooks_remove(
    subscription_id: str = SUBSCRIPTION_ARG,
    actor: str = typer.Option("ops", "--actor", help="记录在案的操作人"),
) -> None:
    """取消订阅；尚未送达的事件不再投递。"""
    settings = get_settings()

    async def work() -> SubscriptionView:
        inp = UnsubscribeInput(subscription_id=subscription_id, actor=actor)
        return await subscriptions.unsubscribe(await connect(settings), settings.task_queue, inp)

    _run(work)
    console.print(f"已取消订阅 {subscription_id}。", highlight=False)


@webhooks.command("deliveries")
def webhooks_deliveries(
    subscription_id: str = SUBSCRIPTION_ARG,
    status: str | None = typer.Option(
        None, "--status", help="pending（重试中）、delivered（已送达）或 dropped（已取消订阅）"
    ),
    cycle_id: str | None = typer.Option(None, "--cycle", help="只看这个评审周期"),
    application_id: str | None = typer.Option(
        None, "--app", help="只看这份申报（编号在评审周期内唯一，可与 --cycle 同用）"
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """投递记录：每个事件的尝试次数、最近一次应答与结果（来自读模型）。"""
    rows = _run(
        lambda: _with_db(
            lambda db: subscriptions.list_deliveries(
                db,
                subscription_id,
                status=status,
                cycle_id=cycle_id,
                application_id=application_id,
            )
        )
    )
    if as_json:
        _print_json([row.model_dump(mode="json") for row in rows])
        return
    labels = {"pending": "重试中", "delivered": "已送达", "dropped": "已放弃"}
    table = Table(title=f"订阅 {subscription_id} 的投递记录（共 {len(rows)} 条）")
    for column in ("申报编号", "序号", "事件类型", "结果", "尝试次数", "最近应答", "最近尝试"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.application_id,
            str(row.seq),
            row.event_type.removeprefix("cn.zhiping.application."),
            labels.get(row.status, row.status),
            str(row.attempts),
            str(row.last_status_code) if row.last_status_code else (row.last_error or "—")[:40],
            _fmt(row.last_attempt_at),
        )
    console.print(table)


@webhooks.command("listen")
def webhooks_listen(
    port: int = typer.Option(9000, "--port", help="监听端口（127.0.0.1）"),
    secret: str = typer.Option(
        ..., "--secret", envvar="ZHIPING_WEBHOOK_SECRET", help="订阅时设定的签名密钥"
    ),
) -> None:
    """一个用于联调的接收端：验证签名、打印收到的每个事件并应答 204（签名不符则 401）。"""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get(SIGNATURE_HEADER) != sign(secret, body):
                err_console.print("[red]BAD_SIGNATURE: 签名不符，已拒收[/red]", highlight=False)
                self.send_response(401)
            else:
                event = json.loads(body)
                data = event.get("data", {})
                console.print(
                    f"{event['id']}  {event['type']}  {data.get('from')} → {data.get('to_label')}"
                    f"（第 {self.headers.get('X-Zhiping-Attempt')} 次投递）",
                    highlight=False,
                )
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    console.print(f"接收端已在 http://127.0.0.1:{port}/ 监听，按 Ctrl-C 停止。")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()


def main() -> None:
    """The ``zhiping`` command. It ends with ``os._exit``: the Temporal client's native
    threads can abort a normal interpreter shutdown (SIGABRT, "PyGILState_Release", see
    temporalio/sdk-python#300), which would turn a finished command into exit status 134.
    Everything the command started has stopped by then; output and logs are flushed."""
    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else int(done.code is not None)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["app", "main"]

"""The ``zhiping`` command: run the embedded stack, the worker, or the demo cycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
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
from models.errors import DomainError
from models.lifecycle import ACTION_LABELS, STATE_LABELS, State
from models.policy import CHINA_TZ
from models.tables import TransitionLog
from zhiping import service
from zhiping.client import connect
from zhiping.settings import Settings, get_settings
from zhiping.stack import describe_transition, embedded_stack, follow_transitions

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
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_up(get_settings(), ui_port))
    console.print("已停止。所有申报已持久化，重新启动后从原处继续。")


@app.command()
def demo(ui_port: int = typer.Option(8233, help="Temporal UI 端口")) -> None:
    """启动本地服务并运行一个演示评审周期（约一分钟），直到每件申报都有最终结果。"""
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_demo(get_settings(), ui_port))


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


def main() -> None:
    app()


__all__ = ["app", "main"]

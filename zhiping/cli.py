"""The ``zhiping`` command: run the embedded stack, the worker, or the demo cycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter

import typer
from rich.console import Console
from rich.table import Table

from models.tables import TransitionLog
from zhiping.client import connect
from zhiping.settings import Settings, get_settings
from zhiping.stack import describe_transition, embedded_stack, follow_transitions

app = typer.Typer(
    help="职评 zhiping：职称评审全流程自动化（Temporal 工作流）", no_args_is_help=True
)
console = Console(soft_wrap=True)


def _print_transition(row: TransitionLog) -> None:
    console.print(describe_transition(row), highlight=False)


async def _up(settings: Settings, ui_port: int) -> None:
    async with embedded_stack(settings, ui_port=ui_port):
        console.print(
            f"Temporal 开发服务器：{settings.temporal_address}（数据：{settings.data_dir / 'temporal.db'}）"
        )
        console.print(f"Temporal UI：http://127.0.0.1:{ui_port}")
        console.print(f"工作进程：任务队列 {settings.task_queue}；读模型：{settings.database_url}")
        console.print("按 Ctrl-C 停止。以下为实时状态变更：")
        stop = asyncio.Event()
        await follow_transitions(settings, _print_transition, stop)


async def _demo(settings: Settings, ui_port: int) -> None:
    from zhiping.demo import run_demo

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
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_up(get_settings(), ui_port))
    console.print("已停止。所有申报已持久化，重新启动后从原处继续。")


@app.command()
def demo(ui_port: int = typer.Option(8233, help="Temporal UI 端口")) -> None:
    """启动本地服务并运行一个演示评审周期（约一分钟），直到每件申报都有最终结果。"""
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(get_settings(), ui_port))


@app.command()
def worker() -> None:
    """只运行工作进程（连接已有的 Temporal 服务器）。"""
    from worker import main as worker_main

    worker_main()


def main() -> None:
    app()


__all__ = ["app", "main"]

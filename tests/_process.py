"""
A real master in a real process: twistd, the embedded PostgreSQL, sockets on
127.0.0.1 with ephemeral ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import treq
import yaml
from twisted.internet import reactor
from twisted.internet.task import deferLater

from masterd._process import processAlive

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


def defaultSignals() -> None:
    """
    In the child: SIGINT as a terminal would deliver it. A suite started in
    the background of a shell inherits SIGINT ignored, and twistd then keeps
    it ignored, so that Ctrl-C tests would hang.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def writeConfig(directory: Path, **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "master": {"name": "proc-master"},
        "http": {"listen": ["tcp:0:interface=127.0.0.1"]},
        "database": {"embedded": {"data_dir": "pgdata"}},
        "auth": {
            "tokens": [{"name": "admin", "role": "admin", "token": "proc-admin-token-123456"}]
        },
    }
    config.update(overrides)
    path = directory / "master.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class MasterProcess:
    def __init__(self, config: Path, cwd: Path) -> None:
        self.config = config
        self.cwd = cwd
        self.logPath = cwd / f"master-{time.monotonic_ns()}.log"
        self._log = self.logPath.open("wb")
        self.process = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "masterd", "-c", str(config)],
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=defaultSignals,
        )
        self.port: int | None = None

    def log(self) -> str:
        return self.logPath.read_text(errors="replace")

    async def waitForPort(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log())
            if match:
                self.port = int(match.group(1))
                return self.port
            if self.process.poll() is not None:
                raise AssertionError(f"master exited early:\n{self.log()}")
            await deferLater(reactor, 0.05)
        raise AssertionError(f"master did not listen in time:\n{self.log()}")

    async def wait(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self._log.close()
                return code
            await deferLater(reactor, 0.05)
        self.process.kill()
        raise AssertionError(f"master did not exit in time:\n{self.log()}")

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """
        Stop the master (cleanly if it will, so that it stops its embedded
        PostgreSQL), and whatever PostgreSQL a killed master left behind.
        """
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        dataDir = self.cwd / "pgdata"
        pid = postmasterPID(dataDir)
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGTERM)


def postmasterPID(dataDir: Path) -> int | None:
    try:
        return int((dataDir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


alive = processAlive


async def call(
    base: str, path: str, token: str, method: str = "GET", body: Any = None
) -> tuple[int, Any]:
    """
    One request to a master that may be down: a connection failure is
    status 0 (and its text) rather than an exception, so that polls go on
    through a master's death; a JSON body is decoded.
    """
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    headers: dict[bytes | str, list[bytes | str]] = {"Authorization": [f"Bearer {token}"]}
    try:
        response = await treq.request(
            method, base + path, headers=headers, persistent=False, timeout=30, **kwargs
        )
        content = await response.content()
    except Exception as e:
        return 0, repr(e)
    try:
        return response.code, json.loads(content)
    except ValueError:
        return response.code, content


async def until(
    what: str,
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    logs: Callable[[], str] = lambda: "",
    interval: float = 0.2,
) -> float:
    """
    Poll C{check} until it is true; how long that took. Past C{timeout}, fail
    naming C{what}, with C{logs()} (the end of the masters' logs).
    """
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{logs()}")
        await deferLater(reactor, interval)
    return time.monotonic() - began

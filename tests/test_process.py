"""
twistd masterd as a user runs it: start, serve, stop cleanly, start again.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import treq
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from ._process import TWISTD, MasterProcess, alive, postmasterPID, writeConfig

TOKEN = "proc-admin-token-123456"


async def getJSON(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": [f"Bearer {token}"]} if token else {}
    response = await treq.get(url, headers=headers, persistent=False)
    return response.code, await response.json()


class ProcessTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)

    def start(self, config: Path) -> MasterProcess:
        master = MasterProcess(config, self.directory)
        self.addCleanup(master.kill)
        return master

    def test_runStopRestart(self) -> Deferred[None]:
        """
        The master starts its embedded PostgreSQL, serves, and on SIGTERM
        stops everything, PostgreSQL included; a second start reuses the data.
        """

        async def run() -> None:
            config = writeConfig(self.directory)
            master = self.start(config)
            port = await master.waitForPort()
            base = f"http://127.0.0.1:{port}"
            await _waitReady(base)
            code, body = await getJSON(base + "/api/v1/master", TOKEN)
            self.assertEqual(code, 200)
            self.assertEqual(body["name"], "proc-master")
            self.assertTrue(body["database"]["ready"])

            dataDir = self.directory / "pgdata"
            pid = postmasterPID(dataDir)
            assert pid is not None
            self.assertTrue(alive(pid))
            master.terminate()
            # twistd re-raises the signal it stopped on, as a shell expects.
            self.assertIn(await master.wait(), (0, -signal.SIGTERM), master.log())
            self.assertFalse(alive(pid), "the embedded PostgreSQL is still running")
            self.assertIsNone(postmasterPID(dataDir))
            first = master.log()
            self.assertIn("applying migration 0001", first)
            self.assertIn("master stopped", first)
            self.assertNotIn("Traceback", first)

            again = self.start(config)
            port = await again.waitForPort()
            await _waitReady(f"http://127.0.0.1:{port}")
            self.assertNotIn("applying migration", again.log())
            again.process.send_signal(signal.SIGINT)  # Ctrl-C
            self.assertIn(await again.wait(), (0, -signal.SIGINT), again.log())
            self.assertIn("master stopped", again.log())
            self.assertIsNone(postmasterPID(dataDir))

        return Deferred.fromCoroutine(run())

    def test_takesOverAfterKill(self) -> Deferred[None]:
        """
        A master killed with -9 leaves its embedded PostgreSQL running; the
        next master takes that server over, and its own clean stop shuts it
        down: no postgres process is left.
        """

        async def run() -> None:
            config = writeConfig(self.directory)
            dataDir = self.directory / "pgdata"
            master = self.start(config)
            port = await master.waitForPort()
            await _waitReady(f"http://127.0.0.1:{port}")
            pid = postmasterPID(dataDir)
            assert pid is not None
            master.process.kill()
            await master.wait()
            self.assertTrue(alive(pid), "PostgreSQL should outlive a killed master")
            again = self.start(config)
            port = await again.waitForPort()
            await _waitReady(f"http://127.0.0.1:{port}")
            self.assertEqual(postmasterPID(dataDir), pid, "taken over, not restarted")
            self.assertIn("this master takes it over", again.log())
            # Its own previous run, gone: no warning about a shared name.
            self.assertIn("taking the name proc-master over from its previous run", again.log())
            self.assertNotIn("must be unique", again.log())
            again.terminate()
            self.assertIn(await again.wait(), (0, -signal.SIGTERM), again.log())
            self.assertFalse(alive(pid), "the embedded PostgreSQL is still running")
            self.assertIsNone(postmasterPID(dataDir))

        return Deferred.fromCoroutine(run())

    def test_badConfig(self) -> Deferred[None]:
        """
        Every problem on its own line, naming file and key; exit status 2; no
        traceback; nothing started.
        """

        async def run() -> None:
            config = writeConfig(
                self.directory,
                http={"listen": ["tcp:0"], "lisen": []},
                limits={"max_body_bytes": "big"},
            )
            master = self.start(config)
            self.assertEqual(await master.wait(), 2)
            lines = master.log().strip().splitlines()
            self.assertEqual(
                lines,
                [
                    f"{config}: http.lisen: is not a known key",
                    f"{config}: limits.max_body_bytes: must be an integer, not a string",
                ],
            )
            self.assertFalse((self.directory / "pgdata").exists())

        return Deferred.fromCoroutine(run())

    def test_portTaken(self) -> Deferred[None]:
        """
        A port already in use is a fatal start error: logged in one line,
        non-zero exit, and the embedded PostgreSQL stopped again.
        """

        async def run() -> None:
            taken = socket.socket()
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            self.addCleanup(taken.close)
            port = taken.getsockname()[1]
            config = writeConfig(
                self.directory, http={"listen": [f"tcp:{port}:interface=127.0.0.1"]}
            )
            master = self.start(config)
            self.assertEqual(await master.wait(), 1, master.log())
            log = master.log()
            self.assertIn(f"cannot start: cannot listen on tcp:{port}:interface=127.0.0.1", log)
            self.assertNotIn("Traceback", log)
            self.assertIsNone(postmasterPID(self.directory / "pgdata"))

        return Deferred.fromCoroutine(run())

    def test_helpListsPlugin(self) -> None:
        out = subprocess.run(
            [*TWISTD, "--help"], capture_output=True, text=True, cwd="/", check=True
        ).stdout
        self.assertIn("masterd", out)


async def _waitReady(base: str, attempts: int = 600) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(attempts):
        response = await treq.get(base + "/readyz", persistent=False)
        await response.content()
        if response.code == 200:
            return
        await deferLater(reactor, 0.05)
    raise AssertionError("the master never became ready")

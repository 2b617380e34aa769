"""
The contract, tried from outside: schemathesis against a live master on the
embedded database, every check, once per role's token.

schemathesis reads the master's own OpenAPI document, generates requests
that fit it and requests that do not, and checks every answer: no 5xx, the
status is one the document names, the body fits the schema declared for that
status, the content type is the declared one, valid data is accepted and
invalid data refused. Each role sees a different API (a viewer is refused
every write, an operator the admin routes), so each role gets its own run.

The seed is fixed so that CI is reproducible; set C{MASTERD_ST_SEED} to try
another, and C{MASTERD_ST_EXAMPLES} for more examples per operation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from ._process import MasterProcess, writeConfig
from .test_e2e import AGENT_TOKEN, AgentProcess

ROLES = ("viewer", "operator", "admin", "agent")
SEED = os.environ.get("MASTERD_ST_SEED", "20261201")
EXAMPLES = os.environ.get("MASTERD_ST_EXAMPLES", "30")
CONFIG = Path(__file__).with_name("schemathesis.toml")


def token(role: str) -> str:
    return f"contract-{role}-token-123456"


class SchemathesisTests(TestCase):
    timeout = 1200

    async def setUp(self) -> None:
        try:
            import schemathesis  # noqa: F401
        except ImportError:
            raise SkipTest("schemathesis is not installed (pip install '.[test]')") from None
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        tokens = [{"name": role, "role": role, "token": token(role)} for role in ROLES]
        tokens.append({"name": "agents", "role": "agent", "token": AGENT_TOKEN})
        config = writeConfig(
            self.directory,
            auth={"tokens": tokens},
            http={"listen": ["tcp:0:interface=127.0.0.1"], "access_log": False},
        )
        self.master = MasterProcess(config, self.directory)
        self.addCleanup(self.master.kill)
        port = await self.master.waitForPort()
        self.base = f"http://127.0.0.1:{port}"
        await self._until(lambda code, _: code == 200, "/readyz")
        # An agent that has been and gone: the agent routes get a real id to
        # work on, and nothing the fuzzer submits is ever run on this machine.
        agent = AgentProcess(self.directory, "contract-agent", self.base)
        self.addCleanup(agent.stop)
        body = await self._until(lambda code, body: bool(body["items"]), "/api/v1/agents")
        self.agentID = body["items"][0]["id"]
        agent.stop()

    async def _until(self, done: object, path: str) -> dict[str, object]:
        for _ in range(600):
            response = await treq.get(
                self.base + path,
                headers={"Authorization": [f"Bearer {token('admin')}"]},
                persistent=False,
            )
            content = await response.content()
            body = json.loads(content) if content else {}
            if done(response.code, body):  # type: ignore[operator]
                return dict(body)
            await deferLater(reactor, 0.1)
        raise AssertionError(f"{path} did not become ready:\n{self.master.log()[-3000:]}")

    def _schemathesis(self, role: str) -> subprocess.CompletedProcess[str]:
        workdir = self.directory / f"st-{role}"
        workdir.mkdir()
        return subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
             f"{self.base}/api/v1/openapi.json",
             "--checks", "all", "--exclude-checks", "use_after_free",
             "--header", f"Authorization: Bearer {token(role)}",
             "--max-examples", EXAMPLES, "--seed", SEED,
             "--workers", "1", "--no-color", "--generation-database", "none",
             # The WebSocket upgrade is not HTTP request and response; the
             # AsyncAPI document and tests/test_contract.py cover it.
             "--exclude-path", "/api/v1/talkback"],
            cwd=workdir, capture_output=True, text=True, timeout=900,
            env={**os.environ, "NO_COLOR": "1", "MASTERD_ST_AGENT": self.agentID},
        )  # fmt: skip

    async def _check(self, role: str) -> None:
        result = await deferToThread(self._schemathesis, role)
        (self.directory / f"st-{role}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            self.fail(
                f"schemathesis as {role} (seed {SEED}) exited {result.returncode}:\n"
                f"{result.stdout[-12000:]}\n{result.stderr[-3000:]}"
            )
        self.assertNotIn("Traceback", self.master.log())

    async def test_viewer(self) -> None:
        await self._check("viewer")

    async def test_operator(self) -> None:
        await self._check("operator")

    async def test_admin(self) -> None:
        await self._check("admin")

    async def test_agent(self) -> None:
        await self._check("agent")

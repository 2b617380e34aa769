"""
The dashboard against a real farm: a master process on the embedded
database, reference agents running real commands, and headless Chromium.
A running task's log follows live in the page; "Cancel" stops the job's
processes on the agents.

With MASTERD_SCREENSHOTS=<folder> set, the test also saves screenshots of
the main views there (docs/images/ holds the ones docs/dashboard.md shows).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import treq

from . import test_e2e
from ._process import MasterProcess, alive
from .test_dashboard import BrowserCase
from .test_e2e import ADMIN, AGENT_TOKEN, AgentProcess, farmConfig

ARTIST = "proc-artist-token-123456"


class FarmBrowserTests(BrowserCase):
    timeout = 240

    async def setUpFarm(self, agents: int, maxTasks: int) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        config = farmConfig(
            self.directory,
            auth={"tokens": [
                {"name": "admin", "role": "admin", "token": ADMIN},
                {"name": "agents", "role": "agent", "token": AGENT_TOKEN},
                {"name": "artist", "role": "user", "token": ARTIST},
            ]},
        )  # fmt: skip
        self.master = MasterProcess(config, self.directory)
        self.addCleanup(self.master.kill)
        port = await self.master.waitForPort()
        self.base = f"http://127.0.0.1:{port}"
        await self.waitFor(lambda: self.call("GET", "/readyz"), lambda r: r[0] == 200)
        for i in range(agents):
            agent = AgentProcess(self.directory, f"render{i + 1:02d}", self.base, maxTasks)
            self.addCleanup(agent.stop)
        await self.waitFor(
            lambda: self.call("GET", "/api/v1/agents?state=idle"),
            lambda r: len(r[1]["items"]) == agents,
        )

    call = test_e2e.EndToEndTests.call
    waitFor = test_e2e.EndToEndTests.waitFor

    async def submit(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await treq.post(
            self.base + "/api/v1/jobs", json=body, persistent=False,
            headers={"Authorization": [f"Bearer {token}"]},
        )  # fmt: skip
        document: dict[str, Any] = json.loads(await response.content())
        self.assertEqual(response.code, 201, document)
        return document

    async def test_logFollowsAndCancelStops(self) -> None:
        """
        An artist opens its running task: the log grows in the page while
        the task runs, without a reload. "Cancel" on its job, confirmed,
        stops both of the job's processes on the agent.
        """
        shots = os.environ.get("MASTERD_SCREENSHOTS")
        await self.setUpFarm(agents=2, maxTasks=2)
        pids = self.directory / "pids"
        pids.mkdir()
        loop = (f"echo $$ > {pids}/{{frame}}; i=0; while true; do i=$((i+1));"
                ' echo "frame {frame} tick $i"; sleep 0.2; done')  # fmt: skip
        job = await self.submit(ARTIST, {
            "title": "shot 040 lighting", "frames": "1-2", "command": ["sh", "-c", loop],
            "project": "shot040",
        })  # fmt: skip
        if shots:
            await self.submit(ADMIN, {"title": "shot 020 comp", "frames": "1-240",
                                      "command": ["true"], "project": "shot020"})  # fmt: skip
            await self.submit(ARTIST, {"title": "shot 030 fx sim", "frames": "1-60",
                                       "command": ["sh", "-c", "test $(({frame} % 7)) -ne 0"],
                                       "max_retries": 0})  # fmt: skip
        await self.waitFor(lambda: self.call("GET", job["href"]),
                           lambda r: r[1]["tasks"]["running"] == 2)  # fmt: skip
        await self.waitFor(_returning(lambda: len(list(pids.iterdir()))), lambda n: n == 2)
        running = [int(p.read_text()) for p in pids.iterdir()]
        _, tasks = await self.call("GET", f"{job['href']}/tasks")
        first = tasks["items"][0]

        def shoot(page: Any, name: str) -> None:
            if shots:
                Path(shots).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(shots) / f"dashboard-{name}.png"))

        def steps(page: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            page.set_viewport_size({"width": 1280, "height": 860})
            page.goto(f"/tasks/{first['id']}")
            page.get_by_label("Token").fill(ARTIST)
            page.get_by_role("button", name="Sign in").click()
            log = page.locator("#task-log")
            log.filter(has_text="frame 1 tick 3").wait_for()
            page.evaluate("window.notReloaded = true")
            before = log.inner_text()
            seen["lines before"] = before.count("\n")
            last = max(int(n) for n in re.findall(r"tick (\d+)", before))
            log.filter(has_text=re.compile(rf"frame 1 tick {last + 5}\b")).wait_for()
            seen["lines after"] = log.inner_text().count("\n")
            seen["not reloaded"] = page.evaluate("window.notReloaded === true")
            seen["following"] = page.locator("#log-state").inner_text()
            shoot(page, "task")
            page.get_by_role("link", name=re.compile(rf"^{job['id']}: ")).click()
            page.get_by_role("heading", name=f"Job {job['id']}: shot 040 lighting").wait_for()
            shoot(page, "job")
            page.get_by_role("button", name="Cancel", exact=True).click()
            page.get_by_role("dialog").get_by_role("button", name=f"Cancel job {job['id']}").click()
            page.get_by_role("status").filter(has_text="Cancel: done").wait_for()
            page.get_by_role("img", name="Frame grid of 2 tasks: 2 canceled").wait_for()
            if shots:
                for path, name in [("/", "overview"), ("/jobs", "jobs"), ("/agents", "agents"),
                                   ("/masters", "masters")]:  # fmt: skip
                    page.goto(path)
                    page.locator("#view h1").wait_for()
                    page.wait_for_timeout(500)
                    shoot(page, name)
                page.emulate_media(color_scheme="dark")
                page.goto("/jobs")
                page.locator("#jobs-body tr[data-job]").first.wait_for()
                shoot(page, "jobs-dark")
            return seen

        seen = await self.drive(self.base, steps)
        self.assertGreater(seen["lines after"], seen["lines before"])
        self.assertTrue(seen["not reloaded"])
        self.assertEqual(seen["following"], "Following the log while the task runs.")
        await self.waitFor(_returning(lambda: [alive(p) for p in running]),
                           lambda states: not any(states), timeout=30)  # fmt: skip
        _, document = await self.call("GET", job["href"])
        self.assertEqual(document["state"], "canceled")


def _returning(f: Any) -> Any:
    async def fetch() -> Any:
        return f()

    return fetch

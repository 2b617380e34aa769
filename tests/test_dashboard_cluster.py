"""
The dashboard behind the load balancer of etc/frontend/: two master
processes on one database behind a real HAProxy (round robin, no
stickiness), headless Chromium talking to HAProxy only.
"""

from __future__ import annotations

import shutil
from typing import Any

import treq
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest

from ._postgres import freshDatabase
from ._process import call
from .test_cluster_e2e import ClusterBase, HAProxyProcess
from .test_dashboard import CHROMIUM, CHROMIUM_ARGS, browserOrSkip
from .test_e2e import ADMIN


class BehindHAProxyTests(ClusterBase):
    timeout = 240

    async def test_anyMaster(self) -> None:
        """
        Signed in through HAProxy, the session holds on whichever master
        answers; a job submitted through master b appears in the table
        without a reload, whichever master serves the event stream; signing
        out ends the session on both masters.
        """
        if shutil.which("haproxy") is None:
            raise SkipTest("haproxy is not installed: apt-get install haproxy")
        playwright = browserOrSkip()
        dsn = await freshDatabase(self)
        await self.startMasters(dsn, ["a", "b"])
        self.haproxy = HAProxyProcess(self.directory, [self.ports["a"], self.ports["b"]])
        self.addCleanup(self.haproxy.kill)
        front = f"http://127.0.0.1:{self.haproxy.port}"
        await self.waitFor(lambda: call(front, "/readyz", ADMIN), lambda r: r[0] == 200)

        seen: dict[str, Any] = {}

        def steps() -> None:
            with playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(base_url=front)
                    page.set_default_timeout(20_000)
                    page.goto("/jobs")
                    page.get_by_label("Token").fill(ADMIN)
                    page.get_by_role("button", name="Sign in").click()
                    page.get_by_role("heading", name="Jobs").wait_for()
                    # Several loads (each a handful of requests, round robin
                    # over both masters) with the one cookie.
                    for _ in range(3):
                        page.reload()
                        page.get_by_role("heading", name="Jobs").wait_for()
                    seen["cookies"] = page.context.cookies()
                    seen["ready"] = True
                    while "job" not in seen:
                        page.wait_for_timeout(100)
                    page.locator(f'tr[data-job="{seen["job"]}"]').get_by_text(
                        "from master b"
                    ).wait_for()
                    page.get_by_role("button", name="Sign out").click()
                    page.get_by_label("Token").wait_for()
                finally:
                    browser.close()

        done = deferToThread(steps)
        await self.waitFor(_ready(seen, done), lambda ok: ok)
        # Submitted through master b directly, once the page is signed in.
        code, job = await self.call(
            self.url("b"), "POST", "/api/v1/jobs",
            {"title": "from master b", "command": ["true"], "frames": "1"},
        )  # fmt: skip
        self.assertEqual(code, 201, job)
        seen["job"] = job["id"]
        await done
        [cookie] = seen["cookies"]
        for name in ["a", "b"]:
            response = await treq.get(
                self.url(name) + "/api/v1/session", persistent=False,
                headers={"Cookie": [f"masterd_session={cookie['value']}"]},
            )  # fmt: skip
            await response.content()
            self.assertEqual(response.code, 401, name)
        # Both masters answered the page's reads.
        for name in ["a", "b"]:
            _, master = await self.call(self.url(name), "GET", "/api/v1/master")
            served = {(r["method"], r["route"]) for r in master["requests"]["by_route"]}
            page = {("GET", "/jobs"), ("GET", "/api/v1/jobs"), ("GET", "/api/v1/session"),
                    ("GET", "/api/v1/events"), ("DELETE", "/api/v1/session")}  # fmt: skip
            self.assertTrue(served & page, (name, served))


def _ready(seen: dict[str, Any], done: Any) -> Any:
    async def check() -> bool:
        if done.called:
            await done  # the browser's failure, at once
        return bool(seen.get("ready"))

    return check

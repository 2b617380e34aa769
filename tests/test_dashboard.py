"""
The dashboard: its page and files over HTTP, and, in a real browser
(Playwright driving Debian's Chromium headless), signing in and out against
a real master and database.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from masterd.history import rollUp
from masterd.http._events import EventsService, JobFeed
from masterd.jobs import lifecycle
from masterd.service import Periodic

from ._api import API, TOKENS, startAPI
from .test_jobs_api import AGENT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def browserOrSkip() -> Any:
    """
    Playwright's synchronous API, or a skip saying what is missing (.ci/run
    installs both).
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SkipTest("playwright is not installed (pip install '.[test]')") from None
    if shutil.which(CHROMIUM) is None:
        raise SkipTest(f"{CHROMIUM} is missing (apt-get install chromium)")
    return sync_playwright


class FilesTests(TestCase):
    timeout = 60

    async def test_pageAndFiles(self) -> None:
        """
        Every view's URL serves the page (no token needed, never cached,
        a policy that fetches nothing from elsewhere); its files are kept
        for a year under their version; another version, or a name that is
        no file, is a 404.
        """
        api = await startAPI(self)
        for path in ["/", "/jobs", "/jobs/12", "/tasks/3", "/agents", "/masters",
                     "/agents/7b0c6b2e-0d3c-4a59-9b4b-6a4a0b9d8e11", "/audit"]:  # fmt: skip
            reply = await api.call("GET", path, role="")
            self.assertEqual(reply.code, 200, path)
            self.assertEqual(reply.header("content-type"), "text/html; charset=utf-8")
            self.assertEqual(reply.header("cache-control"), "no-cache")
            self.assertIn("default-src 'self'", reply.header("content-security-policy") or "")
        page = (await api.call("GET", "/", role="")).body.decode()
        self.assertIn('<label for="token">Token</label>', page)
        [version] = set(re.findall(r"/assets/([0-9a-f]{16})/", page))
        for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
            reply = await api.call("GET", f"/assets/{version}/{name}", role="")
            self.assertEqual(reply.code, 200, name)
            self.assertTrue((reply.header("content-type") or "").startswith(kind))
            self.assertEqual(reply.header("cache-control"), "public, max-age=31536000, immutable")
        for path in [f"/assets/{'0' * 16}/app.js", f"/assets/{version}/nope.js",
                     f"/assets/{version}/..%2Fapi", "/assets/x/app.js", "/jobs/0",
                     "/nothing-here"]:  # fmt: skip
            reply = await api.call("GET", path, role="")
            self.assertEqual(reply.code, 404, path)
            self.assertTrue((reply.header("content-type") or "").startswith("application/json"))


class BrowserCase(TestCase):
    """
    A test that drives a headless Chromium.
    """

    timeout = 120

    def setUp(self) -> None:
        self.playwright = browserOrSkip()

    def drive(self, base: str, steps: Any) -> Any:
        """
        Run C{steps(page)} in a fresh headless Chromium (in a thread: the
        master runs on this thread's reactor).
        """

        def run() -> Any:
            with self.playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(base_url=base)
                    page.set_default_timeout(15_000)
                    return steps(page)
                finally:
                    browser.close()

        return deferToThread(run)


class BrowserTests(BrowserCase):
    async def test_signInAndOut(self) -> None:
        """
        A bad token gets a clear message; a user's token signs in and the
        page shows who it is and the jobs; signing out ends the session on
        the server.
        """
        api: API = await startAPI(self)
        await api.submit(title="shot 010 lighting")

        def steps(page: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            page.goto("/")
            page.get_by_label("Token").fill("not-a-token")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("alert").filter(has_text="not valid").wait_for()
            seen["error"] = page.get_by_role("alert").inner_text()
            page.get_by_label("Token").fill(TOKENS["user"])
            page.get_by_role("button", name="Sign in").click()
            page.get_by_text("user (user)").wait_for()
            page.get_by_role("heading", name="Overview").wait_for()
            page.get_by_role("navigation").get_by_role("link", name="Jobs").click()
            page.get_by_role("cell", name="shot 010 lighting").wait_for()
            seen["cookies"] = page.context.cookies()
            # A reload keeps the session (the cookie), with no token typed.
            page.reload()
            page.get_by_text("user (user)").wait_for()
            page.get_by_role("button", name="Sign out").click()
            page.get_by_label("Token").wait_for()
            seen["after"] = page.get_by_role("alert").inner_text()
            return seen

        seen = await self.drive(api.base, steps)
        self.assertIn("not valid", seen["error"])
        [cookie] = seen["cookies"]
        self.assertEqual((cookie["name"], cookie["httpOnly"], cookie["sameSite"]),
                         ("masterd_session", True, "Strict"))  # fmt: skip
        self.assertEqual(seen["after"], "Signed out.")
        self.assertEqual(await api.count("sessions"), 0)

    async def test_live(self) -> None:
        """
        A job submitted through the API appears without a reload, and its
        done count follows as its tasks finish, from the event stream.
        """
        api: API = await startAPI(self)
        assert api.api.streams is not None
        feed = Periodic("events.jobs", JobFeed(api.pool, api.api.streams).poll, 0.2, reactor)
        feed.start()
        self.addCleanup(feed.stop)

        def inReactor(f: Any) -> Any:
            return blockingCallFromThread(reactor, lambda: Deferred.fromCoroutine(f()))

        async def finish(jobID: int) -> None:
            rows = await api.pool.query("SELECT id FROM tasks WHERE job_id = %s", (jobID,))
            for (taskID,) in rows:
                [a] = await api.pool.transaction(
                    lambda txn, t=taskID: lifecycle.assign(txn, AGENT, [t])
                )
                await api.pool.transaction(
                    lambda txn, a=a: lifecycle.done(txn, AGENT, a.task_id, a.attempt)
                )

        def steps(page: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            page.goto("/jobs")
            page.get_by_label("Token").fill(TOKENS["user"])
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="Jobs").wait_for()
            job = inReactor(lambda: api.submit(title="live job", frames="1-2"))
            seen["job"] = job
            row = page.locator(f'tr[data-job="{job["id"]}"]')
            row.get_by_text("live job").wait_for()
            seen["before"] = row.locator(".done").inner_text()
            row.get_by_role("link", name=str(job["id"])).click()
            page.get_by_role("heading", name=f"Job {job['id']}: live job").wait_for()
            grid = page.locator("#frame-grid")
            seen["grid before"] = grid.get_attribute("aria-label")
            inReactor(lambda: finish(job["id"]))
            page.get_by_role("img", name="Frame grid of 2 tasks: 2 done").wait_for()
            seen["url"] = page.url
            page.locator("#frame-grid").click(position={"x": 1, "y": 1})
            page.get_by_role("heading", name=re.compile(r"^Task \d+$")).wait_for()
            seen["task"] = page.get_by_role("heading", level=1).inner_text()
            page.go_back()
            page.get_by_role("heading", name=f"Job {job['id']}: live job").wait_for()
            return seen

        seen = await self.drive(api.base, steps)
        self.assertEqual(seen["before"], "0 / 2")
        self.assertEqual(seen["grid before"], "Frame grid of 2 tasks: 2 queued")
        self.assertTrue(seen["url"].endswith(f"/jobs/{seen['job']['id']}"))
        [first] = await api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s AND index = 0", (seen["job"]["id"],)
        )
        self.assertEqual(seen["task"], f"Task {first[0]}")

    async def test_history(self) -> None:
        """
        The overview's chart of the last 7 days shows the work that
        finished once it is rolled up (the test rolls up at once, with no
        lag), with its figures said to screen readers and day by day.
        """
        api: API = await startAPI(self)
        job = await api.submit(title="history job", frames="1-3", max_retries=0)
        rows = await api.pool.query("SELECT id FROM tasks WHERE job_id = %s ORDER BY index",
                                    (job["id"],))  # fmt: skip
        for n, (taskID,) in enumerate(rows):
            [a] = await api.pool.transaction(
                lambda txn, t=taskID: lifecycle.assign(txn, AGENT, [t])
            )
            if n == 0:
                await api.pool.transaction(
                    lambda txn, a=a: lifecycle.failed(txn, AGENT, a.task_id, a.attempt, 1, "x")
                )
            else:
                await api.pool.transaction(
                    lambda txn, a=a: lifecycle.done(txn, AGENT, a.task_id, a.attempt)
                )
        await rollUp(api.pool, lag_s=0)

        def steps(page: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            page.goto("/")
            page.get_by_label("Token").fill(TOKENS["viewer"])
            page.get_by_role("button", name="Sign in").click()
            chart = page.get_by_role("img", name=re.compile("over the last 7 days"))
            chart.wait_for()
            seen["label"] = chart.get_attribute("aria-label")
            seen["bars"] = chart.locator("rect.done").count()
            page.get_by_text("Day by day").click()
            table = page.get_by_role("table", name="Farm history by day")
            seen["done"] = sum(int(t) for t in table.locator("td:nth-child(2)").all_inner_texts())
            return seen

        seen = await self.drive(api.base, steps)
        self.assertEqual(
            seen["label"],
            "Tasks finished each hour over the last 7 days: 2 done, 1 failed, 0 core-hours",
        )
        self.assertEqual((seen["bars"], seen["done"]), (7 * 24, 2))


ACTIONS = re.compile(r"^(Pause|Resume|Cancel|Retry|Delete|Disable|Enable)$")


class RoleTests(BrowserCase):
    async def test_viewerSeesNoActions(self) -> None:
        """
        A viewer sees the jobs, a job and the agents, but no action button
        and nothing to select, and no audit trail in the navigation.
        """
        api: API = await startAPI(self)
        job = await api.submit(title="look only")
        await api.pool.query(
            "INSERT INTO agents (id, hostname, enabled) VALUES (%s, 'node-a', true) RETURNING id",
            (AGENT,),
        )

        def steps(page: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            page.goto("/jobs")
            page.get_by_label("Token").fill(TOKENS["viewer"])
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("cell", name="look only").wait_for()
            seen["jobs"] = (page.get_by_role("button", name=ACTIONS).count(),
                            page.get_by_role("checkbox").count())  # fmt: skip
            seen["audit link"] = page.get_by_role("link", name="Audit").count()
            page.get_by_role("link", name=str(job["id"]), exact=True).click()
            page.get_by_role("heading", name=f"Job {job['id']}: look only").wait_for()
            seen["job"] = page.get_by_role("button", name=ACTIONS).count()
            page.get_by_role("navigation").get_by_role("link", name="Agents").click()
            page.get_by_role("cell", name="node-a").wait_for()
            seen["agents"] = page.get_by_role("button", name=ACTIONS).count()
            return seen

        seen = await self.drive(api.base, steps)
        self.assertEqual(seen, {"jobs": (0, 0), "audit link": 0, "job": 0, "agents": 0})

    async def test_artistOwnJobsOnly(self) -> None:
        """
        An artist (role user) can select and act on its own jobs only:
        another's job cannot be selected and its page has no buttons. A
        refused action shows the server's message; Cancel asks first, and
        "Go back" leaves the job as it was.
        """
        api: API = await startAPI(self)
        body = {"title": "mine", "command": ["render", "{frame}"], "frames": "1-2"}
        mine = (await api.call("POST", "/api/v1/jobs", body, role="user")).json()
        theirs = await api.submit(title="theirs")

        def steps(page: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            page.goto("/jobs")
            page.get_by_label("Token").fill(TOKENS["user"])
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("cell", name="mine").wait_for()
            seen["select theirs"] = page.get_by_label(f"Select job {theirs['id']}").is_enabled()
            page.get_by_label(f"Select job {mine['id']}").check()
            page.get_by_role("button", name="Delete").click()
            page.get_by_role("dialog").get_by_role(
                "button", name=f"Delete job {mine['id']}"
            ).click()
            page.get_by_role("alert").filter(has_text="refused").wait_for()
            seen["refused"] = page.get_by_role("alert").inner_text()
            page.goto(f"/jobs/{theirs['id']}")
            page.get_by_role("heading", name=f"Job {theirs['id']}: theirs").wait_for()
            seen["their buttons"] = page.get_by_role("button", name=ACTIONS).count()
            page.goto(f"/jobs/{mine['id']}")
            page.get_by_role("heading", name=f"Job {mine['id']}: mine").wait_for()
            seen["my buttons"] = (
                page.get_by_role("group", name="Actions").get_by_role("button").all_inner_texts()
            )
            page.get_by_role("button", name="Cancel", exact=True).click()
            page.get_by_role("dialog").get_by_role("button", name="Go back").click()
            seen["kept"] = inReactor(lambda: api.ok("GET", mine["href"]))["state"]
            page.get_by_role("button", name="Cancel", exact=True).click()
            page.get_by_role("dialog").get_by_role(
                "button", name=f"Cancel job {mine['id']}"
            ).click()
            page.get_by_role("status").filter(has_text="Cancel: done").wait_for()
            page.locator("#job-summary").wait_for()
            page.get_by_text("canceled", exact=True).first.wait_for()
            return seen

        seen = await self.drive(api.base, steps)
        self.assertFalse(seen["select theirs"])
        self.assertIn(f"Delete: refused for job {mine['id']}: ", seen["refused"])
        self.assertEqual(seen["their buttons"], 0)
        self.assertEqual(seen["my buttons"], ["Pause", "Cancel"])
        self.assertEqual(seen["kept"], "queued")
        self.assertEqual((await api.ok("GET", mine["href"]))["state"], "canceled")
        self.assertEqual((await api.ok("GET", theirs["href"]))["state"], "queued")


class LiveAgentsTests(BrowserCase):
    async def test_agentsLive(self) -> None:
        """
        The agents table follows agents connecting and going busy and
        idle, from agent events, without a reload; an operator sees
        Disable, and the overview counts them.
        """
        api: API = await startAPI(self)
        assert api.api.streams is not None
        service = EventsService(api.api.streams, JobFeed(api.pool, api.api.streams), reactor,
                                interval=0.2)  # fmt: skip
        await service.start()
        self.addCleanup(lambda: Deferred.fromCoroutine(service.stop()))
        await api.pool.query(
            "INSERT INTO agents (id, hostname, enabled) VALUES (%s, 'node-a', true) RETURNING id",
            (AGENT,),
        )
        job = await api.submit(title="work", frames="1")

        async def connect() -> None:
            await api.pool.query(
                "UPDATE agents SET session = gen_random_uuid(), master = 'test',"
                " connected_at = now(), last_seen = now() WHERE id = %s RETURNING id",
                (AGENT,),
            )

        async def assign() -> None:
            [taskID] = (await api.pool.query("SELECT id FROM tasks WHERE job_id = %s",
                                             (job["id"],)))[0]  # fmt: skip
            await api.pool.transaction(lambda txn: lifecycle.assign(txn, AGENT, [taskID]))

        def steps(page: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            page.goto("/agents")
            page.get_by_label("Token").fill(TOKENS["operator"])
            page.get_by_role("button", name="Sign in").click()
            row = page.locator(f'tr[data-agent="{AGENT}"]')
            row.get_by_text("offline").wait_for()
            seen["buttons"] = page.get_by_role("button", name=ACTIONS).all_inner_texts()
            inReactor(connect)
            row.get_by_text("idle").wait_for()
            inReactor(assign)
            row.get_by_text("busy").wait_for()
            row.get_by_role("link", name=re.compile(r"^\d+$")).wait_for()
            seen["audit link"] = page.get_by_role("link", name="Audit").count()
            page.get_by_role("navigation").get_by_role("link", name="Overview").click()
            page.get_by_role("region", name="Agents by state").wait_for()
            seen["busy"] = page.locator('.card[data-state="busy"] .n').inner_text()
            return seen

        seen = await self.drive(api.base, steps)
        self.assertEqual(seen, {"buttons": ["Disable", "Enable"], "audit link": 1, "busy": "1"})


def inReactor(f: Any) -> Any:
    """
    From the browser's thread: run C{f()} (a coroutine) on the reactor and
    wait for its result.
    """
    return blockingCallFromThread(reactor, lambda: Deferred.fromCoroutine(f()))


class OpenJDTaskTests(BrowserCase):
    async def test_parametersShown(self) -> None:
        """
        An OpenJD task's page shows its parameter values (issue 16).
        """
        api: API = await startAPI(self)
        template = {
            "specificationVersion": "jobtemplate-2023-09", "name": "ojd shot",
            "steps": [{"name": "render", "parameterSpace": {"taskParameterDefinitions": [
                {"name": "Frame", "type": "INT", "range": "3-4"},
                {"name": "Pass", "type": "STRING", "range": ["beauty"]}],
                "combination": "Frame * Pass"},
                "script": {"actions": {"onRun": {"command": "true"}}}}],
        }  # fmt: skip
        job = await api.ok("POST", "/api/v1/jobs", {"openjd": {"template": template}}, 201)
        [(taskID,)] = await api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s AND index = 1", (job["id"],)
        )

        def steps(page: Any) -> str:
            page.goto(f"/tasks/{taskID}")
            page.get_by_label("Token").fill(TOKENS["viewer"])
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name=f"Task {taskID}").wait_for()
            return str(page.locator("#task-openjd").inner_text())

        shown = await self.drive(api.base, steps)
        self.assertEqual(shown.split(), ["Parameters", "Frame=4,", "Pass=beauty"])


class StatesTests(TestCase):
    timeout = 60

    async def test_states(self) -> None:
        """
        A job's task states, one character a task in index order, and the
        task ids as runs; 404 for no such job.
        """
        api = await startAPI(self)
        job = await api.submit(frames="1-5")
        rows = await api.pool.query(
            "SELECT id FROM tasks WHERE job_id = %s ORDER BY index", (job["id"],)
        )
        ids = [r[0] for r in rows]
        await api.pool.query(
            "UPDATE tasks SET state = 'canceled' WHERE id = %s RETURNING id", (ids[3],)
        )
        document = await api.ok("GET", f"/api/v1/jobs/{job['id']}/states")
        self.assertEqual(document["states"], "QQQCQ")
        self.assertEqual(document["legend"]["C"], "canceled")
        self.assertEqual(document["job"], job["href"])
        self.assertEqual(document["ids"], [[0, ids[0], 5]])
        reply = await api.call("GET", "/api/v1/jobs/999999/states")
        self.assertEqual(reply.code, 404)

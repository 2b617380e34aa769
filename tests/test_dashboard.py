"""
The dashboard: its page and files over HTTP, and, in a real browser
(Playwright driving Debian's Chromium headless), signing in and out against
a real master and database.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from ._api import API, TOKENS, startAPI

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
                     "/agents/7b0c6b2e-0d3c-4a59-9b4b-6a4a0b9d8e11"]:  # fmt: skip
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


class BrowserTests(TestCase):
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

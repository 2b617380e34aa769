"""
The HTTP application in memory: health, auth, error shapes, counters.
"""

from __future__ import annotations

import gc
import hashlib
from typing import Any

from attrs import define
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from masterd.config import Role, TokenConfig
from masterd.db import Pool
from masterd.events import EventBus
from masterd.http import (
    Authenticator,
    MasterAPI,
    MasterSite,
    RoutedKlein,
    installErrorHandlers,
    jsonResponse,
    requires,
    routeTemplate,
)
from masterd.http._operations import readBody, shielded
from masterd.jobs import JobStore
from masterd.schema import DEFAULT_LIMITS
from masterd.stats import GCStats, MasterStats
from masterd.talkback import AgentDirectory

from ._http import FakeReadiness, MemoryHTTP

TOKENS = {
    "viewer": "viewer-token-0123456789",
    "operator": "operator-token-0123456789",
    "admin": "admin-token-0123456789",
    "agent": "agent-token-0123456789",
}


def authenticator() -> Authenticator:
    return Authenticator(
        TokenConfig(name, Role(name), hashlib.sha256(token.encode()).digest())
        for name, token in TOKENS.items()
    )


def unconnectedJobs() -> JobStore:
    """
    A job store whose pool never connects: these tests need no database.
    """
    return JobStore(Pool(MemoryReactorClock(), "dbname=none"), EventBus())


def unconnectedAgents() -> AgentDirectory:
    return AgentDirectory(Pool(MemoryReactorClock(), "dbname=none"), EventBus())


class Boom(Exception):
    pass


@define(slots=False)
class ProbeAPI:
    """
    Routes that exist only to exercise the shared machinery.
    """

    auth: Authenticator
    app = RoutedKlein()

    @app.route("/probe/boom", methods=["GET"])
    def boom(self, request: IRequest) -> bytes:
        raise Boom("on purpose")

    @app.route("/probe/items/<int:itemID>", methods=["GET"])
    def item(self, request: IRequest, itemID: int) -> bytes:
        return jsonResponse(request, {"id": itemID})

    @app.route("/probe/echo", methods=["POST"])
    @requires(Role.operator)
    def echo(self, request: IRequest) -> bytes:
        return jsonResponse(
            request, {"got": readBody(request, dict[str, Any], DEFAULT_LIMITS)}, 201
        )


installErrorHandlers(ProbeAPI.app)


class HTTPTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.now = 1_800_000_000.0
        self.stats = MasterStats(now=lambda: self.now)
        self.readiness = FakeReadiness(True)
        self.api = MasterAPI(
            name="m1",
            stats=self.stats,
            auth=authenticator(),
            database=self.readiness,
            jobs=unconnectedJobs(),
            agents=unconnectedAgents(),
        )
        self.http = MemoryHTTP(self, MasterSite(self.api.app.resource(), self.stats, 4096))
        self.probe = MemoryHTTP(
            self, MasterSite(ProbeAPI(authenticator()).app.resource(), self.stats, 4096)
        )

    def assertError(self, response: Any, status: int, code: str) -> dict[str, Any]:
        self.assertEqual(response.code, status, response.body)
        self.assertEqual(response.header("content-type"), "application/json; charset=utf-8")
        body: dict[str, Any] = response.json()
        self.assertEqual(sorted(body), ["details", "error", "message"])
        self.assertEqual(body["error"], code)
        self.assertIsInstance(body["message"], str)
        self.assertNotIn("Traceback", response.body.decode())
        return body

    def test_healthz(self) -> None:
        response = self.http.request("GET", "/healthz")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json()["status"], "ok")

    def test_readyz(self) -> None:
        self.assertEqual(self.http.request("GET", "/readyz").code, 200)
        self.readiness.ready = False
        response = self.http.request("GET", "/readyz")
        body = self.assertError(response, 503, "not_ready")
        self.assertEqual(body["details"], {"database": "unavailable"})
        self.assertEqual(response.header("retry-after"), "5")

    def test_notReadyYet(self) -> None:
        """
        Until the master is ready, routes that need the database answer 503
        with Retry-After (never a missing relation); its own counters still
        answer.
        """
        self.readiness.ready = False
        admin = TOKENS["admin"]
        for path in ("/api/v1/jobs", "/api/v1/agents", "/api/v1/jobs/1/tasks"):
            response = self.http.request("GET", path, token=admin)
            body = self.assertError(response, 503, "database_unavailable")
            self.assertIn("not ready", body["message"])
            self.assertEqual(response.header("retry-after"), "5", path)
        self.assertEqual(self.http.request("GET", "/api/v1/master", token=admin).code, 200)
        self.assertEqual(self.http.request("GET", "/healthz").code, 200)

    def test_authMissing(self) -> None:
        response = self.http.request("GET", "/api/v1/master")
        self.assertError(response, 401, "unauthorized")
        self.assertEqual(response.header("www-authenticate"), 'Bearer realm="masterd"')

    def test_authWrong(self) -> None:
        self.assertError(
            self.http.request("GET", "/api/v1/master", token="nope-nope-nope-nope"),
            401,
            "unauthorized",
        )
        self.assertError(
            self.http.request(
                "GET", "/api/v1/master", headers={"Authorization": ["Basic dXNlcjpwdw=="]}
            ),
            401,
            "unauthorized",
        )

    def test_authInsufficientRole(self) -> None:
        body = self.assertError(
            self.http.request("GET", "/api/v1/master", token=TOKENS["agent"]), 403, "forbidden"
        )
        self.assertIn("viewer", body["message"])
        body = self.assertError(
            self.probe.request("POST", "/probe/echo", token=TOKENS["viewer"], body=b"{}"),
            403,
            "forbidden",
        )

    def test_rolesGranted(self) -> None:
        for name in ("viewer", "operator", "admin"):
            response = self.http.request("GET", "/api/v1/master", token=TOKENS[name])
            self.assertEqual(response.code, 200, name)
        response = self.probe.request(
            "POST", "/probe/echo", token=TOKENS["admin"], body=b'{"a": 1}'
        )
        self.assertEqual((response.code, response.json()), (201, {"got": {"a": 1}}))

    def test_notFound(self) -> None:
        body = self.assertError(self.http.request("GET", "/api/v1/nothing"), 404, "not_found")
        self.assertIn("/api/v1/nothing", body["message"])

    def test_methodNotAllowed(self) -> None:
        response = self.http.request("DELETE", "/api/v1/master", token=TOKENS["admin"])
        body = self.assertError(response, 405, "method_not_allowed")
        self.assertEqual(body["details"]["allowed"], ["GET", "HEAD"])
        self.assertEqual(response.header("allow"), "GET, HEAD")

    def test_bodyTooLarge(self) -> None:
        """
        The limit holds before routing and authentication; the body is
        dropped, not stored.
        """
        response = self.probe.request(
            "POST", "/probe/echo", token=TOKENS["admin"], body=b"x" * 5000
        )
        body = self.assertError(response, 413, "payload_too_large")
        self.assertEqual(body["details"], {"limit_bytes": 4096})
        response = self.http.request("POST", "/api/v1/master", body=b"x" * 5000)
        self.assertError(response, 413, "payload_too_large")

    def test_chunkedBodyTooLarge(self) -> None:
        response = self.probe.request(
            "POST", "/probe/echo", token=TOKENS["admin"], body=b"y" * 9000, chunked=True
        )
        self.assertError(response, 413, "payload_too_large")

    def test_malformedJSON(self) -> None:
        body = self.assertError(
            self.probe.request("POST", "/probe/echo", token=TOKENS["admin"], body=b'{"a": '),
            400,
            "invalid_json",
        )
        self.assertIn("line 1", body["message"])
        self.assertError(
            self.probe.request("POST", "/probe/echo", token=TOKENS["admin"], body=b""),
            400,
            "invalid_json",
        )
        self.assertError(
            self.probe.request("POST", "/probe/echo", token=TOKENS["admin"], body=b"\xff{}"),
            400,
            "invalid_json",
        )
        self.assertError(
            self.probe.request(
                "POST",
                "/probe/echo",
                token=TOKENS["admin"],
                body=b"a=1",
                headers={"Content-Type": ["application/x-www-form-urlencoded"]},
            ),
            415,
            "unsupported_media_type",
        )

    def test_unhandledException(self) -> None:
        body = self.assertError(self.probe.request("GET", "/probe/boom"), 500, "internal_error")
        self.assertNotIn("on purpose", body["message"])
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)

    def test_counters(self) -> None:
        """
        After a known sequence of requests the counters say exactly that,
        grouped by route template, with the raising route's exception kept.
        """
        self.http.request("GET", "/healthz")
        self.http.request("GET", "/healthz")
        self.http.request("GET", "/nowhere")
        self.http.request("GET", "/api/v1/master")
        self.probe.request("GET", "/probe/items/17")
        self.probe.request("GET", "/probe/items/18")
        self.now += 2.5
        self.probe.request("GET", "/probe/boom")
        self.flushLoggedErrors(Boom)
        self.now += 10
        master = self.http.request("GET", "/api/v1/master", token=TOKENS["viewer"]).json()

        self.assertEqual(master["name"], "m1")
        self.assertEqual(master["started_at"], "2027-01-15T08:00:00.000Z")
        self.assertEqual(master["uptime_s"], 12.5)
        requests = master["requests"]
        self.assertEqual(requests["total"], 7)
        self.assertEqual(requests["in_flight"], 1)  # this very request
        self.assertEqual(
            [(r["method"], r["route"], r["status"], r["count"]) for r in requests["by_route"]],
            [
                ("GET", "/api/v1/master", 401, 1),
                ("GET", "/healthz", 200, 2),
                ("GET", "/probe/boom", 500, 1),
                ("GET", "/probe/items/<itemID>", 200, 2),
                ("GET", "<unmatched>", 404, 1),
            ],
        )
        for row in requests["by_route"]:
            self.assertGreaterEqual(row["max_ms"], row["avg_ms"])
            self.assertGreaterEqual(row["avg_ms"], 0)
        exceptions = master["exceptions"]
        self.assertEqual(exceptions["total"], 1)
        [recent] = exceptions["recent"]
        # A viewer sees what failed where; the message (which may hold SQL
        # or someone's data) is for admins.
        self.assertEqual(recent, {"at": recent["at"], "route": "/probe/boom", "type": "Boom"})
        self.assertTrue(recent["at"].endswith("Z"))
        self.assertEqual(master["database"]["queries"], 0)
        self.assertEqual(sorted(master["gc"]), ["collections", "pause_ms_max", "pause_ms_total"])
        self.assertEqual(master["scheduling"]["tasks_assigned"], 0)

        after = self.http.request("GET", "/api/v1/master", token=TOKENS["viewer"]).json()
        self.assertEqual(after["requests"]["total"], 8)
        self.assertEqual(after["requests"]["in_flight"], 1)
        asAdmin = self.http.request("GET", "/api/v1/master", token=TOKENS["admin"]).json()
        self.assertEqual(asAdmin["exceptions"]["recent"][0]["message"], "on purpose")

    def test_exceptionsKeepLatest50(self) -> None:
        for _ in range(55):
            self.probe.request("GET", "/probe/boom")
        self.flushLoggedErrors(Boom)
        master = self.http.request("GET", "/api/v1/master", token=TOKENS["viewer"]).json()
        self.assertEqual(master["exceptions"]["total"], 55)
        self.assertEqual(len(master["exceptions"]["recent"]), 50)

    def test_metricsProtected(self) -> None:
        self.assertError(self.http.request("GET", "/metrics"), 401, "unauthorized")
        self.http.request("GET", "/healthz")
        response = self.http.request("GET", "/metrics", token=TOKENS["viewer"])
        self.assertEqual(response.code, 200)
        self.assertTrue(response.header("content-type").startswith("text/plain"))
        text = response.body.decode()
        self.assertIn(
            'masterd_http_requests_total{method="GET",route="/healthz",status="200"} 1.0', text
        )
        self.assertIn('masterd_info{master="m1"', text)
        self.assertIn("masterd_database_ready 1.0", text)
        self.assertIn('masterd_gc_collections_total{generation="2"}', text)
        self.assertIn("masterd_tasks_assigned_total 0.0", text)
        self.assertIn('masterd_gc_pause_max_seconds{generation="2"}', text)

    def test_metricsPublic(self) -> None:
        api = MasterAPI(
            name="m1",
            stats=self.stats,
            auth=authenticator(),
            database=self.readiness,
            jobs=unconnectedJobs(),
            agents=unconnectedAgents(),
            publicMetrics=True,
        )
        http = MemoryHTTP(self, MasterSite(api.app.resource(), self.stats, 4096))
        self.assertEqual(http.request("GET", "/metrics").code, 200)


class RouteTemplateTests(SynchronousTestCase):
    def test_converters(self) -> None:
        self.assertEqual(routeTemplate("/api/v1/jobs/<int:id>"), "/api/v1/jobs/<id>")
        self.assertEqual(routeTemplate("/a/<string(length=2):x>/<y>"), "/a/<x>/<y>")


class GCStatsTests(SynchronousTestCase):
    def test_pausesByGeneration(self) -> None:
        """
        Each collection is counted under its generation, with its pause.
        """
        now = [10.0]
        stats = GCStats(clock=lambda: now[0])
        for generation, took in ((0, 0.001), (2, 0.5), (2, 0.25)):
            stats("start", {"generation": generation})
            now[0] += took
            stats("stop", {"generation": generation})
        self.assertEqual(
            stats.snapshot(),
            {
                "collections": [1, 0, 2],
                "pause_ms_total": [1.0, 0.0, 750.0],
                "pause_ms_max": [1.0, 0.0, 500.0],
            },
        )

    def test_installed(self) -> None:
        """
        Installed, it hears the real collector; uninstalled, it is gone.
        """
        stats = GCStats()
        stats.install()
        self.addCleanup(stats.uninstall)
        gc.collect()
        self.assertGreaterEqual(stats.collections[2], 1)
        stats.uninstall()
        self.assertNotIn(stats, gc.callbacks)


class ShieldedTests(SynchronousTestCase):
    """
    A route's work is not cut off when its client goes away.
    """

    def test_cancelLeavesTheWork(self) -> None:
        """
        Cancelling what Klein waits for fails the wait at once, and the
        work is not cancelled; its result goes nowhere.
        """
        cancelled: list[bool] = []
        work: Deferred[str] = Deferred(lambda _: cancelled.append(True))
        waiting = shielded(work)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(cancelled, [])
        work.callback("done")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_failureAfterwardsIsLogged(self) -> None:
        """
        The work failing after its client went away is logged, not lost.
        """
        work: Deferred[str] = Deferred()
        waiting = shielded(work)
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        work.errback(ZeroDivisionError())
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_passesResults(self) -> None:
        """
        Uncancelled, the wait has the work's result or failure.
        """
        work: Deferred[str] = Deferred()
        waiting = shielded(work)
        work.callback("answer")
        self.assertEqual(self.successResultOf(waiting), "answer")
        failing: Deferred[str] = Deferred()
        waitingToo = shielded(failing)
        failing.errback(KeyError("k"))
        self.failureResultOf(waitingToo, KeyError)

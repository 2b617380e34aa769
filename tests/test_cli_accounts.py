"""
masterctl's token, audit, webhook and agent credential commands: against a
fake opener (arguments, output, one-line errors), then against the real
master's HTTP application over a real database.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from masterd.client._admin import changes_text, parse_duration, parse_when
from masterd.client._context import UsageError
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from masterd.client import Client
from masterd.client.cli import Runtime, run

from ._api import API, TOKENS, startAPI
from .test_cli import NOW, Base
from .test_client import AGENT, Reply, agentDoc, error, page
from .test_client_accounts import SECRET, auditDoc, deliveryDoc, tokenDoc, webhookDoc

UTC_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


class ArgumentTests(Base):
    """
    Bad arguments: one line, status 2, and no request.
    """

    def assertOneLine(self, argv: list[str], message: str) -> None:
        err = self.assertFails(argv, 2, message)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertEqual(self.opener.sent, [])

    def test_help(self) -> None:
        code, out, _ = self.run_("--help")
        self.assertEqual(code, 0)
        for name in ["token", "audit", "webhook"]:
            self.assertIn(name, out)
        for argv in [["token", "--help"], ["webhook", "--help"], ["token", "create", "--help"]]:
            code, out, _ = self.run_(*argv)
            self.assertEqual(code, 0, argv)
            self.assertIn("usage: masterctl", out)

    def test_unknownRole(self) -> None:
        self.assertOneLine(
            ["token", "create", "alice", "--role", "boss"],
            "--role: unknown role 'boss'; one of viewer, user, operator, admin, agent",
        )

    def test_badDurations(self) -> None:
        self.assertOneLine(
            ["token", "create", "alice", "--role", "user", "--expires", "3x"],
            "--expires: '3x' is neither a duration (30d, 12h) nor an ISO 8601 time"
            " (2027-01-01T00:00:00Z)",
        )
        self.assertOneLine(
            ["token", "create", "alice", "--role", "user", "--expires", "0d"],
            "--expires: '0d' is now; give a time to come (30d, 12h)",
        )
        self.assertOneLine(
            ["token", "create", "alice", "--role", "user", "--expires", "2027-01-01"],
            "--expires: '2027-01-01' says no time zone: add one (Z for UTC, +01:00)",
        )
        self.assertOneLine(
            ["audit", "--since", "yesterday"],
            "--since: 'yesterday' is neither a duration (1h, 30m) nor an ISO 8601 time"
            " (2027-01-01T00:00:00Z)",
        )

    def test_badWebhooks(self) -> None:
        self.assertOneLine(
            ["webhook", "create", "ftp://hooks.example/", "--event", "job.done"],
            "a webhook's URL must be http:// or https://, not 'ftp://hooks.example/'",
        )
        self.assertOneLine(
            ["webhook", "create", "hooks.example", "--event", "job.done"],
            "a webhook's URL must be http:// or https://, not 'hooks.example'",
        )
        self.assertOneLine(
            ["webhook", "create", "http://h:99999/", "--event", "job.done"],
            "a webhook's URL: not a valid port in 'http://h:99999/'",
        )
        self.assertOneLine(
            ["webhook", "create", "http://h/", "--event", "job.done,job.dne"],
            "--event: unknown event 'job.dne'; one of job.done, job.failed, job.canceled,"
            " task.failed, agent.lost, agent.exception, master.down",
        )
        self.assertOneLine(["webhook", "create", "http://h/"], "--event: give at least one event")
        self.assertOneLine(
            ["webhook", "create", "http://h/", "--event", "job.done", "--secret-env", "NOPE"],
            "--secret-env: $NOPE is not set, or empty",
        )
        self.assertOneLine(
            ["webhook", "update", "3"],
            "nothing to change: give --new-url, --event, --secret, --description, --enable or"
            " --disable",
        )

    def test_argparseMistakes(self) -> None:
        for argv in [
            ["token"],
            ["token", "create", "alice"],
            ["token", "revoke", "abc"],
            ["webhook", "show", "0"],
            ["audit", "--limit", "-1"],
            ["webhook", "create", "http://h/", "--secret", "a", "--secret-env", "B"],
            ["agent", AGENT, "--disable", "--reset-credential"],
        ]:
            err = self.assertFails(argv, 2)
            self.assertIn("masterctl", err, argv)
        self.assertEqual(self.opener.sent, [])

    def test_webhookURLIsNotTheMasters(self) -> None:
        """
        The webhook's URL argument leaves the master's (--url) alone.
        """
        self.opener.on("POST", "/api/v1/webhooks", Reply(webhookDoc(), 201))
        code, _, _ = self.run_("webhook", "create", "https://hooks.example/farm",
                               "--event", "job.done", "--secret", "s")  # fmt: skip
        self.assertEqual(code, 0)
        self.assertEqual(self.opener.sent[0].url, "http://master.test:8080/api/v1/webhooks")

    def test_parseWhen(self) -> None:
        self.assertEqual(parse_duration("1h30m").total_seconds(), 5400)  # type: ignore[union-attr]
        self.assertEqual(parse_duration("2w").days, 14)  # type: ignore[union-attr]
        self.assertIsNone(parse_duration("1.5h"))
        self.assertEqual(parse_when("30d", "--expires", NOW, ahead=True),
                         datetime(2026, 12, 28, 23, 42, 7, tzinfo=UTC))  # fmt: skip
        self.assertEqual(parse_when("1h", "--since", NOW, ahead=False),
                         datetime(2026, 11, 28, 22, 42, 7, tzinfo=UTC))  # fmt: skip
        self.assertEqual(parse_when("2027-01-01T00:00:00Z", "--since", NOW, ahead=False),
                         datetime(2027, 1, 1, tzinfo=UTC))  # fmt: skip
        for text in ["", "99999999999d", "9999999999999999999999s"]:
            with self.assertRaises(UsageError):
                parse_when(text, "--since", NOW, ahead=False)


class TokenTests(Base):
    def test_create(self) -> None:
        self.opener.on("POST", "/api/v1/tokens", Reply(tokenDoc(secret=SECRET), 201))
        code, out, err = self.run_("token", "create", "alice", "--role", "user",
                                   "--description", "laptop")  # fmt: skip
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            self.opener.sent[0].body,
            {"user": "alice", "role": "user", "description": "laptop", "expires_at": None},
        )
        self.assertEqual(
            out,
            "token 7 created for alice (role user, never expires)\n"
            f"\n    {SECRET}\n\n"
            "This secret will not be shown again: keep it now (masterctl and the client read it"
            " from MASTERD_TOKEN).\n",
        )

    def test_createExpiring(self) -> None:
        """
        A duration is counted from now, and sent as an ISO 8601 UTC time.
        """
        self.opener.on(
            "POST",
            "/api/v1/tokens",
            Reply(tokenDoc(secret=SECRET, expires_at="2026-12-28T23:42:07.000Z"), 201),
        )
        code, out, _ = self.run_("token", "create", "ci", "--role", "operator", "--expires", "30d")
        self.assertEqual(code, 0)
        self.assertEqual(self.opener.sent[0].body["expires_at"], "2026-12-28T23:42:07.000Z")
        self.assertRegex(
            out.splitlines()[0], r"^token 7 created for alice \(role user, expires 2026-"
        )
        self.run_("token", "create", "ci", "--role", "operator", "--expires",
                  "2027-01-01T00:00:00+01:00")  # fmt: skip
        self.assertEqual(self.opener.sent[1].body["expires_at"], "2026-12-31T23:00:00.000Z")

    def test_createQuietAndJSON(self) -> None:
        self.opener.on("POST", "/api/v1/tokens", Reply(tokenDoc(secret=SECRET), 201))
        code, out, _ = self.run_("token", "create", "alice", "--role", "user", "-q")
        self.assertEqual((code, out), (0, f"{SECRET}\n"))
        code, out, _ = self.run_("token", "create", "alice", "--role", "user", "--json")
        self.assertEqual(json.loads(out), tokenDoc(secret=SECRET))

    def test_createRefused(self) -> None:
        self.opener.on(
            "POST",
            "/api/v1/tokens",
            error(400, "invalid_field", "expires_at: is in the past", field="expires_at"),
        )
        self.assertFails(
            ["token", "create", "a", "--role", "user", "--expires", "2020-01-01T00:00:00Z"],
            1,
            "expires_at: is in the past",
        )

    def test_list(self) -> None:
        self.opener.on(
            "GET",
            "/api/v1/tokens",
            page([tokenDoc(7), tokenDoc(8, user="ci", role="operator", description="",
                                        revoked_at="2026-11-29T00:00:00Z", active=False)]),
        )  # fmt: skip
        code, out, _ = self.run_("token", "list", "--revoked", "--user", "alice")
        self.assertEqual(code, 0)
        self.assertEqual(self.opener.sent[0].query,
                         {"user": "alice", "revoked": "true", "limit": "500"})  # fmt: skip
        lines = out.splitlines()
        self.assertEqual(lines[0].split(),
                         ["ID", "USER", "ROLE", "STATE", "CREATED", "BY", "EXPIRES",
                          "DESCRIPTION"])  # fmt: skip
        self.assertRegex(lines[1], r"^ 7  alice  user +active +\d{4}-.*  admin  never +laptop$")
        self.assertRegex(lines[2], r"^ 8  ci +operator  revoked  .*  never +-$")

    def test_listEmptyAndJSON(self) -> None:
        self.opener.on("GET", "/api/v1/tokens", page([]))
        code, out, err = self.run_("token", "list", "--user", "bob")
        self.assertEqual((code, out, err), (0, "", "masterctl: no tokens of bob\n"))
        self.opener.on("GET", "/api/v1/tokens", page([tokenDoc()]))
        code, out, _ = self.run_("--json", "token", "list")
        self.assertEqual(json.loads(out), {"items": [tokenDoc()]})

    def test_show(self) -> None:
        self.opener.on("GET", "/api/v1/tokens/7", tokenDoc())
        code, out, _ = self.run_("token", "show", "7")
        self.assertEqual(code, 0)
        self.assertTrue(out.startswith("token 7: alice\nrole         user\nstate        active\n"))
        self.assertIn("\nexpires      never\n", out)

    def test_revoke(self) -> None:
        self.opener.on("DELETE", "/api/v1/tokens/7", Reply(status=204))
        revoked = tokenDoc(active=False, revoked_by="admin", revoked_at="2026-11-29T00:00:00Z")
        self.opener.on("GET", "/api/v1/tokens/7", revoked)
        code, out, _ = self.run_("token", "revoke", "7")
        self.assertEqual(
            (code, out),
            (0, "token 7 of alice (role user) revoked: every master refuses it from now on\n"),
        )
        self.assertEqual(self.opener.paths(), ["DELETE /api/v1/tokens/7", "GET /api/v1/tokens/7"])

    def test_revokeRefused(self) -> None:
        self.opener.on("DELETE", "/api/v1/tokens/7",
                       error(409, "conflict", "token 7 is already revoked"))  # fmt: skip
        self.assertFails(["token", "revoke", "7"], 1, "token 7 is already revoked")
        self.opener.on("DELETE", "/api/v1/tokens/7", error(403, "forbidden",
                                                          "this needs the admin role"))  # fmt: skip
        self.assertFails(["token", "revoke", "7"], 1, "this needs the admin role")


class AuditTests(Base):
    def rows(self) -> list[dict[str, Any]]:
        return [
            auditDoc(1, action="job.submit", actor="ops", role="operator", token=None,
                     changes={"title": "shot 10", "frames": "1-10", "priority": 70}),
            auditDoc(2, action="job.pause", at="2026-11-28T23:41:00+00:00",
                     changes={"paused": True}),
            auditDoc(3, address=None),
        ]  # fmt: skip

    def test_table(self) -> None:
        self.opener.on("GET", "/api/v1/audit", page(self.rows()))
        code, out, err = self.run_("audit")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            out,
            "ID  TIME                  ACTOR  ACTION      RESOURCE         ADDRESS   CHANGES\n"
            " 1  2026-11-28T23:40:01Z  ops    job.submit  /api/v1/jobs/42  10.0.0.5  "
            'title="shot 10" frames=1-10 priority=70\n'
            " 2  2026-11-28T23:41:00Z  alice  job.pause   /api/v1/jobs/42  10.0.0.5  paused=true\n"
            " 3  2026-11-28T23:40:01Z  alice  job.cancel  /api/v1/jobs/42  -         -\n",
        )
        self.assertEqual(self.opener.sent[0].query, {"limit": "101"})

    def test_filters(self) -> None:
        self.opener.on("GET", "/api/v1/audit", page([]))
        code, out, err = self.run_("audit", "--actor", "alice", "--resource",
                                   "/api/v1/jobs/42", "--action", "job.*", "--since", "1h",
                                   "--after", "9")  # fmt: skip
        self.assertEqual((code, out, err), (0, "", "masterctl: no audit rows match\n"))
        self.assertEqual(
            self.opener.sent[0].query,
            {"actor": "alice", "resource": "/api/v1/jobs/42", "action": "job.*",
             "since": "2026-11-28T22:42:07.000Z", "after": "9", "limit": "101"},
        )  # fmt: skip
        code, _, err = self.run_("audit")
        self.assertEqual(err, "masterctl: no audit rows\n")

    def test_limit(self) -> None:
        """
        One row more than asked for is read, to say that there are more
        and where to go on from.
        """
        self.opener.on("GET", "/api/v1/audit", page(self.rows()))
        code, out, err = self.run_("audit", "--limit", "2")
        self.assertEqual(code, 0)
        self.assertEqual(len(out.splitlines()), 3)
        self.assertEqual(
            err, "masterctl: more rows match: --after 2 for the next ones, --limit 0 for all\n"
        )
        self.assertEqual(self.opener.sent[0].query, {"limit": "3"})
        code, out, err = self.run_("audit", "--limit", "0")
        self.assertEqual((len(out.splitlines()), err), (4, ""))
        self.assertEqual(self.opener.sent[1].query, {"limit": "500"})

    def test_json(self) -> None:
        self.opener.on("GET", "/api/v1/audit", page(self.rows()))
        _, out, _ = self.run_("audit", "--json", "--limit", "2")
        self.assertEqual(json.loads(out), {"items": self.rows()[:2]})

    def test_changesText(self) -> None:
        self.assertEqual(changes_text({}), "-")
        self.assertEqual(
            changes_text({"tags": ["a", "b"], "limits": {"max_tasks": None}, "user": "a@b.c"}),
            'tags=["a","b"] limits={"max_tasks":null} user=a@b.c',
        )
        self.assertEqual(changes_text({"t": "x\ny"}), 't="x\\ny"')
        self.assertEqual(len(changes_text({"title": "x" * 200})), 80)

    def test_follow(self) -> None:
        """
        The rows there are, then new ones as they come (after the last
        id read), through a transient failure, until Ctrl-C.
        """
        self.opener.on("GET", "/api/v1/audit?limit=500", page(self.rows()[:2]))
        self.opener.on(
            "GET",
            "/api/v1/audit?after=2&limit=500",
            page([]),
            error(503, "database_unavailable", "the database is not available"),
            page([auditDoc(3, actor="somebody-with-a-long-name")]),
        )
        self.opener.on("GET", "/api/v1/audit?after=3&limit=500", KeyboardInterrupt())
        code, out, err = self.run_("audit", "-f", "--interval", "5", "--limit", "1")
        self.assertEqual(code, 130)
        lines = out.splitlines()
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[0].split(), ["ID", "TIME", "ACTOR", "ACTION", "RESOURCE",
                                            "ADDRESS", "CHANGES"])  # fmt: skip
        self.assertRegex(lines[1], rf"^     1  {UTC_TIME}  ops   +job.submit  ")
        self.assertIn(" somebody-with-a-long-name  job.cancel  ", lines[3])
        self.assertIn("the database is not available (trying again in 5s)", err)
        self.assertEqual(self.terminal.slept, [5.0, 5.0, 5.0, 5.0])

    def test_followJSONLines(self) -> None:
        self.opener.on("GET", "/api/v1/audit?limit=500", page(self.rows()))
        self.opener.on("GET", "/api/v1/audit?after=3&limit=500", KeyboardInterrupt())
        code, out, _ = self.run_("--json", "audit", "--follow")
        self.assertEqual(code, 130)
        self.assertEqual([json.loads(line) for line in out.splitlines()], self.rows())

    def test_followGivesUpOnOtherErrors(self) -> None:
        self.opener.on("GET", "/api/v1/audit", error(403, "forbidden", "needs operator"))
        self.assertFails(["audit", "--follow"], 1, "needs operator")


class WebhookTests(Base):
    def test_create(self) -> None:
        self.opener.on("POST", "/api/v1/webhooks", Reply(webhookDoc(), 201))
        self.terminal.environ["HOOK_SECRET"] = "from-the-environment"
        code, out, err = self.run_(
            "webhook", "create", "https://hooks.example/farm", "--event", "job.done",
            "--event", "job.failed,job.done", "--secret-env", "HOOK_SECRET",
            "--description", "chat",
        )  # fmt: skip
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(
            self.opener.sent[0].body,
            {"url": "https://hooks.example/farm", "events": ["job.done", "job.failed"],
             "secret": "from-the-environment", "description": "chat", "enabled": True},
        )  # fmt: skip
        self.assertTrue(
            out.startswith("webhook 3 created\nurl          https://hooks.example/farm\n")
        )
        self.assertIn("\nevents       job.done, job.failed\n", out)
        self.assertNotIn("from-the-environment", out)

    def test_createMakesUpASecret(self) -> None:
        """
        Without --secret, masterctl makes one up and prints it, once: the
        master never shows it.
        """
        self.opener.on("POST", "/api/v1/webhooks", Reply(webhookDoc(enabled=False), 201))
        code, out, _ = self.run_("webhook", "create", "http://h/", "--event", "agent.lost",
                                 "--disabled")  # fmt: skip
        self.assertEqual(code, 0)
        body = self.opener.sent[0].body
        self.assertEqual((body["enabled"], body["events"]), (False, ["agent.lost"]))
        self.assertGreaterEqual(len(body["secret"]), 40)
        self.assertIn(f"\n    {body['secret']}\n", out)
        self.assertIn("It will not be shown again", out)
        code, out, _ = self.run_("--json", "webhook", "create", "http://h/", "--event", "job.done")
        self.assertEqual(json.loads(out)["secret"], self.opener.sent[1].body["secret"])
        code, out, _ = self.run_("--json", "webhook", "create", "http://h/", "--event", "job.done",
                                 "--secret", "mine")  # fmt: skip
        self.assertNotIn("secret", json.loads(out))

    def test_listAndShow(self) -> None:
        other = webhookDoc(4, pending=0, enabled=False, description="")
        self.opener.on("GET", "/api/v1/webhooks", page([webhookDoc(3), other]))
        self.opener.on("GET", "/api/v1/webhooks/3", webhookDoc())
        _, out, _ = self.run_("webhook", "list")
        self.assertEqual(
            out,
            "ID  URL                         EVENTS               ENABLED  PENDING  DESCRIPTION\n"
            " 3  https://hooks.example/farm  job.done,job.failed  yes            2  chat\n"
            " 4  https://hooks.example/farm  job.done,job.failed  no             0  -\n",
        )
        _, out, _ = self.run_("webhook", "show", "3")
        self.assertTrue(out.startswith("webhook 3\nurl          https://hooks.example/farm\n"))
        self.assertIn("\npending      2\n", out)
        _, out, _ = self.run_("--json", "webhook", "show", "3")
        self.assertEqual(json.loads(out), webhookDoc())

    def test_listEmpty(self) -> None:
        self.opener.on("GET", "/api/v1/webhooks", page([]))
        self.assertEqual(self.run_("webhook", "list"), (0, "", "masterctl: no webhooks\n"))

    def test_update(self) -> None:
        self.opener.on("PATCH", "/api/v1/webhooks/3", webhookDoc(enabled=False))
        code, out, _ = self.run_("webhook", "update", "3", "--disable", "--new-url", "http://b/",
                                 "--event", "job.done", "--secret", "new")  # fmt: skip
        self.assertEqual(code, 0)
        self.assertEqual(self.opener.sent[0].body,
                         {"url": "http://b/", "events": ["job.done"], "secret": "new",
                          "enabled": False})  # fmt: skip
        self.assertTrue(out.startswith("webhook 3 changed\n"))

    def test_delete(self) -> None:
        self.opener.on("DELETE", "/api/v1/webhooks/3", Reply(status=204))
        self.assertEqual(self.run_("webhook", "delete", "3"), (0, "webhook 3 deleted\n", ""))
        self.opener.on("DELETE", "/api/v1/webhooks/3", error(404, "not_found", "no webhook 3"))
        self.assertFails(["webhook", "delete", "3"], 1, "no webhook 3")

    def test_deliveries(self) -> None:
        href = "/api/v1/webhooks/3/deliveries"
        self.opener.on("GET", href, page([
            deliveryDoc(11),
            deliveryDoc(12, state="delivered", status=200, error=None, next_attempt_at=None,
                        delivered_at="2026-11-28T23:22:00Z", attempts=4),
        ]))  # fmt: skip
        code, out, _ = self.run_("webhook", "deliveries", "3", "--state", "pending")
        self.assertEqual(code, 0)
        self.assertEqual(self.opener.sent[0].query, {"state": "pending", "limit": "50"})
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "EVENT", "STATE", "CREATED", "TRIES", "STATUS",
                                            "DELIVERED", "NEXT", "TRY", "ERROR"])  # fmt: skip
        self.assertRegex(
            lines[1], r"^0b7c2c4e-\S+11  job.failed  pending  .* 2  +500  -  .* HTTP 500$"
        )
        self.assertRegex(
            lines[2], r"^0b7c2c4e-\S+12  job.failed  delivered .* 4  +200  \d{4}-.* -$"
        )
        self.opener.on("GET", href, page([]))
        code, out, err = self.run_("webhook", "deliveries", "3", "--state", "failed")
        self.assertEqual(err, "masterctl: webhook 3 has no deliveries in state failed\n")


class CredentialTests(Base):
    def test_reset(self) -> None:
        self.opener.on("GET", f"/api/v1/agents/{AGENT}", agentDoc())
        self.opener.on("POST", f"/api/v1/agents/{AGENT}/credential/reset", agentDoc())
        self.opener.on("GET", f"/api/v1/agents/{AGENT}/tasks", page([]))
        self.opener.on("GET", f"/api/v1/agents/{AGENT}/failures", page([]))
        code, out, err = self.run_("agent", AGENT, "--reset-credential")
        self.assertEqual(code, 0)
        self.assertEqual(
            err,
            f"masterctl: agent {AGENT}'s credential is reset: its next hello with an enrollment"
            " token (role agent) enrolls it again\n",
        )
        self.assertTrue(out.startswith(f"agent {AGENT}: node-017\n"))
        self.assertEqual(
            self.opener.paths()[:2],
            [f"GET /api/v1/agents/{AGENT}", f"POST /api/v1/agents/{AGENT}/credential/reset"],
        )

    def test_refused(self) -> None:
        self.opener.on("GET", f"/api/v1/agents/{AGENT}", agentDoc())
        self.opener.on("POST", f"/api/v1/agents/{AGENT}/credential/reset",
                       error(403, "forbidden", "this needs the admin role; token 'ops' has"
                             " operator"))  # fmt: skip
        self.assertFails(["agent", AGENT, "--reset-credential"], 1,
                         "this needs the admin role; token 'ops' has operator")  # fmt: skip


# -- against the real master ------------------------------------------------------


class RealMasterTests(TestCase):
    """
    masterctl against the master's real HTTP application over a real
    database (masterctl blocks: it runs in a thread while the reactor
    serves the master).
    """

    timeout = 60

    def cli(
        self,
        api: API,
        token: str,
        *argv: str,
        env: dict[str, str] | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        environ = {"MASTERD_URL": api.base, "MASTERD_TOKEN": token, **(env or {})}
        runtime = Runtime(out=out, err=err, environ=environ, tty=False, sleep=sleep)
        status = run(list(argv), runtime)
        return status, out.getvalue(), err.getvalue()

    def assertOneLineError(self, result: tuple[int, str, str], pattern: str) -> None:
        status, out, err = result
        self.assertEqual((status, out), (1, ""), err)
        self.assertRegex(err, f"^masterctl: {pattern}\n$")

    async def test_tokenLifecycle(self) -> None:
        """
        A token created with masterctl works at once with its role, is
        listed without its secret, and is refused once revoked.
        """
        api = await startAPI(self)
        admin = TOKENS["admin"]

        def scenario() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            status, out, err = self.cli(api, admin, "token", "create", "alice", "--role", "user",
                                        "--description", "laptop", "--expires", "30d")  # fmt: skip
            seen["create"] = (status, err, out)
            match = re.search(r"^token (\d+) created.*\n\n    (mdt_\S+)$", out, re.MULTILINE)
            assert match is not None, out
            tokenID, secret = seen["id"], seen["secret"] = match.groups()
            seen["submit"] = self.cli(api, secret, "submit", "-q", "--title", "mine",
                                      "--frames", "1-2", "--", "render", "{frame}")  # fmt: skip
            seen["jobs"] = self.cli(api, secret, "jobs")
            seen["list"] = self.cli(api, admin, "token", "list")
            seen["listJSON"] = self.cli(api, admin, "--json", "token", "list")
            seen["forbidden"] = self.cli(api, secret, "token", "list")
            seen["revoke"] = self.cli(api, admin, "token", "revoke", tokenID)
            deadline = time.monotonic() + 3
            while True:
                refused = self.cli(api, secret, "jobs")
                if refused[0] != 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            seen["refused"] = refused
            seen["again"] = self.cli(api, admin, "token", "revoke", tokenID)
            seen["listed"] = self.cli(api, admin, "token", "list")
            seen["listedRevoked"] = self.cli(api, admin, "token", "list", "--revoked")
            seen["past"] = self.cli(api, admin, "token", "create", "bob", "--role", "viewer",
                                    "--expires", "2020-01-01T00:00:00Z")  # fmt: skip
            seen["badUser"] = self.cli(api, admin, "token", "create", "no spaces", "--role", "user")
            seen["quiet"] = self.cli(
                api, admin, "token", "create", "ci", "--role", "operator", "-q"
            )
            return seen

        seen = await deferToThread(scenario)
        status, err, out = seen["create"]
        self.assertEqual((status, err), (0, ""))
        self.assertRegex(out, r"^token \d+ created for alice \(role user, expires \d{4}-")
        self.assertIn("This secret will not be shown again", out)
        tokenID, secret = seen["id"], seen["secret"]

        status, out, _ = seen["submit"]
        self.assertEqual(status, 0)
        status, out, _ = seen["jobs"]
        self.assertEqual(status, 0)
        self.assertRegex(out.splitlines()[1], r"^ *1  queued +50 +0/2  alice  mine$")

        status, out, _ = seen["list"]
        self.assertEqual(status, 0)
        self.assertRegex(
            out.splitlines()[1], rf"^ *{tokenID}  alice  user  active  .*  admin  .*  laptop$"
        )
        self.assertNotIn(secret, out)
        status, out, _ = seen["listJSON"]
        [item] = json.loads(out)["items"]
        self.assertNotIn("secret", item)
        self.assertNotIn(secret, out)
        self.assertOneLineError(seen["forbidden"], "this needs the admin role.*")

        self.assertEqual(
            seen["revoke"],
            (
                0,
                f"token {tokenID} of alice (role user) revoked: every master refuses it from now"
                " on\n",
                "",
            ),
        )
        self.assertOneLineError(seen["refused"], ".*")
        self.assertNotIn("Traceback", seen["refused"][2])
        self.assertOneLineError(seen["again"], f"token {tokenID} is already revoked")
        self.assertEqual(seen["listed"], (0, "", "masterctl: no tokens\n"))
        status, out, _ = seen["listedRevoked"]
        self.assertRegex(out.splitlines()[1], rf"^ *{tokenID}  alice  user  revoked ")

        self.assertOneLineError(seen["past"], "expires_at: .*past.*")
        self.assertOneLineError(seen["badUser"], "user: .*")
        status, out, _ = seen["quiet"]
        self.assertEqual(status, 0)
        self.assertRegex(out, r"^mdt_\S+\n$")
        # The quiet one works too.
        status, _, _ = await deferToThread(self.cli, api, out.strip(), "jobs")
        self.assertEqual(status, 0)

    async def test_auditTrail(self) -> None:
        """
        A sequence of changes made with masterctl, read back from the audit
        trail in order, with filters, and followed.
        """
        api = await startAPI(self)
        operator, admin = TOKENS["operator"], TOKENS["admin"]

        def scenario() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            _, out, _ = self.cli(api, operator, "submit", "-q", "--frames", "1-4", "--",
                                      "render", "{frame}")  # fmt: skip
            job = seen["job"] = int(out)
            for argv in [
                ["pause", str(job)],
                ["resume", str(job)],
                ["cancel", str(job)],
                ["resume", str(job)],
            ]:  # the last one is refused: no row
                self.cli(api, operator, *argv)
            self.cli(api, admin, "token", "create", "alice", "--role", "viewer")
            seen["all"] = self.cli(api, operator, "audit")
            seen["json"] = self.cli(api, admin, "--json", "audit")
            seen["byActor"] = self.cli(api, admin, "audit", "--actor", "admin")
            seen["byKind"] = self.cli(api, admin, "audit", "--action", "job.*", "--since", "1h")
            seen["byResource"] = self.cli(api, admin, "audit", "--resource", f"/api/v1/jobs/{job}",
                                          "--limit", "2")  # fmt: skip
            seen["future"] = self.cli(api, admin, "audit", "--since", "2999-01-01T00:00:00Z")
            seen["viewer"] = self.cli(api, TOKENS["viewer"], "audit")

            # Followed: what is there, then a change made while it waits.
            sleeps: list[float] = []

            def sleep(seconds: float) -> None:
                sleeps.append(seconds)
                if len(sleeps) == 1:
                    Client(api.base, operator).job(job).delete()
                else:
                    raise KeyboardInterrupt

            seen["follow"] = self.cli(api, admin, "audit", "-f", "--action", "job.*",
                                      sleep=sleep)  # fmt: skip
            return seen

        seen = await deferToThread(scenario)
        job = seen["job"]
        status, out, err = seen["all"]
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "TIME", "ACTOR", "ACTION", "RESOURCE",
                                            "ADDRESS", "CHANGES"])  # fmt: skip
        rows = [line.split(None, 6) for line in lines[1:]]
        self.assertEqual(
            [(r[2], r[3], r[4]) for r in rows],
            [("operator", "job.submit", f"/api/v1/jobs/{job}"),
             ("operator", "job.pause", f"/api/v1/jobs/{job}"),
             ("operator", "job.resume", f"/api/v1/jobs/{job}"),
             ("operator", "job.cancel", f"/api/v1/jobs/{job}"),
             ("admin", "token.create", "/api/v1/tokens/1")],
        )  # fmt: skip
        for row in rows:
            self.assertRegex(row[1], f"^{UTC_TIME}$")
            self.assertEqual(row[5], "127.0.0.1")
        for change in ["user=alice", "role=viewer", 'description=""', "expires_at=null"]:
            self.assertIn(change, rows[4][6])
        self.assertIn("paused=true", rows[1][6])

        items = json.loads(seen["json"][1])["items"]
        self.assertEqual(
            [i["action"] for i in items],
            ["job.submit", "job.pause", "job.resume", "job.cancel", "token.create"],
        )
        self.assertEqual(items[4]["actor"], "admin")

        self.assertEqual([line.split()[3] for line in seen["byActor"][1].splitlines()[1:]],
                         ["token.create"])  # fmt: skip
        self.assertEqual(len(seen["byKind"][1].splitlines()), 5)
        status, out, err = seen["byResource"]
        self.assertEqual(len(out.splitlines()), 3)
        self.assertRegex(err, r"^masterctl: more rows match: --after \d+ for the next ones")
        self.assertEqual(seen["future"], (0, "", "masterctl: no audit rows match\n"))
        self.assertOneLineError(seen["viewer"], "this needs the operator role.*")

        status, out, err = seen["follow"]
        self.assertEqual((status, err), (130, "\n"))
        actions = [line.split()[3] for line in out.splitlines()[1:]]
        self.assertEqual(actions, ["job.submit", "job.pause", "job.resume", "job.cancel",
                                   "job.delete"])  # fmt: skip

    async def test_webhooks(self) -> None:
        api = await startAPI(self)
        admin = TOKENS["admin"]

        def scenario() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            seen["create"] = self.cli(
                api, admin, "--json", "webhook", "create", "http://127.0.0.1:9/hook",
                "--event", "job.done", "--event", "job.failed", "--secret-env", "HOOK",
                env={"HOOK": "hook-secret-0123456789"},
            )  # fmt: skip
            seen["made"] = self.cli(api, admin, "webhook", "create", "https://hooks.example/b",
                                    "--event", "agent.lost")  # fmt: skip
            seen["list"] = self.cli(api, admin, "webhook", "list")
            seen["listJSON"] = self.cli(api, admin, "--json", "webhook", "list")
            seen["show"] = self.cli(api, admin, "webhook", "show", "1")
            seen["update"] = self.cli(api, admin, "--json", "webhook", "update", "1",
                                      "--event", "job.canceled")  # fmt: skip
            # A job canceled: one event for the webhook, pending (no sender here).
            client = Client(api.base, admin)
            job = client.submit(title="t", command=["r"], frames="1")
            job.cancel()
            seen["deliveries"] = self.cli(api, admin, "webhook", "deliveries", "1")
            seen["none"] = self.cli(api, admin, "webhook", "deliveries", "1", "--state",
                                    "delivered")  # fmt: skip
            seen["disable"] = self.cli(api, admin, "webhook", "update", "1", "--disable")
            seen["badEvent"] = self.cli(api, admin, "webhook", "create", "http://h/",
                                        "--event", "job.nope")  # fmt: skip
            seen["operator"] = self.cli(api, TOKENS["operator"], "webhook", "list")
            seen["delete"] = self.cli(api, admin, "webhook", "delete", "1")
            seen["gone"] = self.cli(api, admin, "webhook", "show", "1")
            seen["audit"] = self.cli(api, admin, "audit", "--action", "webhook.*")
            return seen

        seen = await self.inThread(scenario)
        status, out, err = seen["create"]
        self.assertEqual((status, err), (0, ""), out)
        created = json.loads(out)
        self.assertEqual(created["events"], ["job.done", "job.failed"])
        self.assertNotIn("secret", created)
        status, out, _ = seen["made"]
        made = re.search(r"^    (\S+)$", out, re.MULTILINE)
        assert made is not None, out
        for name in ["list", "listJSON", "show", "update", "deliveries"]:
            self.assertNotIn("hook-secret-0123456789", seen[name][1], name)
            self.assertNotIn(made.group(1), seen[name][1], name)
        self.assertRegex(
            seen["list"][1].splitlines()[1],
            r"^ 1  http://127.0.0.1:9/hook  job.done,job.failed  yes ",
        )
        self.assertIn("job.done, job.failed", seen["show"][1])
        updated = json.loads(seen["update"][1])
        self.assertEqual((updated["enabled"], updated["events"]), (True, ["job.canceled"]))
        status, out, err = seen["deliveries"]
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        self.assertRegex(lines[1], r"^[0-9a-f-]{36}  job.canceled  pending  ")
        self.assertEqual(
            seen["none"], (0, "", "masterctl: webhook 1 has no deliveries in state delivered\n")
        )
        self.assertRegex(seen["disable"][1], r"^webhook 1 changed\n(.*\n)*enabled +no\n")
        self.assertEqual(seen["badEvent"][0], 2)
        self.assertOneLineError(seen["operator"], "this needs the admin role.*")
        self.assertEqual(seen["delete"], (0, "webhook 1 deleted\n", ""))
        self.assertOneLineError(seen["gone"], ".*")
        self.assertGreaterEqual(len(seen["audit"][1].splitlines()), 4)

    async def test_resetCredential(self) -> None:
        api = await startAPI(self)
        await api.pool.query("INSERT INTO agents (id, hostname) VALUES (%s, 'node-1')", (AGENT,))

        def scenario() -> dict[str, Any]:
            return {
                "reset": self.cli(api, TOKENS["admin"], "agent", "node-1", "--reset-credential"),
                "operator": self.cli(api, TOKENS["operator"], "agent", AGENT[:8],
                                     "--reset-credential"),
                "audit": self.cli(api, TOKENS["admin"], "--json", "audit", "--resource",
                                  f"/api/v1/agents/{AGENT}"),
            }  # fmt: skip

        seen = await self.inThread(scenario)
        status, out, err = seen["reset"]
        self.assertEqual(status, 0, err)
        self.assertTrue(out.startswith(f"agent {AGENT}: node-1\n"))
        self.assertIn("credential is reset", err)
        self.assertOneLineError(seen["operator"], "this needs the admin role.*")
        items = json.loads(seen["audit"][1])["items"]
        self.assertEqual(len(items), 1)
        self.assertEqual(items[0]["actor"], "admin")

    async def inThread(self, scenario: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await deferToThread(scenario)
        return result

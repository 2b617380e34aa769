"""
The client library's tokens, audit trail, webhooks and agent credentials
against a fake opener: the requests sent, and the models read back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from masterd.client import (
    EVENTS,
    ROLES,
    Agent,
    AuditEntry,
    Delivery,
    MasterdError,
    Token,
    Webhook,
)

from .test_client import AGENT, FakeOpener, Reply, agentDoc, clientWith, error, page

SECRET = "mdt_s3cr3t-0123456789abcdefghijklmnopqrstuvwxyz"


def tokenDoc(tokenID: int = 7, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": tokenID,
        "href": f"/api/v1/tokens/{tokenID}",
        "user": "alice",
        "role": "user",
        "description": "laptop",
        "created_at": "2026-11-28T23:00:00.000Z",
        "created_by": "admin",
        "expires_at": None,
        "revoked_at": None,
        "revoked_by": None,
        "active": True,
    }
    document.update(changes)
    return document


def auditDoc(entryID: int = 1, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": entryID,
        "at": "2026-11-28T23:40:01.250Z",
        "actor": "alice",
        "role": "user",
        "token": {"id": 7, "href": "/api/v1/tokens/7"},
        "action": "job.cancel",
        "resource": "/api/v1/jobs/42",
        "changes": {},
        "address": "10.0.0.5",
        "master": "master-1",
    }
    document.update(changes)
    return document


def webhookDoc(webhookID: int = 3, **changes: Any) -> dict[str, Any]:
    href = f"/api/v1/webhooks/{webhookID}"
    document: dict[str, Any] = {
        "id": webhookID,
        "href": href,
        "url": "https://hooks.example/farm",
        "events": ["job.done", "job.failed"],
        "description": "chat",
        "enabled": True,
        "created_at": "2026-11-28T23:10:00.000Z",
        "created_by": "admin",
        "deliveries": f"{href}/deliveries",
        "pending": 2,
    }
    document.update(changes)
    return document


def deliveryDoc(deliveryID: int = 11, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": f"0b7c2c4e-5d1a-4f0e-9a61-{deliveryID:012d}",
        "event": "job.failed",
        "state": "pending",
        "created_at": "2026-11-28T23:20:00.000Z",
        "attempts": 2,
        "next_attempt_at": "2026-11-28T23:21:00.000Z",
        "delivered_at": None,
        "status": 500,
        "error": "HTTP 500",
        "tries": [
            {
                "at": "2026-11-28T23:20:00.100Z",
                "status": 500,
                "error": "HTTP 500",
                "duration_ms": 12,
                "master": "master-1",
            },
            {
                "at": "2026-11-28T23:20:30.100Z",
                "status": 500,
                "error": "HTTP 500",
                "duration_ms": 9,
                "master": "master-2",
            },
        ],
        "body": {"event": "job.failed", "job": {"id": 42}},
    }
    document.update(changes)
    return document


class Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.opener = FakeOpener()
        self.client = clientWith(self.opener)


class TokenTests(Case):
    def test_create(self) -> None:
        self.opener.on("POST", "/api/v1/tokens", Reply(tokenDoc(secret=SECRET), 201))
        token = self.client.create_token("alice", "user", description="laptop")
        self.assertEqual(
            self.opener.sent[0].body,
            {"user": "alice", "role": "user", "description": "laptop", "expires_at": None},
        )
        self.assertIsInstance(token, Token)
        self.assertEqual((token.id, token.user, token.role, token.secret),
                         (7, "alice", "user", SECRET))  # fmt: skip
        self.assertEqual((token.state, token.active, token.created_by), ("active", True, "admin"))
        self.assertEqual(token.created_at, datetime(2026, 11, 28, 23, tzinfo=UTC))
        # A repr ends up in logs: never the secret.
        self.assertNotIn(SECRET, repr(token))

    def test_createExpiring(self) -> None:
        self.opener.on("POST", "/api/v1/tokens", Reply(tokenDoc(secret=SECRET), 201))
        paris = timezone(timedelta(hours=1))
        self.client.create_token("ci", "operator", expires_at=datetime(2027, 1, 1, 1, tzinfo=paris))
        self.client.create_token("ci", "operator", expires_at="2027-01-01T00:00:00+01:00")
        self.assertEqual(
            [s.body["expires_at"] for s in self.opener.sent],
            ["2027-01-01T00:00:00.000Z", "2027-01-01T00:00:00+01:00"],
        )

    def test_createNaiveExpiry(self) -> None:
        """
        A naive datetime could mean any zone: refused before any request.
        """
        with self.assertRaises(ValueError):
            self.client.create_token("ci", "user", expires_at=datetime(2027, 1, 1))
        self.assertEqual(self.opener.sent, [])

    def test_createRefused(self) -> None:
        self.opener.on(
            "POST",
            "/api/v1/tokens",
            error(400, "invalid_field", "role: must be one of ...", field="role"),
        )
        with self.assertRaises(MasterdError) as caught:
            self.client.create_token("alice", "boss")
        self.assertEqual(
            (caught.exception.status, caught.exception.details), (400, {"field": "role"})
        )

    def test_listEveryPage(self) -> None:
        self.opener.on("GET", "/api/v1/tokens", page([tokenDoc(1)], "/api/v1/tokens?after=1"))
        self.opener.on("GET", "/api/v1/tokens?after=1", page([tokenDoc(2)]))
        tokens = self.client.tokens(user="alice", revoked=True, limit=1)
        self.assertEqual(self.opener.sent, [])  # nothing before the iteration
        self.assertEqual([t.id for t in tokens], [1, 2])
        self.assertEqual(
            self.opener.sent[0].query, {"user": "alice", "revoked": "true", "limit": "1"}
        )
        self.assertEqual(self.opener.paths(), ["GET /api/v1/tokens", "GET /api/v1/tokens"])

    def test_listUnrevoked(self) -> None:
        self.opener.on("GET", "/api/v1/tokens", page([]))
        self.assertEqual(list(self.client.tokens()), [])
        self.assertEqual(self.opener.sent[0].query, {"limit": "100"})

    def test_states(self) -> None:
        revoked = Token(None, tokenDoc(active=False, revoked_at="2026-11-29T00:00:00Z"))
        expired = Token(None, tokenDoc(active=False, expires_at="2026-11-29T00:00:00Z"))
        self.assertEqual((revoked.state, expired.state), ("revoked", "expired"))
        self.assertEqual(expired.expires_at, datetime(2026, 11, 29, tzinfo=UTC))
        self.assertIsNone(Token(None, tokenDoc()).secret)

    def test_getAndRevoke(self) -> None:
        self.opener.on("GET", "/api/v1/tokens/7", tokenDoc())
        self.opener.on("DELETE", "/api/v1/tokens/7", Reply(status=204))
        self.assertEqual(self.client.token(7).user, "alice")
        self.assertIsNone(self.client.revoke_token(7))
        self.assertEqual(self.opener.paths(), ["GET /api/v1/tokens/7", "DELETE /api/v1/tokens/7"])

    def test_modelRevoke(self) -> None:
        """
        C{token.revoke()} revokes, then reads the token again; a fresh
        token keeps its secret.
        """
        self.opener.on("POST", "/api/v1/tokens", Reply(tokenDoc(secret=SECRET), 201))
        self.opener.on("DELETE", "/api/v1/tokens/7", Reply(status=204))
        self.opener.on(
            "GET", "/api/v1/tokens/7", tokenDoc(active=False, revoked_at="2026-11-29T00:00:00Z")
        )
        token = self.client.create_token("alice", "user")
        self.assertIs(token.revoke(), token)
        self.assertEqual((token.state, token.secret), ("revoked", SECRET))

    def test_revokeTwice(self) -> None:
        self.opener.on(
            "DELETE",
            "/api/v1/tokens/7",
            error(409, "conflict", "token 7 is already revoked", state="revoked"),
        )
        with self.assertRaises(MasterdError) as caught:
            self.client.revoke_token(7)
        self.assertEqual(caught.exception.code, "conflict")
        self.assertEqual(caught.exception.details, {"state": "revoked"})

    def test_roles(self) -> None:
        self.assertEqual(ROLES, ("viewer", "user", "operator", "admin", "agent"))


class AuditTests(Case):
    def test_filtersAndPages(self) -> None:
        self.opener.on("GET", "/api/v1/audit", page([auditDoc(1)], "/api/v1/audit?after=1&limit=1"))
        self.opener.on("GET", "/api/v1/audit?after=1&limit=1", page([auditDoc(2)]))
        since = datetime(2026, 11, 28, 23, 30, tzinfo=UTC)
        entries = list(
            self.client.audit(
                actor="alice", resource="/api/v1/jobs/42", action="job.*", since=since, limit=1
            )
        )
        self.assertEqual([e.id for e in entries], [1, 2])
        self.assertEqual(
            self.opener.sent[0].query,
            {"actor": "alice", "resource": "/api/v1/jobs/42", "action": "job.*",
             "since": "2026-11-28T23:30:00.000Z", "limit": "1"},
        )  # fmt: skip

    def test_after(self) -> None:
        self.opener.on("GET", "/api/v1/audit", page([]))
        list(self.client.audit(after=12, since="2026-11-28T23:30:00+01:00"))
        self.assertEqual(
            self.opener.sent[0].query,
            {"after": "12", "since": "2026-11-28T23:30:00+01:00", "limit": "100"},
        )

    def test_naiveSince(self) -> None:
        with self.assertRaises(ValueError):
            list(self.client.audit(since=datetime(2026, 11, 28)))

    def test_entry(self) -> None:
        self.opener.on("GET", "/api/v1/audit", page([auditDoc(changes={"priority": 70})]))
        self.opener.on("GET", "/api/v1/tokens/7", tokenDoc())
        [entry] = self.client.audit()
        self.assertIsInstance(entry, AuditEntry)
        self.assertEqual(entry.at, datetime(2026, 11, 28, 23, 40, 1, 250000, tzinfo=UTC))
        self.assertEqual(
            (entry.actor, entry.role, entry.action, entry.resource, entry.address, entry.master),
            ("alice", "user", "job.cancel", "/api/v1/jobs/42", "10.0.0.5", "master-1"),
        )
        self.assertEqual((entry.changes, entry.token_id), ({"priority": 70}, 7))
        self.assertEqual(len(self.opener.sent), 1)  # the token only when asked
        token = entry.token()
        self.assertEqual(token.user if token else None, "alice")

    def test_tokenOfTheFile(self) -> None:
        entry = AuditEntry(None, auditDoc(token=None))
        self.assertEqual((entry.token_id, entry.token()), (None, None))

    def test_forbidden(self) -> None:
        self.opener.on(
            "GET", "/api/v1/audit", error(403, "forbidden", "this needs the operator role")
        )
        with self.assertRaises(MasterdError) as caught:
            next(self.client.audit())
        self.assertEqual(caught.exception.status, 403)


class WebhookTests(Case):
    def test_create(self) -> None:
        self.opener.on("POST", "/api/v1/webhooks", Reply(webhookDoc(), 201))
        hook = self.client.create_webhook(
            "https://hooks.example/farm", ["job.done", "job.failed"], "shh", description="chat"
        )
        self.assertEqual(
            self.opener.sent[0].body,
            {"url": "https://hooks.example/farm", "events": ["job.done", "job.failed"],
             "secret": "shh", "description": "chat", "enabled": True},
        )  # fmt: skip
        self.assertIsInstance(hook, Webhook)
        self.assertEqual(
            (hook.id, hook.url, hook.events, hook.enabled, hook.pending, hook.created_by),
            (3, "https://hooks.example/farm", ["job.done", "job.failed"], True, 2, "admin"),
        )
        self.assertEqual(hook.created_at, datetime(2026, 11, 28, 23, 10, tzinfo=UTC))

    def test_listGetUpdateDelete(self) -> None:
        self.opener.on("GET", "/api/v1/webhooks", page([webhookDoc(3), webhookDoc(4)]))
        self.opener.on("GET", "/api/v1/webhooks/3", webhookDoc())
        self.opener.on("PATCH", "/api/v1/webhooks/3", webhookDoc(enabled=False))
        self.opener.on("DELETE", "/api/v1/webhooks/3", Reply(status=204))
        self.assertEqual([w.id for w in self.client.webhooks()], [3, 4])
        self.assertEqual(self.opener.sent[0].query, {})
        self.assertEqual(self.client.webhook(3), Webhook(None, webhookDoc()))
        changed = self.client.update_webhook(3, enabled=False, events=["job.done"])
        self.assertFalse(changed.enabled)
        self.assertEqual(self.opener.sent[-1].body, {"enabled": False, "events": ["job.done"]})
        self.assertIsNone(self.client.delete_webhook(3))
        self.assertEqual(
            self.opener.paths(),
            ["GET /api/v1/webhooks", "GET /api/v1/webhooks/3", "PATCH /api/v1/webhooks/3",
             "DELETE /api/v1/webhooks/3"],
        )  # fmt: skip

    def test_modelMethods(self) -> None:
        self.opener.on("GET", "/api/v1/webhooks/3", webhookDoc())
        self.opener.on(
            "PATCH", "/api/v1/webhooks/3", webhookDoc(enabled=False), webhookDoc(url="http://b/")
        )
        hook = self.client.webhook(3)
        self.assertIs(hook.disable(), hook)
        self.assertFalse(hook.enabled)
        hook.update(url="http://b/", secret="new")
        self.assertEqual(hook.url, "http://b/")
        self.assertEqual(
            [s.body for s in self.opener.sent[1:]],
            [{"enabled": False}, {"url": "http://b/", "secret": "new"}],
        )

    def test_deliveries(self) -> None:
        href = "/api/v1/webhooks/3/deliveries"
        first, second = deliveryDoc(11), deliveryDoc(12, state="delivered")
        self.opener.on("GET", href, page([first], f"{href}?after={first['id']}"))
        self.opener.on("GET", f"{href}?after={first['id']}", page([second]))
        found = list(self.client.webhook_deliveries(3, state="pending", limit=1))
        self.assertEqual([d.id for d in found], [first["id"], second["id"]])
        self.assertEqual(self.opener.sent[0].query, {"state": "pending", "limit": "1"})
        delivery = found[0]
        self.assertIsInstance(delivery, Delivery)
        self.assertEqual(
            (delivery.event, delivery.state, delivery.attempts, delivery.status, delivery.error),
            ("job.failed", "pending", 2, 500, "HTTP 500"),
        )
        self.assertEqual(delivery.next_attempt_at, datetime(2026, 11, 28, 23, 21, tzinfo=UTC))
        self.assertIsNone(delivery.delivered_at)
        self.assertEqual([t["master"] for t in delivery.tries], ["master-1", "master-2"])
        self.assertEqual(delivery.body, {"event": "job.failed", "job": {"id": 42}})

    def test_deliveriesFromTheModel(self) -> None:
        self.opener.on("GET", "/api/v1/webhooks/3", webhookDoc())
        self.opener.on("GET", "/api/v1/webhooks/3/deliveries", page([deliveryDoc()]))
        self.assertEqual(len(list(self.client.webhook(3).deliveries())), 1)

    def test_events(self) -> None:
        self.assertIn("job.done", EVENTS)
        self.assertIn("master.down", EVENTS)


class CredentialTests(Case):
    def test_reset(self) -> None:
        path = f"/api/v1/agents/{AGENT}/credential/reset"
        self.opener.on("POST", path, agentDoc())
        self.opener.on("GET", f"/api/v1/agents/{AGENT}", agentDoc())
        agent = self.client.reset_agent_credential(AGENT)
        self.assertIsInstance(agent, Agent)
        self.assertEqual(agent.id, AGENT)
        fetched = self.client.agent(AGENT)
        self.assertIs(fetched.reset_credential(), fetched)
        self.assertEqual(
            self.opener.paths(),
            [f"POST {path}", f"GET /api/v1/agents/{AGENT}", f"POST {path}"],
        )

    def test_idQuoted(self) -> None:
        with self.assertRaises(MasterdError):
            self.client.reset_agent_credential("../tokens")
        self.assertEqual(self.opener.sent[0].path, "/api/v1/agents/..%2Ftokens/credential/reset")


class VocabularyTests(SynchronousTestCase):
    """
    The client keeps its own copies of the master's words (it imports
    nothing of the server): they must stay the same.
    """

    def test_eventsAndRoles(self) -> None:
        from masterd.client._accounts import ROLES
        from masterd.client._webhooks import EVENTS

        from masterd.config import Role
        from masterd.webhooks.models import EVENT_TYPES

        self.assertEqual(tuple(EVENTS), tuple(EVENT_TYPES))
        self.assertEqual(set(ROLES), {r.value for r in Role})

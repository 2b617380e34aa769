"""
Tokens, ownership and the audit trail over HTTP, against a real database.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.trial.unittest import TestCase

from ._api import API, startAPI


class Base(TestCase):
    timeout = 60

    async def api(self) -> API:
        return await startAPI(self)

    async def token(self, api: API, user: str, role: str, **extra: Any) -> str:
        created = await api.ok("POST", "/api/v1/tokens", {"user": user, "role": role, **extra}, 201)
        secret: str = created["secret"]
        return secret

    async def audit(self, api: API, query: str = "") -> list[dict[str, Any]]:
        page = await api.ok("GET", f"/api/v1/audit{query}")
        items: list[dict[str, Any]] = page["items"]
        return items


class TokenTests(Base):
    async def test_createUseRevoke(self) -> None:
        api = await self.api()
        reply = await api.call(
            "POST", "/api/v1/tokens", {"user": "alice", "role": "user", "description": "laptop"}
        )
        self.assertEqual(reply.code, 201, reply.body)
        created = reply.json()
        self.assertEqual(reply.header("location"), created["href"])
        secret = created["secret"]
        self.assertTrue(secret.startswith("mdt_"))
        self.assertGreaterEqual(len(secret), 40)
        self.assertEqual((created["user"], created["role"], created["active"]),
                         ("alice", "user", True))  # fmt: skip
        self.assertEqual(created["created_by"], "admin")
        # Only the digest is kept.
        rows = await api.pool.query("SELECT sha256 FROM tokens WHERE id = %s", (created["id"],))
        self.assertEqual(bytes(rows[0][0]), hashlib.sha256(secret.encode()).digest())
        # Never shown again.
        shown = await api.ok("GET", created["href"])
        self.assertNotIn("secret", shown)
        listed = await api.ok("GET", "/api/v1/tokens")
        self.assertEqual([t["id"] for t in listed["items"]], [created["id"]])
        self.assertNotIn("secret", listed["items"][0])
        self.assertNotIn(secret, (await api.call("GET", "/api/v1/tokens")).body.decode())

        # The token works, with its role.
        self.assertEqual((await api.call("GET", "/api/v1/jobs", token=secret)).code, 200)
        forbidden = await api.call("GET", "/api/v1/tokens", token=secret)
        self.assertEqual(forbidden.code, 403)

        # Revoked: refused at once on this master (the announcement).
        await api.ok("DELETE", created["href"], status=204)
        refused = await api.call("GET", "/api/v1/jobs", token=secret)
        self.assertEqual(refused.code, 401, refused.body)
        self.assertEqual(refused.json()["error"], "unauthorized")
        again = await api.call("DELETE", created["href"])
        self.assertEqual(again.code, 409)
        document = await api.ok("GET", created["href"])
        self.assertEqual((document["active"], document["revoked_by"]), (False, "admin"))
        self.assertEqual((await api.ok("GET", "/api/v1/tokens"))["items"], [])
        self.assertEqual(len((await api.ok("GET", "/api/v1/tokens?revoked=true"))["items"]), 1)

    async def test_expiry(self) -> None:
        api = await self.api()
        rows = await api.pool.query("SELECT now() + interval '1 hour'")
        secret = await self.token(api, "bob", "viewer", expires_at=rows[0][0].isoformat())
        self.assertEqual((await api.call("GET", "/api/v1/jobs", token=secret)).code, 200)
        # Expired in the database: refused once the cache entry is gone.
        await api.pool.query(
            "UPDATE tokens SET expires_at = now() - interval '1 second' RETURNING id"
        )
        api.auth.invalidate()
        self.assertEqual((await api.call("GET", "/api/v1/jobs", token=secret)).code, 401)

    async def test_badInput(self) -> None:
        """
        400 naming the field, and nothing written.
        """
        api = await self.api()
        for body, field in [
            ({"user": "alice", "role": "superuser"}, "role"),
            ({"user": "alice"}, "role"),
            ({"user": "", "role": "user"}, "user"),
            ({"user": "al ice", "role": "user"}, "user"),
            ({"user": "alice\u0000", "role": "user"}, "user"),
            ({"user": "a" * 64, "role": "user"}, "user"),
            ({"user": "alice", "role": "user", "expires_at": "tomorrow"}, "expires_at"),
            ({"user": "alice", "role": "user", "expires_at": "2030-01-01T00:00:00"},
             "expires_at"),
            ({"user": "alice", "role": "user", "secret": "mine"}, "secret"),
        ]:  # fmt: skip
            reply = await api.call("POST", "/api/v1/tokens", body)
            self.assertEqual(reply.code, 400, (body, reply.body))
            self.assertEqual(reply.json()["details"].get("field"), field, (body, reply.body))
        # Schema-valid, but in the past: 422 (docs/http-api.md, "Errors").
        reply = await api.call("POST", "/api/v1/tokens", {"user": "alice", "role": "user",
                               "expires_at": "2020-01-01T00:00:00Z"})  # fmt: skip
        self.assertEqual((reply.code, reply.json()["details"]), (422, {"field": "expires_at"}))
        self.assertEqual(await api.count("tokens"), 0)
        self.assertEqual(await api.count("audit"), 0)

    async def test_onlyAdmins(self) -> None:
        api = await self.api()
        for role in ("viewer", "user", "operator", "agent"):
            reply = await api.call("POST", "/api/v1/tokens", {"user": "x", "role": "admin"},
                                   role=role)  # fmt: skip
            self.assertEqual(reply.code, 403, role)
        self.assertEqual(await api.count("tokens"), 0)


class OwnershipTests(Base):
    async def test_usersAndAnOperator(self) -> None:
        """
        A user changes only its own jobs (403 naming the owner), an
        operator any; the owner is the token's user name.
        """
        api = await self.api()
        alice = await self.token(api, "alice", "user")
        bob = await self.token(api, "bob", "user")
        operator = await self.token(api, "olga", "operator")
        viewer = await self.token(api, "vic", "viewer")

        async def submit(token: str) -> dict[str, Any]:
            reply = await api.call("POST", "/api/v1/jobs",
                                   {"title": "t", "command": ["x"], "frames": "1-3"},
                                   token=token)  # fmt: skip
            self.assertEqual(reply.code, 201, reply.body)
            job: dict[str, Any] = reply.json()
            return job

        job = await submit(alice)
        self.assertEqual(job["owner"], "alice")
        self.assertEqual((await api.call("POST", "/api/v1/jobs", {"title": "t",
                          "command": ["x"], "frames": "1"}, token=viewer)).code, 403)  # fmt: skip
        href = job["href"]
        tasks = await api.ok("GET", f"{href}/tasks")
        task = tasks["items"][0]["href"]
        for method, path, body in [
            ("PATCH", href, {"priority": 10}),
            ("PATCH", href, {"paused": True}),
            ("POST", f"{href}/cancel", None),
            ("POST", f"{href}/retry", None),
            ("POST", f"{href}/blocklist/clear", None),
            ("DELETE", href, None),
            ("POST", f"{task}/cancel", None),
            ("POST", f"{task}/retry", None),
        ]:
            reply = await api.call(method, path, body, token=bob)
            self.assertEqual(reply.code, 403, (method, path, reply.body))
            self.assertEqual(reply.json()["details"], {"owner": "alice"})
            self.assertIn("alice", reply.json()["message"])
        self.assertEqual(await api.count("audit WHERE actor = 'bob'"), 0)
        unchanged = await api.ok("GET", href)
        self.assertEqual((unchanged["priority"], unchanged["state"]), (50, "queued"))

        # The owner may; so may an operator, on anyone's job.
        reply = await api.call("PATCH", href, {"priority": 10}, token=alice)
        self.assertEqual(reply.code, 200, reply.body)
        reply = await api.call("POST", f"{href}/cancel", token=operator)
        self.assertEqual(reply.code, 200, reply.body)
        reply = await api.call("POST", f"{href}/retry", token=alice)
        self.assertEqual(reply.code, 200, reply.body)
        bobs = await submit(bob)
        reply = await api.call("POST", f"{bobs['href']}/cancel", token=alice)
        self.assertEqual(reply.code, 403)
        reply = await api.call("POST", f"{bobs['href']}/cancel", token=bob)
        self.assertEqual(reply.code, 200)
        reply = await api.call("DELETE", bobs["href"], token=bob)
        self.assertEqual(reply.code, 204)
        # Unknown jobs are 404 for everyone, owner or not.
        self.assertEqual((await api.call("POST", "/api/v1/jobs/999/cancel", token=bob)).code, 404)


class AuditTests(Base):
    async def test_sequence(self) -> None:
        """
        Every accepted change writes exactly one row, in order, naming who,
        what, which resource and through which master; refused requests
        write none.
        """
        api = await self.api()
        alice = await self.token(api, "alice", "user")
        tokenID = (await api.ok("GET", "/api/v1/tokens"))["items"][0]["id"]

        async def act(method: str, path: str, body: Any = None, token: str | None = alice,
                      status: int = 200) -> Any:  # fmt: skip
            reply = await api.call(method, path, body, token=token)
            self.assertEqual(reply.code, status, (method, path, reply.body))
            return reply.json() if reply.body else None

        job = await act("POST", "/api/v1/jobs", {"title": "a", "command": ["x"], "frames": "1-2"},
                        status=201)  # fmt: skip
        href = job["href"]
        await act("PATCH", href, {"paused": True})
        await act("PATCH", href, {"paused": False})
        await act("PATCH", href, {"priority": 60, "requirements": {"tags": ["gpu"]}})
        # Refused: none of these writes a row.
        await act("PATCH", href, {"priority": 500}, status=400)
        await act("POST", f"{href}/retry", status=409)
        await act("DELETE", href, status=409)
        await act("POST", "/api/v1/tokens", {"user": "x", "role": "admin"}, status=403)
        await act("POST", "/api/v1/jobs/77/cancel", status=404)
        await act("GET", "/api/v1/jobs", token="not-a-token-at-all", status=401)
        await act("POST", f"{href}/cancel")
        await act("POST", f"{href}/retry")
        task = (await act("GET", f"{href}/tasks"))["items"][0]["href"]
        await act("POST", f"{task}/cancel")
        await act("POST", f"{href}/cancel")
        await act("DELETE", href, status=204)
        await act("DELETE", f"/api/v1/tokens/{tokenID}", token=None, status=204)

        rows = await self.audit(api)
        self.assertEqual(
            [(r["actor"], r["action"], r["resource"]) for r in rows],
            [
                ("admin", "token.create", f"/api/v1/tokens/{tokenID}"),
                ("alice", "job.submit", href),
                ("alice", "job.pause", href),
                ("alice", "job.resume", href),
                ("alice", "job.patch", href),
                ("alice", "job.cancel", href),
                ("alice", "job.retry", href),
                ("alice", "task.cancel", task),
                ("alice", "job.cancel", href),
                ("alice", "job.delete", href),
                ("admin", "token.revoke", f"/api/v1/tokens/{tokenID}"),
            ],
        )
        submit = rows[1]
        self.assertEqual(submit["token"], {"id": tokenID, "href": f"/api/v1/tokens/{tokenID}"})
        self.assertEqual((submit["role"], submit["master"], submit["address"]),
                         ("user", "test", "127.0.0.1"))  # fmt: skip
        self.assertEqual(submit["changes"]["tasks"], 2)
        self.assertTrue(submit["at"].endswith("Z"))
        self.assertEqual(rows[4]["changes"], {"priority": 60, "requirements": {"tags": ["gpu"]}})
        self.assertIsNone(rows[0]["token"])  # a token of the configuration file
        self.assertNotIn("secret", str(rows[0]["changes"]))

        # Filters and pages.
        mine = await self.audit(api, "?actor=alice&action=job.*&limit=3")
        self.assertEqual([r["action"] for r in mine], ["job.submit", "job.pause", "job.resume"])
        page = await api.ok("GET", "/api/v1/audit?actor=alice&limit=3")
        following = await api.ok("GET", page["next"])
        self.assertEqual(following["items"][0]["action"], "job.patch")
        under = await self.audit(api, f"?resource={href}")
        self.assertEqual(len(under), 8)
        self.assertEqual(await self.audit(api, "?since=2999-01-01T00:00:00Z"), [])
        self.assertEqual(len(await self.audit(api, "?since=2000-01-01T00:00:00%2B01:00")),
                         len(rows))  # fmt: skip
        bad = await api.call("GET", "/api/v1/audit?since=yesterday")
        self.assertEqual((bad.code, bad.json()["details"]["field"]), (400, "since"))
        self.assertEqual((await api.call("GET", "/api/v1/audit", role="viewer")).code, 403)
        self.assertEqual((await api.call("GET", "/api/v1/audit", role="operator")).code, 200)

    async def test_agentChanges(self) -> None:
        api = await self.api()
        agent = "6f1c0b9e-52a5-4d36-9a8f-0d1c2b3a4e5f"
        await api.pool.query(
            "INSERT INTO agents (id, hostname) VALUES (%s, 'node1') RETURNING id", (agent,)
        )
        href = f"/api/v1/agents/{agent}"
        await api.ok("PATCH", href, {"enabled": False})
        await api.ok("PATCH", href, {"tags": ["gpu"], "limits": {"max_tasks": 2}})
        await api.ok("DELETE", href, status=204)
        rows = await self.audit(api)
        self.assertEqual([r["action"] for r in rows],
                         ["agent.disable", "agent.patch", "agent.delete"])  # fmt: skip
        self.assertEqual(rows[1]["changes"], {"tags": ["gpu"], "limits": {"max_tasks": 2}})

"""
Sessions of the dashboard against a real database and real HTTP: a token
exchanged for a cookie, the cookie's attributes, CSRF on changes, what ends
a session (signing out, expiry, its token revoked), and the refusals.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.trial.unittest import TestCase

from ._api import API, TOKENS, Reply, startAPI


def cookieOf(reply: Reply) -> tuple[str, list[str]]:
    """
    The session cookie's value and its attributes.
    """
    header = reply.header("set-cookie")
    assert header is not None, reply.body
    first, *attributes = [p.strip() for p in header.split(";")]
    name, _, value = first.partition("=")
    assert name == "masterd_session", header
    return value, attributes


class Base(TestCase):
    timeout = 60

    async def signIn(self, api: API, token: str, **headers: str) -> tuple[str, dict[str, Any]]:
        reply = await api.call("POST", "/api/v1/session", {"token": token}, role="",
                               headers=headers)  # fmt: skip
        self.assertEqual(reply.code, 201, reply.body)
        value, _ = cookieOf(reply)
        return value, reply.json()

    async def withCookie(
        self, api: API, method: str, path: str, cookie: str, body: Any = None, csrf: str = ""
    ) -> Reply:
        headers = {"Cookie": f"masterd_session={cookie}"}
        if csrf:
            headers["X-CSRF-Token"] = csrf
        return await api.call(method, path, body, role="", headers=headers)


class SignInTests(Base):
    async def test_signInAndUse(self) -> None:
        """
        A token exchanged for a session: the cookie is HttpOnly,
        SameSite=Strict, for the whole site, not Secure over plain HTTP;
        reads need only the cookie, changes its CSRF token too; the session
        acts as the token's holder (and is audited as such).
        """
        api = await startAPI(self)
        reply = await api.call("POST", "/api/v1/session", {"token": TOKENS["user"]}, role="")
        self.assertEqual(reply.code, 201, reply.body)
        value, attributes = cookieOf(reply)
        self.assertTrue(value.startswith("mds_"))
        self.assertIn("HttpOnly", attributes)
        self.assertIn("SameSite=Strict", attributes)
        self.assertIn("Path=/", attributes)
        self.assertIn("Max-Age=43200", attributes)
        self.assertNotIn("Secure", attributes)
        self.assertEqual(reply.header("cache-control"), "no-store")
        document = reply.json()
        self.assertEqual((document["user"], document["role"], document["href"]),
                         ("user", "user", "/api/v1/session"))  # fmt: skip
        self.assertTrue(document["expires_at"].endswith("Z"))
        csrf = document["csrf_token"]
        # Only the digest of the secret is stored.
        rows = await api.pool.query("SELECT count(*) FROM sessions WHERE csrf = %s", (csrf,))
        self.assertEqual(rows, [(1,)])
        self.assertEqual(await api.count("sessions"), 1)

        reply = await self.withCookie(api, "GET", "/api/v1/session", value)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertEqual(reply.json()["csrf_token"], csrf)
        self.assertEqual((await self.withCookie(api, "GET", "/api/v1/jobs", value)).code, 200)

        job = {"title": "t", "command": ["x"], "frames": "1"}
        reply = await self.withCookie(api, "POST", "/api/v1/jobs", value, job)
        self.assertEqual(reply.code, 403, reply.body)
        self.assertIn("X-CSRF-Token", reply.json()["message"])
        reply = await self.withCookie(api, "POST", "/api/v1/jobs", value, job, csrf="nope")
        self.assertEqual(reply.code, 403, reply.body)
        reply = await self.withCookie(api, "POST", "/api/v1/jobs", value, job, csrf=csrf)
        self.assertEqual(reply.code, 201, reply.body)
        self.assertEqual(reply.json()["owner"], "user")
        # A user's session may not do what a user's token may not.
        reply = await self.withCookie(
            api, "PUT", "/api/v1/limits/nuke", value, {"max": 1}, csrf=csrf
        )
        self.assertEqual(reply.code, 403, reply.body)
        actions = await api.pool.query("SELECT action, actor FROM audit ORDER BY id")
        self.assertEqual(actions[:2], [("session.create", "user"), ("job.submit", "user")])

    async def test_bearerWins(self) -> None:
        """
        A request with a bearer token is that token's, whatever cookie it
        carries, and needs no CSRF token; GET /api/v1/session then says
        who it is, with no CSRF token.
        """
        api = await startAPI(self)
        value, _ = await self.signIn(api, TOKENS["viewer"])
        reply = await api.call("PUT", "/api/v1/projects/p", {"weight": 2}, role="operator",
                               headers={"Cookie": f"masterd_session={value}"})  # fmt: skip
        self.assertEqual(reply.code, 201, reply.body)
        document = await api.ok("GET", "/api/v1/session")
        self.assertEqual((document["user"], document["csrf_token"], document["expires_at"]),
                         ("admin", None, None))  # fmt: skip

    async def test_refused(self) -> None:
        """
        A token that is not valid is a 401 saying so; an agent's token
        cannot sign in; a bad body names its field. No session is opened.
        """
        api = await startAPI(self)
        for body, status, field in [
            ({"token": "not-a-token-at-all"}, 401, None),
            ({"token": TOKENS["agent"]}, 403, None),
            ({"token": ""}, 400, "token"),
            ({"token": 12}, 400, "token"),
            ({}, 400, "token"),
            ({"token": "x" * 5000}, 400, "token"),
        ]:
            reply = await api.call("POST", "/api/v1/session", body, role="")
            self.assertEqual(reply.code, status, (body, reply.body))
            error = reply.json()
            self.assertIsNone(reply.header("set-cookie"))
            if field is not None:
                self.assertEqual(error["details"]["field"], field, error)
        reply = await api.call("POST", "/api/v1/session", {"token": "bad"}, role="")
        self.assertIn("not valid", reply.json()["message"])
        self.assertEqual(await api.count("sessions"), 0)
        # A cookie that is no session, or not ASCII.
        for cookie in ["mds_nothing", "caf\u00e9"]:
            reply = await api.call("GET", "/api/v1/jobs", role="",
                                   headers={"Cookie": f"masterd_session={cookie}"})  # fmt: skip
            self.assertEqual(reply.code, 401, reply.body)
            self.assertIn("sign in again", reply.json()["message"])
        reply = await api.call("GET", "/api/v1/jobs", role="")
        self.assertEqual(reply.code, 401)
        self.assertIn("POST /api/v1/session", reply.json()["message"])

    async def test_secureBehindTLS(self) -> None:
        """
        Behind a trusted proxy that says the browser used HTTPS, the cookie
        is Secure; the same header from anyone else changes nothing.
        """
        api = await startAPI(self, trustedProxies=(ipaddress.ip_network("127.0.0.0/8"),))
        reply = await api.call("POST", "/api/v1/session", {"token": TOKENS["viewer"]}, role="",
                               headers={"X-Forwarded-Proto": "https"})  # fmt: skip
        self.assertIn("Secure", cookieOf(reply)[1])
        other = await startAPI(self)
        reply = await other.call("POST", "/api/v1/session", {"token": TOKENS["viewer"]},
                                 role="", headers={"X-Forwarded-Proto": "https"})  # fmt: skip
        self.assertNotIn("Secure", cookieOf(reply)[1])


class EndTests(Base):
    async def test_signOut(self) -> None:
        """
        Signing out (with the CSRF token) ends the session on the server
        and clears the cookie; the cookie is refused afterwards.
        """
        api = await startAPI(self)
        value, document = await self.signIn(api, TOKENS["operator"])
        reply = await self.withCookie(api, "DELETE", "/api/v1/session", value)
        self.assertEqual(reply.code, 403, reply.body)
        reply = await self.withCookie(
            api, "DELETE", "/api/v1/session", value, csrf=document["csrf_token"]
        )
        self.assertEqual(reply.code, 204, reply.body)
        cleared, attributes = cookieOf(reply)
        self.assertEqual((cleared, "Max-Age=0" in attributes), ("", True))
        self.assertEqual(await api.count("sessions"), 0)
        reply = await self.withCookie(api, "GET", "/api/v1/jobs", value)
        self.assertEqual(reply.code, 401, reply.body)
        # A bearer token has no session to end.
        reply = await api.call("DELETE", "/api/v1/session")
        self.assertEqual(reply.code, 404, reply.body)

    async def test_revokedToken(self) -> None:
        """
        A session opened with a database token ends when the token is
        revoked, and takes the token's role as it is now.
        """
        api = await startAPI(self)
        created = await api.ok("POST", "/api/v1/tokens", {"user": "ann", "role": "user"}, 201)
        value, document = await self.signIn(api, created["secret"])
        self.assertEqual((document["user"], document["role"]), ("ann", "user"))
        self.assertEqual((await self.withCookie(api, "GET", "/api/v1/jobs", value)).code, 200)
        await api.ok("DELETE", created["href"], status=204)
        reply = await self.withCookie(api, "GET", "/api/v1/jobs", value)
        self.assertEqual(reply.code, 401, reply.body)

    async def test_expired(self) -> None:
        """
        A session past its expiry is refused (the cache is only as good as
        the time left).
        """
        api = await startAPI(self)
        value, _ = await self.signIn(api, TOKENS["viewer"])
        await api.pool.query(
            "UPDATE sessions SET expires_at = now() - interval '1 second' RETURNING id"
        )
        api.auth.invalidate()
        reply = await self.withCookie(api, "GET", "/api/v1/jobs", value)
        self.assertEqual(reply.code, 401, reply.body)

"""
The webhook routes over real HTTP on a real database: what they answer
(never the secret), what they refuse (400 naming the field, nothing
written), and the audit rows of every change.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import TestCase

from ._api import API, startAPI

SECRET = "a-secret-of-sixteen+"
HOOK = {"url": "https://example.com/hooks/render", "events": ["job.done", "job.failed"],
        "secret": SECRET}  # fmt: skip


class WebhookRoutesTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.api: API = await startAPI(self)

    async def create(self, **overrides: Any) -> dict[str, Any]:
        body = {**HOOK, **overrides}
        reply = await self.api.call("POST", "/api/v1/webhooks", body)
        self.assertEqual(reply.code, 201, reply.body)
        self.assertNotIn(SECRET.encode(), reply.body)
        created: dict[str, Any] = reply.json()
        self.assertEqual(reply.header("location"), created["href"])
        return created

    async def test_createReadPatchDelete(self) -> None:
        created = await self.create(description="render results")
        id_ = created["id"]
        href = f"/api/v1/webhooks/{id_}"
        self.assertEqual(created, {
            "id": id_, "href": href, "url": HOOK["url"], "events": ["job.done", "job.failed"],
            "description": "render results", "enabled": True,
            "created_at": created["created_at"], "created_by": "admin",
            "deliveries": f"{href}/deliveries", "pending": 0,
        })  # fmt: skip
        self.assertTrue(created["created_at"].endswith("Z"))
        for path in (href, "/api/v1/webhooks"):
            reply = await self.api.call("GET", path)
            self.assertEqual(reply.code, 200, reply.body)
            self.assertNotIn(SECRET.encode(), reply.body)
            self.assertNotIn(b"secret", reply.body)
        self.assertEqual(await self.api.ok("GET", href), created)
        page = await self.api.ok("GET", "/api/v1/webhooks")
        self.assertEqual(page, {"items": [created], "next": None})

        change = {"enabled": False, "secret": "another-secret-16+", "events": ["task.failed"]}
        reply = await self.api.call("PATCH", href, change)
        self.assertEqual(reply.code, 200, reply.body)
        self.assertNotIn(b"another-secret", reply.body)
        patched = reply.json()
        self.assertEqual((patched["enabled"], patched["events"]), (False, ["task.failed"]))
        rows = await self.api.pool.query("SELECT secret FROM webhooks WHERE id = %s", (id_,))
        self.assertEqual(rows, [("another-secret-16+",)])
        self.assertEqual(await self.api.ok("GET", f"{href}/deliveries"),
                         {"items": [], "next": None})  # fmt: skip

        reply = await self.api.call("DELETE", href)
        self.assertEqual(reply.code, 204, reply.body)
        self.assertEqual((await self.api.call("GET", href)).code, 404)
        self.assertEqual((await self.api.call("DELETE", href)).code, 404)
        self.assertEqual((await self.api.call("GET", f"{href}/deliveries")).code, 404)

        audit = await self.api.pool.query("SELECT action, resource, changes FROM audit ORDER BY id")
        self.assertEqual([(a, r) for a, r, _ in audit], [
            ("webhook.create", href), ("webhook.patch", href), ("webhook.delete", href),
        ])  # fmt: skip
        self.assertEqual(audit[0][2]["url"], HOOK["url"])
        self.assertEqual(audit[1][2]["secret"], "(changed)")
        self.assertNotIn("secret", audit[0][2])
        self.assertNotIn("secret-16", json.dumps([c for _, _, c in audit]))

    async def test_paging(self) -> None:
        ids = [(await self.create())["id"] for _ in range(3)]
        page = await self.api.ok("GET", "/api/v1/webhooks?limit=2")
        self.assertEqual([w["id"] for w in page["items"]], ids[:2])
        rest = await self.api.ok("GET", page["next"])
        self.assertEqual(([w["id"] for w in rest["items"]], rest["next"]), (ids[2:], None))

    async def test_adminOnly(self) -> None:
        created = await self.create()
        for role in ("viewer", "user", "operator"):
            for method, path, body in (
                ("POST", "/api/v1/webhooks", HOOK), ("GET", "/api/v1/webhooks", None),
                ("GET", created["href"], None), ("PATCH", created["href"], {"enabled": False}),
                ("DELETE", created["href"], None), ("GET", created["deliveries"], None),
            ):  # fmt: skip
                reply = await self.api.call(method, path, body, role=role)
                self.assertEqual(reply.code, 403, (role, method, path, reply.body))
        self.assertEqual(await self.api.count("webhooks"), 1)

    async def test_badInputNamesTheField(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({**HOOK, "url": "ftp://example.com/x"}, "url"),
            ({**HOOK, "url": "file:///etc/passwd"}, "url"),
            ({**HOOK, "url": "http://"}, "url"),
            ({**HOOK, "url": "http:///path"}, "url"),
            ({**HOOK, "url": "http://exa mple.com/"}, "url"),
            ({**HOOK, "url": "http://example.com/a b"}, "url"),
            ({**HOOK, "url": "http://example.com/\n"}, "url"),
            ({**HOOK, "url": "http://example.com\u0000/"}, "url"),
            ({**HOOK, "url": "example.com"}, "url"),
            ({**HOOK, "url": "https://example.com/" + "x" * 2000}, "url"),
            ({**HOOK, "events": []}, "events"),
            ({**HOOK, "events": ["job.done", "job.exploded"]}, "events[1]"),
            ({**HOOK, "events": ["job.done", "job.done"]}, "events[1]"),
            ({**HOOK, "events": "job.done"}, "events"),
            ({**HOOK, "secret": "short"}, "secret"),
            ({**HOOK, "secret": "x" * 1001}, "secret"),
            ({"url": HOOK["url"], "events": HOOK["events"]}, "secret"),
            ({**HOOK, "enabled": "yes"}, "enabled"),
            ({**HOOK, "description": "d" * 1001}, "description"),
            ({**HOOK, "colour": "red"}, "colour"),
        ]
        for body, field in cases:
            reply = await self.api.call("POST", "/api/v1/webhooks", body)
            self.assertEqual(reply.code, 400, (body, reply.body))
            self.assertEqual(reply.json()["details"].get("field"), field, (body, reply.body))
            self.assertNotIn(SECRET.encode(), reply.body)
        self.assertEqual(await self.api.count("webhooks"), 0)
        self.assertEqual(await self.api.count("audit"), 0)

        created = await self.create()
        before = await self.api.pool.query("SELECT * FROM webhooks")
        patches = [({"url": "gopher://x"}, "url"), ({"events": ["nope"]}, "events[0]"),
                   ({"secret": "tiny"}, "secret"), ({"enabled": None}, "enabled")]  # fmt: skip
        for body, field in patches:
            reply = await self.api.call("PATCH", created["href"], body)
            self.assertEqual(reply.code, 400, (body, reply.body))
            self.assertEqual(reply.json()["details"].get("field"), field, reply.body)
        self.assertEqual(await self.api.pool.query("SELECT * FROM webhooks"), before)
        self.assertEqual(await self.api.count("audit"), 1)

        reply = await self.api.call("GET", created["deliveries"] + "?state=lost")
        self.assertEqual((reply.code, reply.json()["details"]["field"]), (400, "state"))
        reply = await self.api.call("GET", created["deliveries"] + "?after=12")
        self.assertEqual((reply.code, reply.json()["details"]["field"]), (400, "after"))
        reply = await self.api.call(
            "GET", created["deliveries"] + "?after=00000000-0000-0000-0000-000000000000"
        )
        self.assertEqual((reply.code, reply.json()), (200, {"items": [], "next": None}))

    async def test_http_and_https_urls(self) -> None:
        for url in ("http://127.0.0.1:8080/hook", "https://hooks.example.com",
                    "http://[::1]:9/x?y=1#z", "HTTP://EXAMPLE.COM/".lower()):  # fmt: skip
            created = await self.create(url=url)
            self.assertEqual(created["url"], url)

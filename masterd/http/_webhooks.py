"""
Webhooks over HTTP (admin): created, listed, changed and deleted with an
audit row in the change's transaction, and their deliveries. No answer ever
holds a webhook's secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.web.iweb import IRequest

from masterd.audit import Actor, record
from masterd.config import Role
from masterd.db import Pool, Transaction
from masterd.errors import InvalidField
from masterd.jobs.models import given
from masterd.webhooks import WebhookStore
from masterd.webhooks.models import (
    DeliveryPage,
    DeliveryQuery,
    WebhookCreate,
    WebhookDocument,
    WebhookPage,
    WebhookPatch,
    WebhookQuery,
    checkEvents,
    checkURL,
)

from ._operations import PathParam, operation
from ._query import nextHref

WEBHOOK = (PathParam("webhookID", "id", "webhook", "A webhook id"),)

_DELIVERY_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class WebhookRoutes:
    """
    A mixin of L{MasterAPI}: the routes under C{/api/v1/webhooks}.
    """

    pool: Pool | None
    actor: Callable[[IRequest], Actor]

    def _webhooks(self) -> tuple[Pool, WebhookStore]:
        assert self.pool is not None
        # A store is only the pool and its statements: nothing to keep.
        return self.pool, WebhookStore(self.pool)

    @operation("POST", "/api/v1/webhooks", summary="Create a webhook", role=Role.admin,
               body=WebhookCreate, status=201, response=WebhookDocument, tag="webhooks",
               description="The master POSTs each event of the kinds listed to the URL, "
               "signed with the secret (X-Masterd-Signature: sha256=<hex HMAC-SHA256 of the "
               "body>); the secret is never answered. The answer's Location header is the "
               "new webhook's href.")  # fmt: skip
    async def createWebhook(self, request: IRequest, body: WebhookCreate) -> WebhookDocument:
        pool, store = self._webhooks()
        url, events = checkURL(body.url), checkEvents(list(body.events))
        actor = self.actor(request)

        async def work(txn: Transaction) -> WebhookDocument:
            created = await store.create(
                txn, url=url, events=events, secret=body.secret,
                description=body.description, enabled=body.enabled, createdBy=actor.name,
            )  # fmt: skip
            record(txn, actor, "webhook.create", created.href, {
                "url": url, "events": events, "description": body.description,
                "enabled": body.enabled,
            })  # fmt: skip
            return created

        created = await pool.transaction(work)
        request.setHeader(b"location", created.href.encode("ascii"))
        return created

    @operation("GET", "/api/v1/webhooks", summary="List webhooks (never their secrets)",
               role=Role.admin, query=WebhookQuery, response=WebhookPage,
               tag="webhooks")  # fmt: skip
    async def listWebhooks(self, request: IRequest, query: WebhookQuery) -> WebhookPage:
        _, store = self._webhooks()
        items, more = await store.listWebhooks(limit=query.limit, after=given(query.after))
        following = None
        if more:
            following = nextHref("/api/v1/webhooks", {"limit": query.limit}, items[-1].id)
        return WebhookPage(items=items, next=following)

    @operation("GET", "/api/v1/webhooks/{webhookID}", summary="A webhook (never its secret)",
               role=Role.admin, params=WEBHOOK, response=WebhookDocument,
               tag="webhooks")  # fmt: skip
    async def getWebhook(self, request: IRequest, webhookID: int) -> WebhookDocument:
        return await self._webhooks()[1].get(webhookID)

    @operation("PATCH", "/api/v1/webhooks/{webhookID}", summary="Change a webhook",
               role=Role.admin, params=WEBHOOK, body=WebhookPatch, response=WebhookDocument,
               tag="webhooks",
               description="Only the fields given change. Pending deliveries go to the new "
               "URL, signed with the new secret; a disabled webhook gets no new events and "
               "keeps its pending deliveries until it is enabled again.")  # fmt: skip
    async def patchWebhook(
        self, request: IRequest, webhookID: int, body: WebhookPatch
    ) -> WebhookDocument:
        pool, store = self._webhooks()
        changes: dict[str, Any] = {}
        if isinstance(body.url, str):
            changes["url"] = checkURL(body.url)
        if isinstance(body.events, list):
            changes["events"] = checkEvents(list(body.events))
        for name in ("secret", "description", "enabled"):
            value = getattr(body, name)
            if given(value) is not None:
                changes[name] = value
        actor = self.actor(request)

        async def work(txn: Transaction) -> WebhookDocument:
            patched = await store.patch(txn, webhookID, changes)
            # What changed, but never the secret itself.
            shown = {k: ("(changed)" if k == "secret" else v) for k, v in changes.items()}
            record(txn, actor, "webhook.patch", patched.href, shown)
            return patched

        return await pool.transaction(work)

    @operation("DELETE", "/api/v1/webhooks/{webhookID}", summary="Delete a webhook",
               role=Role.admin, params=WEBHOOK, status=204, tag="webhooks",
               description="Its deliveries go with it, pending ones included.")  # fmt: skip
    async def deleteWebhook(self, request: IRequest, webhookID: int) -> None:
        pool, store = self._webhooks()
        actor = self.actor(request)

        async def work(txn: Transaction) -> None:
            await store.delete(txn, webhookID)
            record(txn, actor, "webhook.delete", f"/api/v1/webhooks/{webhookID}")

        await pool.transaction(work)

    @operation("GET", "/api/v1/webhooks/{webhookID}/deliveries",
               summary="A webhook's deliveries, newest first", role=Role.admin,
               params=WEBHOOK, query=DeliveryQuery, response=DeliveryPage, tag="webhooks",
               description="Each with its state, its latest tries (time, HTTP status, error, "
               "duration, master) and the payload posted. state: pending, delivered or "
               "failed (given up after webhooks.retry_for_s).")  # fmt: skip
    async def webhookDeliveries(
        self, request: IRequest, webhookID: int, query: DeliveryQuery
    ) -> DeliveryPage:
        _, store = self._webhooks()
        state, after = given(query.state), given(query.after)
        if after is not None and _DELIVERY_ID.fullmatch(after) is None:
            raise InvalidField("after", "must be a delivery id (a UUID in lower case)")
        items, more = await store.deliveries(webhookID, state=state, limit=query.limit, after=after)
        following = None
        if more:
            following = nextHref(
                f"/api/v1/webhooks/{webhookID}/deliveries",
                {"state": state, "limit": query.limit},
                items[-1].id,
            )
        return DeliveryPage(items=items, next=following)

"""
Accounts over HTTP: tokens (admin) and the audit trail (operators and
admins).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from twisted.web.iweb import IRequest

from masterd.accounts import TokenStore
from masterd.accounts.models import CreatedToken, TokenCreate, TokenDocument, TokenPage, TokenQuery
from masterd.audit import Actor, AuditLog, AuditPage, AuditQuery, record
from masterd.audit._log import parseSince
from masterd.config import Role
from masterd.db import Pool, Transaction
from masterd.errors import Unprocessable
from masterd.jobs.models import given

from ._operations import PathParam, operation
from ._query import nextHref


def _utc(when: datetime) -> datetime:
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise Unprocessable("expires_at", "is outside the years 1 to 9999 in UTC") from None


TOKEN = (PathParam("tokenID", "id", "token", "A token id"),)


class AccountRoutes:
    """
    A mixin of L{MasterAPI}.
    """

    pool: Pool | None
    tokens: TokenStore | None
    auditLog: AuditLog | None
    actor: Callable[[IRequest], Actor]

    def _tokens(self) -> tuple[Pool, TokenStore]:
        assert self.pool is not None and self.tokens is not None
        return self.pool, self.tokens

    @operation("POST", "/api/v1/tokens", summary="Create a token", role=Role.admin,
               body=TokenCreate, status=201, response=CreatedToken, errors=(422,),
               tag="accounts",
               description="The answer holds the token's secret, shown this once; only its "
               "SHA-256 is kept. The user name is what the jobs submitted with it record as "
               "their owner.")  # fmt: skip
    async def createToken(self, request: IRequest, body: TokenCreate) -> CreatedToken:
        pool, tokens = self._tokens()
        expires = _utc(body.expires_at) if body.expires_at is not None else None
        actor = self.actor(request)

        async def work(txn: Transaction) -> CreatedToken:
            created = await tokens.create(
                txn, user=body.user, role=body.role, description=body.description,
                expires=expires, createdBy=actor.name,
            )  # fmt: skip
            record(txn, actor, "token.create", created.href, {
                "user": body.user, "role": body.role, "description": body.description,
                "expires_at": created.expires_at,
            })  # fmt: skip
            return created

        created = await pool.transaction(work)
        request.setHeader(b"location", created.href.encode("ascii"))
        return created

    @operation("GET", "/api/v1/tokens", summary="List tokens (never their secrets)",
               role=Role.admin, query=TokenQuery, response=TokenPage,
               tag="accounts")  # fmt: skip
    async def listTokens(self, request: IRequest, query: TokenQuery) -> TokenPage:
        _, tokens = self._tokens()
        user = given(query.user)
        items, more = await tokens.list(
            user=user, revoked=query.revoked, limit=query.limit, after=given(query.after)
        )
        following = None
        if more:
            following = nextHref(
                "/api/v1/tokens",
                {"user": user, "revoked": "true" if query.revoked else None,
                 "limit": query.limit},
                items[-1].id,
            )  # fmt: skip
        return TokenPage(items=items, next=following)

    @operation("GET", "/api/v1/tokens/{tokenID}", summary="A token (never its secret)",
               role=Role.admin, params=TOKEN, response=TokenDocument,
               tag="accounts")  # fmt: skip
    async def getToken(self, request: IRequest, tokenID: int) -> TokenDocument:
        return await self._tokens()[1].get(tokenID)

    @operation("DELETE", "/api/v1/tokens/{tokenID}", summary="Revoke a token",
               role=Role.admin, params=TOKEN, status=204, errors=(409,), tag="accounts",
               description="Every master refuses the token within about a second (at most "
               "auth.cache_s should a notification be lost). The token stays listed, "
               "revoked.")  # fmt: skip
    async def revokeToken(self, request: IRequest, tokenID: int) -> None:
        pool, tokens = self._tokens()
        actor = self.actor(request)

        async def work(txn: Transaction) -> None:
            revoked = await tokens.revoke(txn, tokenID, actor.name)
            record(txn, actor, "token.revoke", revoked.href)

        await pool.transaction(work)

    @operation("GET", "/api/v1/audit", summary="The audit trail, oldest first",
               role=Role.operator, query=AuditQuery, response=AuditPage, tag="audit",
               description="One row for every change made through the API, written in the "
               "change's transaction. actor: a user name; resource: an href (and what lies "
               "under it); action: exact (job.cancel) or a kind (job.*); since: an ISO 8601 "
               "time.")  # fmt: skip
    async def audit(self, request: IRequest, query: AuditQuery) -> AuditPage:
        assert self.auditLog is not None
        since = parseSince(query.since) if isinstance(query.since, str) else None
        actor, resource, action = given(query.actor), given(query.resource), given(query.action)
        items, more = await self.auditLog.entries(
            actor=actor, resource=resource, action=action, since=since,
            limit=query.limit, after=given(query.after),
        )  # fmt: skip
        following = None
        if more:
            following = nextHref(
                "/api/v1/audit",
                {"actor": actor, "resource": resource, "action": action,
                 "since": given(query.since), "limit": query.limit},
                items[-1].id,
            )  # fmt: skip
        return AuditPage(items=items, next=following)

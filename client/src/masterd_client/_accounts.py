"""
Accounts: the master's tokens, and the audit trail of who changed what.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._base import Record, Resource, ref_href, ref_id
from ._compat import UTC

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's since 3.11

#: The roles a token may have, from the least allowed to the most; C{agent}
#: is for render nodes' enrollment, not for people.
ROLES = ("viewer", "user", "operator", "admin", "agent")


def api_time(value: datetime | str, name: str) -> str:
    """
    A time as the API takes it: ISO 8601 in UTC with a C{Z}. A string is
    sent as it is (the master checks it).

    @raise ValueError: for a naive datetime: which zone it meant is a guess
        the client will not make.
    """
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {value!r}")
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


class Token(Resource):
    """
    A bearer token of the master's database (the YAML file's tokens are not
    listed). C{secret} is there only in the answer that created it.
    """

    @property
    def id(self) -> int:
        return int(self.raw["id"])

    @property
    def user(self) -> str:
        """
        The user name: what the jobs it submits record as their owner.
        """
        return str(self.raw["user"])

    @property
    def role(self) -> str:
        return str(self.raw["role"])

    @property
    def description(self) -> str:
        return str(self.raw.get("description") or "")

    @property
    def created_at(self) -> datetime | None:
        return self._time("created_at")

    @property
    def created_by(self) -> str | None:
        return self.raw.get("created_by")

    @property
    def expires_at(self) -> datetime | None:
        return self._time("expires_at")

    @property
    def revoked_at(self) -> datetime | None:
        return self._time("revoked_at")

    @property
    def revoked_by(self) -> str | None:
        return self.raw.get("revoked_by")

    @property
    def active(self) -> bool:
        """
        Whether the master accepts it now: neither revoked nor expired.
        """
        return bool(self.raw.get("active"))

    @property
    def state(self) -> str:
        """
        C{active}, C{revoked} or C{expired}.
        """
        if self.raw.get("revoked_at") is not None:
            return "revoked"
        return "active" if self.active else "expired"

    @property
    def secret(self) -> str | None:
        """
        The token itself, in the answer of L{Client.create_token} only: the
        master keeps its digest, and never shows it again.
        """
        return self.raw.get("secret")

    def revoke(self) -> Self:
        """
        Revoke it (every master refuses it within a couple of seconds), then
        read it again; a token already revoked is a 409 C{conflict}.
        """
        self._transport.request("DELETE", self.href)
        # The secret of a fresh token is not in the answer read back: keep it.
        secret = self.secret
        self.refresh()
        if secret is not None:
            self.raw["secret"] = secret
        return self

    def __repr__(self) -> str:
        # Never the secret: a repr ends up in logs.
        return f"<Token {self.raw.get('id')} {self.raw.get('user')!r} {self.raw.get('role')}>"


class AuditEntry(Record):
    """
    One change made through the API: who made it, what, to which resource,
    from where. Written in the change's own transaction, so that every
    committed change has one.
    """

    @property
    def id(self) -> int:
        return int(self.raw["id"])

    @property
    def at(self) -> datetime | None:
        return self._time("at")

    @property
    def actor(self) -> str:
        """
        The user name of the token used.
        """
        return str(self.raw["actor"])

    @property
    def role(self) -> str:
        return str(self.raw.get("role"))

    @property
    def token_id(self) -> int | None:
        """
        The database token used; C{None} for a token of the master's
        configuration file.
        """
        found = ref_id(self.raw.get("token"))
        return None if found is None else int(found)

    @property
    def action(self) -> str:
        """
        C{job.submit}, C{job.cancel}, C{agent.disable}, C{token.create}, ...
        """
        return str(self.raw["action"])

    @property
    def resource(self) -> str:
        """
        The href of what was changed.
        """
        return str(self.raw["resource"])

    @property
    def changes(self) -> dict[str, Any]:
        return dict(self.raw.get("changes") or {})

    @property
    def address(self) -> str | None:
        return self.raw.get("address")

    @property
    def master(self) -> str | None:
        """
        The master that served the request.
        """
        return self.raw.get("master")

    def token(self) -> Token | None:
        """
        The database token used (role admin), or C{None} for one of the
        configuration file.
        """
        if self.raw.get("token") is None:
            return None
        href = ref_href(self.raw.get("token"), "token")
        return Token(self._transport, self._transport.get_json(href))

    def __repr__(self) -> str:
        raw = self.raw
        return f"<AuditEntry {raw.get('id')} {raw.get('actor')!r} {raw.get('action')} " \
               f"{raw.get('resource')}>"  # fmt: skip

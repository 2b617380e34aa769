"""
masterctl's commands for who may do what and who hears of it: tokens, the
audit trail, webhooks, and agents' credentials. Like those of
L{_commands}, each returns the exit status; a bad argument is a
L{UsageError} (one line, status 2) raised before any request.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from ._accounts import ROLES
from ._commands import MAX_PAGE, _first, _page_size
from ._compat import UTC, fromisoformat
from ._context import Context, UsageError
from ._errors import MasterdError
from ._output import NONE, RIGHT, cell_text, dump_json, key_values, shorten, table, time_text
from ._watch import _Retrier
from ._webhooks import EVENTS
from .models import AuditEntry, Delivery, Token, Webhook

#: How wide the compact changes of an audit row may be in a table.
CHANGES_WIDTH = 80
ERROR_WIDTH = 60

# -- times given on the command line ------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta | None:
    """
    C{30d}, C{12h}, C{90m}, C{1h30m}, C{2w} as a timedelta; C{None} for
    anything else.
    """
    if not _DURATION.fullmatch(text):
        return None
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(text)))


def parse_when(text: str, option: str, now: datetime, *, ahead: bool) -> datetime:
    """
    A time given as a duration from now (ahead of it for C{--expires},
    before it for C{--since}) or as ISO 8601 with its zone.

    @raise UsageError: for anything else, naming C{option}.
    """
    try:
        duration = parse_duration(text.strip())
        if duration is not None:
            if ahead and not duration:
                raise UsageError(f"{option}: {text!r} is now; give a time to come (30d, 12h)")
            return now + duration if ahead else now - duration
    except OverflowError:
        raise UsageError(f"{option}: {text!r} is further than a calendar goes") from None
    example = "30d, 12h" if ahead else "1h, 30m"
    try:
        when = fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option}: {text!r} is neither a duration ({example}) nor an ISO 8601 time"
            " (2027-01-01T00:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise UsageError(f"{option}: {text!r} says no time zone: add one (Z for UTC, +01:00)")
    return when


def utc_text(when: datetime | None) -> str:
    """
    C{2026-11-28T23:42:07Z}: UTC, to the second, as C{--since} takes it.
    """
    if when is None:
        return NONE
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- tokens ---------------------------------------------------------------------


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(f"--role: unknown role {role!r}; one of {', '.join(ROLES)}")
    return role


def token_create(context: Context, args: argparse.Namespace) -> int:
    role = check_role(args.role)
    expires = None
    if args.expires is not None:
        expires = parse_when(args.expires, "--expires", context.runtime.now(), ahead=True)
    created = context.client.create_token(
        args.user, role, description=args.description, expires_at=expires
    )
    if args.quiet:
        context.write(f"{created.secret}\n")
        return 0
    context.emit(created.raw, lambda: created_text(created))
    return 0


def created_text(created: Token) -> str:
    expires = created.expires_at
    until = f"expires {time_text(expires)}" if expires else "never expires"
    return (
        f"token {created.id} created for {created.user} (role {created.role}, {until})\n"
        f"\n    {created.secret}\n\n"
        "This secret will not be shown again: keep it now (masterctl and the client read it"
        " from MASTERD_TOKEN).\n"
    )


def token_list(context: Context, args: argparse.Namespace) -> int:
    found = _first(
        context.client.tokens(user=args.user, revoked=args.revoked, limit=_page_size(args.limit)),
        args.limit,
    )
    if context.json:
        context.write(_list_json(found))
    elif not found:
        context.note("no tokens" + (f" of {args.user}" if args.user else ""))
    else:
        context.write(tokens_table(found))
    return 0


def tokens_table(found: list[Token]) -> str:
    return table(
        ["ID>", "USER", "ROLE", "STATE", "CREATED", "BY", "EXPIRES", "DESCRIPTION"],
        [
            [t.id, t.user, t.role, t.state, time_text(t.created_at), t.created_by,
             time_text(t.expires_at) if t.expires_at else "never", t.description]
            for t in found
        ],
    )  # fmt: skip


def token_show(context: Context, args: argparse.Namespace) -> int:
    found = context.client.token(args.token_id)
    context.emit(found.raw, lambda: token_details(found))
    return 0


def token_details(found: Token) -> str:
    return f"token {found.id}: {found.user}\n" + key_values(
        [
            ("role", found.role),
            ("state", found.state),
            ("description", found.description),
            ("created", time_text(found.created_at)),
            ("created by", found.created_by),
            ("expires", time_text(found.expires_at) if found.expires_at else "never"),
            ("revoked", time_text(found.revoked_at)),
            ("revoked by", found.revoked_by),
        ]
    )


def token_revoke(context: Context, args: argparse.Namespace) -> int:
    context.client.revoke_token(args.token_id)
    found = context.client.token(args.token_id)
    context.emit(
        found.raw,
        lambda: (
            f"token {found.id} of {found.user} (role {found.role}) revoked: every master"
            " refuses it from now on\n"
        ),
    )
    return 0


# -- the audit trail ------------------------------------------------------------

AUDIT_HEADERS = ["ID>", "TIME", "ACTOR", "ACTION", "RESOURCE", "ADDRESS", "CHANGES"]
#: Where the columns of a followed trail start, before rows widen them.
FOLLOW_WIDTHS = [6, 20, 10, 14, 20, 15, 0]
_PLAIN = re.compile(r"[\w./@:+-]+")


def changes_text(changes: Mapping[str, Any], width: int | None = CHANGES_WIDTH) -> str:
    """
    A row's changes on one line: C{priority=70 title="shot 10" tags=["a","b"]};
    a plain word unquoted, anything else as compact JSON.
    """
    parts = []
    for key, value in changes.items():
        if isinstance(value, str) and _PLAIN.fullmatch(value):
            shown = value
        else:
            shown = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        parts.append(f"{key}={shown}")
    text = " ".join(parts)
    return (shorten(text, width) if width else text) or NONE


def audit_row(entry: AuditEntry) -> list[object]:
    return [entry.id, utc_text(entry.at), entry.actor, entry.action, entry.resource, entry.address,
            changes_text(entry.changes)]  # fmt: skip


def audit(context: Context, args: argparse.Namespace) -> int:
    since = None
    if args.since is not None:
        since = parse_when(args.since, "--since", context.runtime.now(), ahead=False)
    query: dict[str, Any] = {"actor": args.actor, "resource": args.resource,
                             "action": args.action, "since": since,
                             "after": args.after}  # fmt: skip
    if args.follow:
        return follow_audit(context, query, args.interval)
    # One more than asked for: to say that there are more.
    limit = args.limit
    found = _first(context.client.audit(**query, limit=_page_size(limit + 1 if limit else 0)),
                   limit + 1 if limit else 0)  # fmt: skip
    more = bool(limit) and len(found) > limit
    found = found[:limit] if limit else found
    if context.json:
        context.write(_list_json(found))
    elif not found:
        context.note("no audit rows" + (" match" if any(query.values()) else ""))
    else:
        context.write(table(AUDIT_HEADERS, [audit_row(e) for e in found]))
    if more:
        context.note(
            f"more rows match: --after {found[-1].id} for the next ones, --limit 0 for all"
        )
    return 0


class _Aligned:
    """
    Lines of a table printed as its rows come: columns start at given
    widths and widen for a longer cell from then on.
    """

    def __init__(self, headers: Sequence[str], widths: Sequence[int]) -> None:
        self.names = [h.removesuffix(RIGHT) for h in headers]
        self.right = [h.endswith(RIGHT) for h in headers]
        self.widths = [max(len(n), w) for n, w in zip(self.names, widths)]

    def header(self) -> str:
        return self.line(self.names)

    def line(self, cells: Sequence[object]) -> str:
        texts = [cell_text(c) for c in cells]
        parts = []
        for i, text in enumerate(texts):
            self.widths[i] = max(self.widths[i], len(text))
            if self.right[i]:
                parts.append(text.rjust(self.widths[i]))
            else:
                parts.append(text if i == len(texts) - 1 else text.ljust(self.widths[i]))
        return "  ".join(parts).rstrip() + "\n"


def follow_audit(context: Context, query: Mapping[str, Any], interval: float) -> int:
    """
    Print the rows the filters match, then new ones as they are written,
    polling every C{interval} seconds, until interrupted. With C{--json},
    one document a line.
    """
    columns = _Aligned(AUDIT_HEADERS, FOLLOW_WIDTHS)
    if not context.json:
        context.write(columns.header())
    retrier = _Retrier(context, interval)
    after = query.get("after")
    while True:
        try:
            for entry in context.client.audit(**{**query, "after": after}, limit=MAX_PAGE):
                if context.json:
                    context.write(json.dumps(entry.raw, ensure_ascii=False) + "\n")
                else:
                    context.write(columns.line(audit_row(entry)))
                after = entry.id
        except MasterdError as error:
            retrier.failed(error)
        else:
            retrier.succeeded()
        context.runtime.sleep(interval)


# -- webhooks ---------------------------------------------------------------------


def check_url(url: str) -> str:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- parsed lazily; a bad port raises here
    except ValueError:
        raise UsageError(f"a webhook's URL: not a valid port in {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"a webhook's URL must be http:// or https://, not {url!r}")
    return url


def check_events(given: Iterable[str]) -> list[str]:
    """
    The events of repeated C{--event}s, each of which may list several
    (C{job.done,job.failed}), in order, once each.
    """
    events: list[str] = []
    for item in given:
        for event in filter(None, (e.strip() for e in item.split(","))):
            if event not in EVENTS:
                raise UsageError(f"--event: unknown event {event!r}; one of {', '.join(EVENTS)}")
            if event not in events:
                events.append(event)
    return events


def given_secret(context: Context, args: argparse.Namespace) -> str | None:
    if args.secret_env is None:
        return args.secret  # type: ignore[no-any-return]
    secret = context.runtime.environ.get(args.secret_env)
    if not secret:
        raise UsageError(f"--secret-env: ${args.secret_env} is not set, or empty")
    return secret


def webhook_create(context: Context, args: argparse.Namespace) -> int:
    url = check_url(args.webhook_url)
    events = check_events(args.event)
    if not events:
        raise UsageError("--event: give at least one event")
    secret = given_secret(context, args)
    generated = secret is None
    if secret is None:
        secret = secrets.token_urlsafe(32)
    created = context.client.create_webhook(
        url, events, secret, description=args.description, enabled=not args.disabled
    )
    if context.json:
        document = dict(created.raw)
        if generated:
            # The master never shows a secret: this is the only chance.
            document["secret"] = secret
        context.write(dump_json(document))
        return 0
    text = f"webhook {created.id} created\n" + webhook_details(created)
    if generated:
        text += (
            f"\nits secret, made up by masterctl:\n\n    {secret}\n\n"
            "It will not be shown again: give it to the receiver now, to check the"
            " X-Masterd-Signature of each delivery.\n"
        )
    context.write(text)
    return 0


def webhook_list(context: Context, args: argparse.Namespace) -> int:
    found = list(context.client.webhooks())
    if context.json:
        context.write(_list_json(found))
    elif not found:
        context.note("no webhooks")
    else:
        context.write(webhooks_table(found))
    return 0


def webhooks_table(found: list[Webhook]) -> str:
    return table(
        ["ID>", "URL", "EVENTS", "ENABLED", "PENDING>", "DESCRIPTION"],
        [[w.id, w.url, ",".join(w.events), w.enabled, w.pending, w.description] for w in found],
    )


def webhook_show(context: Context, args: argparse.Namespace) -> int:
    found = context.client.webhook(args.webhook_id)
    context.emit(found.raw, lambda: f"webhook {found.id}\n" + webhook_details(found))
    return 0


def webhook_details(found: Webhook) -> str:
    return key_values(
        [
            ("url", found.url),
            ("events", ", ".join(found.events)),
            ("enabled", found.enabled),
            ("description", found.description),
            ("pending", found.pending),
            ("created", time_text(found.created_at)),
            ("created by", found.created_by),
        ]
    )


def webhook_update(context: Context, args: argparse.Namespace) -> int:
    url = check_url(args.new_url) if args.new_url is not None else None
    events = check_events(args.event) if args.event else None
    secret = given_secret(context, args)
    enabled = True if args.enable else False if args.disable else None
    if url is None and events is None and secret is None and args.description is None \
            and enabled is None:  # fmt: skip
        raise UsageError("nothing to change: give --new-url, --event, --secret, --description,"
                         " --enable or --disable")  # fmt: skip
    found = context.client.update_webhook(
        args.webhook_id,
        url=url,
        events=events,
        secret=secret,
        description=args.description,
        enabled=enabled,
    )
    context.emit(found.raw, lambda: f"webhook {found.id} changed\n" + webhook_details(found))
    return 0


def webhook_delete(context: Context, args: argparse.Namespace) -> int:
    context.client.delete_webhook(args.webhook_id)
    if context.json:
        context.write(dump_json({"deleted": f"/api/v1/webhooks/{args.webhook_id}"}))
    else:
        context.write(f"webhook {args.webhook_id} deleted\n")
    return 0


def webhook_deliveries(context: Context, args: argparse.Namespace) -> int:
    found = _first(
        context.client.webhook_deliveries(
            args.webhook_id, state=args.state, limit=_page_size(args.limit)
        ),
        args.limit,
    )
    if context.json:
        context.write(_list_json(found))
    elif not found:
        context.note(f"webhook {args.webhook_id} has no deliveries"
                     + (f" in state {args.state}" if args.state else ""))  # fmt: skip
    else:
        context.write(deliveries_table(found))
    return 0


def deliveries_table(found: list[Delivery]) -> str:
    return table(
        ["ID>", "EVENT", "STATE", "CREATED", "TRIES>", "STATUS>", "DELIVERED", "NEXT TRY",
         "ERROR"],
        [
            [d.id, d.event, d.state, time_text(d.created_at), d.attempts, d.status,
             time_text(d.delivered_at), time_text(d.next_attempt_at),
             shorten(d.error, ERROR_WIDTH)]
            for d in found
        ],
    )  # fmt: skip


def _list_json(records: Iterable[Token | AuditEntry | Webhook | Delivery]) -> str:
    return dump_json({"items": [record.raw for record in records]})

"""
HTTP to the master with nothing but the standard library: one request, its
answer, and every failure turned into a L{MasterdError}.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from ._errors import MasterdError
from ._version import __version__

USER_AGENT = f"masterd-client/{__version__}"

# Enough of a foreign error page to recognise it, not enough to flood a terminal.
_SNIPPET_CHARS = 200
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class Opener(Protocol):
    """
    What sends a request: C{urllib.request.OpenerDirector} (the default, from
    C{urllib.request.build_opener()}), or a fake in tests. C{open} returns a
    response with C{status} (or C{getcode()}), C{headers} and C{read()}; an
    error answer may be returned that way too, or raised as
    C{urllib.error.HTTPError}.
    """

    def open(self, fullurl: urllib.request.Request, *, timeout: float) -> Any: ...


@dataclass(frozen=True)
class Response:
    """
    A successful answer, read whole.
    """

    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            raise MasterdError(
                self.status,
                "invalid_response",
                f"the answer from {self.url} is not JSON: {_snippet(self.body)}",
            ) from None


def check_url(url: str) -> str:
    """
    The master's base URL without a trailing slash.

    @raise ValueError: if it is not an http or https URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    try:
        parts.port  # noqa: B018 -- parsed lazily; a bad port raises here
    except ValueError:
        raise ValueError(f"not a valid port in {url!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"the master's URL takes no query or fragment: {url!r}")
    return url.rstrip("/")


class Transport:
    """
    Sends requests to one master. Hrefs are paths from the master's root
    (C{/api/v1/jobs/42}), appended to the base URL so that a master behind a
    path prefix (C{https://farm.example/masterd}) works too.
    """

    def __init__(
        self, url: str, token: str | None, timeout: float, opener: Opener | None = None
    ) -> None:
        self.url = check_url(url)
        self.token = token
        self.timeout = timeout
        self._opener: Opener = opener or urllib.request.build_opener()

    def url_for(self, href: str, query: Mapping[str, Any] | None = None) -> str:
        if href.startswith(("http://", "https://")):
            url = href
        else:
            url = self.url + "/" + href.lstrip("/")
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        return url

    def request(
        self,
        method: str,
        href: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Response:
        """
        Send one request and read its answer.

        @raise MasterdError: for an error answer or no answer.
        """
        url = self.url_for(href, query)
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            raw = self._opener.open(request, timeout=self.timeout)
            try:
                response = _read(raw, url)
            finally:
                _close(raw)
        except urllib.error.HTTPError as e:
            # An error answer: raised by urllib, but an answer all the same.
            try:
                answer = _read(e, url)
            except (OSError, http.client.HTTPException) as broken:
                raise self._unreachable(broken) from None
            finally:
                _close(e)
            raise error_from_answer(method, answer) from None
        except (OSError, http.client.HTTPException) as e:
            # URLError, refused or reset connections, timeouts and broken
            # answers are all OSError or HTTPException.
            raise self._unreachable(e) from None
        if response.status >= 400:
            raise error_from_answer(method, response)
        return response

    def get_json(self, href: str, query: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", href, query=query).json()

    def send_json(self, method: str, href: str, body: Any = None) -> Any:
        return self.request(method, href, body=body).json()

    def _unreachable(self, error: BaseException) -> MasterdError:
        reason = _reason(error)
        return MasterdError(
            0,
            "unreachable",
            f"cannot reach the master at {self.url}: {reason}",
            {"reason": reason, "url": self.url},
        )


def error_from_answer(method: str, answer: Response) -> MasterdError:
    """
    The error an answer of status 400 or more stands for: masterd's own
    C{{"error", "message", "details"}} when the body is that, otherwise a
    C{http_error} that quotes what came (a proxy's error page, say).
    """
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        details = body.get("details")
        message = body.get("message")
        return MasterdError(
            answer.status,
            body["error"],
            message if isinstance(message, str) and message else body["error"],
            details if isinstance(details, dict) else {},
        )
    snippet = _snippet(answer.body)
    return MasterdError(
        answer.status,
        "http_error",
        f"{method} {answer.url} answered HTTP {answer.status}, not from masterd"
        + (f": {snippet}" if snippet else ""),
        {"body": snippet},
    )


def _read(raw: Any, url: str) -> Response:
    status = getattr(raw, "status", None)
    if status is None:
        status = raw.getcode()
    headers = {name.lower(): value for name, value in (raw.headers or {}).items()}
    return Response(int(status), headers, raw.read(), url)


def _close(raw: Any) -> None:
    close = getattr(raw, "close", None)
    if close is not None:
        close()


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError):
        # URLError wraps the real cause (a refused connection, a failed
        # name lookup), or says something itself.
        if isinstance(error.reason, BaseException):
            error = error.reason
        else:
            return str(error.reason)
    if isinstance(error, TimeoutError):
        return "no answer in time (timed out)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, http.client.RemoteDisconnected):
        return "the connection closed without an answer"
    return str(error) or type(error).__name__


def _snippet(body: bytes) -> str:
    """
    A short, one-line account of a body that is not what was expected: the
    title of an HTML page, or the start of the text.
    """
    title = _TITLE.search(body)
    raw = title.group(1) if title else body
    text = " ".join(raw.decode("utf-8", "replace").split())
    if len(text) > _SNIPPET_CHARS:
        text = text[: _SNIPPET_CHARS - 1] + "…"
    return text

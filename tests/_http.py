"""
HTTP in memory: a real L{MasterSite} (so the real request class, counters and
body limit) behind treq's in-memory agent, on a L{MemoryReactorClock}.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from masterd.http import MasterSite


class FakeReadiness:
    """
    Stands in for the database service where only readiness matters.
    """

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready

    async def ping(self) -> bool:
        return self.ready

    def details(self) -> dict[str, str]:
        return {"database": "ready" if self.ready else "unavailable"}


@implementer(IBodyProducer)
class SyncProducer:
    """
    A request body written at once, with or without a declared length.
    """

    def __init__(self, body: bytes, chunked: bool = False) -> None:
        self.body = body
        self.length = UNKNOWN_LENGTH if chunked else len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def stopProducing(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


class Response:
    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class MemoryHTTP:
    def __init__(self, case: SynchronousTestCase, site: MasterSite) -> None:
        self.case = case
        self.agent = RequestTraversalAgent(site.resource)
        self.agent._serverFactory = site
        site.reactor = self.agent._memoryReactor
        self.clock = self.agent._memoryReactor
        self.client = HTTPClient(self.agent)

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: bytes | None = None,
        chunked: bool = False,
        headers: dict[str, list[str]] | None = None,
    ) -> Response:
        allHeaders = dict(headers or {})
        if token is not None:
            allHeaders["Authorization"] = [f"Bearer {token}"]
        d: Deferred[Any] = self.client.request(
            method,
            "http://127.0.0.1" + path,
            headers=allHeaders,
            data=None if body is None else SyncProducer(body, chunked),
        )
        self.agent.flush()
        response = self.case.successResultOf(d)
        content = treq.content(response)
        self.agent.flush()
        return Response(response.code, response.headers, self.case.successResultOf(content))

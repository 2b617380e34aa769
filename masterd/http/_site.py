"""
The master's HTTP site and the service that listens with it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import Site

from masterd.service import FatalStartError, StagedService
from masterd.stats import MasterStats

from ._accesslog import AccessLog
from ._request import MasterRequest

log = Logger()


class _Tracked:
    """
    Sits between a connection's transport and its HTTP protocol, to learn
    when the connection is gone. (Setting C{connectionLost} on the protocol
    itself does not survive a WebSocket upgrade, which replaces it.) Only
    arriving data and the end pass through here; writes go straight to the
    transport.
    """

    transport: Any = None

    def __init__(self, site: MasterSite, wrapped: Any) -> None:
        self._site = site
        self.wrapped = wrapped

    @property
    def channel(self) -> Any:
        return getattr(self.wrapped, "_channel", self.wrapped)

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.wrapped.makeConnection(transport)
        # Every request asks its channel for the local address, which costs
        # a getsockname() each time; it never changes on a connection.
        host = transport.getHost()
        self.channel.getHost = lambda: host

    def dataReceived(self, data: bytes) -> None:
        self.wrapped.dataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        self._site._lost(self)
        self.wrapped.connectionLost(reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class MasterSite(Site):
    """
    A site that knows its counters and body limit, and keeps track of its
    open connections so that stopping can wait for them to close.
    """

    requestFactory = MasterRequest
    displayTracebacks = False
    noisy = False

    def __init__(
        self,
        resource: IResource,
        stats: MasterStats | None,
        maxBodyBytes: int,
        reactor: Any = None,
    ) -> None:
        super().__init__(resource, reactor=reactor)
        self.accessLog = AccessLog(lambda: self.reactor)
        self.stats = stats
        self.maxBodyBytes = maxBodyBytes
        self.connections: set[_Tracked] = set()
        self._allClosed: list[Deferred[None]] = []

    def log(self, request: Any) -> None:
        self.accessLog.add(self._logDateTime or "-", request)

    def stopFactory(self) -> None:
        self.accessLog.flush()
        super().stopFactory()

    def buildProtocol(self, addr: IAddress | None) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is None:
            return None
        tracked = _Tracked(self, protocol)
        self.connections.add(tracked)
        return tracked

    def _lost(self, tracked: _Tracked) -> None:
        self.connections.discard(tracked)
        if not self.connections:
            waiting, self._allClosed = self._allClosed, []
            for d in waiting:
                d.callback(None)

    def closeConnections(self, reactor: IReactorTime, timeout: float = 5.0) -> Deferred[None]:
        """
        Close every open connection (idle keep-alive ones at once, busy ones
        once their response is written) and fire when all are gone; abort
        whatever is left after C{timeout} seconds.
        """
        d: Deferred[None] = Deferred()
        if not self.connections:
            d.callback(None)
            return d
        self._allClosed.append(d)
        for tracked in list(self.connections):
            channel = tracked.channel
            if getattr(channel, "requests", None):
                # Let the response under way finish, then close.
                channel.persistent = False
            else:
                channel.loseConnection()

        def abort() -> None:
            for tracked in list(self.connections):
                if tracked.transport is not None:
                    tracked.transport.abortConnection()

        call = reactor.callLater(timeout, abort)

        def cancelAbort(result: object) -> object:
            if call.active():
                call.cancel()
            return result

        d.addBoth(cancelAbort)
        return d


def describeAddress(port: IListeningPort) -> str:
    host = port.getHost()
    if hasattr(host, "port"):
        return f"{getattr(host, 'host', '?')}:{host.port}"
    return str(host)


#: The listen queue of a TCP or TLS endpoint that names none.
DEFAULT_BACKLOG = 1024


def withBacklog(description: str) -> str:
    """
    Give a TCP or TLS endpoint a deep listen queue unless it names one:
    Twisted's default of 50 overflows when thousands of agents reconnect at
    once (a master died), and every overflowed connection waits a second or
    more for the kernel to retry its SYN.
    """
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description


class HTTPService(StagedService):
    """
    Listens on every configured endpoint; stops listening, then closes the
    connections, then returns.
    """

    name = "http"

    def __init__(self, reactor: Any, site: MasterSite, listen: tuple[str, ...]) -> None:
        self._reactor = reactor
        self.site = site
        self._listen = listen
        self.ports: list[IListeningPort] = []

    async def start(self) -> None:
        for description in map(withBacklog, self._listen):
            endpoint = endpoints.serverFromString(self._reactor, description)
            try:
                port = await endpoint.listen(self.site)
            except Exception as e:
                await self._stopListening()
                raise FatalStartError(f"cannot listen on {description}: {e}") from e
            self.ports.append(port)
            log.info(
                "listening on {address} ({endpoint})",
                address=describeAddress(port),
                endpoint=description,
            )

    async def _stopListening(self) -> None:
        ports, self.ports = self.ports, []
        await DeferredList([Deferred.fromCoroutine(_stop(p)) for p in ports])

    async def stop(self) -> None:
        await self._stopListening()
        await self.site.closeConnections(self._reactor)


async def _stop(port: IListeningPort) -> None:
    result = port.stopListening()
    if isinstance(result, Deferred):
        await result

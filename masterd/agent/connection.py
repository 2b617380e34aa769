"""
The agent's side of talkback: one connection at a time to one of the
master URLs, a hello with the agent's hardware and the tasks it still runs,
heartbeats with its usage, and reconnection with capped exponential backoff
and jitter (Twisted's backoffPolicy), rotating through the URLs, forever:
whatever ends a connection or a try (a refusal, a timeout, a close during
the handshake, a master that says "try again later" or "replaced"), the
agent logs why at warn and tries again.

The welcome that enrolls the agent's id carries its credential: it is
written to the state directory before anything else is done, and presented
in every later hello (docs/talkback.md, "Threat model").
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, cast

from attrs import Factory, frozen
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.websocket import (
    ConnectionRejected,
    WebSocketClientEndpoint,
    WebSocketTransport,
)
from wsproto.utilities import LocalProtocolError

from .gpus import Device, offeredDevices
from .runner import Runner
from .statedir import readCredential, writeCredential
from .usage import hardware, usage

log = Logger()

#: After the master could not write a report, how long before it is sent
#: again.
RESEND_AFTER_S = 5.0
#: The longest a connection may take from TCP connect to the end of the
#: WebSocket handshake. (Twisted's client never fails a handshake whose
#: connection closes before the answer: without this, one master stopping
#: at the wrong moment left an agent waiting forever.)
HANDSHAKE_TIMEOUT_S = 15.0
#: Replaced this many times in a row: another agent is using this id.
REPLACED_ALARM = 3

# Close codes the master sends (docs/talkback.md), told in a closing message.
GOING_AWAY = 1001
TRY_AGAIN = 1013
FORBIDDEN = 4403
REPLACED = 4409


@frozen
class AgentSettings:
    agent_id: str
    #: The agent token: what enrolls the id (and enrolls it again after an
    #: admin reset its credential); None once the agent has its credential
    #: and is not meant to enroll again.
    token: str | None
    masters: tuple[str, ...]
    hostname: str
    max_tasks: int = 1
    tags: tuple[str, ...] = ()
    #: GPUs to offer; None: as nvidia-smi counts them.
    gpus: int | None = None
    #: The GPUs it offers, as the hello reports them (gpus.offeredDevices);
    #: None: found from C{gpus} when the service is made.
    gpu_devices: tuple[Device, ...] | None = None
    version: str = ""
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    #: Where the credential is kept (None: in memory only, for tests).
    state_dir: Path | None = None
    #: Cpus and RAM to report instead of what is detected (None: detected).
    cpus: int | None = None
    ram_mb: int | None = None
    #: Custom OpenJD capabilities it declares: full attribute name to its
    #: values, full amount name to a number.
    attributes: Mapping[str, tuple[str, ...]] = Factory(dict)
    amounts: Mapping[str, float] = Factory(dict)


def talkbackURL(url: str) -> str:
    """
    C{http://host:8080} or C{ws://host:8080} becomes
    C{ws://host:8080/api/v1/talkback}.
    """
    url = url.rstrip("/")
    if url.startswith("http://"):
        url = "ws://" + url[len("http://") :]
    elif url.startswith("https://"):
        url = "wss://" + url[len("https://") :]
    if not url.endswith("/api/v1/talkback"):
        url += "/api/v1/talkback"
    return url


class _Talkback:
    """
    One connection (implements L{twisted.web.websocket.WebSocketProtocol}).
    """

    def __init__(self, agent: AgentService) -> None:
        self.agent = agent
        self.transport: WebSocketTransport | None = None
        self.welcomed = False
        self.lost: Deferred[None] = Deferred()
        self._heartbeat: IDelayedCall | None = None
        self._resend: IDelayedCall | None = None
        self._lastHeard = agent.clock.seconds()
        #: The master's closing message: the close code and why.
        self.closeCode: int | None = None
        self.closeReason = ""
        #: The handshake under way; cancelled if the connection closes first.
        self.connecting: Deferred[Any] | None = None

    def buildProtocol(self, url: str) -> _Talkback:
        return self

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        s = self.agent.settings
        # The token too, with a credential: the master uses it only if the
        # id is not enrolled (its credential was reset), to enroll it anew.
        proof: dict[str, str] = {}
        if s.token:
            proof["token"] = s.token
        if self.agent.credential is not None:
            proof["credential"] = self.agent.credential
        self.sendNow(
            {
                "type": "hello",
                **proof,
                "agent": {
                    "id": s.agent_id,
                    "hostname": s.hostname,
                    "version": s.version,
                    "tags": list(s.tags),
                    "max_tasks": s.max_tasks,
                    **hardware(len(self.agent.devices), s.cpus, s.ram_mb),
                    "gpu_devices": self.agent.devices,
                    "attributes": {k: list(v) for k, v in s.attributes.items()},
                    "amounts": dict(s.amounts),
                },
                "running": self.agent.runner.listed(),
            }
        )

    def pongReceived(self, payload: bytes) -> None:
        self._lastHeard = self.agent.clock.seconds()

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        pass

    def textMessageReceived(self, text: str) -> None:
        self._lastHeard = self.agent.clock.seconds()
        try:
            message = json.loads(text)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            log.warn("unreadable message from the master: {text!r}", text=text[:200])
            return
        if kind == "welcome":
            self._welcome(message)
        elif kind == "assign":
            for task in message.get("tasks", []):
                self.agent.runner.run(task)
        elif kind == "cancel":
            self.agent.runner.cancel(message["task_id"], message["attempt"], message["reason"])
        elif kind == "ack":
            self.agent.runner.acknowledged(message["task_id"], message["attempt"])
        elif kind == "limits":
            log.info("the master set limits: {limits}", limits=message)
        elif kind == "error":
            log.warn("the master says: {message}", message=message.get("message"))
            if message.get("retry"):
                self._resendLater()
        elif kind == "closing":
            code = message.get("code")
            self.closeCode = code if isinstance(code, int) else None
            self.closeReason = str(message.get("reason") or "")

    def _welcome(self, message: dict[str, Any]) -> None:
        credential = message.get("credential")
        if isinstance(credential, str) and credential:
            # Before anything else: the master keeps only its digest, so an
            # agent that lost it could never say hello as itself again.
            self.agent.keepCredential(credential)
        self.welcomed = True
        self.agent.attempts = 0
        interval = float(message.get("heartbeat_s", 10))
        self.timeout = float(message.get("agent_timeout_s", 4.5 * interval))
        log.info("connected to master {master}", master=message.get("master"))
        self.flush()
        self._beat(interval)

    def _beat(self, interval: float) -> None:
        if self.transport is None or self.lost.called:
            return
        if self.agent.clock.seconds() - self._lastHeard > self.timeout:
            log.warn("nothing from the master for {s:.0f} s; reconnecting", s=self.timeout)
            self.transport.loseConnection()
            return
        self.sendNow({"type": "heartbeat", "usage": usage()})
        try:
            self.transport.ping()
        except LocalProtocolError:
            # As in sendNow: the master's close frame came, the connection
            # goes next (seen when a master stopped between two beats).
            pass
        self._heartbeat = self.agent.clock.callLater(interval, self._beat, interval)

    def sendNow(self, message: dict[str, Any]) -> None:
        if self.transport is None:
            return
        try:
            self.transport.sendTextMessage(json.dumps(message))
        except LocalProtocolError:
            # The master's close frame has arrived and the TCP connection is
            # about to go: what was not sent is sent again on the next one
            # (final reports stay until acknowledged).
            pass

    def flush(self) -> None:
        """
        Send what waits in the outbox (reports made while disconnected), and
        again the final reports no master has acknowledged.
        """
        runner = self.agent.runner
        for message in runner.unsent():
            self.sendNow(message)
        for message in list(runner.outbox):
            self.sendNow(message)
            runner.sent(message)

    def _resendLater(self) -> None:
        """
        The master could not write a message (its database was away): say
        again, a little later, what it may have missed.
        """
        if self._resend is None or not self._resend.active():
            self._resend = self.agent.clock.callLater(RESEND_AFTER_S, self._resendNow)

    def _resendNow(self) -> None:
        """
        Say again what the master may have failed to write: that the tasks
        still running run (so that none is taken for never started), and
        the final reports it has not acknowledged.
        """
        self._resend = None
        if self.transport is not None and self.welcomed:
            runner = self.agent.runner
            for message in runner.runningReports():
                self.sendNow(message)
            for message in runner.unsent():
                self.sendNow(message)

    def connectionLost(self, reason: Failure) -> None:
        for call in (self._heartbeat, self._resend):
            if call is not None and call.active():
                call.cancel()
        self.transport = None
        if self.connecting is not None and not self.connecting.called:
            self.connecting.cancel()
        self.lost.callback(None)


class HandshakeFailed(Exception):
    """
    The connection closed, or took too long, before the handshake ended.
    """


class AgentService(Service):
    """
    Keeps one talkback connection up, and the tasks running.
    """

    def __init__(self, reactor: Any, settings: AgentSettings, runner: Runner) -> None:
        self.reactor = reactor
        self.clock = reactor
        self.settings = settings
        self.runner = runner
        #: The GPUs it offers: found once (nvidia-smi is too slow for every
        #: hello).
        self.devices: list[Device] = (
            offeredDevices(settings.gpus)
            if settings.gpu_devices is None
            else [dict(d) for d in settings.gpu_devices]
        )
        #: Failed tries since the last welcome.
        self.attempts = 0
        #: Connections replaced by another with this agent's id, in a row.
        self.replaced = 0
        #: The secret this agent id was enrolled with, if it has been.
        self.credential: str | None = None
        if settings.state_dir is not None:
            self.credential = readCredential(settings.state_dir)
        self.connection: _Talkback | None = None
        self._next = 0
        self._loop: Deferred[None] | None = None
        self._wait: IDelayedCall | None = None
        #: The state directory's lock (statedir.lockStateDir), held while
        #: the agent runs.
        self.stateLock: IO[str] | None = None
        self._backoff: Callable[[int], float] = backoffPolicy(
            initialDelay=settings.backoff_initial_s,
            maxDelay=settings.backoff_max_s,
            factor=2.0,
            # Spread agents that lost the same master over half a step.
            jitter=lambda: random.uniform(0, settings.backoff_initial_s),
        )

    def keepCredential(self, credential: str) -> None:
        """
        The master enrolled this agent id: keep its credential on disk.
        """
        self.credential = credential
        if self.settings.state_dir is None:
            return
        try:
            writeCredential(self.settings.state_dir, credential)
        except OSError as e:
            # Kept in memory: this run can reconnect, a restart cannot.
            log.critical(
                "cannot write the credential to {stateDir}: {why}; after a restart this agent"
                " cannot connect until an admin resets its credential",
                stateDir=str(self.settings.state_dir),
                why=str(e),
            )
            return
        log.info("enrolled: credential kept in {stateDir}", stateDir=str(self.settings.state_dir))

    def send(self, message: dict[str, Any]) -> None:
        """
        The runner's report: sent now if connected, else kept in its outbox.
        """
        connection = self.connection
        if connection is not None and connection.welcomed and connection.transport is not None:
            connection.sendNow(message)
            self.runner.sent(message)

    def reportFailures(self, event: dict[str, Any]) -> None:
        """
        A log observer: the agent's own unhandled exceptions (logged
        failures) go to the master as exception messages.
        """
        failure = event.get("log_failure")
        if failure is None or event.get("log_namespace", "").startswith("masterd.agent.report"):
            return
        try:
            message = f"{failure.type.__name__}: {failure.getErrorMessage()}"
            traceback = failure.getTraceback()
        except Exception:
            return
        self.runner.outbox.append(
            {"type": "exception", "message": message[:10_000], "traceback": traceback[:100_000]}
        )
        connection = self.connection
        if connection is not None and connection.welcomed:
            connection.flush()

    def startService(self) -> None:
        super().startService()
        globalLogPublisher.addObserver(cast(ILogObserver, self.reportFailures))
        self.runner.start()
        self._loop = Deferred.fromCoroutine(self._connectLoop())
        self._loop.addErrback(lambda f: log.failure("the connection loop failed", f))

    def _delay(self, failures: int) -> float:
        """
        The wait after C{failures} failures in a row (1 or more).
        """
        return float(self._backoff(max(0, failures - 1)))

    async def _connectLoop(self) -> None:
        while self.running:
            url = talkbackURL(self.settings.masters[self._next % len(self.settings.masters)])
            self._next += 1
            connection = _Talkback(self)
            try:
                await self._connect(url, connection)
            except ConnectionRejected as e:
                code = getattr(e.response, "code", "?")
                if code == 503:
                    log.warn("{url} is not ready yet (HTTP 503); trying again", url=url)
                else:
                    log.warn("{url} refused the connection (HTTP {code})", url=url, code=code)
            except Exception as e:
                log.warn("cannot connect to {url}: {why}", url=url, why=str(e) or type(e).__name__)
            else:
                self.connection = connection
                await connection.lost
                self.connection = None
                self._disconnected(url, connection)
            if not self.running:
                return
            delay = self._after(connection)
            wait: Deferred[None] = Deferred()
            self._wait = self.clock.callLater(delay, wait.callback, None)
            await wait

    async def _connect(self, url: str, connection: _Talkback) -> None:
        endpoint = WebSocketClientEndpoint.new(self.reactor, url, connectTimeout=10)
        connecting = Deferred.fromCoroutine(endpoint.connect(connection))
        connection.connecting = connecting
        connecting.addTimeout(HANDSHAKE_TIMEOUT_S, self.clock)
        try:
            await connecting
        except CancelledError:
            raise HandshakeFailed("the connection closed during the WebSocket handshake") from None
        except DeferredTimeout:
            raise HandshakeFailed(
                f"no WebSocket handshake within {HANDSHAKE_TIMEOUT_S:.0f} s"
            ) from None
        finally:
            connection.connecting = None

    def _disconnected(self, url: str, connection: _Talkback) -> None:
        code, why = connection.closeCode, connection.closeReason
        if code == REPLACED:
            self.replaced += 1
            if self.replaced >= REPLACED_ALARM:
                log.error(
                    "replaced {n} times in a row by another connection with this agent's id"
                    " ({agentId}): another agent is using this id (a copy of its state"
                    " directory?)",
                    n=self.replaced,
                    agentId=self.settings.agent_id,
                )
            else:
                log.warn("{url} closed the connection: replaced by a newer one with this"
                         " agent's id", url=url)  # fmt: skip
            return
        if code == FORBIDDEN:
            log.error(
                "{url} refused this agent's credential ({why}): another agent may hold this id"
                " ({agentId}), or its credential was reset and the agent has no valid token;"
                " an admin can reset it (POST /api/v1/agents/{agentId}/credential/reset)",
                url=url,
                why=why,
                agentId=self.settings.agent_id,
            )
            return
        if code is None:
            log.info("disconnected from {url}", url=url)
        else:
            log.warn("{url} closed the connection ({code}{why})", url=url, code=code,
                     why=f": {why}" if why else "")  # fmt: skip

    def _after(self, connection: _Talkback) -> float:
        """
        How long to wait before the next try.
        """
        if connection.welcomed and connection.closeCode == REPLACED:
            # Two agents with one id would otherwise evict each other as fast
            # as they can connect: back off ever longer while it lasts.
            return self._delay(self.replaced)
        if connection.closeCode != REPLACED:
            self.replaced = 0
        self.attempts += 1
        if connection.closeCode == FORBIDDEN:
            # Trying again changes nothing until someone acts: the longest wait.
            return self._delay(100)
        if connection.welcomed and self.attempts == 1 and connection.closeCode in (
            None, GOING_AWAY,
        ):  # fmt: skip
            # A master that stopped or died: the next URL at once.
            return 0.0
        return self._delay(self.attempts)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        globalLogPublisher.removeObserver(cast(ILogObserver, self.reportFailures))
        self.runner.stop()
        if self._wait is not None and self._wait.active():
            self._wait.cancel()
        # OpenJD tasks end with the agent: handed back while the connection
        # is still up, their sessions' environments exited, then it closes.
        return Deferred.fromCoroutine(self._close(self.runner.stopOpenJD()))

    async def _close(self, openjdStopped: Deferred[None]) -> None:
        await openjdStopped
        connection = self.connection
        if connection is not None and connection.transport is not None:
            connection.transport.loseConnection()
            await connection.lost

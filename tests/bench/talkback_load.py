"""
Talkback load generator for talkback_bench.py: one process holding many agent
connections (asyncio + wsproto over plain sockets)::

    python tests/bench/talkback_load.py --port PORT --count 5000 [--first 0] [--rate 500]
        [--ports P1,P2,...] [--hold]

Opens C{--count} connections at C{--rate} a second (at most 256 handshakes in
flight) and says hello on each; once welcomed, an agent sends a heartbeat
every C{--period} s in one of 100 phase slots. Each slot's tick also sends one
Ping carrying its send time: a round-trip probe of the master's reactor. The
master's pings are answered. Commands on stdin: C{stats} prints a JSON line
of counters (round trips since the last C{stats}), C{quit} exits.

With C{--ports P1,P2,...} (instead of C{--port}) the agents connect to P1,
and an agent whose welcomed connection is lost without a close code (the
master died) or with 1001 (going away) reconnects at once to the next port
of the list, round robin, as the reference agent does: a new WebSocket, a
new hello with the same agent id, the credential its first welcome gave it
and, in C{running}, the tasks it holds. A
reconnection that fails (refused, or lost before its welcome) is counted
and tried again on the next port 1 s later. The stats gain C{lost},
C{reconnects} (started), C{rewelcomed}, C{reconnect_failed}, the time from
the loss to the new welcome (C{rewelcome_ms}: p50, p99, max) and from the
reconnection's connect to its welcome (C{reconnect_welcome_ms}), and
C{first_loss_at} and C{last_rewelcome_at} (time.monotonic(), the clock of
every process here) with C{rewelcome_last_s}, their difference.

With C{--hold}, an agent answers each C{assign} with C{running} for every
task and holds the tasks (lists them in each hello's C{running}) until the
stdin command C{finish}: then each agent sends C{done} (exit code 0) for the
tasks it holds and keeps the report until its C{ack}, sending it again
after each welcome, as the reference agent does. A C{cancel} of a held task
is answered with C{failed} (exit code -15). The stats gain C{assigns}
(tasks assigned), C{tasks_assigned} (distinct task ids), C{assigned_again}
(tasks assigned more than once), C{cancels}, C{acks}, C{done_sent}, C{held}
(tasks held now) and C{finals_pending} (final reports not acknowledged yet).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import struct
import sys
import uuid
from collections import Counter
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

TOKEN = "bench-agent-token-0123456789"
HEARTBEAT = json.dumps({"type": "heartbeat", "usage": {"cpu_percent": 12.5, "ram_free_mb": 1000}})
SLOTS = 100


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3 if ordered else 0.0


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.handshakes = asyncio.Semaphore(256)
        self.slots: list[list[Agent]] = [[] for _ in range(SLOTS)]
        self.counts: Counter[str] = Counter()
        self.closes: Counter[int] = Counter()
        self.welcomeTimes: list[float] = []
        self.rtts: list[float] = []
        self.firstError = ""
        ports = getattr(args, "ports", None)
        #: With --ports: reconnect on a loss, round robin over the ports.
        self.reconnecting = bool(ports)
        self.ports = [int(p) for p in ports.split(",")] if ports else [args.port]
        self.holding = bool(getattr(args, "hold_tasks", False))
        self.rewelcomeTimes: list[float] = []
        self.reconnectTimes: list[float] = []
        self.firstLoss: float | None = None
        self.lastRewelcome: float | None = None
        self.assigned: Counter[int] = Counter()
        #: With --hold: each agent's current connection, by agent index.
        self.current: dict[int, Agent] = {}

    def note(self, what: str, detail: str) -> None:
        self.counts[what] += 1
        self.firstError = self.firstError or f"{what}: {detail}"

    async def ramp(self) -> None:
        start = self.loop.time()
        for i in range(self.args.count):
            await asyncio.sleep(max(0.0, start + i / self.args.rate - self.loop.time()))
            await self.handshakes.acquire()
            self.loop.create_task(self.open(self.args.first + i))

    async def open(self, index: int) -> None:
        agent = Agent(self, index)
        if self.holding:
            self.current[index] = agent
        try:
            await self.loop.create_connection(lambda: agent, "127.0.0.1", agent.port)
        except OSError as e:
            agent.handshakeOver()
            agent.failed(f"connect: {e}")

    def reconnect(self, old: Agent, lostAt: float) -> None:
        """
        A new connection for the agent of C{old}, to the next port: its
        state (the tasks it holds, its reports) goes along.
        """
        agent = type(old)(self, old.index)
        agent.shaking = False  # not one of the ramp's handshakes
        agent.port = self.ports[(self.ports.index(old.port) + 1) % len(self.ports)]
        agent.lostAt, agent.held, agent.finals = lostAt, old.held, old.finals
        agent.credential = old.credential
        self.counts["reconnects"] += 1
        if self.holding:
            self.current[old.index] = agent
        self.loop.create_task(self.connectAgain(agent))

    async def connectAgain(self, agent: Agent) -> None:
        try:
            await self.loop.create_connection(lambda: agent, "127.0.0.1", agent.port)
        except OSError as e:
            agent.failed(f"connect: {e}")

    def finish(self) -> None:
        for agent in self.current.values():
            agent.finish()

    def tick(self, n: int, start: float) -> None:
        slot = self.slots[n % SLOTS]
        for agent in slot:
            if not agent.closed:
                agent.send(TextMessage(HEARTBEAT))
                self.counts["sent"] += 1
        if slot:
            slot[0].send(Ping(struct.pack("!d", self.loop.time())))
        self.loop.call_at(start + (n + 1) * self.args.period / SLOTS, self.tick, n + 1, start)

    def stats(self) -> dict[str, Any]:
        rtts, self.rtts, w = self.rtts, [], self.welcomeTimes
        out = {
            **self.counts, "closes": dict(self.closes), "first_error": self.firstError,
            "rtt_ms": [quantile(rtts, 0.5), quantile(rtts, 1)],
            "welcome_ms": [quantile(w, 0.5), quantile(w, 0.99), quantile(w, 1)],
        }  # fmt: skip
        if self.reconnecting:
            first, last = self.firstLoss, self.lastRewelcome
            out.update({
                "rewelcome_ms": [quantile(self.rewelcomeTimes, q) for q in (0.5, 0.99, 1)],
                "reconnect_welcome_ms": [quantile(self.reconnectTimes, q)
                                         for q in (0.5, 0.99, 1)],
                "first_loss_at": first, "last_rewelcome_at": last,
                "rewelcome_last_s": last - first if first is not None and last else None,
            })  # fmt: skip
        if self.holding:
            out.update({
                "tasks_assigned": len(self.assigned),
                "held": sum(len(a.held) for a in self.current.values()),
                "finals_pending": sum(len(a.finals) for a in self.current.values()),
            })  # fmt: skip
        return out


class Agent(asyncio.Protocol):
    __slots__ = ("closeCode", "closed", "credential", "finals", "gen", "held", "index", "lostAt",
                 "port", "shaking", "slot", "started", "text", "transport", "welcomed",
                 "ws")  # fmt: skip

    def __init__(self, gen: Generator, index: int) -> None:
        self.gen, self.index = gen, index
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.started = gen.loop.time()
        self.welcomed = self.closed = False
        self.shaking = True
        self.text = ""
        self.port = gen.ports[0]
        self.slot = -1
        self.closeCode: int | None = None
        #: Since when the agent has been without a welcomed connection (a
        #: reconnection); None for its first connection.
        self.lostAt: float | None = None
        #: With --hold: the tasks it holds (task id: attempt), and its final
        #: reports not acknowledged yet (task id: (attempt, message)).
        self.held: dict[int, int] = {}
        self.finals: dict[int, tuple[int, str]] = {}
        #: What the welcome that enrolled this agent's id gave it: its later
        #: hellos present it (the token alone no longer speaks for the id).
        self.credential: str | None = None

    def handshakeOver(self) -> None:
        if self.shaking:
            self.shaking = False
            self.gen.handshakes.release()

    def send(self, event: Any) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(self.ws.send(event))

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.send(Request(host=f"127.0.0.1:{self.port}", target="/api/v1/talkback"))

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self.text += event.data
                if event.message_finished:
                    self.message(json.loads(self.text))
                    self.text = ""
            elif isinstance(event, Ping):
                self.send(event.response())
            elif isinstance(event, Pong) and len(event.payload) == 8:
                self.gen.rtts.append(self.gen.loop.time() - struct.unpack("!d", event.payload)[0])
            elif isinstance(event, AcceptConnection):
                self.send(TextMessage(json.dumps(self.hello())))
            elif isinstance(event, CloseConnection):
                self.closeCode = event.code
                self.gen.closes[event.code] += 1
                self.send(event.response())
                self.closed = True
            elif isinstance(event, RejectConnection):
                self.gen.note("rejected", f"HTTP {event.status_code}")

    def message(self, message: dict[str, Any]) -> None:
        gen, kind = self.gen, message.get("type")
        if kind == "welcome" and not self.welcomed:
            self.welcomed = True
            self.credential = message.get("credential") or self.credential
            self.handshakeOver()
            now = gen.loop.time()
            if self.lostAt is None:
                gen.counts["welcomed"] += 1
                gen.welcomeTimes.append(now - self.started)
            else:
                gen.counts["rewelcomed"] += 1
                gen.rewelcomeTimes.append(now - self.lostAt)
                gen.reconnectTimes.append(now - self.started)
                gen.lastRewelcome = now
            self.slot = random.randrange(SLOTS)
            gen.slots[self.slot].append(self)
            for _, text in self.finals.values():  # not acknowledged: again
                self.send(TextMessage(text))
        elif kind == "assign" and gen.holding:
            for task in message["tasks"]:
                taskID, attempt = task["task_id"], task["attempt"]
                gen.counts["assigns"] += 1
                gen.assigned[taskID] += 1
                if gen.assigned[taskID] == 2:
                    gen.counts["assigned_again"] += 1
                self.held[taskID] = attempt
                self.send(TextMessage(json.dumps(self.update(taskID, attempt, "running"))))
        elif kind == "cancel" and gen.holding:
            gen.counts["cancels"] += 1
            taskID, attempt = message.get("task_id"), message.get("attempt")
            if isinstance(taskID, int) and self.held.get(taskID) == attempt:
                del self.held[taskID]
                self.final(taskID, attempt, "failed", -15)
        elif kind == "ack" and gen.holding:
            gen.counts["acks"] += 1
            taskID = message.get("task_id")
            if isinstance(taskID, int) and self.finals.get(taskID, (None,))[0] == message.get(
                "attempt"
            ):
                del self.finals[taskID]
        elif kind == "closing" and isinstance(message.get("code"), int):
            self.closeCode = message["code"]
        elif kind == "error":
            gen.note("error_messages", str(message.get("message")))

    @staticmethod
    def update(taskID: int, attempt: int, state: str, exitCode: int | None = None) -> Any:
        update = {"type": "task_update", "task_id": taskID, "attempt": attempt, "state": state}
        return update if exitCode is None else {**update, "exit_code": exitCode}

    def final(self, taskID: int, attempt: int, state: str, exitCode: int) -> None:
        """
        A final report: kept until acknowledged, sent now if connected.
        """
        text = json.dumps(self.update(taskID, attempt, state, exitCode))
        self.finals[taskID] = (attempt, text)
        if self.welcomed:
            self.send(TextMessage(text))

    def finish(self) -> None:
        """
        The command C{finish}: every task held is done.
        """
        for taskID, attempt in list(self.held.items()):
            del self.held[taskID]
            self.final(taskID, attempt, "done", 0)
            self.gen.counts["done_sent"] += 1

    def failed(self, detail: str) -> None:
        """
        This connection failed before its welcome: a reconnection is tried
        again on the next port a second later.
        """
        gen = self.gen
        if self.lostAt is None:
            gen.note("failed", detail)
        else:
            gen.note("reconnect_failed", f"agent {self.index} to port {self.port}: {detail}")
            gen.loop.call_later(1.0, gen.reconnect, self, self.lostAt)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.handshakeOver()
        gen = self.gen
        if not self.welcomed:
            self.failed(f"agent {self.index} lost: {exc or 'closed by the master'}")
        elif gen.reconnecting and self.closeCode in (None, 1001):  # the master went away
            now = gen.loop.time()
            gen.counts["lost"] += 1
            gen.firstLoss = now if gen.firstLoss is None else gen.firstLoss
            gen.slots[self.slot].remove(self)
            gen.reconnect(self, now)
        else:
            gen.note("dropped", f"agent {self.index} lost: {exc or 'closed by the master'}")

    def hello(self) -> dict[str, Any]:
        agentID = uuid.UUID(int=(self.gen.args.seed << 64) | self.index)
        running = [*self.held.items(), *((t, a) for t, (a, _) in self.finals.items())]
        proof = {"credential": self.credential} if self.credential else {}
        return {
            "type": "hello", "token": TOKEN, **proof,
            "running": [{"task_id": t, "attempt": a} for t, a in running],
            "agent": {"id": str(agentID), "hostname": f"bench-{self.index:05d}", "cpus": 8,
                      "ram_mb": 16000, "gpus": 0, "tags": ["linux"], "software": {},
                      "max_tasks": 1},
        }  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    gen = Generator(args)
    gen.loop.call_soon(gen.tick, 0, gen.loop.time())
    gen.loop.create_task(gen.ramp())
    reader = asyncio.StreamReader()
    await gen.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (line := (await reader.readline()).strip()) not in (b"", b"quit"):
        if line == b"stats":
            sys.stdout.write(json.dumps(gen.stats()) + "\n")
            sys.stdout.flush()
        elif line == b"finish":
            gen.finish()
    os._exit(0)  # the kernel closes 10,000 sockets faster than the loop would


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--port", type=int, help="the master's port")
    parser.add_argument("--ports", help="P1,P2,...: connect to P1, on a loss reconnect to the next")
    parser.add_argument("--hold", dest="hold_tasks", action="store_true",
                        help="run assigned tasks until the command finish")  # fmt: skip
    parser.add_argument("--count", type=int, required=True, help="connections to open")
    parser.add_argument("--first", type=int, default=0, help="index of the first agent (0)")
    parser.add_argument("--rate", type=float, default=500, help="connections a second (500)")
    parser.add_argument("--period", type=float, default=10, help="heartbeat period, s (10)")
    parser.add_argument("--seed", type=int, default=1, help="agent id prefix (1)")
    options = parser.parse_args()
    if options.port is None and not options.ports:
        parser.error("--port or --ports is required")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(options))

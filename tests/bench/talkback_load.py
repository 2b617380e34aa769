"""
Talkback load generator for talkback_bench.py: one process holding many agent
connections (asyncio + wsproto over plain sockets)::

    python tests/bench/talkback_load.py --port PORT --count 5000 [--first 0] [--rate 500]

Opens C{--count} connections at C{--rate} a second (at most 256 handshakes in
flight) and says hello on each; once welcomed, an agent sends a heartbeat
every C{--period} s in one of 100 phase slots. Each slot's tick also sends one
Ping carrying its send time: a round-trip probe of the master's reactor. The
master's pings are answered. Commands on stdin: C{stats} prints a JSON line
of counters (round trips since the last C{stats}), C{quit} exits.
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
        try:
            await self.loop.create_connection(lambda: agent, "127.0.0.1", self.args.port)
        except OSError as e:
            agent.handshakeOver()
            self.note("failed", f"connect: {e}")

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
        return {
            **self.counts, "closes": dict(self.closes), "first_error": self.firstError,
            "rtt_ms": [quantile(rtts, 0.5), quantile(rtts, 1)],
            "welcome_ms": [quantile(w, 0.5), quantile(w, 0.99), quantile(w, 1)],
        }  # fmt: skip


class Agent(asyncio.Protocol):
    __slots__ = ("closed", "gen", "index", "shaking", "started", "text", "transport", "welcomed",
                 "ws")  # fmt: skip

    def __init__(self, gen: Generator, index: int) -> None:
        self.gen, self.index = gen, index
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.started = gen.loop.time()
        self.welcomed = self.closed = False
        self.shaking = True
        self.text = ""

    def handshakeOver(self) -> None:
        if self.shaking:
            self.shaking = False
            self.gen.handshakes.release()

    def send(self, event: Any) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(self.ws.send(event))

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.send(Request(host=f"127.0.0.1:{self.gen.args.port}", target="/api/v1/talkback"))

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
                self.gen.closes[event.code] += 1
                self.send(event.response())
                self.closed = True
            elif isinstance(event, RejectConnection):
                self.gen.note("rejected", f"HTTP {event.status_code}")

    def message(self, message: dict[str, Any]) -> None:
        if message.get("type") == "welcome" and not self.welcomed:
            self.welcomed = True
            self.handshakeOver()
            self.gen.counts["welcomed"] += 1
            self.gen.welcomeTimes.append(self.gen.loop.time() - self.started)
            self.gen.slots[random.randrange(SLOTS)].append(self)
        elif message.get("type") == "error":
            self.gen.note("error_messages", str(message.get("message")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.handshakeOver()
        what = "dropped" if self.welcomed else "failed"
        self.gen.note(what, f"agent {self.index} lost: {exc or 'closed by the master'}")

    def hello(self) -> dict[str, Any]:
        agentID = uuid.UUID(int=(self.gen.args.seed << 64) | self.index)
        return {
            "type": "hello", "token": TOKEN, "running": [],
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
    os._exit(0)  # the kernel closes 10,000 sockets faster than the loop would


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True, help="connections to open")
    parser.add_argument("--first", type=int, default=0, help="index of the first agent (0)")
    parser.add_argument("--rate", type=float, default=500, help="connections a second (500)")
    parser.add_argument("--period", type=float, default=10, help="heartbeat period, s (10)")
    parser.add_argument("--seed", type=int, default=1, help="agent id prefix (1)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(parser.parse_args()))

"""
Scheduler load generator for scheduler_bench.py: talkback_load.py's agents
(asyncio + wsproto, heartbeats and round-trip probes included), each running
no-op tasks::

    python tests/bench/scheduler_load.py --port PORT --count 200 [--first 0] [--rate 500]

On C{assign}, an agent answers at once, for each task, C{running} then
C{done} (exit code 0), in one write (with C{--logs N}, N log messages of
C{--lines} lines each before the C{done}); with C{--hold S}, it answers C{running}
at once and C{done} after a random 0.5 S to 1.5 S, like a farm whose tasks
take time. It times the latency from its C{done} (a free slot) to its next
C{assign}, and from its C{welcome} to its first.
Commands on stdin: C{stats} prints a JSON line of counters and latency
quantiles (ms: p50, p90, p99, max; free-slot latencies since the last
C{window}), C{window} starts a new latency window, C{quit} exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
from typing import Any

from talkback_load import Agent, Generator, quantile
from wsproto.events import TextMessage


def quantiles(values: list[float]) -> list[float]:
    return [quantile(values, q) for q in (0.5, 0.9, 0.99, 1)]


class SchedulerGenerator(Generator):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.freeToAssign: list[float] = []
        self.welcomeToAssign: list[float] = []
        self.seen: set[int] = set()

    async def open(self, index: int) -> None:
        agent = NoOpAgent(self, index)
        try:
            await self.loop.create_connection(lambda: agent, "127.0.0.1", self.args.port)
        except OSError as e:
            agent.handshakeOver()
            self.note("failed", f"connect: {e}")

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(), "distinct_tasks": len(self.seen),
            "free_ms": quantiles(self.freeToAssign), "free_n": len(self.freeToAssign),
            "first_ms": quantiles(self.welcomeToAssign), "first_n": len(self.welcomeToAssign),
        }  # fmt: skip


class NoOpAgent(Agent):
    __slots__ = ("freedAt", "welcomedAt")

    def __init__(self, gen: SchedulerGenerator, index: int) -> None:
        super().__init__(gen, index)
        self.welcomedAt: float | None = None
        self.freedAt: float | None = None

    def finish(self, wire: bytes, count: int) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(wire)
            self.gen.counts["done"] += count
            self.freedAt = self.gen.loop.time()

    def message(self, message: dict[str, Any]) -> None:
        gen: Any = self.gen
        kind = message.get("type")
        if kind == "assign":
            now = gen.loop.time()
            if self.freedAt is not None:
                gen.freeToAssign.append(now - self.freedAt)
            elif self.welcomedAt is not None:
                gen.welcomeToAssign.append(now - self.welcomedAt)
            self.freedAt = None
            wire = b""
            later = b""
            for task in message["tasks"]:
                if task["task_id"] in gen.seen:
                    gen.counts["assigned_again"] += 1
                gen.seen.add(task["task_id"])
                update = {"type": "task_update", "task_id": task["task_id"],
                          "attempt": task["attempt"]}  # fmt: skip
                for state in ("running", "done"):
                    text = json.dumps({**update, "state": state, **(
                        {"exit_code": 0} if state == "done" else {})})  # fmt: skip
                    frame = self.ws.send(TextMessage(text))
                    if state == "done":
                        # Its output first, as a real task's: --logs messages
                        # of --lines lines each.
                        output = b""
                        for n in range(gen.args.logs):
                            lines = [f"task {task['task_id']} line {n * gen.args.lines + i}"
                                     for i in range(gen.args.lines)]  # fmt: skip
                            output += self.ws.send(TextMessage(json.dumps(
                                {**update, "type": "log", "lines": lines})))  # fmt: skip
                            gen.counts["log_lines"] += len(lines)
                        frame = output + frame
                    if state == "done" and gen.args.hold:
                        later += frame
                    else:
                        wire += frame
            gen.counts["assigns"] += 1
            if self.transport is not None and not self.closed:
                self.transport.write(wire)
                if later:
                    hold = gen.args.hold * random.uniform(0.5, 1.5)
                    gen.loop.call_later(hold, self.finish, later, len(message["tasks"]))
                else:
                    gen.counts["done"] += len(message["tasks"])
                    self.freedAt = gen.loop.time()
        else:
            if kind == "welcome":
                self.welcomedAt = gen.loop.time()
            elif kind == "cancel":
                gen.note("cancels", json.dumps(message))
            super().message(message)


async def main(args: argparse.Namespace) -> None:
    gen = SchedulerGenerator(args)
    gen.loop.call_soon(gen.tick, 0, gen.loop.time())
    gen.loop.create_task(gen.ramp())
    reader = asyncio.StreamReader()
    await gen.loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (line := (await reader.readline()).strip()) not in (b"", b"quit"):
        if line == b"window":
            gen.freeToAssign = []
        elif line == b"stats":
            sys.stdout.write(json.dumps(gen.stats()) + "\n")
            sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True, help="agents")
    parser.add_argument("--first", type=int, default=0, help="index of the first agent (0)")
    parser.add_argument("--rate", type=float, default=500, help="connections a second (500)")
    parser.add_argument("--period", type=float, default=10, help="heartbeat period, s (10)")
    parser.add_argument("--seed", type=int, default=2, help="agent id prefix (2)")
    parser.add_argument("--hold", type=float, default=0, help="mean task time, s (0: none)")
    parser.add_argument("--logs", type=int, default=0, help="log messages a task (0)")
    parser.add_argument("--lines", type=int, default=20, help="lines a log message (20)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(parser.parse_args()))

"""
Garbage-collector pauses: how often Python's collector ran, per generation,
and how long it held the reactor. A full (generation 2) collection walks
every tracked object, so with many agents connected its pauses are what
delays heartbeats and assigns; they are worth watching.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from attrs import define, field


@define(eq=False)
class GCStats:
    clock: Callable[[], float] = time.perf_counter
    collections: list[int] = field(factory=lambda: [0, 0, 0])
    seconds: list[float] = field(factory=lambda: [0.0, 0.0, 0.0])
    maxSeconds: list[float] = field(factory=lambda: [0.0, 0.0, 0.0])
    _began: float = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = self.clock()
            return
        generation = info["generation"]
        took = self.clock() - self._began
        self.collections[generation] += 1
        self.seconds[generation] += took
        if took > self.maxSeconds[generation]:
            self.maxSeconds[generation] = took

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def snapshot(self) -> dict[str, object]:
        return {
            "collections": list(self.collections),
            "pause_ms_total": [round(s * 1000, 3) for s in self.seconds],
            "pause_ms_max": [round(s * 1000, 3) for s in self.maxSeconds],
        }

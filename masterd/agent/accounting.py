"""
What a task's own process tree used, for its final report (docs/agent.md,
"Usage of each task"): its wall time, the CPU time and the peak resident
memory of its processes, and the GPU memory they held as nvidia-smi lists
it. Not the host's usage (L{masterd.agent.usage}, sent with heartbeats).

The shim (L{masterd.agent.shim}) measures its task with the rusage that
C{wait4} gives for its child and a L{TreeSampler}; the OpenJD runner, whose
actions openjd-sessions starts and reaps itself, with a L{TreeSampler}
alone.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import subprocess
import sys
import threading
from typing import Any

import psutil

#: How often the tree's resident memory and CPU time are sampled, in seconds
#: ($MASTERD_USAGE_SAMPLE_S overrides it).
SAMPLE_S = 0.5
#: How often nvidia-smi is asked what the tree's processes hold: a query
#: takes tens of milliseconds of a GPU host's CPU, and GPU memory changes
#: slowly ($MASTERD_USAGE_GPU_SAMPLE_S overrides it). The first query is
#: made one L{SAMPLE_S} after the start, so that short tasks are seen too.
GPU_SAMPLE_S = 5.0
#: The longest one nvidia-smi query may take ($MASTERD_USAGE_GPU_TIMEOUT_S).
NVIDIA_SMI_TIMEOUT_S = 10.0
#: After this many failed queries in a row, nvidia-smi is asked no more for
#: this task: a hung driver makes every query wait for its timeout.
NVIDIA_SMI_FAILURES = 3

#: The largest figures the master takes (TaskUsage, masterd.talkback).
MAX_SECONDS = 1e9
MAX_KB = 2**53 - 1
MAX_MB = 2**31 - 1

_QUERY = ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]


#: The shortest interval the environment may ask for: the shim reads it from
#: the task's environment, which the job's C{env} may set.
MIN_INTERVAL_S = 0.01


def _setting(name: str, default: float) -> float:
    """
    A positive number of seconds from the environment (at least
    L{MIN_INTERVAL_S}), else C{default}.
    """
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return max(value, MIN_INTERVAL_S) if math.isfinite(value) and value > 0 else default


def _seconds(value: Any) -> float:
    """
    Seconds as reported: finite, non-negative, at most L{MAX_SECONDS}, to
    the millisecond.
    """
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    if not math.isfinite(seconds) or seconds < 0:
        return 0.0
    return round(min(seconds, MAX_SECONDS), 3)


def _count(value: Any, limit: int) -> int:
    """
    A whole number as reported: finite, non-negative, at most C{limit}.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(number) or number < 0:
        return 0
    return int(min(number, limit))


def usageReport(
    wallS: float,
    cpuUserS: float = 0.0,
    cpuSystemS: float = 0.0,
    peakRSSKB: int = 0,
    gpuMemoryMB: int | None = None,
) -> dict[str, Any]:
    """
    The C{usage} of a final report, every figure made finite, non-negative
    and within what the master takes, seconds rounded to the millisecond.
    """
    return {
        "wall_s": _seconds(wallS),
        "cpu_user_s": _seconds(cpuUserS),
        "cpu_system_s": _seconds(cpuSystemS),
        "peak_rss_kb": _count(peakRSSKB, MAX_KB),
        "gpu_memory_mb": None if gpuMemoryMB is None else _count(gpuMemoryMB, MAX_MB),
    }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cleanUsage(raw: Any) -> dict[str, Any] | None:
    """
    A C{usage} read back from a shim's exit file, made safe to send (the
    file could be damaged: the master refuses a report that is not), or
    None when it is not one: not a mapping, or without a number for
    C{wall_s}.
    """
    if not isinstance(raw, dict) or not _number(raw.get("wall_s")):
        return None

    def figure(key: str) -> Any:
        value = raw.get(key)
        return value if _number(value) else 0

    gpu = raw.get("gpu_memory_mb")
    return usageReport(
        raw["wall_s"],
        figure("cpu_user_s"),
        figure("cpu_system_s"),
        figure("peak_rss_kb"),
        gpu if _number(gpu) else None,
    )


def _highWaterKB(pid: int) -> int:
    """
    The peak resident memory of one process so far, as Linux keeps it
    (VmHWM): it sees a peak between two samples. 0 where there is none.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeSampler:
    """
    Samples the process tree under one process (it and its descendants, as
    their parent links say) in background threads, from L{start} to
    L{stop}: the peak of the sum of their resident memory, the largest
    single peak, their CPU time (their own and that of the children they
    reaped), and, where nvidia-smi is on the PATH, the peak of the sum of
    the GPU memory it lists for them.

    Every figure is the largest seen, so a process that leaves the tree
    (it ends, or is reparented to init) takes nothing back. Nothing it does
    can fail the task: a sample that fails is skipped.
    """

    def __init__(
        self,
        pid: int,
        interval: float | None = None,
        gpuInterval: float | None = None,
        nvidiaSMI: str | None = None,
    ) -> None:
        """
        @param pid: the root of the tree.
        @param nvidiaSMI: the nvidia-smi to ask; by default the one on the
            PATH, if any.
        @raise psutil.Error: C{pid} is not a process.
        """
        self._root = psutil.Process(pid)
        self.interval = interval if interval is not None else _setting(
            "MASTERD_USAGE_SAMPLE_S", SAMPLE_S
        )  # fmt: skip
        self.gpuInterval = gpuInterval if gpuInterval is not None else _setting(
            "MASTERD_USAGE_GPU_SAMPLE_S", GPU_SAMPLE_S
        )  # fmt: skip
        self.gpuTimeout = _setting("MASTERD_USAGE_GPU_TIMEOUT_S", NVIDIA_SMI_TIMEOUT_S)
        self._nvidiaSMI = nvidiaSMI if nvidiaSMI is not None else shutil.which("nvidia-smi")
        self._lock = threading.Lock()
        self._done = threading.Event()
        #: The results so far (kept under the lock: the threads write them).
        self.peakRSSKB = 0
        self.peakSingleKB = 0
        self.cpuUserS = 0.0
        self.cpuSystemS = 0.0
        #: None until nvidia-smi lists a process of the tree.
        self.gpuMemoryMB: int | None = None

    @classmethod
    def watch(cls, pid: int, **kwargs: Any) -> TreeSampler | None:
        """
        A sampler of C{pid}'s tree, started; None if it cannot be (the
        process is already gone, or no thread can be started): measuring
        must never fail the task.
        """
        try:
            sampler = cls(pid, **kwargs)
            sampler.start()
        except Exception:
            return None
        return sampler

    def start(self) -> None:
        threading.Thread(target=self._sampleTree, name="masterd-usage", daemon=True).start()
        if self._nvidiaSMI is not None:
            threading.Thread(target=self._sampleGPU, name="masterd-usage-gpu",
                             daemon=True).start()  # fmt: skip

    def stop(self) -> None:
        """
        No more samples: what a sample under way finds is dropped, so the
        figures read after this do not change. The threads are not waited
        for (an nvidia-smi query can take seconds); they end by themselves.
        """
        with self._lock:
            self._done.set()

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []

    def _sampleTree(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:
                pass  # a sample cannot fail the task; the next may do better
            if self._done.wait(self.interval):
                return

    def sample(self) -> None:
        """
        Sample the tree once: its resident memory and CPU time now.
        """
        rss = single = 0
        user = system = 0.0
        for process in self._tree():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    memory = process.memory_info().rss // 1024
            except psutil.Error:
                continue
            rss += memory
            single = max(single, memory, _highWaterKB(process.pid))
            # Children reaped by a process of the tree left it: their time
            # is in their parent's children_* (and in nothing else of it).
            user += times.user + times.children_user
            system += times.system + times.children_system
        with self._lock:
            if self._done.is_set():
                return
            self.peakRSSKB = max(self.peakRSSKB, rss)
            self.peakSingleKB = max(self.peakSingleKB, single)
            self.cpuUserS = max(self.cpuUserS, user)
            self.cpuSystemS = max(self.cpuSystemS, system)

    def _sampleGPU(self) -> None:
        failures = 0
        delay = self.interval
        while not self._done.wait(delay):
            delay = self.gpuInterval
            try:
                self.sampleGPU()
            except Exception:
                failures += 1
                if failures >= NVIDIA_SMI_FAILURES:
                    return
            else:
                failures = 0

    def sampleGPU(self) -> None:
        """
        Ask nvidia-smi once what the tree's processes hold.

        @raise Exception: nvidia-smi failed, timed out, or could not run.
        """
        assert self._nvidiaSMI is not None
        pids = {p.pid for p in self._tree()}
        if not pids:
            return
        answer = subprocess.run(
            [self._nvidiaSMI, *_QUERY], stdin=subprocess.DEVNULL, capture_output=True,
            timeout=self.gpuTimeout, check=True,
        )  # fmt: skip
        total, listed = 0, False
        # "PID, MiB" a line, once for each GPU a process uses; [N/A] where
        # it cannot tell (a pid from another pid namespace matches none).
        for line in answer.stdout.decode("utf-8", "replace").splitlines():
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 2 or not fields[0].isdigit() or not fields[1].isdigit():
                continue
            if int(fields[0]) in pids:
                total += int(fields[1])
                listed = True
        if not listed:
            return
        with self._lock:
            if not self._done.is_set():
                self.gpuMemoryMB = max(self.gpuMemoryMB or 0, total)

    def report(self, wallS: float, rusage: resource.struct_rusage | None = None) -> dict[str, Any]:
        """
        The C{usage} of the task: C{wallS}, and the figures sampled, or the
        larger figures of C{rusage}, the one that C{wait4} gave for the
        tree's root, where there is one.
        """
        with self._lock:
            user, system = self.cpuUserS, self.cpuSystemS
            peak = max(self.peakRSSKB, self.peakSingleKB)
            gpu = self.gpuMemoryMB
        if rusage is not None:
            user = max(user, rusage.ru_utime)
            system = max(system, rusage.ru_stime)
            peak = max(peak, maxRSSKB(rusage))
        return usageReport(wallS, user, system, peak, gpu)


def maxRSSKB(rusage: resource.struct_rusage) -> int:
    """
    C{ru_maxrss} in KiB: Linux gives KiB, macOS bytes.
    """
    if sys.platform == "darwin":
        return int(rusage.ru_maxrss) // 1024
    return int(rusage.ru_maxrss)

"""CPU time of the processes under test, from /proc (Linux; elsewhere these figures are simply left out).

Per-operation CPU is steadier than wall time on a busy machine and says which process the time went to. Reading
it every few hundred microseconds also lets the bench wait, before each timed operation, until the previous one's
deferred work (a garbage collector, a log writer thread) is done — otherwise on a small machine one side's
leftovers would be billed to whichever side runs next.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

_TICK_NS = 1e9 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def process_cpu_ns(pid: int) -> int | None:
    """Nanoseconds on CPU of every thread of `pid` (its children not included); None if unknown."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    if total == 0:  # kernels without schedstat: fall back to the coarse tick counters of /proc/<pid>/stat
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return int((int(fields[11]) + int(fields[12])) * _TICK_NS)
    return total


def settle(pids: Iterable[int], *, window: float = 0.0003, busy_ns: int = 30_000, limit: float = 0.25) -> None:
    """Wait (at most `limit` seconds) until none of `pids` used more than `busy_ns` of CPU in `window` seconds.

    It spins rather than sleeps: a sleeping bench would let the cores drop into idle states, and every operation
    would then start with a wake-up that neither side causes in real use."""
    pids = list(pids)
    if not pids:
        return
    deadline = time.monotonic() + limit
    before = [process_cpu_ns(pid) for pid in pids]
    mark = time.perf_counter()
    while time.monotonic() < deadline:
        if time.perf_counter() - mark < window:
            continue
        after = [process_cpu_ns(pid) for pid in pids]
        if all(a is None or b is None or a - b <= busy_ns for a, b in zip(after, before, strict=True)):
            return
        before, mark = after, time.perf_counter()


class CpuMeter:
    """CPU seconds per operation of some processes between start() and per_op()."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start: dict[str, int | None] = {}

    def start(self) -> None:
        self._start = {name: process_cpu_ns(pid) for name, pid in self._pids.items()}

    def per_op(self, ops: Mapping[str, int]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, pid in self._pids.items():
            before, after = self._start.get(name), process_cpu_ns(pid)
            count = ops.get(name)
            out[name] = None if before is None or after is None or not count else (after - before) / 1e9 / count
        return out

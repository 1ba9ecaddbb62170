"""A/B/A/B…: every side runs once per round, so a slow moment of the machine hits both sides alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bench.cpu import CpuMeter, settle


@dataclass
class Measured:
    samples: dict[str, list[float]]
    """Seconds per operation, per side, warm-up left out."""
    cpu: dict[str, float | None] = field(default_factory=dict)
    """CPU seconds per operation of each side's process under test (where its pid was given)."""
    also: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Per side, the `Timed.also` figures of its measured operations."""


@dataclass(frozen=True)
class Timed:
    """What an action returns when only part of its work is the measured operation."""

    seconds: float
    also: Mapping[str, float] = field(default_factory=dict)
    """Further figures from the same operation (e.g. a later milestone), collected under these names."""


def alternate(actions: Mapping[str, Callable[[int], object]], warmup: int, runs: int,
              pids: Mapping[str, int] | None = None, quiet: Sequence[int] = (), *, settled: bool = False,
              rotate: bool = False) -> Measured:
    """Call each action once per round, in order (A B A B …): `warmup` rounds unmeasured, then `runs` measured.
    With `rotate`, each round starts one side later (A B C, B C A, C A B …), so that no side always runs right
    after the same other side and inherits its deferred work (a peer's garbage collection, say).
    An action gets the round number (for unique tags) and is timed from call to return, unless it returns `Timed`.
    `pids` are the processes under test, one per side, whose
    CPU is counted. With `settled`, before every timed call the bench waits until they and the `quiet` processes
    are idle, so no side's deferred work (a garbage collector, a log writer) lands on the other side's timing."""
    samples: dict[str, list[float]] = {name: [] for name in actions}
    also: dict[str, dict[str, list[float]]] = {name: {} for name in actions}
    meter = CpuMeter(pids or {})
    idle = [*(pids or {}).values(), *quiet] if settled else []
    for i in range(warmup + runs):
        if i == warmup:
            meter.start()
        names = list(actions)
        if rotate:
            names = names[i % len(names):] + names[: i % len(names)]
        for name in names:
            action = actions[name]
            settle(idle)
            started = time.perf_counter()
            result = action(i)
            elapsed = time.perf_counter() - started
            if isinstance(result, Timed):
                elapsed = result.seconds  # the action timed itself (e.g. leaving out the clean-up after)
            if i >= warmup:
                samples[name].append(elapsed)
                if isinstance(result, Timed):
                    for key, value in result.also.items():
                        also[name].setdefault(key, []).append(value)
    return Measured(samples, meter.per_op({name: runs for name in pids or {}}), also)

"""Samples, their summaries, and the one table the bench prints."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): a value that was actually measured."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Side:
    """One side of a case: per-operation seconds, and optionally a throughput."""

    label: str
    samples: list[float] = field(default_factory=list)
    throughput: float | None = None
    """Operations per second, where the case has a meaningful rate."""
    unit: str = "/s"
    note: str = ""
    """Shown instead of figures when the side has none (e.g. the peer cannot do the case)."""
    cpu: float | None = None
    """CPU seconds per operation of the process under test (the server or host), where measured."""
    memory: bool = False
    """The samples are bytes of memory (PSS), not seconds."""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"label": self.label, "note": self.note}
        return {
            "label": self.label, "n": len(self.samples), "median_s": self.median, "p99_s": self.p99,
            "min_s": min(self.samples), "max_s": max(self.samples), "throughput": self.throughput,
            "throughput_unit": self.unit, "cpu_per_op_s": self.cpu, "note": self.note,
        }


Verdict = Callable[["Row"], "tuple[bool, str] | None"]


@dataclass
class Row:
    suite: str
    case: str
    ours: Side
    other: Side
    target: str = ""
    verdict: Verdict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """ours/other on medians: below 1 means we are faster."""
        if not self.ours.samples or not self.other.samples:
            return None
        return self.ours.median / self.other.median

    def judged(self) -> tuple[bool, str] | None:
        return self.verdict(self) if self.verdict is not None else None

    def as_json(self) -> dict[str, Any]:
        judged = self.judged()
        return {
            "suite": self.suite, "case": self.case, "ours": self.ours.summary(), "other": self.other.summary(),
            "ratio_median": self.ratio, "target": self.target,
            "met": judged[0] if judged else None, "verdict": judged[1] if judged else None, **self.extra,
        }


# -- targets ----------------------------------------------------------------------------------------------------


def ratio_at_most(limit: float) -> Verdict:
    def judge(row: Row) -> tuple[bool, str] | None:
        ratio = row.ratio
        if ratio is None:
            return None
        return ratio <= limit, f"{ratio:.3f}× (≤ {limit:g}×)"

    return judge


def paired_ratio_at_most(limit: float) -> Verdict:
    """ratio_at_most, with the spread of the ratio over the paired rounds (ours[i] / other[i]: the sides ran
    back to back in each round): p10–p90, or min–max with fewer than ten rounds."""

    def judge(row: Row) -> tuple[bool, str] | None:
        ratio = row.ratio
        if ratio is None:
            return None
        pairs = [a / b for a, b in zip(row.ours.samples, row.other.samples, strict=True)]
        low, high = (percentile(pairs, 10), percentile(pairs, 90)) if len(pairs) >= 10 else (min(pairs), max(pairs))
        spread = "p10–p90" if len(pairs) >= 10 else "min–max"
        return ratio <= limit, f"{ratio:.3f}× (≤ {limit:g}×; paired {spread} {low:.2f}–{high:.2f})"

    return judge


def throughput_at_least(limit: float) -> Verdict:
    def judge(row: Row) -> tuple[bool, str] | None:
        if not row.ours.throughput or not row.other.throughput:
            return None
        ratio = row.ours.throughput / row.other.throughput
        return ratio >= limit, f"{ratio:.3f}× the calls/s (≥ {limit:g}×)"

    return judge


def zero_misrouted(row: Row) -> tuple[bool, str] | None:
    misrouted, errors = row.extra.get("misrouted"), row.extra.get("errors")
    if misrouted is None:
        return None
    return misrouted == 0 and errors == 0, f"{misrouted} misrouted, {errors} failed"


# -- formatting -------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def rate(side: Side) -> str:
    if side.throughput is None:
        return ""
    value = side.throughput
    text = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    return f"{text}{side.unit}"


def _cpu(row: Row) -> str:
    if row.ours.cpu is None and row.other.cpu is None:
        return ""
    return " · ".join("—" if s.cpu is None else duration(s.cpu) for s in (row.ours, row.other))


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def _figures(side: Side) -> tuple[str, str]:
    if not side.samples:
        return side.note or "—", ""
    show = mib if side.memory else duration
    return show(side.median), show(side.p99)


HEADER = ("suite", "case", "compared with", "ours median", "ours p99", "their median", "their p99",
          "ours rate", "their rate", "CPU/op ours · theirs", "ours/theirs", "target", "verdict")


def table(rows: Sequence[Row]) -> str:
    """A Markdown table: readable in a terminal, pasteable into docs/BENCHMARKS.md."""
    lines = [HEADER]
    for row in rows:
        ours_median, ours_p99 = _figures(row.ours)
        their_median, their_p99 = _figures(row.other)
        ratio = row.ratio
        judged = row.judged()
        verdict = "" if judged is None else ("met: " if judged[0] else "MISSED: ") + judged[1]
        lines.append((
            row.suite, row.case, row.other.label, ours_median, ours_p99, their_median, their_p99,
            rate(row.ours), rate(row.other), _cpu(row), "" if ratio is None else f"{ratio:.3f}", row.target, verdict,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    out = [render(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [render(line) for line in lines[1:]]
    return "\n".join(out)

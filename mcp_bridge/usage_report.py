"""The usage log read for people: a time window, breakdowns by tool, key or day, recent failures, top errors,
and a one-file HTML report with charts drawn here as inline SVG (no script, no network).

Read-only over the `usage` table that mcp_bridge.usage writes. Every text in it (tool names, error messages,
client names) came from an agent or a server and is escaped wherever it is shown.
"""

from __future__ import annotations

import html
import math
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

By = Literal["tool", "key", "day"]
BY: tuple[By, ...] = ("tool", "key", "day")
MAX_BUCKETS = 48
_BUCKET_SIZES = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)


class WhenError(ValueError):
    """A --since/--until value that is neither a duration nor an ISO 8601 time; the message shows both forms."""


def parse_when(text: str, now: float) -> float:
    """`24h`, `7d` (that long before `now`) or an ISO 8601 date or time (local time when it has no offset)."""
    from mcp_bridge.keys import KeyStoreError, parse_duration

    try:
        return now - parse_duration(text)
    except KeyStoreError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise WhenError(f"cannot read {text!r}: give a duration back from now (30m, 24h, 7d, 2w) or an ISO 8601 "
                        "date or time (2026-11-01, 2026-11-01T09:30, 2026-11-01T09:30:00Z)") from None
    return (moment.astimezone() if moment.tzinfo is None else moment).timestamp()


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 in UTC, to the millisecond."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local(ts: float, fmt: str) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime(fmt)


@dataclass(frozen=True)
class Window:
    since: float | None = None
    until: float | None = None
    key: str | None = None

    def where(self, extra: str = "") -> tuple[str, list[object]]:
        clauses: list[str] = ["1 = 1"]
        params: list[object] = []
        for clause, value in (("ts >= ?", self.since), ("ts < ?", self.until), ("key_name = ?", self.key)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if extra:
            clauses.append(extra)
        return " AND ".join(clauses), params

    def describe(self) -> str:
        start = _local(self.since, "%Y-%m-%d %H:%M") if self.since is not None else "the first call"
        end = _local(self.until, "%Y-%m-%d %H:%M") if self.until is not None else "now"
        return f"{start} → {end}, " + (f"key {self.key!r}" if self.key else "all keys")

    def as_dict(self) -> dict[str, object]:
        return {"since": iso(self.since), "until": iso(self.until), "key": self.key}


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    # Nearest-rank: a value that really occurred, which is what a reader of a log expects.
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


@dataclass(frozen=True)
class Group:
    """The calls of one tool, key or day (or of all of them): counts and latency."""

    name: str
    calls: int
    failures: int
    refusals: int
    p50_ms: float
    p95_ms: float

    def as_dict(self, label: str) -> dict[str, object]:
        return {label: self.name, "calls": self.calls, "failures": self.failures, "refusals": self.refusals,
                "p50_ms": round(self.p50_ms, 3), "p95_ms": round(self.p95_ms, 3)}


def _group(name: str, durations: list[float], outcomes: dict[str, int]) -> Group:
    values = sorted(durations)
    return Group(name, len(values), outcomes["failed"], outcomes["refused"],
                 percentile(values, 0.50), percentile(values, 0.95))


def groups(conn: sqlite3.Connection, window: Window, by: By = "tool") -> list[Group]:
    """One summary per tool or key (alphabetical) or per local day (oldest first)."""
    column = {"tool": "tool", "key": "key_name", "day": "ts"}[by]
    where, params = window.where()
    durations: dict[str, list[float]] = defaultdict(list)
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    query = f"SELECT {column}, outcome, duration_ms FROM usage WHERE {where}"  # noqa: S608 - fixed parts
    for value, outcome, duration in conn.execute(query, params):
        name = _local(value, "%Y-%m-%d") if by == "day" else str(value)
        durations[name].append(float(duration))
        outcomes[name][outcome] += 1
    return [_group(name, durations[name], outcomes[name]) for name in sorted(durations)]


def totals(conn: sqlite3.Connection, window: Window) -> Group | None:
    where, params = window.where()
    durations: list[float] = []
    outcomes: dict[str, int] = defaultdict(int)
    for outcome, duration in conn.execute(f"SELECT outcome, duration_ms FROM usage WHERE {where}",  # noqa: S608
                                          params):
        durations.append(float(duration))
        outcomes[outcome] += 1
    return _group("total", durations, outcomes) if durations else None


def recent(conn: sqlite3.Connection, window: Window, limit: int = 50,
           failures_only: bool = False) -> list[dict[str, object]]:
    """The latest calls (or failures and refusals), newest first, with ISO 8601 times."""
    where, params = window.where("outcome != 'ok'" if failures_only else "")
    query = (f"SELECT ts, key_name, tool, outcome, error, duration_ms, client FROM usage WHERE {where}"  # noqa: S608
             " ORDER BY ts DESC, id DESC LIMIT ?")
    names = ("ts", "key", "tool", "outcome", "error", "duration_ms", "client")
    rows = [dict(zip(names, row, strict=True)) for row in conn.execute(query, [*params, limit])]
    for row in rows:
        row["ts"] = iso(float(row["ts"]))
    return rows


def top_errors(conn: sqlite3.Connection, window: Window, limit: int = 10) -> list[dict[str, object]]:
    """The most frequent failure and refusal messages, per tool."""
    where, params = window.where("outcome != 'ok'")
    query = (f"SELECT tool, outcome, COALESCE(error, ''), COUNT(*), MAX(ts) FROM usage WHERE {where}"  # noqa: S608
             " GROUP BY tool, outcome, error ORDER BY COUNT(*) DESC, MAX(ts) DESC LIMIT ?")
    return [{"tool": tool, "outcome": outcome, "error": error, "count": count, "last": iso(last)}
            for tool, outcome, error, count, last in conn.execute(query, [*params, limit])]


@dataclass
class Timeline:
    """Calls per time bucket: per tool the count and p95, and the refusals and failures of all tools."""

    start: float
    bucket_s: int
    buckets: int
    calls: dict[str, list[int]] = field(default_factory=dict)
    p95_ms: dict[str, list[float | None]] = field(default_factory=dict)
    refusals: list[int] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)

    def label(self, index: int) -> str:
        fmt = "%Y-%m-%d" if self.bucket_s >= 86400 else "%m-%d %H:%M"
        return _local(self.start + index * self.bucket_s, fmt)


def timeline(conn: sqlite3.Connection, window: Window, now: float) -> Timeline | None:
    where, params = window.where()
    rows = conn.execute(f"SELECT ts, tool, outcome, duration_ms FROM usage WHERE {where}", params).fetchall()  # noqa: S608
    if not rows:
        return None
    first = window.since if window.since is not None else min(r[0] for r in rows)
    last = window.until if window.until is not None else max(now, max(r[0] for r in rows))
    span = max(last - first, 1.0)
    bucket_s = next((s for s in _BUCKET_SIZES if span / s <= MAX_BUCKETS), _BUCKET_SIZES[-1])
    start = math.floor(first / bucket_s) * bucket_s
    count = max(1, math.ceil((last - start) / bucket_s))
    result = Timeline(start, bucket_s, count, refusals=[0] * count, failures=[0] * count)
    durations: dict[str, list[list[float]]] = {}
    for ts, tool, outcome, duration in rows:
        index = min(count - 1, max(0, int((ts - start) // bucket_s)))
        result.calls.setdefault(tool, [0] * count)[index] += 1
        durations.setdefault(tool, [[] for _ in range(count)])[index].append(float(duration))
        if outcome == "refused":
            result.refusals[index] += 1
        elif outcome == "failed":
            result.failures[index] += 1
    result.p95_ms = {tool: [percentile(sorted(b), 0.95) if b else None for b in per]
                     for tool, per in durations.items()}
    return result


def report(conn: sqlite3.Connection, window: Window, by: By = "tool", failures: int = 10) -> dict[str, Any]:
    """Everything `usage --json` prints."""
    from mcp_bridge.usage import losses, rejected_calls

    total = totals(conn, window)
    lost = losses(conn, window.since)
    rejected = rejected_calls(conn, window.since)
    for row in lost:
        for name in ("recorded_at", "first_ts", "last_ts"):
            row[name] = iso(row[name])
    for row in rejected:
        for name in ("window_start", "first_ts", "last_ts"):
            row[name] = iso(row[name])
    return {
        "window": window.as_dict(),
        "totals": total.as_dict("name") if total else None,
        "by": by,
        "groups": [g.as_dict(by) for g in groups(conn, window, by)],
        "tools": [g.as_dict("tool") for g in groups(conn, window, "tool")],
        "recent_failures": recent(conn, window, failures, failures_only=True),
        "top_errors": top_errors(conn, window),
        "recent": recent(conn, window),
        "rejected_calls": rejected,
        "losses": lost,
    }


# --- HTML ------------------------------------------------------------------------------------------------

_PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563",
            "#65a30d", "#9333ea")
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 760, 240, 56, 16, 16, 40
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111;background:#fff;max-width:1000px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#555;margin:0 0 16px}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:22px}.card span{color:#555;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #eee;padding:4px 8px;
text-align:left;vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.err{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-word}
.legend{display:flex;gap:14px;flex-wrap:wrap;font-size:12px;margin:4px 0 0}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
svg text{font:11px system-ui,sans-serif;fill:#444}.empty{color:#777}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _nice_max(value: float, counts: bool = False) -> float:
    """The top of the y axis; for counts a multiple of 4, so that the four grid steps are whole numbers."""
    if counts:
        return float(4 * max(1, math.ceil(value / 4)))
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return float(next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= value))


def _frame(labels: list[str], top: float, unit: str) -> list[str]:
    """Grid lines, y labels and a few x labels; returns SVG elements."""
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    parts = []
    for i in range(5):
        y = _TOP + plot_h - plot_h * i / 4
        value = top * i / 4
        text = f"{value:g}" if value < 1000 else f"{value / 1000:g}k"
        parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(text)}</text>')
    parts.append(f'<text x="12" y="{_TOP + plot_h / 2:.1f}" transform="rotate(-90 12 {_TOP + plot_h / 2:.1f})" '
                 f'text-anchor="middle">{_e(unit)}</text>')
    n = len(labels)
    for i in sorted({0, n // 2, n - 1}):
        x = _LEFT + plot_w * (i + 0.5) / n
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        parts.append(f'<text x="{x:.1f}" y="{_H - _BOTTOM + 16}" text-anchor="{anchor}">{_e(labels[i])}</text>')
    return parts


def _svg(title: str, parts: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" '
            f'role="img" aria-label="{_e(title)}">{"".join(parts)}</svg>')


def _legend(names: Sequence[str], colors: Sequence[str]) -> str:
    items = "".join(f'<span><i style="background:{c}"></i>{_e(n)}</span>' for n, c in zip(names, colors,
                                                                                           strict=True))
    return f'<div class="legend">{items}</div>'


def line_chart(title: str, series: dict[str, list[float | None]], labels: list[str], unit: str) -> str:
    """One line per series (a gap where a value is None), points marked, on a shared y axis from 0."""
    values = [v for s in series.values() for v in s if v is not None]
    top = _nice_max(max(values, default=0.0), counts=unit == "calls")
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    n = len(labels)
    parts = _frame(labels, top, unit)
    colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(series))]
    for (name, points), color in zip(series.items(), colors, strict=True):
        segment: list[str] = []
        segments = [segment]
        for i, value in enumerate(points):
            if value is None:
                segment = []
                segments.append(segment)
                continue
            x, y = _LEFT + plot_w * (i + 0.5) / n, _TOP + plot_h - plot_h * value / top
            segment.append(f"{x:.1f},{y:.1f}")
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"><title>{_e(name)} '
                         f'{_e(labels[i])}: {value:g} {_e(unit)}</title></circle>')
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(seg)}"/>')
    return _svg(title, parts) + _legend(list(series), colors)


def bar_chart(title: str, series: dict[str, tuple[str, list[int]]], labels: list[str], unit: str) -> str:
    """Side-by-side bars per bucket, one colour per series."""
    top = _nice_max(max((v for _, s in series.values() for v in s), default=0), counts=True)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    n, k = len(labels), max(1, len(series))
    slot = plot_w / n
    width = max(1.0, slot * 0.8 / k)
    parts = _frame(labels, top, unit)
    for j, (name, (color, values)) in enumerate(series.items()):
        for i, value in enumerate(values):
            if value:
                h = plot_h * value / top
                x = _LEFT + slot * i + slot * 0.1 + width * j
                parts.append(f'<rect x="{x:.1f}" y="{_TOP + plot_h - h:.1f}" width="{width:.1f}" height="{h:.1f}" '
                             f'fill="{color}"><title>{_e(name)} {_e(labels[i])}: {value}</title></rect>')
    return _svg(title, parts) + _legend(list(series), [c for c, _ in series.values()])


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int], error_col: int = -1) -> str:
    if not rows:
        return '<p class="empty">None.</p>'
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"n" if i in numeric else "err" if i == error_col else ""}">{_e(c)}</td>'
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict[str, Any], line: Timeline | None, window: Window, generated: float) -> str:
    """The whole report as one HTML page: no script, no external resource (a CSP forbids any)."""
    total = data["totals"] or {"calls": 0, "failures": 0, "refusals": 0, "p50_ms": 0, "p95_ms": 0}
    cards = "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in (
        ("calls", total["calls"]), ("failures", total["failures"]), ("refusals", total["refusals"]),
        ("p50 ms", f'{total["p50_ms"]:.1f}'), ("p95 ms", f'{total["p95_ms"]:.1f}')))
    sections = [f"<h1>compass-bridge usage</h1><p class=\"sub\">{_e(window.describe())} · generated "
                f"{_e(_local(generated, '%Y-%m-%d %H:%M %Z'))}</p><div class=\"cards\">{cards}</div>"]
    if line is None:
        sections.append('<p class="empty">No tool calls in this window.</p>')
    else:
        labels = [line.label(i) for i in range(line.buckets)]
        per = f"per {_duration(line.bucket_s)}"
        calls: dict[str, list[float | None]] = {tool: [float(v) for v in counts]
                                                for tool, counts in sorted(line.calls.items())}
        sections.append(f"<h2>Calls per tool ({_e(per)})</h2>"
                        + line_chart("Calls per tool", dict(calls), labels, "calls"))
        sections.append(f"<h2>p95 duration per tool ({_e(per)})</h2>"
                        + line_chart("p95 duration per tool", dict(sorted(line.p95_ms.items())), labels, "ms"))
        sections.append(f"<h2>Refusals and failures ({_e(per)})</h2>"
                        + bar_chart("Refusals and failures", {"refused": ("#d97706", line.refusals),
                                                              "failed": ("#dc2626", line.failures)}, labels, "calls"))
    sections.append("<h2>Per tool</h2>" + _table(
        ("tool", "calls", "failed", "refused", "p50 ms", "p95 ms"),
        [(g["tool"], g["calls"], g["failures"], g["refusals"], f'{g["p50_ms"]:.1f}', f'{g["p95_ms"]:.1f}')
         for g in data["tools"]], {1, 2, 3, 4, 5}))
    sections.append("<h2>Top errors</h2>" + _table(
        ("count", "tool", "outcome", "message", "last"),
        [(e["count"], e["tool"], e["outcome"], e["error"], e["last"]) for e in data["top_errors"]], {0}, 3))
    sections.append("<h2>Recent failures and refusals</h2>" + _table(
        ("time (UTC)", "key", "tool", "outcome", "message"),
        [(r["ts"], r["key"], r["tool"], r["outcome"], r["error"] or "") for r in data["recent_failures"]],
        set(), 4))
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>compass-bridge usage</title><style>{_CSS}</style></head><body>"
            + "".join(sections) + "</body></html>\n")


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} s"


"""The usage log: one SQLite row per tool call — allowed, refused or failed — with its duration.

Recording happens off the call's path: `record()` only enqueues; a writer thread commits in batches
(and stamps the key's last-used time). `close()` drains the queue, so no row is lost on shutdown.
"""

from __future__ import annotations

import math
import queue
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mcp_bridge import store

Outcome = Literal["ok", "refused", "failed"]
_BATCH_WINDOW_S = 0.05


@dataclass(frozen=True)
class UsageRecord:
    key_id: str | None
    key_name: str
    tool: str
    outcome: Outcome
    error: str | None
    duration_ms: float
    client: str | None
    ts: float


class UsageLog:
    def __init__(self, database: Path) -> None:
        self._conn = store.connect(database)
        self._queue: queue.SimpleQueue[UsageRecord | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_forever, name="usage-writer", daemon=True)
        self._writer.start()

    def record(self, row: UsageRecord) -> None:
        self._queue.put(row)

    def close(self) -> None:
        """Write everything recorded so far, then stop the writer."""
        self._queue.put(None)
        self._writer.join()
        self._conn.close()

    def _write_forever(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Gather what arrives within a short window: one transaction per burst of calls rather than per
            # call keeps the writer (and its share of the GIL) off the calls' way. close() ends the window.
            deadline = time.monotonic() + _BATCH_WINDOW_S
            while batch[-1] is not None and (remaining := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            rows = [r for r in batch if r is not None]
            if rows:
                self._write(rows)
            if len(rows) != len(batch):
                return

    def _write(self, rows: list[UsageRecord]) -> None:
        for attempt in range(5):
            try:
                with self._conn:
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany(
                        "INSERT INTO usage (ts, key_id, key_name, tool, outcome, error, duration_ms, client)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(r.ts, r.key_id, r.key_name, r.tool, r.outcome, r.error, r.duration_ms, r.client)
                         for r in rows],
                    )
                    last_used: dict[str, float] = {}
                    for r in rows:
                        if r.key_id is not None:
                            last_used[r.key_id] = max(r.ts, last_used.get(r.key_id, 0.0))
                    self._conn.executemany(
                        "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
                        [(ts, key_id) for key_id, ts in last_used.items()],
                    )
                return
            except sqlite3.OperationalError:
                # Busy beyond the busy timeout: several servers hammering one file. Back off and retry
                # rather than drop rows.
                time.sleep(0.05 * (attempt + 1))
        raise RuntimeError("usage log: could not write after 5 attempts")


@dataclass(frozen=True)
class ToolSummary:
    tool: str
    calls: int
    failures: int
    refusals: int
    p50_ms: float
    p95_ms: float

    def as_dict(self) -> dict[str, object]:
        return {
            "tool": self.tool,
            "calls": self.calls,
            "failures": self.failures,
            "refusals": self.refusals,
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
        }


def _percentile(sorted_values: list[float], fraction: float) -> float:
    # Nearest-rank: a value that really occurred, which is what a reader of a log expects.
    index = max(0, math.ceil(fraction * len(sorted_values)) - 1)
    return sorted_values[index]


def _where(since: float | None, key_name: str | None) -> tuple[str, list[object]]:
    clauses: list[str] = ["1 = 1"]
    params: list[object] = []
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if key_name is not None:
        clauses.append("key_name = ?")
        params.append(key_name)
    return " AND ".join(clauses), params


def summarize(conn: sqlite3.Connection, since: float | None = None, key_name: str | None = None) -> list[ToolSummary]:
    where, params = _where(since, key_name)
    query = f"SELECT tool, outcome, duration_ms FROM usage WHERE {where}"  # noqa: S608 - fixed clauses, bound values
    durations: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for tool, outcome, duration in conn.execute(query, params):
        durations[tool].append(float(duration))
        counts[tool][outcome] += 1
    summaries = []
    for tool in sorted(durations):
        values = sorted(durations[tool])
        summaries.append(ToolSummary(
            tool=tool,
            calls=len(values),
            failures=counts[tool]["failed"],
            refusals=counts[tool]["refused"],
            p50_ms=_percentile(values, 0.50),
            p95_ms=_percentile(values, 0.95),
        ))
    return summaries


def recent(conn: sqlite3.Connection, since: float | None = None, key_name: str | None = None,
           limit: int = 50) -> list[dict[str, object]]:
    """The latest rows, newest first, for `usage --json` readers that want the detail."""
    where, params = _where(since, key_name)
    query = (f"SELECT ts, key_name, tool, outcome, error, duration_ms, client FROM usage WHERE {where}"  # noqa: S608
             " ORDER BY ts DESC, id DESC LIMIT ?")
    params.append(limit)
    names = ("ts", "key", "tool", "outcome", "error", "duration_ms", "client")
    return [dict(zip(names, row, strict=True)) for row in conn.execute(query, params)]

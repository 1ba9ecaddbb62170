"""The usage log: one SQLite row per tool call — allowed, refused or failed — with its duration.

Recording happens off the call's path: `record()` only appends to a bounded in-memory spill; a writer
thread commits in batches (one transaction per burst of calls, no fsync per row) and stamps the key's
last-used time. The writer never dies: a locked, busy or even damaged database is retried with back-off
while rows wait in the spill; past the spill's bound rows are dropped *and counted*, and the loss is
written to `usage_losses` as soon as the database takes writes again. `status()` says all of it (for
`bridge_status`); `close()` flushes, bounded in time, and reports what it could not write.

Calls refused because the key is unknown, malformed, revoked or expired are not one row each: they are
counted per (reason, ten-minute window) in `rejected_calls`, so a flood of them cannot grow the file.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import sqlite3
import sys
import threading
import time
from collections import defaultdict, deque
from itertools import islice
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mcp_bridge import store

log = logging.getLogger(__name__)

Outcome = Literal["ok", "refused", "failed"]

REJECTED_KEY_NAME = "rejected-key"
"""The key name of a call whose key could not be used (key_id None): such calls are aggregated."""

SPILL_LIMIT = 10_000
"""Rows kept in memory while the database cannot be written; past it rows are dropped and counted."""
REJECTED_WINDOW_S = 600.0
CLOSE_TIMEOUT_S = 5.0
"""How long `close()` keeps trying a locked database before it reports the rows it could not write."""

_BATCH_WINDOW_S = 0.05
_BATCH_MAX = 2_000
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
# The writer's own busy timeout: short, so it comes back to check for close() between attempts.
_WRITER_BUSY_MS = 500
_INSERT = ("INSERT INTO usage (key_id, key_name, tool, outcome, error, duration_ms, client, ts)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
"""The columns in `UsageRecord`'s field order."""
_NAME_MAX = 200
_ERROR_MAX = 2_000


class UsageRecord(NamedTuple):
    """One call. A tuple in the `usage` table's column order (`_INSERT`), so the writer hands rows to SQLite as
    they are, and building one costs the call less than a frozen dataclass would."""

    key_id: str | None
    key_name: str
    tool: str
    outcome: Outcome
    error: str | None
    duration_ms: float
    client: str | None
    ts: float


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _clamped(row: UsageRecord) -> UsageRecord:
    """The row with every agent-influenced text field (tool, client, error) capped, so no row is big."""
    if (len(row.key_name) <= _NAME_MAX and len(row.tool) <= _NAME_MAX and len(row.client or "") <= _NAME_MAX
            and len(row.error or "") <= _ERROR_MAX):
        return row
    return row._replace(key_name=_cap(row.key_name, _NAME_MAX), tool=_cap(row.tool, _NAME_MAX),
                        client=None if row.client is None else _cap(row.client, _NAME_MAX),
                        error=None if row.error is None else _cap(row.error, _ERROR_MAX))


# The pending tallies are plain classes with __slots__, not dataclasses: `serve` imports this module, and dataclasses
# would bring in inspect (~1.1 MiB private per server: issue 10).
class _Aggregate:
    """Rejected-key calls of one (window, reason) not yet written."""

    __slots__ = ("calls", "client", "first_ts", "last_tool", "last_ts")

    def __init__(self, calls: int, first_ts: float, last_ts: float, last_tool: str, client: str | None) -> None:
        self.calls = calls
        self.first_ts = first_ts
        self.last_ts = last_ts
        self.last_tool = last_tool
        self.client = client

    def copy(self) -> _Aggregate:
        return _Aggregate(self.calls, self.first_ts, self.last_ts, self.last_tool, self.client)


class _Loss:
    """Rows dropped since the last loss was written to the store."""

    __slots__ = ("first_ts", "last_ts", "reason", "rows")

    def __init__(self, rows: int, first_ts: float, last_ts: float, reason: str) -> None:
        self.rows = rows
        self.first_ts = first_ts
        self.last_ts = last_ts
        self.reason = reason

    def copy(self) -> _Loss:
        return _Loss(self.rows, self.first_ts, self.last_ts, self.reason)


class UsageLog:
    def __init__(self, database: Path, *, spill_limit: int = SPILL_LIMIT) -> None:
        self._database = database
        self._spill_limit = spill_limit
        self._cond = threading.Condition()
        # Everything below is guarded by _cond.
        self._rows: deque[UsageRecord] = deque()
        self._rejected: dict[tuple[float, str], _Aggregate] = {}
        self._loss: _Loss | None = None
        self._written = 0
        self._aggregated = 0
        self._dropped = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._failing_since: float | None = None
        self._closing = False
        self._idle = False  # the writer waits for a row: only then does record() wake it
        self._close_by = math.inf
        self._stopped = False
        self._conn: sqlite3.Connection | None = None  # the writer thread's alone
        self._writer = threading.Thread(target=self._write_forever, name="usage-writer", daemon=True)
        self._writer.start()
        # The last resort: a close() cut short (a signal's SystemExit during the join) is finished at exit.
        atexit.register(self.close)

    # -- the calls' side -----------------------------------------------------------------------

    def record(self, row: UsageRecord) -> None:
        row = _clamped(row)
        with self._cond:
            if self._stopped:
                self._drop(row.ts, "recorded after the usage log was closed")
            elif row.key_id is None and row.key_name == REJECTED_KEY_NAME:
                self._aggregate(row)
            elif len(self._rows) >= self._spill_limit:
                self._drop(row.ts, self._last_error or "the usage writer fell behind")
            else:
                self._rows.append(row)
            # Wake the writer only when it waits for work: while it gathers a batch or writes one it comes back by
            # itself, so a call pays for one wake-up per batch, not per row. (A flush() waiting is woken by the
            # writer's commit, not by new rows.)
            if self._idle:
                self._cond.notify_all()

    def _aggregate(self, row: UsageRecord) -> None:
        reason = row.error or "refused: the key could not be used"
        slot = (row.ts - row.ts % REJECTED_WINDOW_S, reason)
        found = self._rejected.get(slot)
        if found is None:
            if len(self._rejected) >= self._spill_limit:
                self._drop(row.ts, self._last_error or "the usage writer fell behind")
                return
            self._rejected[slot] = _Aggregate(1, row.ts, row.ts, row.tool, row.client)
            return
        found.calls += 1
        found.first_ts, found.last_ts = min(found.first_ts, row.ts), max(found.last_ts, row.ts)
        found.last_tool, found.client = row.tool, row.client

    def _drop(self, ts: float, reason: str) -> None:
        self._dropped += 1
        if self._loss is None:
            self._loss = _Loss(0, ts, ts, reason)
        self._loss.rows += 1
        self._loss.first_ts, self._loss.last_ts = min(self._loss.first_ts, ts), max(self._loss.last_ts, ts)
        self._loss.reason = reason

    def status(self) -> dict[str, Any]:
        """What the writer has done and whether anything is waiting or was lost (for `bridge_status`)."""
        with self._cond:
            pending = len(self._rows) + sum(a.calls for a in self._rejected.values())
            state = "ok"
            if self._failing_since is not None:
                state = "retrying"
            if self._dropped:
                state = "lost rows"
            return {
                "state": state,
                "database": str(self._database),
                "pending": pending,
                "written": self._written,
                "rejected_key_calls_aggregated": self._aggregated,
                "dropped": self._dropped,
                "spill_limit": self._spill_limit,
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "failing_since": self._failing_since,
            }

    def flush(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Wait until everything recorded so far is written; False if that did not happen in `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._has_work() or self._stopped,
                                       max(0.0, deadline - time.monotonic())) and not self._has_work()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> int:
        """Write what was recorded (trying a locked database for up to `timeout` s), then stop the writer.

        Returns the number of rows that could not be written — also counted in `status()`, logged, and
        said on stderr, so a loss is never silent. Safe to call more than once."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_by = time.monotonic() + timeout
            self._cond.notify_all()
        self._writer.join(timeout + 1.0)
        with self._cond:
            unwritten = len(self._rows) + sum(a.calls for a in self._rejected.values())
            if unwritten and not self._writer.is_alive():
                for row in self._rows:
                    self._drop(row.ts, self._last_error or "not written at shut-down")
                for aggregate in self._rejected.values():
                    for _ in range(aggregate.calls):
                        self._drop(aggregate.last_ts, self._last_error or "not written at shut-down")
                self._rows.clear()
                self._rejected.clear()
            self._stopped = True
        if unwritten:
            message = (f"usage log: {unwritten} call record(s) could not be written to {self._database} before "
                       f"shut-down ({self._last_error or 'timed out'}); they are lost")
            log.error("%s", message)
            print(f"compass-bridge: {message}", file=sys.stderr)
        atexit.unregister(self.close)
        return unwritten

    # -- the writer thread ---------------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self._rows or self._rejected or self._loss)

    def _write_forever(self) -> None:
        failures = 0
        try:
            while True:
                with self._cond:
                    self._idle = True
                    self._cond.wait_for(lambda: self._has_work() or self._closing)
                    self._idle = False
                    if not self._has_work() or (self._closing and time.monotonic() >= self._close_by):
                        return
                    closing = self._closing
                if not closing and failures == 0:
                    # Gather what arrives within a short window: one transaction per burst of calls rather
                    # than per call keeps the writer (and its share of the GIL) off the calls' way.
                    time.sleep(_BATCH_WINDOW_S)
                with self._cond:
                    rows = list(islice(self._rows, _BATCH_MAX))
                    rejected = {slot: a.copy() for slot, a in self._rejected.items()}
                    loss = self._loss.copy() if self._loss else None
                try:
                    self._write(rows, rejected, loss)
                except (sqlite3.Error, store.StoreError) as exc:
                    failures += 1
                    if not self._failed(exc, failures):
                        return
                    continue
                failures = 0
                self._committed(rows, rejected, loss)
        finally:
            if self._conn is not None:
                self._conn.close()
            with self._cond:
                self._cond.notify_all()  # a flush() waiting for us learns we stopped

    def _failed(self, exc: sqlite3.Error | store.StoreError, failures: int) -> bool:
        """Note the error and back off; False when the writer should stop trying (closing and hopeless)."""
        if isinstance(exc, sqlite3.Error):
            message = store.explain(self._database, exc)
            retry_at_close = store.transient(exc)
        else:
            message, retry_at_close = str(exc), "locked" in str(exc)
        if not (isinstance(exc, sqlite3.Error) and store.transient(exc)) and self._conn is not None:
            self._conn.close()  # damaged, or replaced under us: open it afresh next time
            self._conn = None
        with self._cond:
            if self._last_error != message or failures == 1:
                log.warning("usage log: cannot write to %s yet (%s); retrying", self._database, message)
            self._last_error, self._last_error_at = message, time.time()
            if self._failing_since is None:
                self._failing_since = self._last_error_at
            if self._closing and (not retry_at_close or time.monotonic() >= self._close_by):
                return False
            pause = min(_BACKOFF_MIN_S * 2 ** (failures - 1), _BACKOFF_MAX_S)
            if self._closing:
                pause = min(pause, max(0.0, self._close_by - time.monotonic()))
            # Waiting on the condition (not sleeping) lets close() — but not every new row — cut it short.
            self._cond.wait_for(lambda: self._closing, pause)
        return True

    def _committed(self, rows: list[UsageRecord], rejected: dict[tuple[float, str], _Aggregate],
                   loss: _Loss | None) -> None:
        with self._cond:
            for _ in rows:
                self._rows.popleft()
            for slot, written in rejected.items():
                current = self._rejected[slot]
                current.calls -= written.calls  # calls that arrived during the write stay for the next one
                if current.calls <= 0:
                    del self._rejected[slot]
            if loss is not None and self._loss is not None:
                self._loss.rows -= loss.rows
                if self._loss.rows <= 0:
                    self._loss = None
            self._written += len(rows)
            self._aggregated += sum(a.calls for a in rejected.values())
            self._failing_since = None
            self._cond.notify_all()

    def _write(self, rows: list[UsageRecord], rejected: dict[tuple[float, str], _Aggregate],
               loss: _Loss | None) -> None:
        if self._conn is None:
            self._conn = store.connect(self._database, busy_timeout_ms=_WRITER_BUSY_MS)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
            last_used: dict[str, float] = {}
            for r in rows:
                if r.key_id is not None:
                    last_used[r.key_id] = max(r.ts, last_used.get(r.key_id, 0.0))
            conn.executemany("INSERT INTO key_last_used (key_id, last_used_at) VALUES (?, ?) ON CONFLICT (key_id)"
                             " DO UPDATE SET last_used_at = max(last_used_at, excluded.last_used_at)",
                             list(last_used.items()))
            conn.executemany(
                "INSERT INTO rejected_calls (window_start, reason, calls, first_ts, last_ts, last_tool, client)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (window_start, reason) DO UPDATE SET"
                " calls = calls + excluded.calls, first_ts = min(first_ts, excluded.first_ts),"
                " last_ts = max(last_ts, excluded.last_ts), last_tool = excluded.last_tool,"
                " client = excluded.client",
                [(window, reason, a.calls, a.first_ts, a.last_ts, a.last_tool, a.client)
                 for (window, reason), a in rejected.items()],
            )
            if loss is not None:
                conn.execute("INSERT INTO usage_losses (recorded_at, first_ts, last_ts, rows, reason, pid)"
                             " VALUES (?, ?, ?, ?, ?, ?)",
                             (time.time(), loss.first_ts, loss.last_ts, loss.rows, loss.reason, os.getpid()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise


class ToolSummary(NamedTuple):
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


def rejected_calls(conn: sqlite3.Connection, since: float | None = None) -> list[dict[str, Any]]:
    """Calls refused for an unusable key, per (window, reason), newest first."""
    rows = conn.execute(
        "SELECT window_start, reason, calls, first_ts, last_ts, last_tool, client FROM rejected_calls"
        " WHERE last_ts >= ? ORDER BY window_start DESC, reason", (since or 0.0,))
    names = ("window_start", "reason", "calls", "first_ts", "last_ts", "last_tool", "client")
    return [dict(zip(names, row, strict=True)) for row in rows]


def last_used(database: Path) -> dict[str, float]:
    """When each key was last used, by key id (the keys live in their own file; this is written with the rows)."""
    conn = store.connect(database)
    try:
        with store.guarded(database):
            return {str(key_id): float(ts) for key_id, ts in conn.execute("SELECT key_id, last_used_at"
                                                                          " FROM key_last_used")}
    finally:
        conn.close()


def losses(conn: sqlite3.Connection, since: float | None = None) -> list[dict[str, Any]]:
    """Usage rows a writer had to drop (and recorded once the database took writes again), newest first."""
    rows = conn.execute("SELECT recorded_at, first_ts, last_ts, rows, reason, pid FROM usage_losses"
                        " WHERE recorded_at >= ? ORDER BY recorded_at DESC", (since or 0.0,))
    names = ("recorded_at", "first_ts", "last_ts", "rows", "reason", "pid")
    return [dict(zip(names, row, strict=True)) for row in rows]

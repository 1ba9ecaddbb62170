"""Runs in SQLite: the run, every chunk with its sequence number, the transcript, cost, usage and test results.

The tables live in the bridge database (schema version 3 in mcp_bridge/store.py), beside the keys a run is
started with and the usage log its decisions go to. Only the run service writes them; the CLI reads them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mcp_bridge import store

RunState = Literal["queued", "running", "requires_action", "done", "failed", "aborted", "interrupted"]
ACTIVE_STATES: frozenset[str] = frozenset({"queued", "running", "requires_action"})

_COLUMNS = ("id, state, engine, cwd, key_id, key_name, scopes, created_at, updated_at, session_id, error, "
            "cost_usd, usage, test_results, turns, last_seq")


@dataclass(frozen=True)
class RunRecord:
    id: str
    state: str
    engine: str
    cwd: str
    key_id: str | None
    key_name: str
    scopes: str
    created_at: float
    updated_at: float
    session_id: str | None
    error: str | None
    cost_usd: float | None
    usage: dict[str, Any] | None
    test_results: list[dict[str, Any]]
    turns: int
    last_seq: int

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "engine": self.engine, "cwd": self.cwd, "key": self.key_name,
                "key_id": self.key_id, "scopes": self.scopes, "created_at": self.created_at,
                "updated_at": self.updated_at, "session_id": self.session_id, "error": self.error,
                "cost_usd": self.cost_usd, "usage": self.usage, "test_results": self.test_results, "turns": self.turns,
                "last_seq": self.last_seq}


def _record(row: Sequence[Any]) -> RunRecord:
    (id_, state, engine, cwd, key_id, key_name, scopes, created, updated, session, error, cost, usage, tests,
     turns, last_seq) = row
    return RunRecord(str(id_), str(state), str(engine), str(cwd), key_id, str(key_name), str(scopes),
                     float(created), float(updated), session, error, cost, json.loads(usage) if usage else None,
                     json.loads(tests or "[]"), int(turns), int(last_seq))


class RunStore:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, database: Path) -> RunStore:
        return cls(store.connect(database))

    def close(self) -> None:
        self._conn.close()

    def create(self, run_id: str, engine: str, cwd: str, key_id: str | None, key_name: str, scopes: str) -> None:
        now = time.time()
        self._conn.execute(
            f"INSERT INTO agent_runs ({_COLUMNS}) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, "  # noqa: S608
            "NULL, '[]', 0, 0)", (run_id, engine, cwd, key_id, key_name, scopes, now, now))

    def update(self, run_id: str, **fields: Any) -> None:
        allowed = {"state", "session_id", "error", "cost_usd", "usage", "test_results", "turns"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        values = [json.dumps(v) if k in ("usage", "test_results") and v is not None else v for k, v in fields.items()]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self._conn.execute(f"UPDATE agent_runs SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
                           (*values, time.time(), run_id))

    def add_chunk(self, run_id: str, seq: int, chunk: dict[str, Any]) -> None:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("INSERT INTO agent_chunks (run_id, seq, ts, chunk) VALUES (?, ?, ?, ?)",
                               (run_id, seq, time.time(), json.dumps(chunk, separators=(",", ":"))))
            self._conn.execute("UPDATE agent_runs SET last_seq = ? WHERE id = ?", (seq, run_id))

    def add_transcript(self, run_id: str, role: str, content: str) -> None:
        self._conn.execute(
            "INSERT INTO agent_transcript (run_id, n, ts, role, content) VALUES (?, "
            "(SELECT COALESCE(MAX(n), 0) + 1 FROM agent_transcript WHERE run_id = ?), ?, ?, ?)",
            (run_id, run_id, time.time(), role, content))

    def get(self, run_id: str) -> RunRecord | None:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM agent_runs WHERE id = ?", (run_id,)).fetchone()  # noqa: S608
        return _record(row) if row else None

    def recent(self, limit: int = 50) -> list[RunRecord]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM agent_runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()  # noqa: S608
        return [_record(r) for r in rows]

    def chunks(self, run_id: str, after: int = 0, limit: int = 10_000) -> list[tuple[int, dict[str, Any]]]:
        rows = self._conn.execute(
            "SELECT seq, chunk FROM agent_chunks WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after, limit)).fetchall()
        return [(int(seq), json.loads(chunk)) for seq, chunk in rows]

    def transcript(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT n, ts, role, content FROM agent_transcript WHERE run_id = ? ORDER BY n", (run_id,)).fetchall()
        return [{"n": n, "ts": ts, "role": role, "content": content} for n, ts, role, content in rows]

    def mark_interrupted(self) -> list[str]:
        """At start-up: every run a previous service left active was cut off; say so rather than pretend."""
        ids = [str(r[0]) for r in self._conn.execute(
            "SELECT id FROM agent_runs WHERE state IN ('queued', 'running', 'requires_action')").fetchall()]
        for run_id in ids:
            self.update(run_id, state="interrupted", error="the run service stopped while this run was active; "
                        "send a follow-up to continue its session")
        return ids

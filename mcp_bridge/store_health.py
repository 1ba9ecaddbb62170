"""What `doctor` says about the bridge's own store: the key secret, the keys' file and the usage database can be
used, and no usage rows were lost recently (a writer that had to drop rows records how many once it can write
again)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from mcp_bridge import store
from mcp_bridge.keys import load_secret
from mcp_bridge.paths import StatePaths
from mcp_bridge.usage import losses, rejected_calls

RECENT_S = 7 * 86400
"""Losses and rejected-key floods older than this are history, not a problem to report."""


@dataclass(frozen=True)
class Finding:
    area: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str = ""


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def check(paths: StatePaths) -> list[Finding]:
    findings: list[Finding] = []
    if paths.secret_file.exists():
        try:
            load_secret(paths.secret_file)
        except store.StoreError as exc:
            findings.append(Finding("key secret", "fail", str(exc)))
    if paths.keys_database.exists():
        try:
            keys = store.connect(paths.keys_database, schema=store.KEYS_SCHEMA)
            try:
                with store.guarded(paths.keys_database):
                    keys.execute("SELECT count(*) FROM api_keys").fetchone()  # reads every page: damage shows
            finally:
                keys.close()
        except store.StoreError as exc:
            findings.append(Finding("key store", "fail", str(exc)))
    if not paths.database.exists():
        return findings  # nothing recorded yet: the first server makes it
    try:
        conn = store.connect(paths.database)
    except store.StoreError as exc:
        return [*findings, Finding("bridge database", "fail", str(exc))]
    try:
        since = time.time() - RECENT_S
        lost = losses(conn, since)
        rejected = sum(int(r["calls"]) for r in rejected_calls(conn, since))
        (calls,) = conn.execute("SELECT count(*) FROM usage").fetchone()
    except sqlite3.Error as exc:
        return [*findings, Finding("bridge database", "fail", store.explain(paths.database, exc))]
    finally:
        conn.close()
    detail = f"{paths.database}: {calls} call(s) recorded"
    if rejected:
        detail += (f"; {rejected} call(s) with an unknown, revoked or expired key refused in the last 7 days "
                   "(`compass-bridge usage --json` lists them)")
    findings.append(Finding("usage log", "ok", detail))
    if lost:
        total = sum(int(r["rows"]) for r in lost)
        latest = lost[0]
        findings.append(Finding(
            "usage log", "warn",
            f"{total} usage row(s) could not be recorded in the last 7 days (latest: {latest['rows']} between "
            f"{_when(latest['first_ts'])} and {_when(latest['last_ts'])}, because "
            f"{latest['reason']})",
            "usually the database was locked for a long time by another process: find what holds "
            f"{paths.database} open; the bridge's log files have the details",
        ))
    return findings

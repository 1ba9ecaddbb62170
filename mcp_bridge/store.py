"""The SQLite database behind the key store and the usage log.

Several server processes share one file, so it runs in WAL mode with a busy timeout; the schema is
versioned with `PRAGMA user_version` and migrated forward on open.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000

_MIGRATIONS = (
    # 1: keys and usage
    """
    CREATE TABLE api_keys (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        prefix       TEXT NOT NULL,
        digest       TEXT NOT NULL UNIQUE,
        scopes       TEXT NOT NULL,
        created_at   REAL NOT NULL,
        last_used_at REAL,
        expires_at   REAL,
        revoked_at   REAL
    );
    CREATE INDEX api_keys_prefix ON api_keys(prefix);
    CREATE TABLE usage (
        id          INTEGER PRIMARY KEY,
        ts          REAL NOT NULL,
        key_id      TEXT,
        key_name    TEXT NOT NULL,
        tool        TEXT NOT NULL,
        outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
        error       TEXT,
        duration_ms REAL NOT NULL,
        client      TEXT
    );
    CREATE INDEX usage_ts ON usage(ts);
    """,
)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the database at `path`, private to the user."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        # Create it 0600 ourselves: sqlite would honour the umask, which may leave it world-readable.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    _migrate(conn)
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version >= len(_MIGRATIONS):
        return
    # IMMEDIATE takes the write lock first, so two processes starting together cannot both migrate.
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

"""The SQLite database behind the key store and the usage log.

Several server processes share one file, so it runs in WAL mode with a busy timeout; the schema is
versioned with `PRAGMA user_version` and migrated forward on open. A file that cannot be opened as this
database — garbage, unreadable, a directory — is a `StoreError` whose message names the file and the fix,
so no command ever shows a traceback for it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
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
    # 2: calls refused for an unusable key, one row per (window, reason) with a count, so a flood of them
    # cannot grow the file without bound; and usage rows the writer had to drop, so a loss is on record.
    """
    CREATE TABLE rejected_calls (
        window_start REAL NOT NULL,
        reason       TEXT NOT NULL,
        calls        INTEGER NOT NULL,
        first_ts     REAL NOT NULL,
        last_ts      REAL NOT NULL,
        last_tool    TEXT,
        client       TEXT,
        PRIMARY KEY (window_start, reason)
    );
    CREATE TABLE usage_losses (
        id          INTEGER PRIMARY KEY,
        recorded_at REAL NOT NULL,
        first_ts    REAL NOT NULL,
        last_ts     REAL NOT NULL,
        rows        INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        pid         INTEGER NOT NULL
    );
    """,
    # 3: agent runs (mcp_bridge/agent/store.py): a run, every chunk it emitted with its sequence number, and
    # its transcript (one row per prompt and per answer).
    """
    CREATE TABLE agent_runs (
        id           TEXT PRIMARY KEY,
        state        TEXT NOT NULL,
        engine       TEXT NOT NULL,
        cwd          TEXT NOT NULL,
        key_id       TEXT,
        key_name     TEXT NOT NULL,
        scopes       TEXT NOT NULL,
        created_at   REAL NOT NULL,
        updated_at   REAL NOT NULL,
        session_id   TEXT,
        error        TEXT,
        cost_usd     REAL,
        usage        TEXT,
        test_results TEXT NOT NULL DEFAULT '[]',
        turns        INTEGER NOT NULL DEFAULT 0,
        last_seq     INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX agent_runs_created ON agent_runs(created_at);
    CREATE TABLE agent_chunks (
        run_id TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        ts     REAL NOT NULL,
        chunk  TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE TABLE agent_transcript (
        run_id  TEXT NOT NULL,
        n       INTEGER NOT NULL,
        ts      REAL NOT NULL,
        role    TEXT NOT NULL,
        content TEXT NOT NULL,
        PRIMARY KEY (run_id, n)
    );
    """,
)


class StoreError(Exception):
    """The database cannot be used; the message names the file, why, and what to do."""


def transient(exc: sqlite3.Error) -> bool:
    """A lock or busy condition that goes away by itself, as opposed to a damaged or unreadable file."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        word in str(exc).lower() for word in ("locked", "busy"))


def explain(path: Path, exc: BaseException) -> str:
    """What is wrong with the database at `path` and how to fix it, for any error opening or using it."""
    if isinstance(exc, sqlite3.Error) and transient(exc):
        return (f"the bridge database {path} is locked by another process ({exc}); the bridge retries by itself. "
                "If this lasts, find the process that holds it open and end it")
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (f"the bridge database {path} cannot be used ({why}). It holds the bridge keys and the usage log. "
            f"Fix: move it aside (`mv '{path}' '{path}.broken'`); the bridge makes a new, empty one on its next "
            "start. The keys stored in it are lost: create new ones (`compass-bridge keys create --name NAME "
            "--scopes read,write`, or run `compass-bridge install` again)")


@contextlib.contextmanager
def guarded(path: Path) -> Iterator[None]:
    """Turn a database error while using `path` (damaged pages, a lock past the busy timeout) into a
    `StoreError` that says what and how to fix it. Constraint violations pass: callers explain those."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise
    except sqlite3.Error as exc:
        raise StoreError(explain(path, exc)) from None


def connect(path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the database at `path`, private to the user.

    Raises `StoreError` for a file that cannot be used (its message says how to fix it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            # Create it 0600 ourselves: sqlite would honour the umask, which may leave it world-readable.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(explain(path, exc)) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(explain(path, exc)) from None
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

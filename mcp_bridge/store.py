"""The SQLite databases behind the key store and the usage log.

Two files: `keys.sqlite3` (the bridge keys alone, `KEYS_SCHEMA`) and `bridge.sqlite3` (the usage log and agent runs,
`SHARED_SCHEMA`). They are apart because a key check runs on every call and skips its query while the keys' file is
unchanged (`PRAGMA data_version`, mcp_bridge/keys.py), which holds only if nothing else commits to that file: the
usage writers of every server commit every 50 ms.
Several server processes share each file, so both run in WAL mode with a busy timeout; each schema is versioned
with `PRAGMA user_version` and migrated forward on open. A file that cannot be opened as its database — garbage,
unreadable, a directory — is a `StoreError` whose message names the file and the fix, so no command ever shows a
traceback for it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from mcp_bridge.paths import KEYS_DATABASE_NAME

BUSY_TIMEOUT_MS = 10_000

SHARED_SCHEMA = (
    # 1: keys and usage (the keys moved to keys.sqlite3 in 4; the table stays, see there)
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
    # 4: the keys moved to their own file (KEYS_SCHEMA; mcp_bridge/keys.py moves them and empties api_keys, which
    # stays so that a server of an earlier version still running finds the table its usage writer updates). When
    # a key was last used stays here, written with the usage rows, so a usage commit never touches the keys' file.
    """
    CREATE TABLE key_last_used (
        key_id       TEXT PRIMARY KEY,
        last_used_at REAL NOT NULL
    );
    """,
)

KEYS_SCHEMA = (
    # 1: the keys, stored as HMACs (mcp_bridge/keys.py), and the ids of keys moved here from bridge.sqlite3: a move
    # repeated after a crash between its two commits skips them, so it never brings back a key deleted since.
    """
    CREATE TABLE api_keys (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        prefix     TEXT NOT NULL,
        digest     TEXT NOT NULL UNIQUE,
        scopes     TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL
    );
    CREATE INDEX api_keys_prefix ON api_keys(prefix);
    CREATE TABLE moved_keys (
        id       TEXT PRIMARY KEY,
        moved_at REAL NOT NULL
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
    if path.name == KEYS_DATABASE_NAME:
        holds, lost = "the bridge keys", "The keys stored in it are lost"
    else:
        holds = "the usage log and agent runs (and, until they are moved out, the keys of an earlier version)"
        lost = "Its history is no longer shown, and keys not yet moved out of it are lost"
    return (f"the bridge database {path} cannot be used ({why}). It holds {holds}. "
            f"Fix: move it aside (`mv '{path}' '{path}.broken'`); the bridge makes a new, empty one on its next "
            f"start. {lost}: create new keys if needed (`compass-bridge keys create --name NAME "
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


def connect(path: Path, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS,
            schema: tuple[str, ...] = SHARED_SCHEMA) -> sqlite3.Connection:
    """Open (creating and migrating to `schema` if needed) the database at `path`, private to the user.

    The keys' file commits with `synchronous = FULL`: its writes are rare (create, revoke, delete, the move), and a
    revocation or a moved key must survive a power cut. Raises `StoreError` for a file that cannot be used (its
    message says how to fix it)."""
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
        conn.execute(f"PRAGMA synchronous = {'FULL' if schema is KEYS_SCHEMA else 'NORMAL'}")
        _migrate(conn, schema)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(explain(path, exc)) from None
    return conn


def _migrate(conn: sqlite3.Connection, schema: tuple[str, ...]) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version >= len(schema):
        return
    # IMMEDIATE takes the write lock first, so two processes starting together cannot both migrate.
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(schema[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

"""Bridge API keys: created once, shown once, stored only as an HMAC, checked on every call.

A key is `cb_` + 40 hex characters. The store keeps HMAC-SHA256(secret, key) where the secret is a
per-install random file (0600), so a copied database alone cannot be used to test guesses offline.
Lookups go by the non-secret display prefix; the digest comparison is constant-time.

The keys have a file of their own (`StatePaths.keys_database`), written only when a key is created, revoked,
deleted or moved, so a server can keep what it read and re-read only when the file changed (see `authenticate`).
Keys of an earlier version, kept in the shared `bridge.sqlite3`, are moved here on open (`_move_shared_keys`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import NamedTuple

from mcp_bridge import store
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import Scope, format_scopes, parse_scopes
from mcp_bridge.store import StoreError

log = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"cb_[0-9a-f]{40}")
PREFIX_LENGTH = 8  # "cb_" + 5 hex: enough to tell keys apart in a list, useless for guessing
_SECRET_BYTES = 32


class KeyStoreError(Exception):
    """A key operation was refused; the message says why and what to do."""


# The records are NamedTuples, not frozen dataclasses: `serve` imports this module, and dataclasses would bring in
# inspect (~1.1 MiB private per server: issue 10).
class KeyRecord(NamedTuple):
    id: str
    name: str
    prefix: str
    scopes: frozenset[Scope]
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def state(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now if now is not None else time.time()):
            return "expired"
        return "active"

    def public(self, last_used_at: float | None = None) -> dict[str, object]:
        """Everything that may be shown: never the key or its digest. `last_used_at` is the usage log's
        (`KeyStore.last_used`): it is written with the usage rows, not into the keys' file."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": [str(s) for s in sorted(self.scopes)],
            "created_at": self.created_at,
            "last_used_at": last_used_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked_at is not None,
            "state": self.state(),
        }


class KeyProblem(Enum):
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    STORE_UNAVAILABLE = "store unavailable"
    """The key store itself cannot be read, so no key (nor the key-less default) can be checked."""


class Rejected(NamedTuple):
    problem: KeyProblem
    record: KeyRecord | None = None
    detail: str | None = None
    """For STORE_UNAVAILABLE: what is wrong with the store and how to fix it."""

    def explain(self) -> str:
        """Why the key cannot be used and the command that fixes it."""
        if self.problem is KeyProblem.STORE_UNAVAILABLE:
            return f"no call can be checked or recorded until the key store is repaired: {self.detail}"
        fix = ("create one with `compass-bridge keys create --name NAME --scopes read,write` "
               "and put it in COMPASS_BRIDGE_KEY")
        if self.problem is KeyProblem.MALFORMED:
            return f"COMPASS_BRIDGE_KEY is not a compass-bridge key (expected cb_ + 40 hex characters); {fix}"
        if self.problem is KeyProblem.UNKNOWN:
            return f"COMPASS_BRIDGE_KEY is not known to this installation's key store; {fix}"
        assert self.record is not None
        what = "was revoked" if self.problem is KeyProblem.REVOKED else "has expired"
        return f"the bridge key '{self.record.name}' ({self.record.prefix}…) {what}; {fix}"


def load_secret(path: Path) -> bytes:
    """The install's HMAC secret, made on first use; `StoreError` if the file exists but is unusable."""
    try:
        return _check_secret(path, path.read_bytes())
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StoreError(_secret_problem(path, exc.strerror or str(exc))) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = secrets.token_bytes(_SECRET_BYTES)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return _check_secret(path, path.read_bytes())  # another process created it first: use theirs
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise StoreError(_secret_problem(path, exc.strerror or str(exc))) from None
    return secret


def _check_secret(path: Path, secret: bytes) -> bytes:
    if len(secret) != _SECRET_BYTES:
        # Truncated or overwritten: HMACs under it would silently match no key, or a chosen one.
        raise StoreError(_secret_problem(path, f"{len(secret)} bytes where {_SECRET_BYTES} are expected"))
    return secret


def _secret_problem(path: Path, why: str) -> str:
    return (f"the bridge key secret {path} cannot be used ({why}). Every bridge key is stored under it, so none "
            f"can be checked. Fix: restore it from a backup, or remove it (`rm '{path}'`): a new one is made on "
            "the next start, and keys made before stop working — create new ones (`compass-bridge keys create "
            "--name NAME --scopes read,write`, or run `compass-bridge install` again)")


def _row_to_record(row: sqlite3.Row | tuple[object, ...]) -> KeyRecord:
    id_, name, prefix, scopes, created, expires, revoked = row
    return KeyRecord(
        id=str(id_),
        name=str(name),
        prefix=str(prefix),
        scopes=parse_scopes(str(scopes)),
        created_at=float(created),  # type: ignore[arg-type]
        expires_at=None if expires is None else float(expires),  # type: ignore[arg-type]
        revoked_at=None if revoked is None else float(revoked),  # type: ignore[arg-type]
    )


# Interpolated into queries below: a constant, never user input (hence the S608 waivers).
_COLUMNS = "id, name, prefix, scopes, created_at, expires_at, revoked_at"
_KNOWN_MAX = 64
"""Lookups remembered between changes of the keys' file; past it the memory starts over (a flood of unknown keys
costs a query each, never memory)."""


def _move_shared_keys(keys: sqlite3.Connection, keys_database: Path, shared: Path) -> None:
    """Move the keys an earlier version kept in the shared `bridge.sqlite3` into the keys' own file.

    Two commits, in this order, each atomic and each safe to repeat: (1) into the keys' file, the keys with their
    ids noted in `moved_keys` (skipped when already noted: several processes opening at once, or a repeat after a
    crash between the commits, move each key once and never bring back one deleted since); (2) in the shared file,
    each key's last-used time into `key_last_used` and the key removed. If (1) fails the key stays where it was
    and the open fails (`StoreError`, naming the file and the fix); if (2) fails the keys are already usable here,
    the failure is logged, and the next open removes them. A name taken meanwhile in the keys' file (a key made
    there by this version) gets the moved key's id appended, so neither key is lost."""
    if not shared.exists():
        return
    old = store.connect(shared)  # damaged or locked: StoreError, and no key can be checked (fail closed)
    try:
        with store.guarded(shared):
            rows = old.execute("SELECT id, name, prefix, digest, scopes, created_at, expires_at, revoked_at"
                               " FROM api_keys").fetchall()
        if not rows:
            return
        with store.guarded(keys_database):
            keys.execute("BEGIN IMMEDIATE")
            try:
                moved = {id_ for (id_,) in keys.execute("SELECT id FROM moved_keys")}
                names = {name for (name,) in keys.execute("SELECT name FROM api_keys")}
                for id_, name, *rest in rows:
                    if id_ in moved:
                        continue
                    name = name if name not in names else f"{name} ({id_})"
                    names.add(name)
                    # OR IGNORE: only the very same key (same id or digest) can collide, and it is here already.
                    keys.execute("INSERT OR IGNORE INTO api_keys (id, name, prefix, digest, scopes, created_at,"
                                 " expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (id_, name, *rest))
                keys.executemany("INSERT OR IGNORE INTO moved_keys (id, moved_at) VALUES (?, ?)",
                                 [(row[0], time.time()) for row in rows])
                keys.execute("COMMIT")
            except BaseException:
                if keys.in_transaction:
                    keys.execute("ROLLBACK")
                raise
        ids = [(row[0],) for row in rows]
        try:
            old.execute("BEGIN IMMEDIATE")
            try:
                old.executemany(
                    "INSERT INTO key_last_used (key_id, last_used_at) SELECT id, last_used_at FROM api_keys"
                    " WHERE id = ? AND last_used_at IS NOT NULL ON CONFLICT (key_id) DO UPDATE SET"
                    " last_used_at = max(last_used_at, excluded.last_used_at)", ids)
                old.executemany("DELETE FROM api_keys WHERE id = ?", ids)
                old.execute("COMMIT")
            except BaseException:
                if old.in_transaction:
                    old.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            log.warning("moved %d key(s) into %s but could not remove them from %s (%s); the next start tries again",
                        len(ids), keys_database, shared, exc)
    finally:
        old.close()


class KeyStore:
    @classmethod
    def open(cls, paths: StatePaths) -> KeyStore:
        """The key store; `StoreError` (naming the file and the fix) if a database or the secret is unusable."""
        paths.ensure()
        secret = load_secret(paths.secret_file)
        opened = cls(store.connect(paths.keys_database, schema=store.KEYS_SCHEMA), secret, paths.keys_database,
                     usage_database=paths.database)
        try:
            _move_shared_keys(opened._conn, paths.keys_database, paths.database)
            opened._rows("SELECT count(*) FROM api_keys")  # reads every page of the (small) key table
        except StoreError:
            opened.close()
            raise
        return opened

    @classmethod
    def open_or_unavailable(cls, paths: StatePaths) -> KeyStore:
        """For a server that must keep answering: a broken store refuses every caller and says why."""
        try:
            return cls.open(paths)
        except StoreError as exc:
            return cls(None, b"", paths.keys_database, usage_database=paths.database, problem=str(exc))

    def __init__(self, conn: sqlite3.Connection | None, secret: bytes, database: Path, *,
                 usage_database: Path | None = None, problem: str | None = None) -> None:
        self._conn_or_none = conn
        self._secret = secret
        self._database = database
        self._usage_database = usage_database
        self._problem = problem
        # What `authenticate` found per digest, valid while the file's `PRAGMA data_version` stays `_seen`. The lock
        # keeps a lookup and this store's own writes (which do not move data_version) from interleaving.
        self._lock = threading.Lock()
        self._known: dict[str, KeyRecord | None] = {}
        self._seen: object = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._conn_or_none is None:
            raise StoreError(self._problem or "the key store is closed")
        return self._conn_or_none

    def unavailable(self) -> Rejected | None:
        """Why nobody can be authenticated at all (the store is broken), or None."""
        if self._problem is None:
            return None
        return Rejected(KeyProblem.STORE_UNAVAILABLE, detail=self._problem)

    def close(self) -> None:
        if self._conn_or_none is not None:
            self._conn_or_none.close()

    def digest(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def create(self, name: str, scopes: frozenset[Scope], expires_at: float | None = None) -> tuple[KeyRecord, str]:
        """Make a new key; the plain key is returned here and never again."""
        name = name.strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise KeyStoreError("a key name must be 1-64 printable characters")
        if re.fullmatch(r"k_[0-9a-f]{8}", name):
            raise KeyStoreError(f"'{name}' looks like a key id; choose a name that does not")
        if expires_at is not None and expires_at <= time.time():
            raise KeyStoreError("the expiry must be in the future")
        key = "cb_" + secrets.token_hex(20)
        record = KeyRecord(
            id="k_" + secrets.token_hex(4),
            name=name,
            prefix=key[:PREFIX_LENGTH],
            scopes=scopes,
            created_at=time.time(),
            expires_at=expires_at,
            revoked_at=None,
        )
        try:
            self._write(
                f"INSERT INTO api_keys ({_COLUMNS}, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (record.id, record.name, record.prefix, format_scopes(scopes), record.created_at,
                 expires_at, None, self.digest(key)),
            )
        except sqlite3.IntegrityError:
            raise KeyStoreError(
                f"a key named '{name}' already exists; pick another name or `compass-bridge keys delete {name}`"
            ) from None
        return record, key

    def list(self) -> list[KeyRecord]:
        query = f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at"  # noqa: S608
        return [_row_to_record(r) for r in self._rows(query)]

    def last_used(self) -> dict[str, float]:
        """When each key was last used, by id, from the usage log (which records it with the calls)."""
        if self._usage_database is None or not self._usage_database.exists():
            return {}
        from mcp_bridge.usage import last_used

        return last_used(self._usage_database)

    def find(self, id_or_name: str) -> KeyRecord:
        rows = self._rows(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ? OR name = ?",  # noqa: S608
                          (id_or_name, id_or_name))
        if not rows:
            raise KeyStoreError(f"no key with id or name '{id_or_name}'; see `compass-bridge keys list`")
        return _row_to_record(rows[0])

    def revoke(self, id_or_name: str) -> KeyRecord:
        record = self.find(id_or_name)
        if record.revoked_at is None:
            self._write("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (time.time(), record.id))
        return self.find(record.id)

    def delete(self, id_or_name: str) -> KeyRecord:
        record = self.find(id_or_name)
        self._write("DELETE FROM api_keys WHERE id = ?", (record.id,))
        return record

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> Sequence[tuple[object, ...]]:
        """Run one statement; a damaged or locked database is a StoreError with the file and the fix."""
        with store.guarded(self._database):
            return self._conn.execute(sql, params).fetchall()

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        """A change through this store's own connection, which does not move its `PRAGMA data_version`: what
        `authenticate` remembered is forgotten here instead."""
        with self._lock:
            self._known.clear()
            self._rows(sql, params)

    def authenticate(self, key: str, *, digest: str | None = None) -> KeyRecord | Rejected:
        """Who `key` belongs to, or why it is refused. A revocation or expiry takes effect on the very next call:
        what was found is remembered only while `PRAGMA data_version` (which moves when any other connection, in
        any process, commits to the keys' file) stays the same, and expiry is judged on every call. `digest` lets
        a caller reuse `self.digest(key)`."""
        if (broken := self.unavailable()) is not None:
            return broken
        if not KEY_PATTERN.fullmatch(key):
            return Rejected(KeyProblem.MALFORMED)
        presented = digest or self.digest(key)
        with self._lock:
            try:
                (version,) = self._conn.execute("PRAGMA data_version").fetchone()
                if version != self._seen or len(self._known) >= _KNOWN_MAX:
                    self._known.clear()
                    self._seen = version
                if presented in self._known:
                    match = self._known[presented]
                else:
                    match = self._lookup(key, presented)
                    self._known[presented] = match
            except sqlite3.Error as exc:
                # Damaged since it was opened, or locked past the busy timeout: refuse (fail closed) and say why.
                return Rejected(KeyProblem.STORE_UNAVAILABLE, detail=store.explain(self._database, exc))
        if match is None:
            return Rejected(KeyProblem.UNKNOWN)
        state = match.state()
        if state == "revoked":
            return Rejected(KeyProblem.REVOKED, match)
        if state == "expired":
            return Rejected(KeyProblem.EXPIRED, match)
        return match

    def _lookup(self, key: str, presented: str) -> KeyRecord | None:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS}, digest FROM api_keys WHERE prefix = ?",  # noqa: S608
            (key[:PREFIX_LENGTH],),
        ).fetchall()
        match = None
        for row in rows:
            # Compare every candidate, not just until the first match, so timing says nothing.
            if hmac.compare_digest(str(row[-1]), presented):
                match = _row_to_record(row[:-1])
        return match


_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `2w` → seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise KeyStoreError(f"cannot read duration {text!r}; use a number and a unit, e.g. 30d, 12h, 90m, 2w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]

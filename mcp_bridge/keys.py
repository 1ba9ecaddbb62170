"""Bridge API keys: created once, shown once, stored only as an HMAC, checked on every call.

A key is `cb_` + 40 hex characters. The store keeps HMAC-SHA256(secret, key) where the secret is a
per-install random file (0600), so a copied database alone cannot be used to test guesses offline.
Lookups go by the non-secret display prefix; the digest comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mcp_bridge import store
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import Scope, format_scopes, parse_scopes
from mcp_bridge.store import StoreError

KEY_PATTERN = re.compile(r"cb_[0-9a-f]{40}")
PREFIX_LENGTH = 8  # "cb_" + 5 hex: enough to tell keys apart in a list, useless for guessing
_SECRET_BYTES = 32


class KeyStoreError(Exception):
    """A key operation was refused; the message says why and what to do."""


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    scopes: frozenset[Scope]
    created_at: float
    last_used_at: float | None
    expires_at: float | None
    revoked_at: float | None

    def state(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now if now is not None else time.time()):
            return "expired"
        return "active"

    def public(self) -> dict[str, object]:
        """Everything that may be shown: never the key or its digest."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": [str(s) for s in sorted(self.scopes)],
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
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


@dataclass(frozen=True)
class Rejected:
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
    id_, name, prefix, scopes, created, used, expires, revoked = row
    return KeyRecord(
        id=str(id_),
        name=str(name),
        prefix=str(prefix),
        scopes=parse_scopes(str(scopes)),
        created_at=float(created),  # type: ignore[arg-type]
        last_used_at=None if used is None else float(used),  # type: ignore[arg-type]
        expires_at=None if expires is None else float(expires),  # type: ignore[arg-type]
        revoked_at=None if revoked is None else float(revoked),  # type: ignore[arg-type]
    )


# Interpolated into queries below: a constant, never user input (hence the S608 waivers).
_COLUMNS = "id, name, prefix, scopes, created_at, last_used_at, expires_at, revoked_at"


class KeyStore:
    @classmethod
    def open(cls, paths: StatePaths) -> KeyStore:
        """The key store; `StoreError` (naming the file and the fix) if the database or secret is unusable."""
        paths.ensure()
        secret = load_secret(paths.secret_file)
        opened = cls(store.connect(paths.database), secret, paths.database)
        try:
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
            return cls(None, b"", paths.database, problem=str(exc))

    def __init__(self, conn: sqlite3.Connection | None, secret: bytes, database: Path, *,
                 problem: str | None = None) -> None:
        self._conn_or_none = conn
        self._secret = secret
        self._database = database
        self._problem = problem

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
            last_used_at=None,
            expires_at=expires_at,
            revoked_at=None,
        )
        try:
            self._rows(
                f"INSERT INTO api_keys ({_COLUMNS}, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (record.id, record.name, record.prefix, format_scopes(scopes), record.created_at,
                 None, expires_at, None, self.digest(key)),
            )
        except sqlite3.IntegrityError:
            raise KeyStoreError(
                f"a key named '{name}' already exists; pick another name or `compass-bridge keys delete {name}`"
            ) from None
        return record, key

    def list(self) -> list[KeyRecord]:
        query = f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at"  # noqa: S608
        return [_row_to_record(r) for r in self._rows(query)]

    def find(self, id_or_name: str) -> KeyRecord:
        rows = self._rows(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ? OR name = ?",  # noqa: S608
                          (id_or_name, id_or_name))
        if not rows:
            raise KeyStoreError(f"no key with id or name '{id_or_name}'; see `compass-bridge keys list`")
        return _row_to_record(rows[0])

    def revoke(self, id_or_name: str) -> KeyRecord:
        record = self.find(id_or_name)
        if record.revoked_at is None:
            self._rows("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (time.time(), record.id))
        return self.find(record.id)

    def delete(self, id_or_name: str) -> KeyRecord:
        record = self.find(id_or_name)
        self._rows("DELETE FROM api_keys WHERE id = ?", (record.id,))
        return record

    def _rows(self, sql: str, params: tuple[object, ...] = ()) -> Sequence[tuple[object, ...]]:
        """Run one statement; a damaged or locked database is a StoreError with the file and the fix."""
        with store.guarded(self._database):
            return self._conn.execute(sql, params).fetchall()

    def authenticate(self, key: str, *, digest: str | None = None) -> KeyRecord | Rejected:
        """Who `key` belongs to, or why it is refused. Reads the store every time, so a revocation or
        expiry takes effect on the very next call. `digest` lets a caller reuse `self.digest(key)`."""
        if (broken := self.unavailable()) is not None:
            return broken
        if not KEY_PATTERN.fullmatch(key):
            return Rejected(KeyProblem.MALFORMED)
        presented = digest or self.digest(key)
        try:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS}, digest FROM api_keys WHERE prefix = ?",  # noqa: S608
                (key[:PREFIX_LENGTH],),
            ).fetchall()
        except sqlite3.Error as exc:
            # Damaged since it was opened, or locked past the busy timeout: refuse (fail closed) and say why.
            return Rejected(KeyProblem.STORE_UNAVAILABLE, detail=store.explain(self._database, exc))
        match = None
        for row in rows:
            # Compare every candidate, not just until the first match, so timing says nothing.
            if hmac.compare_digest(str(row[-1]), presented):
                match = _row_to_record(row[:-1])
        if match is None:
            return Rejected(KeyProblem.UNKNOWN)
        state = match.state()
        if state == "revoked":
            return Rejected(KeyProblem.REVOKED, match)
        if state == "expired":
            return Rejected(KeyProblem.EXPIRED, match)
        return match


_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `2w` → seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise KeyStoreError(f"cannot read duration {text!r}; use a number and a unit, e.g. 30d, 12h, 90m, 2w")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]

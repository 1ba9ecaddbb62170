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
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from mcp_bridge import store
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import Scope, format_scopes, parse_scopes

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


@dataclass(frozen=True)
class Rejected:
    problem: KeyProblem
    record: KeyRecord | None = None

    def explain(self) -> str:
        """Why the key cannot be used and the command that fixes it."""
        fix = ("create one with `compass-bridge keys create --name NAME --scopes read,write` "
               "and put it in COMPASS_BRIDGE_KEY")
        if self.problem is KeyProblem.MALFORMED:
            return f"COMPASS_BRIDGE_KEY is not a compass-bridge key (expected cb_ + 40 hex characters); {fix}"
        if self.problem is KeyProblem.UNKNOWN:
            return f"COMPASS_BRIDGE_KEY is not known to this installation's key store; {fix}"
        assert self.record is not None
        what = "was revoked" if self.problem is KeyProblem.REVOKED else "has expired"
        return f"the bridge key '{self.record.name}' ({self.record.prefix}…) {what}; {fix}"


def _load_secret(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_bytes(_SECRET_BYTES)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another process created it first: use theirs
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
        f.flush()
        os.fsync(f.fileno())
    return secret


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
    def __init__(self, conn: sqlite3.Connection, secret: bytes) -> None:
        self._conn = conn
        self._secret = secret

    @classmethod
    def open(cls, paths: StatePaths) -> KeyStore:
        paths.ensure()
        return cls(store.connect(paths.database), _load_secret(paths.secret_file))

    def close(self) -> None:
        self._conn.close()

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
            self._conn.execute(
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
        rows = self._conn.execute(query).fetchall()
        return [_row_to_record(r) for r in rows]

    def find(self, id_or_name: str) -> KeyRecord:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE id = ? OR name = ?",  # noqa: S608
            (id_or_name, id_or_name),
        ).fetchone()
        if row is None:
            raise KeyStoreError(f"no key with id or name '{id_or_name}'; see `compass-bridge keys list`")
        return _row_to_record(row)

    def revoke(self, id_or_name: str) -> KeyRecord:
        record = self.find(id_or_name)
        if record.revoked_at is None:
            self._conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (time.time(), record.id))
        return self.find(record.id)

    def delete(self, id_or_name: str) -> KeyRecord:
        record = self.find(id_or_name)
        self._conn.execute("DELETE FROM api_keys WHERE id = ?", (record.id,))
        return record

    def authenticate(self, key: str, *, digest: str | None = None) -> KeyRecord | Rejected:
        """Who `key` belongs to, or why it is refused. Reads the store every time, so a revocation or
        expiry takes effect on the very next call. `digest` lets a caller reuse `self.digest(key)`."""
        if not KEY_PATTERN.fullmatch(key):
            return Rejected(KeyProblem.MALFORMED)
        presented = digest or self.digest(key)
        rows = self._conn.execute(
            f"SELECT {_COLUMNS}, digest FROM api_keys WHERE prefix = ?",  # noqa: S608
            (key[:PREFIX_LENGTH],),
        ).fetchall()
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

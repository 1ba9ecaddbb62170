"""The keys' own file (keys.sqlite3): keys of an earlier version move out of the shared bridge.sqlite3 once, safely
under several processes and after a crash between the move's two commits; usage commits never touch the keys'
file; and what a key check remembers never outlives a change to it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcp_bridge import store
from mcp_bridge.keys import KeyProblem, KeyRecord, KeyStore, Rejected, load_secret
from mcp_bridge.paths import StatePaths, state_paths
from mcp_bridge.scopes import parse_scopes
from mcp_bridge.usage import UsageLog, UsageRecord


def _earlier_install(paths: StatePaths, names: list[str], *, last_used: float | None = None) -> dict[str, str]:
    """A bridge.sqlite3 as an earlier version left it (schema 3, keys inside); the plain keys by name."""
    paths.ensure()
    secret = load_secret(paths.secret_file)
    conn = sqlite3.connect(paths.database, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for script in store.SHARED_SCHEMA[:3]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 3")
    plain = {}
    for n, name in enumerate(names):
        key = "cb_" + secrets.token_hex(20)
        plain[name] = key
        conn.execute("INSERT INTO api_keys (id, name, prefix, digest, scopes, created_at, last_used_at, expires_at,"
                     " revoked_at) VALUES (?, ?, ?, ?, 'read,write', ?, ?, NULL, NULL)",
                     (f"k_{n:08x}", name, key[:8], hmac.new(secret, key.encode(), hashlib.sha256).hexdigest(),
                      time.time(), last_used))
    conn.close()
    return plain


def _shared_keys(paths: StatePaths) -> list[str]:
    conn = sqlite3.connect(paths.database)
    try:
        return [name for (name,) in conn.execute("SELECT name FROM api_keys")]
    finally:
        conn.close()


def test_keys_of_an_earlier_version_move_to_their_own_file(bridge_home: Path) -> None:
    paths = state_paths()
    stamp = time.time() - 60
    plain = _earlier_install(paths, ["laptop", "ci"], last_used=stamp)
    keys = KeyStore.open(paths)
    assert sorted(r.name for r in keys.list()) == ["ci", "laptop"]
    for name, key in plain.items():
        found = keys.authenticate(key)
        assert isinstance(found, KeyRecord) and found.name == name
    assert _shared_keys(paths) == []  # removed from the old file: no earlier server accepts a key revoked here
    assert keys.last_used() == {"k_00000000": stamp, "k_00000001": stamp}
    assert stat.S_IMODE(paths.keys_database.stat().st_mode) == 0o600
    keys.close()
    again = KeyStore.open(paths)  # idempotent
    assert sorted(r.name for r in again.list()) == ["ci", "laptop"]
    again.close()


def test_a_repeated_move_never_brings_back_a_key_deleted_since(bridge_home: Path) -> None:
    """A crash between the move's two commits leaves the keys in both files; the next open must not undo a delete
    or a revocation made in between."""
    paths = state_paths()
    plain = _earlier_install(paths, ["laptop", "ci"])
    keys = KeyStore.open(paths)
    keys.delete("laptop")
    keys.revoke("ci")
    keys.close()
    conn = sqlite3.connect(paths.database, isolation_level=None)
    secret = load_secret(paths.secret_file)
    for n, (name, key) in enumerate(plain.items()):  # the rows as they were before the (lost) second commit
        conn.execute("INSERT INTO api_keys (id, name, prefix, digest, scopes, created_at) VALUES (?, ?, ?, ?,"
                     " 'read', 1.0)", (f"k_{n:08x}", name, key[:8],
                                       hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()))
    conn.close()
    keys = KeyStore.open(paths)
    assert [r.name for r in keys.list()] == ["ci"] and keys.find("ci").revoked_at is not None
    for key in plain.values():
        assert isinstance(keys.authenticate(key), Rejected)
    assert _shared_keys(paths) == []
    keys.close()


def test_a_name_taken_meanwhile_keeps_both_keys(bridge_home: Path) -> None:
    paths = state_paths()
    keys = KeyStore.open(paths)
    keys.create("laptop", parse_scopes("read"))
    keys.close()
    plain = _earlier_install(paths, ["laptop"])  # an earlier version made one too, in the old file
    keys = KeyStore.open(paths)
    assert sorted(r.name for r in keys.list()) == ["laptop", "laptop (k_00000000)"]
    found = keys.authenticate(plain["laptop"])
    assert isinstance(found, KeyRecord) and found.id == "k_00000000"
    keys.close()


_OPEN = """
import sys
from mcp_bridge.keys import KeyStore
from mcp_bridge.paths import state_paths
KeyStore.open(state_paths()).close()
"""


def test_several_processes_opening_at_once_move_each_key_once(bridge_home: Path) -> None:
    paths = state_paths()
    plain = _earlier_install(paths, [f"key{i}" for i in range(20)])
    repo = Path(__file__).resolve().parents[2]
    opening = [subprocess.Popen([sys.executable, "-c", _OPEN], cwd=repo) for _ in range(6)]
    assert [p.wait(60) for p in opening] == [0] * 6
    keys = KeyStore.open(paths)
    assert sorted(r.name for r in keys.list()) == sorted(plain)
    assert all(isinstance(keys.authenticate(k), KeyRecord) for k in plain.values())
    assert _shared_keys(paths) == []
    keys.close()


def test_a_damaged_shared_file_refuses_keys_until_moved_aside(bridge_home: Path) -> None:
    """Its keys cannot be moved, so none is checked (fail closed); moved aside, the keys' file alone serves."""
    paths = state_paths().ensure()
    keys = KeyStore.open(paths)
    _, key = keys.create("laptop", parse_scopes("read"))
    keys.close()
    paths.database.write_bytes(b"garbage" * 1000)
    broken = KeyStore.open_or_unavailable(paths)
    refused = broken.authenticate(key)
    assert isinstance(refused, Rejected) and refused.problem is KeyProblem.STORE_UNAVAILABLE
    assert str(paths.database) in refused.explain() and "mv " in refused.explain()
    paths.database.rename(paths.database.with_name("bridge.sqlite3.broken"))
    keys = KeyStore.open(paths)
    assert isinstance(keys.authenticate(key), KeyRecord)
    keys.close()


def test_usage_commits_leave_the_keys_file_alone(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    keys = KeyStore.open(paths)
    record, key = keys.create("laptop", parse_scopes("read"))
    watcher = sqlite3.connect(paths.keys_database)
    (before,) = watcher.execute("PRAGMA data_version").fetchone()
    log = UsageLog(paths.database)
    for _ in range(3):
        log.record(UsageRecord(record.id, "laptop", "read_file", "ok", None, 1.0, "test", time.time()))
        assert log.flush()
    assert log.close() == 0
    (after,) = watcher.execute("PRAGMA data_version").fetchone()
    assert after == before
    assert isinstance(keys.authenticate(key), KeyRecord)
    watcher.close()
    keys.close()


@pytest.mark.parametrize("change", ["revoke", "delete"])
def test_a_change_from_another_process_is_seen_on_the_next_check(bridge_home: Path, change: str) -> None:
    paths = state_paths()
    keys = KeyStore.open(paths)
    _, key = keys.create("laptop", parse_scopes("read"))
    for _ in range(3):  # remembered now
        assert isinstance(keys.authenticate(key), KeyRecord)
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "mcp_bridge", "keys", change, "laptop"], cwd=repo, check=True,
                   capture_output=True)
    refused = keys.authenticate(key)
    assert isinstance(refused, Rejected)
    assert refused.problem is (KeyProblem.REVOKED if change == "revoke" else KeyProblem.UNKNOWN)
    keys.close()


def test_expiry_is_judged_on_every_check_even_when_remembered(bridge_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    keys = KeyStore.open(state_paths())
    _, key = keys.create("brief", parse_scopes("read"), expires_at=time.time() + 60)
    assert isinstance(keys.authenticate(key), KeyRecord)
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    expired = keys.authenticate(key)
    assert isinstance(expired, Rejected) and expired.problem is KeyProblem.EXPIRED
    keys.close()

import hmac
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_bridge.keys import KEY_PATTERN, KeyProblem, KeyRecord, KeyStore, KeyStoreError, Rejected, parse_duration
from mcp_bridge.paths import state_paths
from mcp_bridge.scopes import Scope, parse_scopes
from mcp_bridge.store import StoreError


@pytest.fixture
def store(bridge_home: Path) -> Iterator[KeyStore]:
    s = KeyStore.open(state_paths())
    yield s
    s.close()


def test_create_returns_a_well_formed_key_once(store: KeyStore) -> None:
    record, key = store.create("laptop", parse_scopes("read,write"))
    assert KEY_PATTERN.fullmatch(key)
    assert record.prefix == key[:8]
    assert record.scopes == {Scope.READ, Scope.WRITE}
    authenticated = store.authenticate(key)
    assert isinstance(authenticated, KeyRecord) and authenticated.id == record.id


def test_only_an_hmac_is_stored(store: KeyStore, bridge_home: Path) -> None:
    _, key = store.create("laptop", parse_scopes("read"))
    paths = state_paths()
    raw = paths.keys_database.read_bytes()
    for wal in paths.keys_database.parent.glob("*-wal"):
        raw += wal.read_bytes()
    assert key.encode() not in raw
    assert key[8:].encode() not in raw
    conn = sqlite3.connect(paths.keys_database)
    (digest,) = conn.execute("SELECT digest FROM api_keys").fetchone()
    conn.close()
    secret = paths.secret_file.read_bytes()
    assert digest == hmac.new(secret, key.encode(), "sha256").hexdigest()
    assert stat.S_IMODE(paths.secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.keys_database.stat().st_mode) == 0o600


def test_a_different_install_secret_does_not_accept_the_key(store: KeyStore, bridge_home: Path) -> None:
    _, key = store.create("laptop", parse_scopes("read"))
    paths = state_paths()
    paths.secret_file.unlink()
    other = KeyStore.open(paths)  # a new secret: the stored digest no longer matches
    try:
        result = other.authenticate(key)
        assert isinstance(result, Rejected) and result.problem is KeyProblem.UNKNOWN
    finally:
        other.close()


@pytest.mark.parametrize("bad", ["", "cb_", "cb_XYZ", "ck_" + "a" * 40, "cb_" + "a" * 39, "cb_" + "A" * 40,
                                 "cb_" + "a" * 41, " cb_" + "a" * 40])
def test_malformed_keys_are_rejected_without_lookup(store: KeyStore, bad: str) -> None:
    result = store.authenticate(bad)
    assert isinstance(result, Rejected) and result.problem is KeyProblem.MALFORMED
    assert "cb_ + 40 hex" in result.explain()


def test_unknown_key_with_a_known_prefix_is_rejected(store: KeyStore) -> None:
    _, key = store.create("laptop", parse_scopes("read"))
    forged = key[:8] + ("0" if key[8] != "0" else "1") + key[9:]
    result = store.authenticate(forged)
    assert isinstance(result, Rejected) and result.problem is KeyProblem.UNKNOWN


def test_revocation_takes_effect_on_the_next_check(store: KeyStore) -> None:
    _, key = store.create("laptop", parse_scopes("write"))
    assert isinstance(store.authenticate(key), KeyRecord)
    store.revoke("laptop")
    result = store.authenticate(key)
    assert isinstance(result, Rejected) and result.problem is KeyProblem.REVOKED
    assert "laptop" in result.explain() and "keys create" in result.explain()


def test_revocation_is_seen_by_another_open_store(store: KeyStore) -> None:
    # Models a running server (its own connection) and the CLI revoking in another process.
    record, key = store.create("laptop", parse_scopes("write"))
    cli_side = KeyStore.open(state_paths())
    try:
        cli_side.revoke(record.id)
    finally:
        cli_side.close()
    result = store.authenticate(key)
    assert isinstance(result, Rejected) and result.problem is KeyProblem.REVOKED


def test_expiry(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _, key = store.create("short", parse_scopes("read"), expires_at=time.time() + 60)
    assert isinstance(store.authenticate(key), KeyRecord)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)
    result = store.authenticate(key)
    assert isinstance(result, Rejected) and result.problem is KeyProblem.EXPIRED
    assert "expired" in result.explain()


def test_expiry_must_be_in_the_future(store: KeyStore) -> None:
    with pytest.raises(KeyStoreError, match="future"):
        store.create("past", parse_scopes("read"), expires_at=time.time() - 1)


def test_names_are_unique_and_sane(store: KeyStore) -> None:
    store.create("laptop", parse_scopes("read"))
    with pytest.raises(KeyStoreError, match="already exists"):
        store.create("laptop", parse_scopes("read"))
    for bad in ("", "x" * 65, "tab\there", "k_12345678"):
        with pytest.raises(KeyStoreError):
            store.create(bad, parse_scopes("read"))


def test_delete_and_find_by_id_or_name(store: KeyStore) -> None:
    record, key = store.create("laptop", parse_scopes("read"))
    assert store.find(record.id).name == "laptop"
    assert store.find("laptop").id == record.id
    store.delete(record.id)
    with pytest.raises(KeyStoreError, match="no key"):
        store.find("laptop")
    result = store.authenticate(key)
    assert isinstance(result, Rejected) and result.problem is KeyProblem.UNKNOWN


def test_public_view_never_contains_the_key_or_digest(store: KeyStore) -> None:
    record, key = store.create("laptop", parse_scopes("admin"))
    public = record.public()
    assert key not in repr(public) and store.digest(key) not in repr(public)
    assert public["scopes"] == ["read", "write", "admin"]


def test_comparison_uses_compare_digest(store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # The digest comparison must go through hmac.compare_digest (constant time), for every candidate.
    _, key = store.create("laptop", parse_scopes("read"))
    seen: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert isinstance(store.authenticate(key), KeyRecord)
    assert seen == [(store.digest(key), store.digest(key))]


def test_secret_file_is_created_once_and_reused(bridge_home: Path) -> None:
    paths = state_paths()
    first = KeyStore.open(paths)
    secret = paths.secret_file.read_bytes()
    second = KeyStore.open(paths)
    try:
        assert paths.secret_file.read_bytes() == secret and len(secret) == 32
        _, key = first.create("a", parse_scopes("read"))
        assert isinstance(second.authenticate(key), KeyRecord)
    finally:
        first.close()
        second.close()
    assert os.stat(paths.data_dir).st_mode & 0o077 == 0


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400),
                                                ("2w", 1209600), ("45s", 45)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "0d", "-1d", "1y", "1.5h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(KeyStoreError, match=r"e\.g\. 30d"):
        parse_duration(text)


@pytest.mark.parametrize(("damaged", "content", "fix"), [
    ("secret_file", b"", "rm "), ("secret_file", b"short", "rm "), ("secret_file", b"x" * 33, "rm "),
    ("keys_database", b"this is not a database" * 100, "mv "),
    ("database", b"this is not a database" * 100, "mv "),  # an earlier version's keys may be in it: fail closed
])
def test_a_damaged_store_is_refused_with_the_file_and_the_fix(bridge_home: Path, damaged: str, content: bytes,
                                                              fix: str) -> None:
    paths = state_paths().ensure()
    path: Path = getattr(paths, damaged)
    path.write_bytes(content)
    with pytest.raises(StoreError) as refused:
        KeyStore.open(paths)
    assert str(path) in str(refused.value) and fix in str(refused.value)


def test_a_store_that_cannot_be_opened_refuses_everyone_and_says_why(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    paths.keys_database.write_bytes(b"garbage" * 100)
    broken = KeyStore.open_or_unavailable(paths)
    rejected = broken.authenticate("cb_" + "0" * 40)
    assert isinstance(rejected, Rejected) and rejected.problem is KeyProblem.STORE_UNAVAILABLE
    assert str(paths.keys_database) in rejected.explain()
    assert broken.unavailable() is not None
    with pytest.raises(StoreError):
        broken.list()
    broken.close()

"""Corpus, class 6 — the audit: a working key floods the log with the biggest rows it can make, SIGHUP and end of
input arrive while the database is locked, and every call must still be on record, in bounded space.

Real `serve` processes over stdio, the real SQLite file in the bridge's installed data dir.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.security.test_audit_survives import locked
from tests.security.test_corpus_support import Home, create_key, make_home, serve, text

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the XDG home layout, POSIX signals")
HANGUP = signal.Signals["SIGHUP"]  # by name: Windows has none, and the module is skipped there


def _database(home: Home) -> Path:
    return home.path / ".local/share/compass-bridge/bridge.sqlite3"


def _usage_rows(home: Home) -> int:
    conn = sqlite3.connect(_database(home))
    try:
        rows: int = conn.execute("SELECT count(*) FROM usage").fetchone()[0]
    finally:
        conn.close()
    return rows


def _store_bytes(home: Home) -> int:
    database = _database(home)
    return sum(p.stat().st_size for p in database.parent.glob(database.name + "*"))


def test_the_biggest_rows_a_working_key_can_make_are_all_kept_and_bounded(tmp_path: Path) -> None:
    """1 000 calls naming 100 KB tools with 100 KB arguments, from a client calling itself by a 1 MB name: one
    row per call is kept (nothing lost), each capped, so the file grows by a few KB per call, not 200 KB."""
    home = make_home(tmp_path)
    key = create_key(home, "read")
    before = _store_bytes(home)
    with serve(home, key=key) as client:
        client.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                   "clientInfo": {"name": "c" * 1_000_000, "version": "v" * 100_000}})
        for i in range(1000):
            result = client.call_tool(f"t{i}" + "x" * 100_000, {"a" * 100: "y" * 100_000})
            assert result.get("isError")
        assert not client.call_tool("bridge_status", {}).get("isError")
    assert _usage_rows(home) == 1001
    grown = _store_bytes(home) - before
    assert grown < 1001 * 8192, f"the store grew by {grown:,} bytes"


@pytest.mark.parametrize("ending", ["SIGHUP", "end of input"])
def test_rows_queued_behind_a_lock_survive_the_end_of_the_server(tmp_path: Path, ending: str) -> None:
    home = make_home(tmp_path)
    key = create_key(home, "read")
    with serve(home, key=key) as client, locked(_database(home)):
        for _ in range(40):
            assert not client.call_tool("list_directory", {"path": "project"}).get("isError")
        if ending == "SIGHUP":
            client.process.send_signal(HANGUP)
        else:
            assert client.process.stdin is not None
            client.process.stdin.close()
        time.sleep(1)  # the lock outlives the ending by a second, well within the server's 5 s of patience
    assert client.process.wait(timeout=30) in (0, 128 + HANGUP, -HANGUP)
    assert _usage_rows(home) == 40


@pytest.mark.parametrize("damage", ["a FIFO", "a directory", "a link to /dev/zero", "random bytes"])
def test_a_store_that_is_not_a_database_is_explained_and_nothing_hangs(tmp_path: Path, damage: str) -> None:
    home = make_home(tmp_path)
    database = _database(home)
    database.unlink()
    if damage == "a FIFO" and sys.platform != "win32":  # the module is skipped there; mypy checks it anyway
        os.mkfifo(database)
    elif damage == "a directory":
        database.mkdir()
    elif damage == "a link to /dev/zero":
        database.symlink_to("/dev/zero")
    else:
        database.write_bytes(os.urandom(64 * 1024))
    # The time-outs are hang guards: a FIFO opened for reading would wait for a writer forever.
    usage = subprocess.run([sys.executable, "-m", "mcp_bridge", "usage"], env=home.env(), capture_output=True,
                           text=True, timeout=60)
    assert usage.returncode != 0 and str(database) in usage.stderr and "Traceback" not in usage.stderr, usage
    with serve(home) as client:
        status = client.call_tool("bridge_status", {})
        refused = client.call_tool("read_file", {"path": "project/main.py"})
        assert "print('hi')" not in text(refused) and str(database) in text(refused), text(refused)
        assert not status.get("isError") or str(database) in text(status), status

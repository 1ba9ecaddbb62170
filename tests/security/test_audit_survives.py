"""The audit survives: a locked database, a full spill, SIGTERM/SIGINT with rows queued, and floods of calls
with a key that does not work. Real SQLite files, real `serve` processes, real signals."""

from __future__ import annotations

import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mcp_bridge import store
from mcp_bridge.paths import state_paths
from mcp_bridge.usage import REJECTED_KEY_NAME, UsageLog, UsageRecord
from tests.support.bridge import cli, create_key
from tests.support.stdio_client import serve_process


def row(tool: str = "read_file", key_name: str = "laptop", key_id: str | None = "k_1", error: str | None = None,
        ts: float | None = None) -> UsageRecord:
    return UsageRecord(key_id=key_id, key_name=key_name, tool=tool, outcome="ok" if error is None else "refused",
                       error=error, duration_ms=1.0, client="test", ts=time.time() if ts is None else ts)


@contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another process's write lock on the database, as a long `sqlite3` session or backup would hold it."""
    store.connect(database).close()  # created and migrated first, as a server would have
    holder = sqlite3.connect(database, isolation_level=None, timeout=10)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("COMMIT")
        holder.close()


def counts(database: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(database)
    try:
        usage = conn.execute("SELECT count(*) FROM usage").fetchone()[0]
        rejected = conn.execute("SELECT coalesce(sum(calls), 0) FROM rejected_calls").fetchone()[0]
        lost = conn.execute("SELECT coalesce(sum(rows), 0) FROM usage_losses").fetchone()[0]
    finally:
        conn.close()
    return usage, rejected, lost


def wait_until(condition: Callable[[], object], limit_s: float = 30.0) -> None:
    """A hang guard only: returns as soon as the condition holds."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_a_database_locked_for_seconds_loses_nothing_and_says_so(bridge_home: Path) -> None:
    database = state_paths().ensure().database
    log = UsageLog(database)
    with locked(database):
        for i in range(500):
            log.record(row(ts=float(i + 1)))
        wait_until(lambda: log.status()["state"] == "retrying")
        time.sleep(2)  # the lock outlasts many busy time-outs and back-offs: the writer must still be alive
        status = log.status()
        assert status["pending"] == 500 and status["written"] == 0 and status["dropped"] == 0
        assert "locked" in status["last_error"] and str(database) in status["last_error"]
    assert log.flush()
    status = log.status()
    assert (status["state"], status["pending"], status["written"], status["dropped"]) == ("ok", 0, 500, 0)
    log.close()
    assert counts(database) == (500, 0, 0)


def test_past_the_spill_rows_are_dropped_counted_and_the_loss_recorded(bridge_home: Path) -> None:
    database = state_paths().ensure().database
    log = UsageLog(database, spill_limit=100)
    with locked(database):
        for _ in range(150):
            log.record(row())
        status = log.status()
        assert (status["state"], status["pending"], status["dropped"]) == ("lost rows", 100, 50)
    assert log.flush()
    log.close()
    assert counts(database) == (100, 0, 50)  # the 50 dropped rows are on record as a loss
    doctor = cli(bridge_home, "doctor", "--json", check=False)
    assert "50 usage row(s) could not be recorded" in doctor.stdout


def test_an_oversized_row_is_capped(bridge_home: Path) -> None:
    database = state_paths().ensure().database
    log = UsageLog(database)
    log.record(row(tool="t" * 1_000_000, error="e" * 1_000_000))
    log.close()
    conn = sqlite3.connect(database)
    tool, error = conn.execute("SELECT tool, error FROM usage").fetchone()
    conn.close()
    assert len(tool) <= 201 and len(error) <= 2001


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_queued_rows_are_flushed_on_a_signal(bridge_home: Path, tmp_path: Path, sig: signal.Signals) -> None:
    database = state_paths().ensure().database
    with serve_process(bridge_home, "legacy", roots=[tmp_path]) as client:
        client.open()
        with locked(database):
            for _ in range(25):
                assert not client.call_tool("list_directory", {"path": "."}).get("isError")
            # The rows wait in the server's spill: the lock is held. Now the signal, then the lock goes away
            # within close()'s patience, and every row must land.
            client.process.send_signal(sig)
            time.sleep(1)
        assert client.process.wait(timeout=30) == 128 + sig
    assert counts(database) == (25, 0, 0)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_rows_that_cannot_be_flushed_in_time_are_reported_not_silently_lost(bridge_home: Path,
                                                                            tmp_path: Path) -> None:
    database = state_paths().ensure().database
    with serve_process(bridge_home, "legacy", roots=[tmp_path]) as client:
        client.open()
        with locked(database):
            for _ in range(3):
                client.call_tool("list_directory", {"path": "."})
            client.process.send_signal(signal.SIGTERM)
            client.process.wait(timeout=30)  # close() gives up after its time-out while the lock is still held
    stderr = (bridge_home / "serve-legacy.stderr").read_text()
    assert "3 call record(s) could not be written" in stderr and str(database) in stderr
    assert "Traceback" not in stderr


def test_calls_keep_answering_while_the_database_is_locked(bridge_home: Path, tmp_path: Path) -> None:
    database = state_paths().ensure().database
    with serve_process(bridge_home, "legacy", roots=[tmp_path]) as client:
        client.open()
        with locked(database):
            answered = [client.call_tool("list_directory", {"path": "."}) for _ in range(40)]
            time.sleep(1.5)
        assert not any(a.get("isError") for a in answered)
    assert counts(database) == (40, 0, 0)


@pytest.mark.parametrize("key", ["cb_" + "0" * 40, "not-a-key"])
def test_a_flood_of_calls_with_an_unusable_key_cannot_grow_the_store(bridge_home: Path, tmp_path: Path,
                                                                     key: str) -> None:
    database = state_paths().ensure().database
    create_key(bridge_home, "real", "read")
    store.connect(database).close()
    before = database.stat().st_size
    with serve_process(bridge_home, "legacy", roots=[tmp_path], key=key) as client:
        client.open()
        for i in range(1000):
            # Each call names a different, long tool: one row per call would be ~10 MB.
            result = client.call_tool(f"tool_{i}_" + "x" * 10_000, {"path": "."})
            assert result.get("isError") and "COMPASS_BRIDGE_KEY" in result["content"][0]["text"]
    usage, rejected, lost = counts(database)
    assert (usage, rejected, lost) == (0, 1000, 0)
    conn = sqlite3.connect(database)
    windows = conn.execute("SELECT count(*) FROM rejected_calls").fetchone()[0]
    conn.close()
    assert windows <= 2  # one per ten-minute window and reason; two if the run crossed a window's edge
    grown = sum(p.stat().st_size for p in database.parent.glob(database.name + "*")) - before
    assert grown < 512 * 1024, f"the store grew by {grown} bytes"


def test_aggregation_adds_up_across_concurrent_writers(bridge_home: Path) -> None:
    database = state_paths().ensure().database
    reason = "refused: COMPASS_BRIDGE_KEY is not known to this installation's key store"
    logs = [UsageLog(database) for _ in range(3)]

    def flood(log: UsageLog) -> None:
        for i in range(300):
            log.record(row(key_name=REJECTED_KEY_NAME, key_id=None, error=reason, ts=1_200_000.0 + i))

    threads = [threading.Thread(target=flood, args=(log,)) for log in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.close()
    conn = sqlite3.connect(database)
    rows = conn.execute("SELECT reason, calls, first_ts, last_ts FROM rejected_calls").fetchall()
    conn.close()
    assert rows == [(reason, 900, 1_200_000.0, 1_200_299.0)]  # one ten-minute window


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_end_of_input_flushes(bridge_home: Path, tmp_path: Path) -> None:
    database = state_paths().ensure().database
    with serve_process(bridge_home, "legacy", roots=[tmp_path]) as client:
        client.open()
        for _ in range(10):
            client.call_tool("list_directory", {"path": "."})
        assert client.process.stdin is not None
        client.process.stdin.close()
        assert client.process.wait(timeout=30) == 0
    assert counts(database) == (10, 0, 0)

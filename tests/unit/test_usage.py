import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mcp_bridge import store
from mcp_bridge.keys import KeyStore
from mcp_bridge.paths import state_paths
from mcp_bridge.scopes import parse_scopes
from mcp_bridge.usage import REJECTED_KEY_NAME, Outcome, UsageLog, UsageRecord, recent, rejected_calls, summarize


def _row(tool: str, outcome: Outcome = "ok", ms: float = 1.0, key: str = "default", key_id: str | None = None,
         ts: float | None = None) -> UsageRecord:
    return UsageRecord(key_id=key_id, key_name=key, tool=tool, outcome=outcome,
                       error=None if outcome == "ok" else f"{outcome} because", duration_ms=ms,
                       client="test", ts=ts if ts is not None else time.time())


def test_close_writes_every_recorded_row(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    log = UsageLog(paths.database)
    for i in range(500):
        log.record(_row("read_file", ms=float(i)))
    log.close()
    conn = store.connect(paths.database)
    assert conn.execute("SELECT count(*) FROM usage").fetchone() == (500,)
    conn.close()


def test_summary_counts_outcomes_and_percentiles(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    log = UsageLog(paths.database)
    for ms in range(1, 101):  # 1..100 ms
        log.record(_row("read_file", ms=float(ms)))
    log.record(_row("write_file", outcome="refused", ms=0.5))
    log.record(_row("write_file", outcome="failed", ms=2.0))
    log.close()
    conn = store.connect(paths.database)
    summaries = {s.tool: s for s in summarize(conn)}
    read, write = summaries["read_file"], summaries["write_file"]
    assert (read.calls, read.failures, read.refusals) == (100, 0, 0)
    assert (read.p50_ms, read.p95_ms) == (50.0, 95.0)
    assert (write.calls, write.failures, write.refusals) == (2, 1, 1)
    rows = recent(conn)
    assert {r["outcome"] for r in rows} == {"ok", "refused", "failed"}
    assert any(r["error"] == "refused because" for r in rows)
    conn.close()


def test_summary_filters_by_time_and_key(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    log = UsageLog(paths.database)
    log.record(_row("list_directory", key="laptop", ts=time.time() - 7200))
    log.record(_row("list_directory", key="laptop"))
    log.record(_row("list_directory", key="ci"))
    log.close()
    conn = store.connect(paths.database)
    assert summarize(conn)[0].calls == 3
    assert summarize(conn, since=time.time() - 3600)[0].calls == 2
    assert summarize(conn, key_name="laptop")[0].calls == 2
    assert summarize(conn, since=time.time() - 3600, key_name="laptop")[0].calls == 1
    assert summarize(conn, key_name="nobody") == []
    conn.close()


def test_last_used_is_stamped_on_the_key(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    keys = KeyStore.open(paths)
    record, _ = keys.create("laptop", parse_scopes("read"))
    log = UsageLog(paths.database)
    stamp = time.time()
    log.record(_row("read_file", key="laptop", key_id=record.id, ts=stamp))
    log.close()
    assert keys.last_used() == {record.id: stamp}
    keys.close()


_HAMMER = """
import sys, time
from pathlib import Path
from tests.unit.test_usage import _row
from mcp_bridge.usage import UsageLog
database, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = UsageLog(Path(database))
for i in range(count):
    log.record(_row(f"tool{worker}", ms=float(i)))
    if i % 50 == 0:
        time.sleep(0.001)  # interleave the processes' transactions
log.close()
"""


def test_several_processes_share_one_log_without_losing_rows(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    store.connect(paths.database).close()  # created and migrated once, as the first server would
    # Plain child processes (not multiprocessing, whose resource tracker would outlive the test).
    repo = Path(__file__).resolve().parents[2]
    workers = [subprocess.Popen([sys.executable, "-c", _HAMMER, str(paths.database), str(w), "400"], cwd=repo)
               for w in range(4)]
    for p in workers:
        assert p.wait(60) == 0
    conn = sqlite3.connect(paths.database)
    counts = dict(conn.execute("SELECT tool, count(*) FROM usage GROUP BY tool").fetchall())
    conn.close()
    assert counts == {f"tool{w}": 400 for w in range(4)}


def test_status_counts_what_was_written(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    log = UsageLog(paths.database)
    assert log.status()["state"] == "ok" and log.status()["pending"] == 0
    for _ in range(10):
        log.record(_row("read_file"))
    assert log.flush()
    status = log.status()
    assert (status["written"], status["pending"], status["dropped"], status["last_error"]) == (10, 0, 0, None)
    assert log.close() == 0 and log.close() == 0  # closing twice is harmless


def test_a_row_recorded_after_close_is_counted_as_dropped(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    log = UsageLog(paths.database)
    log.close()
    log.record(_row("read_file"))
    assert log.status()["dropped"] == 1 and log.status()["state"] == "lost rows"


def test_rejected_key_calls_are_aggregated_not_logged_one_by_one(bridge_home: Path) -> None:
    paths = state_paths().ensure()
    log = UsageLog(paths.database)
    for tool in ("read_file", "write_file", "x" * 5000):
        log.record(UsageRecord(key_id=None, key_name=REJECTED_KEY_NAME, tool=tool, outcome="refused",
                               error="refused: unknown key", duration_ms=0.1, client="c", ts=time.time()))
    log.close()
    conn = store.connect(paths.database)
    assert conn.execute("SELECT count(*) FROM usage").fetchone() == (0,)
    (aggregate,) = rejected_calls(conn)
    assert (aggregate["reason"], aggregate["calls"]) == ("refused: unknown key", 3)
    assert len(aggregate["last_tool"]) <= 201
    conn.close()

"""`compass-bridge usage` over a real usage log written by the real writer: windows, breakdowns, recent
failures, ISO 8601 times, and the HTML report's content (its rendering is tests/e2e/test_usage_html.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mcp_bridge import store, usage_report
from mcp_bridge.paths import state_paths
from mcp_bridge.usage import Outcome, UsageLog, UsageRecord
from mcp_bridge.usage_report import Window

HOUR = 3600.0


def _row(tool: str, ts: float, outcome: Outcome = "ok", ms: float = 1.0, key: str = "laptop",
         error: str | None = None) -> UsageRecord:
    return UsageRecord(key_id=None, key_name=key, tool=tool, outcome=outcome,
                       error=error if outcome != "ok" else None, duration_ms=ms, client="test", ts=ts)


def write_sample_log(bridge_home: Path) -> float:
    """Three days of calls before now: two tools, two keys, failures and refusals with messages (one hostile).

    Returns the "now" the rows are placed against: taken here, not at import, because a full run reaches
    these tests many minutes after collecting them and a window such as `--since 48h` moves with the clock."""
    now = time.time()
    log = UsageLog(state_paths().ensure().database)
    for hour in range(72):
        ts = now - (72 - hour) * HOUR + 60
        for i in range(1 + hour % 4):
            log.record(_row("read_file", ts + i, ms=float(10 + i * 5 + hour % 7)))
        log.record(_row("search_files", ts + 5, ms=float(100 + hour), key="ci"))
        if hour % 6 == 0:
            log.record(_row("write_file", ts + 7, outcome="refused", key="ci",
                            error="write_file needs scope write; key 'ci' has read"))
        if hour % 9 == 0:
            log.record(_row("read_file", ts + 9, outcome="failed", ms=3.0,
                            error="<script>alert(1)</script> no such file: missing.txt"))
    log.close()
    return now


@pytest.fixture
def sample(bridge_home: Path) -> float:
    return write_sample_log(bridge_home)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_bridge", "usage", *args], capture_output=True, text=True)


def _conn() -> sqlite3.Connection:
    return store.connect(state_paths().database)


def test_groups_by_tool_key_and_day_add_up_to_the_totals(sample: float) -> None:
    conn = _conn()
    try:
        total = usage_report.totals(conn, Window())
        assert total is not None
        for by in usage_report.BY:
            found = usage_report.groups(conn, Window(), by)
            assert sum(g.calls for g in found) == total.calls
            assert sum(g.refusals for g in found) == total.refusals == 12
            assert sum(g.failures for g in found) == total.failures == 8
        by_key = {g.name: g for g in usage_report.groups(conn, Window(), "key")}
        assert set(by_key) == {"laptop", "ci"} and by_key["ci"].calls == 72 + 12
        days = [g.name for g in usage_report.groups(conn, Window(), "day")]
        assert days == sorted(days) and 3 <= len(days) <= 4
        assert all(datetime.strptime(d, "%Y-%m-%d") for d in days)
    finally:
        conn.close()


def test_the_window_bounds_the_calls_on_both_sides(sample: float) -> None:
    conn = _conn()
    try:
        day = usage_report.totals(conn, Window(since=sample - 24 * HOUR))
        older = usage_report.totals(conn, Window(until=sample - 24 * HOUR))
        both = usage_report.totals(conn, Window(since=sample - 48 * HOUR, until=sample - 24 * HOUR))
        everything = usage_report.totals(conn, Window())
        assert day and older and both and everything
        assert day.calls + older.calls == everything.calls and 0 < both.calls < older.calls
        assert usage_report.totals(conn, Window(key="nobody")) is None
    finally:
        conn.close()


def test_when_accepts_durations_and_iso_times() -> None:
    assert usage_report.parse_when("24h", 100_000.0) == 100_000.0 - 24 * HOUR
    assert usage_report.parse_when("2026-11-01T00:00:00Z", 0) == datetime.fromisoformat(
        "2026-11-01T00:00:00+00:00").timestamp()
    assert usage_report.parse_when("2026-11-01", 0) == datetime(2026, 11, 1).timestamp()  # local midnight
    with pytest.raises(usage_report.WhenError, match="ISO 8601"):
        usage_report.parse_when("last tuesday", 0)


def test_json_has_iso_times_a_breakdown_and_recent_failures(sample: float) -> None:
    done = _cli("--json", "--by", "key", "--since", "48h", "--failures", "3")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["by"] == "key" and {g["key"] for g in data["groups"]} == {"laptop", "ci"}
    assert data["window"]["since"].endswith("Z") and data["window"]["until"] is None
    assert len(data["recent_failures"]) == 3
    for row in (*data["recent"], *data["recent_failures"]):
        assert datetime.fromisoformat(row["ts"]).tzinfo is not None  # ISO 8601 with its offset (Z)
    assert [r["ts"] for r in data["recent"]] == sorted((r["ts"] for r in data["recent"]), reverse=True)
    assert all(r["outcome"] != "ok" and r["error"] for r in data["recent_failures"])
    top = data["top_errors"][0]
    assert top["outcome"] == "refused" and top["count"] == 8 and "needs scope write" in top["error"]
    assert {t["tool"] for t in data["tools"]} == {"read_file", "search_files", "write_file"}


def test_text_says_the_window_totals_and_the_recent_failures(sample: float) -> None:
    done = _cli("--by", "day", "--key", "ci")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.startswith("Tool calls, the first call → now, key 'ci':")
    assert "TOTAL" in out and "Recent failures and refusals (newest first):" in out
    assert "needs scope write" in out and "laptop" not in out
    bad = _cli("--since", "yesterday-ish")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr and "Traceback" not in bad.stderr


def test_a_corrupt_database_is_named_with_its_fix_not_a_traceback(bridge_home: Path) -> None:
    database = state_paths().ensure().database
    database.write_bytes(b"this is not a database" * 100)
    done = _cli()
    assert done.returncode == 1 and str(database) in done.stderr and "Traceback" not in done.stderr


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_html_report_is_one_self_contained_page_with_charts(sample: float, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = _cli("--html", str(out), "--since", "3d")
    assert done.returncode == 0, done.stderr
    assert f"Wrote the HTML report to {out}" in done.stdout
    page = out.read_text()
    parsed = _Collect()
    parsed.feed(page)
    assert parsed.tags.count("svg") == 3 and "polyline" in parsed.tags and "rect" in parsed.tags
    assert "script" not in parsed.tags and parsed.urls == []  # nothing to load: no network, no code
    assert "default-src 'none'" in page
    text = " ".join(parsed.text)
    for expected in ("Calls per tool", "p95 duration per tool", "Refusals and failures", "Top errors",
                     "read_file", "search_files", "write_file", "needs scope write"):
        assert expected in text, expected
    # An agent's text is shown as text, never as markup.
    assert "<script>alert(1)</script>" in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_an_empty_log_gives_a_report_that_says_so(bridge_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    done = _cli("--html", str(out))
    assert done.returncode == 0 and "No tool calls recorded in that window." in done.stdout
    assert "No tool calls in this window." in out.read_text()

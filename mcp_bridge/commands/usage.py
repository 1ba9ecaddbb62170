"""`compass-bridge usage`: what the agents did, in a time window, by tool, key or day; recent failures; and a
one-file HTML report with charts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mcp_bridge.commands.table import print_table

WHEN = "a duration back from now (24h, 7d) or an ISO 8601 date or time (2026-11-01, 2026-11-01T09:30Z)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("usage", help="show tool calls: counts, failures, refusals, p50/p95 ms, recent errors",
                            description="Summarise the usage log. Times in JSON are ISO 8601 (UTC).")
    parser.add_argument("--since", metavar="WHEN", help=f"only calls from WHEN on: {WHEN}")
    parser.add_argument("--until", metavar="WHEN", help="only calls before WHEN (same forms as --since)")
    parser.add_argument("--key", metavar="NAME", help="only calls made with this key name ('default' for none)")
    parser.add_argument("--by", choices=("tool", "key", "day"), default="tool",
                        help="one row per tool (default), per key, or per day (local time)")
    parser.add_argument("--failures", metavar="N", type=int, default=5,
                        help="how many recent failures and refusals to list (default 5; 0 for none)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON: totals, the breakdown, recent calls and failures, top errors")
    parser.add_argument("--html", metavar="FILE", type=Path,
                        help="also write a self-contained HTML report with charts to FILE")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sqlite3

    from mcp_bridge import store, usage_report
    from mcp_bridge.paths import state_paths

    now = time.time()
    try:
        since = usage_report.parse_when(args.since, now) if args.since else None
        until = usage_report.parse_when(args.until, now) if args.until else None
    except usage_report.WhenError as exc:
        print(f"compass-bridge usage: {exc}", file=sys.stderr)
        return 2
    if args.failures < 0:
        print("compass-bridge usage: --failures must be 0 or more", file=sys.stderr)
        return 2
    window = usage_report.Window(since, until, args.key)
    paths = state_paths().ensure()
    try:
        conn = store.connect(paths.database)
    except store.StoreError as exc:
        print(f"compass-bridge usage: {exc}", file=sys.stderr)
        return 1
    try:
        data = usage_report.report(conn, window, args.by, args.failures)
        line = usage_report.timeline(conn, window, now) if args.html else None
    except sqlite3.Error as exc:
        print(f"compass-bridge usage: {store.explain(paths.database, exc)}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if args.html:
        try:
            args.html.write_text(usage_report.render_html(data, line, window, now), encoding="utf-8")
        except OSError as exc:
            print(f"compass-bridge usage: cannot write {args.html}: {exc.strerror}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_text(data, window.describe(), args.by)
    if args.html:
        print(f"Wrote the HTML report to {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _print_text(data: dict[str, Any], describe: str, by: str) -> None:
    print(f"Tool calls, {describe}:")
    rows = data["groups"]
    if not rows:
        print("No tool calls recorded in that window.")
        return
    header = (by.upper(), "CALLS", "FAILED", "REFUSED", "P50 MS", "P95 MS")
    total = data["totals"]
    table = [(r[by], r["calls"], r["failures"], r["refusals"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}")
             for r in (*rows, {**total, by: "TOTAL"})]
    print_table(header, table, numeric_from=1)
    failures = data["recent_failures"]
    if failures:
        print("\nRecent failures and refusals (newest first):")
        print_table(("TIME (UTC)", "KEY", "TOOL", "OUTCOME", "MESSAGE"),
                    [(r["ts"], r["key"], r["tool"], r["outcome"], _short(str(r["error"] or ""))) for r in failures])
    rejected = data["rejected_calls"]
    if rejected:
        count = sum(int(r["calls"]) for r in rejected)
        print(f"\n{count} call(s) refused for an unusable key (not counted above); `--json` lists them.")
    lost = data["losses"]
    if lost:
        count = sum(int(r["rows"]) for r in lost)
        print(f"\n{count} usage row(s) could not be recorded (the database was unavailable); `--json` says when.")


def _short(text: str, width: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"

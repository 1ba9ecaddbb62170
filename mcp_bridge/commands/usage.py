"""`compass-bridge usage`: what the agents did, per tool."""

from __future__ import annotations

import argparse
import json
import sys
import time

from mcp_bridge.commands.table import print_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("usage", help="show tool calls per tool: calls, failures, refusals, p50/p95 ms")
    parser.add_argument("--since", metavar="DURATION", help="only calls in the last DURATION, e.g. 24h, 7d")
    parser.add_argument("--key", metavar="NAME", help="only calls made with this key name ('default' for none)")
    parser.add_argument("--json", action="store_true",
                        help="print JSON: per-tool summary plus the latest calls with their errors")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mcp_bridge import store
    from mcp_bridge.keys import KeyStoreError, parse_duration
    from mcp_bridge.paths import state_paths
    from mcp_bridge.usage import recent, summarize

    try:
        since = time.time() - parse_duration(args.since) if args.since else None
    except KeyStoreError as exc:
        print(f"compass-bridge usage: --since: {exc}", file=sys.stderr)
        return 2
    paths = state_paths().ensure()
    conn = store.connect(paths.database)
    try:
        summaries = summarize(conn, since, args.key)
        latest = recent(conn, since, args.key) if args.json else []
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"tools": [s.as_dict() for s in summaries], "recent": latest}, indent=2))
        return 0
    if not summaries:
        print("No tool calls recorded" + (" in that window." if since else " yet."))
        return 0
    header = ("TOOL", "CALLS", "FAILED", "REFUSED", "P50 MS", "P95 MS")
    rows = [(s.tool, s.calls, s.failures, s.refusals, f"{s.p50_ms:.1f}", f"{s.p95_ms:.1f}") for s in summaries]
    print_table(header, rows, numeric_from=1)
    return 0

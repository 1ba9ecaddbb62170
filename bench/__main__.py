"""`python -m bench [--quick] [--suite mcp|relay|search|all] [--json FILE]`

Installs the peers into the cache once (npm), generates the data once, runs every case for our side and the
peer alternately after a warm-up, and prints one table with the ratio ours/peer per case. See
docs/BENCHMARKS.md for what each case measures and how the two sides are kept identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import machine
from bench.mcp_suite import run_mcp, run_search
from bench.plan import Bench, Plan, progress
from bench.prepare import cache_dir, ensure_peers
from bench.procs import Procs, exit_on_signals
from bench.relay_suite import run_relay
from bench.stats import Row, table

SUITES: dict[str, Callable[[Bench], list[Row]]] = {"mcp": run_mcp, "search": run_search, "relay": run_relay}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true",
                        help="fewer iterations and a 10,000-file search tree: under two minutes, for a smoke check")
    parser.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    parser.add_argument("--settle", action="store_true",
                        help="before each timed operation wait until every process under test is idle, so one side's "
                        "deferred work (garbage collection, log writes) is not billed to the other; default: plain "
                        "back-to-back alternation")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure (and the machine) here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_signals()
    plan = dataclasses.replace(Plan.fast() if args.quick else Plan.full(), settled=args.settle)
    began = time.monotonic()
    if shutil.which("node") is None:
        sys.exit("bench: node is needed for the peers; install Node.js 18 or later")
    cache = cache_dir()
    peers = ensure_peers(cache)
    about = machine.describe(peers.versions())
    procs = Procs()
    rows: list[Row] = []
    scratch = Path(tempfile.mkdtemp(prefix="cb-bench-"))
    try:
        bench = Bench(plan=plan, procs=procs, peers=peers, data=cache / "data", scratch=scratch)
        bench.data.mkdir(exist_ok=True)
        progress(plan.describe())
        for name, run in SUITES.items():
            if args.suite in (name, "all"):
                rows += run(bench)
    finally:
        procs.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    took = time.monotonic() - began

    print(f"compass-bridge bench — {plan.describe()}; took {took:.0f} s")
    print(machine.render(about))
    print()
    print(table(rows))
    print()
    print("ours/theirs: median divided by median (below 1: ours is faster). Rates: sequential operations per "
          "second (1 / mean), except the concurrent case (all requests / wall time).")
    if args.json:
        args.json.write_text(json.dumps({
            "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "plan": plan.describe(), "seconds": took, "machine": about, "rows": [r.as_json() for r in rows],
        }, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

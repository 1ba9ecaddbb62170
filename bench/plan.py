"""How much each case runs, and what every suite shares (processes, peers, data, a clean environment)."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.prepare import Peers
from bench.procs import Procs

KIB = 1024
SIZES = {"100 B": 100, "64 KiB": 64 * KIB, "~1 MB": 1_000_000}
"""Relay payload sizes. ~1 MB stays under the 1 MiB frame limit of both hosts and of Chrome."""


@dataclass(frozen=True)
class Plan:
    quick: bool
    spawn_warmup: int
    spawn_runs: int
    read_warmup: int
    read_runs: int
    search_files: int
    search_warmup: int
    search_runs: int
    relay_spawn_warmup: int
    relay_spawn_runs: int
    roundtrip_warmup: int
    roundtrip_runs: dict[str, int]
    clients: int
    per_client: int
    concurrent_rounds: int
    relay_pss_runs: int
    mcp_pss_runs: int
    """Fresh sets of ready MCP servers per side for the PSS case."""
    mcp_pss_servers: int = 16
    settled: bool = False
    """Wait for every process under test to be idle before each timed operation (--settle)."""

    @classmethod
    def full(cls) -> Plan:
        return cls(quick=False, spawn_warmup=2, spawn_runs=20, read_warmup=200, read_runs=2000,
                   search_files=50_000, search_warmup=1, search_runs=10, relay_spawn_warmup=2, relay_spawn_runs=20,
                   roundtrip_warmup=100, roundtrip_runs={"100 B": 3000, "64 KiB": 1000, "~1 MB": 200},
                   clients=16, per_client=200, concurrent_rounds=5, relay_pss_runs=3,
                   mcp_pss_runs=3)

    @classmethod
    def fast(cls) -> Plan:
        return cls(quick=True, spawn_warmup=1, spawn_runs=5, read_warmup=50, read_runs=300,
                   search_files=10_000, search_warmup=1, search_runs=3, relay_spawn_warmup=1, relay_spawn_runs=5,
                   roundtrip_warmup=30, roundtrip_runs={"100 B": 300, "64 KiB": 150, "~1 MB": 30},
                   clients=16, per_client=50, concurrent_rounds=2, relay_pss_runs=1,
                   mcp_pss_runs=1)

    def describe(self) -> str:
        parts = ["full run"]
        if self.quick:
            parts = [f"QUICK run: fewer iterations (spawn ×{self.spawn_runs}, read_file ×{self.read_runs}, search "
                     f"×{self.search_runs}), a {self.search_files:,}-file search tree instead of 50,000, relay "
                     f"{self.clients}×{self.per_client} instead of 16×200 — for a smoke check, not for the record"]
        if self.settled:
            parts.append("settled: every timed operation starts with all processes under test idle")
        return "; ".join(parts)


@dataclass
class Bench:
    plan: Plan
    procs: Procs
    peers: Peers
    data: Path
    """Generated data, also the allowed root of both file servers."""
    scratch: Path
    """A temporary directory for this run: state homes, logs."""

    def env(self) -> dict[str, str]:
        """The same small environment for every process measured: nothing inherited that could change one
        side's behaviour (PYTHONPATH, NODE_OPTIONS, proxies), the user's real state never touched."""
        home = self.scratch / "home"
        home.mkdir(exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "USER": getpass.getuser(),
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "COMPASS_BRIDGE_HOME": str(self.scratch / "compass-bridge-home"),
            # Claude Code: no update checks, telemetry or error reports (no network beyond loopback).
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }

    @property
    def python(self) -> str:
        return sys.executable

    def log(self, name: str) -> Path:
        logs = self.scratch / "logs"
        logs.mkdir(exist_ok=True)
        return logs / name


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)

"""The `mcp` and `search` suites: our stdio MCP server against the official filesystem server (Node).

Both servers get the same allowed root (the bench's data directory), the same environment and the same
hand-written client (bench/jsonrpc.py); every case alternates between them call by call.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.jsonrpc import StdioRpc, tool_text
from bench.plan import Bench, progress
from bench.prepare import FILE_LINES, ensure_file, ensure_tree
from bench.runner import Timed, alternate
from bench.stats import Row, Side, ratio_at_most, throughput_at_least, within

BARE_SERVER = Path(__file__).with_name("bare_server.py")

OURS = "ours"
OURS_KEYED = "ours, with a bridge key (reference)"
PEER = "server-filesystem"
BARE = "bare mcp SDK MCPServer (reference)"
FIND = "find -name '*.py' (reference)"
TOOLS_LISTED = "tools/list"


def _write_config(bench: Bench) -> None:
    """Our server's state home. search_max_results is raised so that, like the peer, it returns all 5,000
    matches (its default stops at 1,000); everything else is the default."""
    config = Path(bench.env()["COMPASS_BRIDGE_HOME"]) / "config"
    config.mkdir(parents=True, exist_ok=True)
    config.chmod(0o700)  # the server refuses a state directory others could read
    (config / "config.toml").write_text("[limits]\nsearch_max_results = 100000\n")


def _commands(bench: Bench) -> dict[str, list[str]]:
    ours = [bench.python, "-m", "mcp_bridge", "serve", "--root", str(bench.data)]
    return {
        OURS: ours,
        OURS_KEYED: ours,
        PEER: ["node", str(bench.peers.filesystem_js), str(bench.data)],
        BARE: [bench.python, str(BARE_SERVER)],
    }


def _bridge_key(bench: Bench) -> str:
    """A read-scoped bridge key, made through the real CLI (as the README's Claude Code set-up does)."""
    out = subprocess.run([bench.python, "-m", "mcp_bridge", "keys", "create", "--name", f"bench-{time.time_ns()}",
                          "--scopes", "read", "--json"], env=bench.env(), capture_output=True, text=True, check=True)
    key: str = json.loads(out.stdout)["key"]
    return key


def _start(bench: Bench, side: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], StdioRpc]:
    with bench.log(f"{side.split()[0].strip(',')}.stderr.log").open("ab") as stderr:
        proc = bench.procs.spawn(_commands(bench)[side], env={**bench.env(), **(env or {})}, cwd=bench.data,
                                 stderr=stderr)
    return proc, StdioRpc(proc, side)


def _spawn_to_initialize(bench: Bench, side: str) -> Timed:
    """From spawning the server to reading its `initialize` answer; then, as a client goes on at once, to its
    first `tools/list` answer (under `also`). Stopping the server afterwards is not timed."""
    started = time.perf_counter()
    proc, rpc = _start(bench, side)
    try:
        result = rpc.initialize()
        elapsed = time.perf_counter() - started
        assert "serverInfo" in result, result
        rpc.initialized()
        listed = rpc.request("tools/list", {})
        assert listed.get("tools"), listed
        return Timed(elapsed, {TOOLS_LISTED: time.perf_counter() - started})
    finally:
        bench.procs.stop(proc)


@contextlib.contextmanager
def _servers(bench: Bench, sides: Mapping[str, dict[str, str]]) -> Iterator[dict[str, StdioRpc]]:
    """Each side started (with its extra environment) and past the initialize handshake."""
    started = []
    try:
        rpcs = {}
        for side, env in sides.items():
            proc, rpc = _start(bench, side, env)
            started.append(proc)
            rpc.initialize()
            rpc.initialized()
            rpcs[side] = rpc
        yield rpcs
    finally:
        for proc in started:
            bench.procs.stop(proc)


def _spawner(bench: Bench, side: str) -> Callable[[int], Timed]:
    return lambda i: _spawn_to_initialize(bench, side)


def _caller(rpc: StdioRpc, tool: str, arguments: dict[str, Any]) -> Callable[[int], dict[str, Any]]:
    return lambda i: rpc.call_tool(tool, arguments)


def _pids(rpcs: Mapping[str, StdioRpc]) -> dict[str, int]:
    return {side: rpc.proc.pid for side, rpc in rpcs.items()}


def run_mcp(bench: Bench) -> list[Row]:
    plan = bench.plan
    _write_config(bench)
    four_k = ensure_file(bench.data)
    progress(f"mcp: spawn → initialize, {plan.spawn_runs} runs each of ours, the peer and the bare SDK server")
    spawners = {side: _spawner(bench, side) for side in (OURS, PEER, BARE)}
    spawned = alternate(spawners, plan.spawn_warmup, plan.spawn_runs)
    spawn, listed = spawned.samples, {side: spawned.also[side][TOOLS_LISTED] for side in spawners}
    rows = [
        Row("mcp", "spawn → initialize answered", Side(OURS, spawn[OURS]), Side(PEER, spawn[PEER]),
            "≤ 1.0× peer", ratio_at_most(1.0)),
        Row("mcp", "spawn → initialize answered", Side(OURS, spawn[OURS]), Side(BARE, spawn[BARE]),
            "within 60 ms of bare SDK", within(0.060)),
        Row("mcp", "spawn → initialize → first tools/list answered", Side(OURS, listed[OURS]),
            Side(PEER, listed[PEER]), "reference: when a client can first use the tools"),
    ]

    progress(f"mcp: sequential read of a 4 KiB file, {plan.read_runs} calls each (ours without and with a key)")
    last_line = four_k.read_text().splitlines()[-1]
    sides = {OURS: {}, OURS_KEYED: {"COMPASS_BRIDGE_KEY": _bridge_key(bench)}, PEER: {}}
    with _servers(bench, sides) as rpcs:
        calls = {side: _caller(rpc, "read_text_file" if side == PEER else "read_file", {"path": str(four_k)})
                 for side, rpc in rpcs.items()}
        for side, call in calls.items():
            text = tool_text(call(0))
            if last_line not in text or text.count("line ") < FILE_LINES:
                raise SystemExit(f"bench: {side} did not return the whole 4 KiB file: {text[:300]!r}")
        reads = alternate(calls, plan.read_warmup, plan.read_runs, _pids(rpcs), settled=plan.settled)
    measured = {side: Side(side, reads.samples[side], unit=" calls/s", cpu=reads.cpu.get(side)) for side in sides}
    for figures in measured.values():
        figures.throughput = len(figures.samples) / sum(figures.samples)
    case = "read_file 4 KiB, sequential (peer: read_text_file)"
    rows += [
        Row("mcp", case, measured[OURS], measured[PEER], "≥ 1.0× peer calls/s", throughput_at_least(1.0)),
        Row("mcp", case, measured[OURS_KEYED], measured[PEER], "reference: key checked on every call"),
    ]
    return rows


def _count_py(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.endswith(".py"))


def run_search(bench: Bench) -> list[Row]:
    plan = bench.plan
    _write_config(bench)
    tree = ensure_tree(bench.data, plan.search_files)
    args = {"path": str(tree.path), "pattern": "**/*.py"}
    progress(f"search: search_files '**/*.py' over {tree.files:,} files ({tree.hits:,} hits), "
             f"{plan.search_runs} runs each")

    def find() -> str:
        out = subprocess.run(["find", str(tree.path), "-name", "*.py"], capture_output=True, check=True,
                             env=bench.env())
        return out.stdout.decode()

    with _servers(bench, {OURS: {}, PEER: {}}) as rpcs:
        searches: dict[str, Callable[[int], str]] = {
            OURS: lambda i: tool_text(rpcs[OURS].call_tool("search_files", args, timeout=600)),
            PEER: lambda i: tool_text(rpcs[PEER].call_tool("search_files", args, timeout=600)),
            FIND: lambda i: find(),
        }
        for side, search in searches.items():
            found = _count_py(search(0))
            if found != tree.hits:
                raise SystemExit(f"bench: {side} found {found} .py files, expected {tree.hits}")
        measured = alternate(searches, plan.search_warmup, plan.search_runs, _pids(rpcs),
                             settled=plan.settled)
    samples, cpu = measured.samples, measured.cpu
    case = f"search_files '**/*.py', {tree.files:,} files, {tree.hits:,} hits"
    ours = Side(OURS, samples[OURS], cpu=cpu.get(OURS))
    return [
        Row("search", case, ours, Side(PEER, samples[PEER], cpu=cpu.get(PEER)), "≤ 0.05× peer",
            ratio_at_most(0.05)),
        Row("search", case, ours, Side(FIND, samples[FIND]), "≤ 3× find", ratio_at_most(3.0)),
    ]

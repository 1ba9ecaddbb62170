"""The `relay` suite: our native host against `claude --chrome-native-host` (Claude in Chrome's host), of two
Claude Code versions: 2.1.197 (the one the project first measured against) and 2.1.332 (the current release, much
faster to start and leaner). Round trips are judged against the better of the two, start-up and memory against the
current release.

The browser side is simulated for both hosts by the same program (bench/extsim.py) on the host's stdin/stdout;
the agent side is the same blocking Unix-socket client for both, differing only in the message each host's
protocol wants:

    ours  client → host  {"type":"request","id":N,"tool":"bench_echo","args":{...}}   (after hello → welcome)
          host → client  {"result":{...},"type":"response","id":N}
    peer  client → host  {"method":"execute_tool","params":{"client_id":"bench","tool":"bench_echo","args":{...}}}
          host → client  {"result":{...}}   — sent to every connected client; there is no id to route by

Both use 4-byte little-endian length framing on the socket as on stdio.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cpu import CpuMeter
from bench.plan import SIZES, Bench, progress
from bench.prepare import CLAUDE_VERSION, claude_code_cache
from bench.procs import pss
from bench.runner import Timed, alternate
from bench.stats import Row, Side, ratio_at_most, zero_misrouted

EXTSIM = Path(__file__).with_name("extsim.py")
UNIX_SOCKETS = "the relay suite reaches the hosts over Unix sockets (POSIX)"
EXTENSION_ORIGIN = "chrome-extension://abcdefghijklmnopabcdefghijklmnop/"
HEADER = struct.Struct("<I")

OURS = "ours"
CURRENT_CLAUDE_VERSION = "2.1.332"
PINNED = f"claude {CLAUDE_VERSION} --chrome-native-host"
CURRENT = f"claude {CURRENT_CLAUDE_VERSION} --chrome-native-host"
PEERS = (PINNED, CURRENT)
SIDES = (OURS, *PEERS)

ROUNDTRIP_LIMITS = {"100 B": 0.85, "64 KiB": 0.7, "~1 MB": 0.55}
"""Issue 10: ours ÷ the better of the two Claude Code hosts, median round trip."""
SPAWN_LIMIT = 1.2
"""Issue 10: spawn → first pong, ours ÷ the current release."""
PSS_LIMIT = 0.5
"""Issue 10: host PSS with 16 clients, ours ÷ the current release."""
PSS_CLIENTS = 16


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _frame(obj: Any) -> bytes:
    payload = _dumps(obj)
    return HEADER.pack(len(payload)) + payload


def _current_claude() -> Path:
    binary = claude_code_cache(CURRENT_CLAUDE_VERSION) / "node_modules" / ".bin" / "claude"
    if not binary.exists():
        sys.exit(f"bench: Claude Code {CURRENT_CLAUDE_VERSION} is not in {binary.parent.parent.parent}; run "
                 "scripts/test once (it installs it), or `npm install --prefix "
                 f"{binary.parent.parent.parent} @anthropic-ai/claude-code@{CURRENT_CLAUDE_VERSION}`")
    return binary


def _commands(bench: Bench) -> dict[str, list[str]]:
    # Ours as the installed launcher starts it (`python -I -m native_host <origin>`, minus the sh wrapper);
    # the peers as their manifest starts them.
    return {
        OURS: [bench.python, "-I", "-m", "native_host", EXTENSION_ORIGIN],
        PINNED: [str(bench.peers.claude), "--chrome-native-host"],
        CURRENT: [str(_current_claude()), "--chrome-native-host"],
    }


class RelayFailure(Exception):
    pass


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RelayFailure("no answer in time")
        chunk = os.read(fd, size - len(out))
        if not chunk:
            raise RelayFailure("the host closed its stdout")
        out += chunk
    return bytes(out)


def _spawn_to_pong(bench: Bench, side: str) -> Timed:
    """Start the host as the browser does and send a ping at once; the time until its pong is read (stopping it
    afterwards is not timed)."""
    started = time.perf_counter()
    proc = bench.procs.spawn(_commands(bench)[side], env=bench.env(), cwd=bench.scratch)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        os.write(proc.stdin.fileno(), _frame({"type": "ping"}))
        deadline = time.monotonic() + 30
        while True:
            (size,) = HEADER.unpack(_read_exact(proc.stdout.fileno(), 4, deadline))
            message = json.loads(_read_exact(proc.stdout.fileno(), size, deadline))
            if message.get("type") == "pong":
                return Timed(time.perf_counter() - started)
    finally:
        bench.procs.stop(proc)
        for path in _socket_candidates(bench, side, proc.pid):
            path.unlink(missing_ok=True)  # only if the host, now gone, left its own socket behind


def _socket_candidates(bench: Bench, side: str, pid: int) -> list[Path]:
    """Where the host with this pid puts its socket: ours under $COMPASS_BRIDGE_HOME/run, the peer under
    /tmp/claude-mcp-browser-bridge-<user>/ (a fixed path: it ignores TMPDIR)."""
    if side == OURS:
        return [Path(bench.env()["COMPASS_BRIDGE_HOME"]) / "run" / f"{pid}.sock"]
    return [Path(p) for p in glob.glob(f"/tmp/claude-mcp-browser-bridge-*/{pid}.sock")]


class HostUnderTest:
    """A host whose stdin/stdout are wired straight to the extension simulator (two pipes, no bench in between)."""

    def __init__(self, bench: Bench, side: str) -> None:
        self.bench = bench
        self.side = side
        to_host_r, to_host_w = os.pipe()
        from_host_r, from_host_w = os.pipe()
        env = bench.env()
        try:
            self.host = bench.procs.spawn(_commands(bench)[side], env=env, cwd=bench.scratch,
                                          stdin=to_host_r, stdout=from_host_w)
            self.ext = bench.procs.spawn([bench.python, str(EXTSIM), "ours" if side == OURS else "peer"], env=env,
                                         cwd=bench.scratch, stdin=from_host_r, stdout=to_host_w,
                                         stderr=subprocess.PIPE)
        finally:
            for fd in (to_host_r, to_host_w, from_host_r, from_host_w):
                os.close(fd)
        assert self.ext.stderr is not None
        if not select.select([self.ext.stderr], [], [], 30)[0] or self.ext.stderr.readline() != b"ready\n":
            raise RelayFailure(f"{side}: the simulated extension got no pong from the host")
        self.socket_path = self._find_socket()

    def _find_socket(self) -> Path:
        pid = self.host.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for path in _socket_candidates(self.bench, self.side, pid):
                if path.exists():
                    return path
            time.sleep(0.005)
        raise RelayFailure(f"{self.side}: the host's socket never appeared")

    def close(self) -> None:
        """End it the way a browser does — the extension's side goes away, the host reads end of file and cleans
        up after itself — and make sure of it: signals if it does not exit, its socket file removed if left."""
        self.bench.procs.stop(self.ext, grace=1.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.host.wait(3.0)
        self.bench.procs.stop(self.host)
        self.socket_path.unlink(missing_ok=True)


def _unix_socket() -> socket.socket:
    if sys.platform == "win32":
        raise NotImplementedError(UNIX_SOCKETS)
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


class FramedSocket:
    """Blocking, and reading into one preallocated buffer: a fresh 1 MiB bytes object per recv() would cost more
    (an mmap and munmap each time) than everything else the client does for a small message."""

    def __init__(self, path: Path) -> None:
        self.sock = _unix_socket()
        self.sock.settimeout(60)
        self.sock.connect(str(path))
        self._buf = bytearray()
        self._chunk = bytearray(1 << 20)
        self._view = memoryview(self._chunk)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self) -> bytes:
        while True:
            if len(self._buf) >= 4:
                (size,) = HEADER.unpack_from(self._buf)
                if len(self._buf) >= 4 + size:
                    payload = bytes(self._buf[4 : 4 + size])
                    del self._buf[: 4 + size]
                    return payload
            got = self.sock.recv_into(self._chunk)
            if not got:
                raise RelayFailure("the host closed the connection")
            self._buf += self._view[:got]

    def close(self) -> None:
        self.sock.close()


class OursClient:
    """Protocol v1 (docs/PROTOCOL.md): hello → welcome, then request/response matched by id."""

    def __init__(self, conn: FramedSocket) -> None:
        self.conn = conn
        self.conn.send(_frame({"type": "hello", "protocol": 1,
                               "client": {"name": "bench", "version": "1", "pid": os.getpid()}}))
        while json.loads(self.conn.frame()).get("type") != "welcome":
            pass
        self._id = 0

    def roundtrip(self, size: int, tag: str) -> None:
        self._id += 1
        self.conn.send(_frame({"type": "request", "id": self._id, "tool": "bench_echo",
                               "args": {"size": size, "tag": tag}}))
        while True:
            message = json.loads(self.conn.frame())
            if message.get("type") == "response" and message.get("id") == self._id:
                break
        result = message.get("result")
        if not isinstance(result, dict) or result.get("tag") != tag:
            raise RelayFailure(f"ours: wrong answer for {tag}: {str(message)[:300]}")

    def close(self) -> None:
        self.conn.close()


class PeerClient:
    """Claude Code's wire format, as its MCP side sends it: {method, params}; the next `result` frame is taken
    as the answer (there is nothing else to match it by)."""

    def __init__(self, conn: FramedSocket) -> None:
        self.conn = conn

    def roundtrip(self, size: int, tag: str) -> None:
        self.conn.send(_frame({"method": "execute_tool", "params": {
            "client_id": "bench", "tool": "bench_echo", "args": {"size": size, "tag": tag}}}))
        while True:
            message = json.loads(self.conn.frame())
            if "result" in message or "error" in message:
                break
        result = message.get("result")
        if not isinstance(result, dict) or result.get("tag") != tag:
            raise RelayFailure(f"peer: wrong answer for {tag}: {str(message)[:300]}")

    def close(self) -> None:
        self.conn.close()


def _pong_timer(bench: Bench, side: str) -> Callable[[int], Timed]:
    return lambda i: _spawn_to_pong(bench, side)


def _roundtrip(client: OursClient | PeerClient, size: int, prefix: str) -> Callable[[int], None]:
    return lambda i: client.roundtrip(size, f"{prefix}:{i}")


def _mixed_size(i: int) -> int:
    """Per 100 requests: one ~1 MB (a screenshot), nine 64 KiB (a page's text), ninety 100 B (clicks, typing)."""
    if i % 100 == 0:
        return SIZES["~1 MB"]
    if i % 10 == 0:
        return SIZES["64 KiB"]
    return SIZES["100 B"]


async def _ours_concurrent(host: HostUnderTest, clients: int, per_client: int, rounds: int
                           ) -> tuple[list[float], float, int, int, int, float | None]:
    """(latencies, wall seconds of the measured rounds, requests, misrouted, failed, host CPU per request) through
    native_host.client, the asyncio client the MCP server itself uses: every client sends all its requests at
    once."""
    from native_host.client import HostClient, RelayError, discover_hosts

    addresses = [a for a in discover_hosts(host.socket_path.parent) if a.pid == host.host.pid]
    if not addresses:
        raise RelayFailure("ours: discover_hosts() does not list the host under test")
    conns = [await HostClient.connect(addresses[0], name=f"bench-{c}", version="1") for c in range(clients)]
    latencies: list[float] = []
    misrouted = failed = 0

    async def one(conn: HostClient, c: int, i: int, record: bool) -> None:
        nonlocal misrouted, failed
        tag = f"{c}:{i}"
        started = time.perf_counter()
        try:
            result = await conn.request("bench_echo", {"size": _mixed_size(i), "tag": tag}, timeout=120)
        except RelayError:
            failed += record
            return
        if record:
            latencies.append(time.perf_counter() - started)
            misrouted += not (isinstance(result, dict) and result.get("tag") == tag)

    wall = 0.0
    meter = CpuMeter({OURS: host.host.pid})
    try:
        for round_ in range(rounds + 1):  # the first round warms up
            if round_ == 1:
                meter.start()
            started = time.perf_counter()
            await asyncio.gather(*(one(conn, c, i, round_ > 0) for c, conn in enumerate(conns)
                                   for i in range(per_client)))
            if round_ > 0:
                wall += time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
    requests = clients * per_client * rounds
    return latencies, wall, requests, misrouted, failed, meter.per_op({OURS: requests})[OURS]


async def _peer_broadcast(path: Path, clients: int, per_client: int) -> tuple[int, int]:
    """(misrouted, requests) on the peer with several clients at once, each taking the next reply as its answer
    (the peer's only way): a demonstration of why it has no row of figures here. A request left without any
    answer within a minute counts as misrouted too."""
    if sys.platform == "win32":
        raise NotImplementedError(UNIX_SOCKETS)
    conns = [await asyncio.open_unix_connection(str(path)) for _ in range(clients)]
    correct = 0

    async def client(c: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal correct
        for i in range(per_client):
            writer.write(_frame({"method": "execute_tool", "params": {
                "client_id": f"bench-{c}", "tool": "bench_echo", "args": {"size": 100, "tag": f"{c}:{i}"}}}))
        await writer.drain()
        for i in range(per_client):
            while True:
                (size,) = HEADER.unpack(await reader.readexactly(4))
                message = json.loads(await reader.readexactly(size))
                if "result" in message:
                    break
            correct += message["result"].get("tag") == f"{c}:{i}"

    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(client(c, r, w) for c, (r, w) in enumerate(conns)))
    except (TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        for _, writer in conns:
            writer.close()
    return clients * per_client - correct, clients * per_client


def _pss_with_clients(bench: Bench, side: str) -> float:
    """A fresh host's PSS with PSS_CLIENTS clients connected, after each has had one 100 B and one ~1 MB reply
    (the peer sends every reply to every client: all of them are drained each time, so nothing piles up)."""
    host = HostUnderTest(bench, side)
    try:
        socks = [FramedSocket(host.socket_path) for _ in range(PSS_CLIENTS)]
        clients: list[OursClient | PeerClient] = []
        for sock in socks:
            clients.append(OursClient(sock) if side == OURS else PeerClient(sock))
        for label in ("100 B", "~1 MB"):
            for k, client in enumerate(clients):
                client.roundtrip(SIZES[label], f"pss:{k}:{label}")
                if side != OURS:
                    for other in socks:
                        if other is not socks[k]:
                            other.frame()
        time.sleep(0.5)  # let deferred work (a garbage collector, freed buffers) settle before reading
        size = pss(host.host.pid)
        for sock in socks:
            sock.close()
        return size
    finally:
        host.close()


def run_relay(bench: Bench) -> list[Row]:
    plan = bench.plan
    progress(f"relay: spawn → first pong, {plan.relay_spawn_runs} runs each, ours and Claude Code "
             f"{CLAUDE_VERSION} and {CURRENT_CLAUDE_VERSION}")
    spawn = alternate({side: _pong_timer(bench, side) for side in SIDES},
                      plan.relay_spawn_warmup, plan.relay_spawn_runs).samples
    rows = [Row("relay", "spawn → first pong", Side(OURS, spawn[OURS]), Side(CURRENT, spawn[CURRENT]),
                f"≤ {SPAWN_LIMIT:g}× the current release", ratio_at_most(SPAWN_LIMIT)),
            Row("relay", "spawn → first pong", Side(OURS, spawn[OURS]), Side(PINNED, spawn[PINNED]),
                "reference: the older release")]

    hosts: dict[str, HostUnderTest] = {}
    try:
        for side in SIDES:
            hosts[side] = HostUnderTest(bench, side)
        clients: dict[str, OursClient | PeerClient] = {
            side: (OursClient if side == OURS else PeerClient)(FramedSocket(host.socket_path))
            for side, host in hosts.items()}
        for label, size in SIZES.items():
            runs = plan.roundtrip_runs[label]
            progress(f"relay: round trip {label}, {runs} each, one client, three hosts alternating")
            actions = {side: _roundtrip(client, size, f"{side}:{label}") for side, client in clients.items()}
            measured = alternate(actions, plan.roundtrip_warmup, runs,
                                 {side: host.host.pid for side, host in hosts.items()},
                                 quiet=[host.ext.pid for host in hosts.values()], settled=plan.settled)
            figures = {side: Side(side, measured.samples[side], unit=" msgs/s", cpu=measured.cpu.get(side))
                       for side in clients}
            for figure in figures.values():
                figure.throughput = len(figure.samples) / sum(figure.samples)
            better, other = sorted(PEERS, key=lambda peer: figures[peer].median)
            case = f"client → host → extension → back, {label}"
            limit = ROUNDTRIP_LIMITS[label]
            rows.append(Row("relay", case, figures[OURS], figures[better],
                            f"≤ {limit:g}× the better Claude Code", ratio_at_most(limit)))
            rows.append(Row("relay", case, figures[OURS], figures[other], "reference: the slower Claude Code"))
        for client in clients.values():
            client.close()

        total = plan.clients * plan.per_client
        progress(f"relay: {plan.clients} clients × {plan.per_client} concurrent requests, mixed sizes, "
                 f"{plan.concurrent_rounds} rounds (ours); the current Claude Code's broadcast shown with 100 B "
                 "requests")
        latencies, wall, requests, misrouted, failed, cpu = asyncio.run(
            _ours_concurrent(hosts[OURS], plan.clients, plan.per_client, plan.concurrent_rounds))
        peer_misrouted, peer_requests = asyncio.run(_peer_broadcast(hosts[CURRENT].socket_path, plan.clients, 20))
        ours = Side(OURS, latencies, throughput=requests / wall, unit=" req/s", cpu=cpu)
        peer = Side(CURRENT, note=f"cannot route: {peer_misrouted} of {peer_requests} answers went to the wrong "
                    "client")
        rows.append(Row("relay", f"{plan.clients} clients × {plan.per_client} concurrent, mixed sizes "
                        f"(1% ~1 MB, 9% 64 KiB, 90% 100 B) — {total} in flight", ours, peer,
                        "0 misrouted; report p50/p99/throughput", zero_misrouted,
                        extra={"misrouted": misrouted, "errors": failed, "requests": requests,
                               "peer_misrouted": peer_misrouted, "peer_requests": peer_requests}))
    finally:
        for host in hosts.values():
            host.close()

    progress(f"relay: host PSS with {PSS_CLIENTS} clients, {plan.relay_pss_runs} fresh host(s) per side")
    pss: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(plan.relay_pss_runs):
        for side in SIDES:
            pss[side].append(_pss_with_clients(bench, side))
    case = f"host PSS, {PSS_CLIENTS} clients after one 100 B and one ~1 MB reply each"
    memory = {side: Side(side, pss[side], memory=True) for side in SIDES}
    rows.append(Row("relay", case, memory[OURS], memory[CURRENT], f"≤ {PSS_LIMIT:g}× the current release",
                    ratio_at_most(PSS_LIMIT)))
    rows.append(Row("relay", case, memory[OURS], memory[PINNED], "reference: the older release"))
    return rows

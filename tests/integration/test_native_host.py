"""The real native host process, with a scripted browser on its stdio and real clients on its socket."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from mcp_bridge.paths import state_paths
from native_host.client import HostAddress, HostClient, RelayError, discover_hosts
from native_host.log import log_dir
from native_host.runtime_dir import UnsafeRuntimeDir, check_private_dir
from native_host.ws import answer_challenge
from tests.support.native_host_harness import (
    REPO,
    Browser,
    RawClient,
    address_of,
    client_of,
    memory_peak_mib,
    pack,
    running,
    until,
)

if sys.platform == "win32":
    pytest.skip("the host's Unix socket transport, uids and file modes", allow_module_level=True)

from native_host import unix  # after the skip: it asserts at import that this is not Windows

pytestmark = pytest.mark.anyio


@pytest.fixture
async def browser(host_home: Path) -> AsyncIterator[Browser]:
    async with running(host_home) as started:
        yield started


# ---- routing under load -------------------------------------------------------------------------------------

SIZES = [0, 10, 300, 4_000, 60_000, 250_000]


async def test_sixteen_clients_get_exactly_their_own_replies(browser: Browser) -> None:
    clients = [await client_of(browser, f"agent-{i}") for i in range(16)]

    seen_by: dict[int, set[int]] = {c: set() for c in range(16)}

    async def one(client: HostClient, c: int, n: int) -> None:
        # Replies come back out of order (small delays, and a mix of the host's fast and general paths).
        args = {"c": c, "n": n, "pad": "x" * SIZES[(c + n) % len(SIZES)], "delay": (n % 3) / 1000}
        result = await client.request("loose" if n % 7 == 0 else "echo", args)
        assert result["echo"] == args, f"agent-{c} request {n} got someone else's reply"
        assert result["client"]["name"] == f"agent-{c}"
        seen_by[c].add(result["client"]["id"])

    try:
        await asyncio.gather(*(one(client, c, n) for c, client in enumerate(clients) for n in range(200)))
        assert len(browser.requests) == 16 * 200
        assert len({r["id"] for r in browser.requests}) == 16 * 200, "host ids must be unique across clients"
        assert all(len(ids) == 1 for ids in seen_by.values())
        assert len(set.union(*seen_by.values())) == 16
        assert browser.cancels == []
    finally:
        for client in clients:
            await client.close()


async def test_extension_hears_which_clients_come_and_go(browser: Browser) -> None:
    first = await client_of(browser, "first")
    second = await client_of(browser, "second")
    await until(lambda: {c["name"] for c in browser.clients_updates[-1]} == {"first", "second"}, "both listed")
    assert all(c["pid"] == os.getpid() for c in browser.clients_updates[-1])
    await first.close()
    await until(lambda: [c["name"] for c in browser.clients_updates[-1]] == ["second"], "first left")
    await second.close()
    await until(lambda: browser.clients_updates[-1] == [], "all left")


# ---- requests that cannot go through -------------------------------------------------------------------------

async def test_oversize_request_gets_too_large_and_everyone_carries_on(browser: Browser) -> None:
    big, other = await client_of(browser, "big"), await client_of(browser, "other")
    background = [asyncio.ensure_future(other.request("echo", {"n": n, "delay": 0.001})) for n in range(50)]
    with pytest.raises(RelayError) as refused:
        await big.request("echo", {"pad": "x" * (1024 * 1024)})
    assert refused.value.code == "too_large" and "1048576" in refused.value.message
    assert [(await r)["echo"]["n"] for r in background] == list(range(50))
    assert (await big.request("echo", {"pad": "x" * 1_000_000}))["echo"]["pad"] == "x" * 1_000_000
    assert not any(len(json.dumps(r["args"])) > 1024 * 1024 for r in browser.requests)
    await big.close()
    await other.close()


async def test_frame_over_the_client_limit_closes_only_that_connection(browser: Browser) -> None:
    address = await address_of(browser)
    bad = await RawClient.connect(address.path)
    good = await client_of(browser)
    await bad.send_raw(struct.pack("<I", 17 * 1024 * 1024))  # announces 17 MiB, then never sends it
    error = await bad.receive()
    assert error["type"] == "error" and error["code"] == "too_large"
    assert await bad.receive() is None  # closed
    assert (await good.request("echo", {"still": "here"}))["echo"] == {"still": "here"}
    await bad.close()
    await good.close()


async def test_protocol_errors_answer_that_client_only(browser: Browser) -> None:
    address = await address_of(browser)
    raw, good = await RawClient.connect(address.path, hello=False), await client_of(browser)

    await raw.send({"type": "request", "id": 1, "tool": "echo", "args": {}})
    assert await raw.receive() == {"type": "error", "id": 1, "code": "bad_request",
                                   "message": "send `hello` before any request"}
    await raw.send({"type": "hello", "client": {"name": "raw", "version": "0", "pid": 1}})
    assert (await raw.receive())["type"] == "welcome"

    await raw.send_raw(struct.pack("<I", 9) + b'{"type":,')
    error = await raw.receive()
    assert (error["type"], error["code"]) == ("error", "bad_request") and "not valid JSON" in error["message"]
    await raw.send_raw(struct.pack("<I", 0))
    assert (await raw.receive())["code"] == "bad_request"
    await raw.send_raw(pack({"type": "request", "id": 5, "tool": "echo", "args": {}})[:-1] + b"\xff")
    assert "UTF-8" in (await raw.receive())["message"]
    await raw.send({"type": "teleport"})
    assert "unknown message type 'teleport'" in (await raw.receive())["message"]
    await raw.send({"type": "request", "id": [1], "tool": "echo", "args": {}})
    assert "needs an `id`" in (await raw.receive())["message"]
    await raw.send({"type": "request", "id": "a", "tool": "", "args": {}})
    assert await raw.receive() == {"type": "response", "id": "a", "error": {
        "code": "bad_request", "message": "a request needs `tool`: the name of one of the extension's tools"}}
    await raw.send({"type": "request", "id": "b", "tool": "echo", "args": [1]})
    assert (await raw.receive())["error"]["message"] == "`args` must be a JSON object"

    # A duplicate of an id in flight is refused without disturbing the request that holds the id.
    await raw.send({"type": "request", "id": 7, "tool": "hang", "args": {}})
    await until(lambda: any(r["tool"] == "hang" for r in browser.requests), "hang forwarded")
    await raw.send({"type": "request", "id": 7, "tool": "echo", "args": {"second": True}})
    duplicate = await raw.receive()
    assert (duplicate["type"], duplicate["id"], duplicate["code"]) == ("error", 7, "bad_request")
    assert "already in flight" in duplicate["message"]
    await raw.send({"type": "cancel", "id": 7})
    assert await raw.receive() == {"type": "response", "id": 7, "error": {
        "code": "cancelled", "message": "cancelled at the client's request"}}
    hang_id = next(r["id"] for r in browser.requests if r["tool"] == "hang")
    await until(lambda: browser.cancels == [hang_id], "tool_cancel reached the extension")

    await raw.send({"type": "ping", "id": "p"})
    assert await raw.receive() == {"type": "pong", "id": "p"}
    assert (await good.request("echo", {"ok": 1}))["echo"] == {"ok": 1}
    assert not any(r["args"].get("second") for r in browser.requests)
    await raw.close()
    await good.close()


async def test_tool_errors_reach_the_caller(browser: Browser) -> None:
    client = await client_of(browser)
    with pytest.raises(RelayError) as failed:
        await client.request("fail", {"why": "testing"})
    assert (failed.value.code, failed.value.message) == ("tool_error", "failed on purpose: testing")
    await client.close()


# ---- cancellation and things dying ----------------------------------------------------------------------------

async def test_timeout_and_task_cancellation_send_tool_cancel(browser: Browser) -> None:
    client = await client_of(browser)
    with pytest.raises(RelayError) as timed_out:
        await client.request("hang", {"which": "timeout"}, timeout=0.05)
    assert timed_out.value.code == "timeout"
    await until(lambda: any(r["args"] == {"which": "timeout"} for r in browser.requests), "first hang forwarded")
    first = next(r["id"] for r in browser.requests if r["args"] == {"which": "timeout"})
    await until(lambda: first in browser.cancels, "tool_cancel after the timeout")

    task = asyncio.ensure_future(client.request("hang", {"which": "task"}))
    await until(lambda: any(r["args"] == {"which": "task"} for r in browser.requests), "second hang forwarded")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    second = next(r["id"] for r in browser.requests if r["args"] == {"which": "task"})
    await until(lambda: second in browser.cancels, "tool_cancel after the task was cancelled")
    assert (await client.request("echo", {"after": "cancels"}))["echo"] == {"after": "cancels"}
    await client.close()


DOOMED_CLIENT = """
import asyncio, sys
from pathlib import Path
from native_host.client import HostClient, discover_hosts

async def main():
    address = [a for a in discover_hosts(Path(sys.argv[1])) if a.pid == int(sys.argv[2])][0]
    client = await HostClient.connect(address, name="doomed", version="1")
    await client.request("hang", {})

asyncio.run(main())
"""


async def test_client_killed_mid_request(browser: Browser) -> None:
    await address_of(browser)
    survivor = await client_of(browser, "survivor")
    doomed = subprocess.Popen([sys.executable, "-c", DOOMED_CLIENT, str(browser.home / "run"), str(browser.pid)],
                              cwd=REPO)
    try:
        await until(lambda: any(r["client"]["name"] == "doomed" for r in browser.requests), "doomed request")
    finally:
        doomed.kill()
        doomed.wait()
    request_id = next(r["id"] for r in browser.requests if r["client"]["name"] == "doomed")
    await until(lambda: request_id in browser.cancels, "the dead client's request withdrawn from the extension")
    await until(lambda: [c["name"] for c in browser.clients_updates[-1]] == ["survivor"], "doomed unlisted")
    assert (await survivor.request("echo", {"alive": True}))["echo"] == {"alive": True}
    await survivor.close()


async def test_host_killed_mid_request_fails_fast_and_a_new_host_is_found(host_home: Path) -> None:
    first = await Browser(host_home).start()
    second: Browser | None = None
    try:
        client = await client_of(first)
        closed = asyncio.Event()
        client.on_close(closed.set)
        pending = asyncio.ensure_future(client.request("hang", {}, timeout=600))
        await until(lambda: bool(first.requests), "request reached the extension")
        first.kill()
        with pytest.raises(RelayError) as lost:
            await pending
        assert lost.value.code == "host_unavailable"
        await closed.wait()
        assert client.closed
        await first.wait()
        assert (host_home / "run" / f"{first.pid}.sock").exists(), "SIGKILL leaves the socket behind"
        assert [a.pid for a in discover_hosts(host_home / "run")] == [], "a dead host's socket is not offered"

        second = await Browser(host_home).start()
        replacement = await client_of(second)
        assert (await replacement.request("echo", {"again": 1}))["echo"] == {"again": 1}
        assert not (host_home / "run" / f"{first.pid}.sock").exists(), "the new host removed the stale socket"
        await replacement.close()
    finally:
        await first.stop()
        if second is not None:
            await second.stop()


async def test_stdin_eof_fails_pending_requests_and_exits(browser: Browser) -> None:
    client = await client_of(browser)
    sock = browser.home / "run" / f"{browser.pid}.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE((browser.home / "run").stat().st_mode) == 0o700
    pending = [asyncio.ensure_future(client.request("hang", {"n": n}, timeout=600)) for n in range(3)]
    await until(lambda: len(browser.requests) == 3, "requests reached the extension")
    browser.close_stdin()
    for request in pending:
        with pytest.raises(RelayError) as failed:
            await request
        assert failed.value.code == "browser_disconnected"
    assert await browser.wait() == 0
    assert not sock.exists()
    assert "stdin reached end of file" in browser.log_text()


# ---- the browser side ---------------------------------------------------------------------------------------

async def test_events_and_new_catalogs_reach_every_client(browser: Browser) -> None:
    clients = [await client_of(browser, f"c{i}") for i in range(3)]
    events: list[tuple[int, str, Any]] = []
    catalogs: list[tuple[int, list[dict[str, Any]]]] = []

    def listen(i: int, client: HostClient) -> None:  # its own `i`: lambdas in the loop body would share the last one
        client.on_event(lambda name, data: events.append((i, name, data)))
        client.on_tools(lambda tools: catalogs.append((i, tools)))

    for i, client in enumerate(clients):
        listen(i, client)
        assert [t["name"] for t in client.tools] == ["echo"]
    await browser.send({"type": "event", "name": "tab_closed", "data": {"tabId": 4}})
    new_tools = [{"name": "zoom", "description": "zoom", "scope": "write", "inputSchema": {"type": "object"}}]
    await browser.send({"type": "hello", "extension": {"name": "scripted", "version": "2.0"}, "tools": new_tools})
    await until(lambda: len(events) == 3 and len(catalogs) == 3, "broadcasts")
    assert sorted(events) == [(i, "tab_closed", {"tabId": 4}) for i in range(3)]
    assert sorted(i for i, tools in catalogs if tools == new_tools) == [0, 1, 2]
    assert all(c.tools == new_tools and c.extension == {"name": "scripted", "version": "2.0"} for c in clients)
    for client in clients:
        await client.close()


async def test_ping_both_ways(browser: Browser) -> None:
    client = await client_of(browser)
    assert await client.ping() > 0
    await browser.send({"type": "ping", "id": 42})
    await until(lambda: {"type": "pong", "id": 42} in browser.other, "pong to the extension")
    await client.close()


async def test_client_that_stops_reading_is_dropped_without_stalling_others(browser: Browser) -> None:
    address = await address_of(browser)
    stalled = await RawClient.connect(address.path)
    transport = stalled.writer.transport  # a socket's: it reads as well as writes
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()  # a process that stopped reading its socket
    lively = await client_of(browser, "lively")
    for n in range(14):  # 14 × 8 MiB of replies it never reads: past the host's 96 MiB backlog limit
        await stalled.send({"type": "request", "id": n, "tool": "sized", "args": {"size": 8 * 1024 * 1024}})
    await until(lambda: "stopped reading" in browser.log_text(), "stalled client dropped")
    assert (await lively.request("echo", {"fine": True}))["echo"] == {"fine": True}
    await stalled.close()
    await lively.close()


async def test_a_browser_that_stops_reading_pauses_the_clients_and_loses_nothing(browser: Browser) -> None:
    """Past 4 MiB queued for the browser the host stops reading requests; once the browser reads again, every
    request reaches it and every reply its client."""
    client = await client_of(browser)
    await client.ping()
    before = memory_peak_mib(browser.pid)
    browser.stop_reading()
    pad = "p" * 500_000
    pending = [asyncio.ensure_future(client.request("echo", {"n": n, "pad": pad})) for n in range(40)]  # ~20 MB
    await asyncio.sleep(1)  # a host without backpressure would read and queue all 20 MB meanwhile
    browser.stop_reading(False)
    results = await asyncio.gather(*pending)
    assert [r["echo"]["n"] for r in results] == list(range(40))
    assert all(r["echo"]["pad"] == pad for r in results)
    assert sorted(r["args"]["n"] for r in browser.requests) == list(range(40))
    if sys.platform.startswith("linux"):  # the 4 MiB queue, a 1 MiB pipe, a frame being read: far from 20 MB
        assert memory_peak_mib(browser.pid) - before < 14
    await client.close()


async def test_host_started_on_files_instead_of_pipes(host_home: Path) -> None:
    """Stdio that the event loop cannot poll (as on Windows) goes through threads instead."""
    frames = pack({"type": "hello", "extension": {"name": "x", "version": "1"}, "tools": []}) + \
        pack({"type": "ping", "id": 1})
    (host_home / "in").write_bytes(frames)
    with (host_home / "in").open("rb") as stdin, (host_home / "out").open("wb") as stdout:
        completed = subprocess.run([sys.executable, "-m", "native_host", "chrome-extension://x/"], stdin=stdin,
                                   stdout=stdout, env={**os.environ, "COMPASS_BRIDGE_HOME": str(host_home)}, cwd=REPO,
                                   timeout=30)
    assert completed.returncode == 0
    out, replies = (host_home / "out").read_bytes(), []
    while out:
        (size,) = struct.unpack_from("<I", out)
        replies.append(json.loads(out[4 : 4 + size]))
        out = out[4 + size :]
    assert replies == [{"type": "clients", "clients": []}, {"type": "pong", "id": 1}]


# ---- where sockets live -------------------------------------------------------------------------------------

@pytest.mark.parametrize("problem", ["mode", "symlink"])
async def test_unsafe_run_dir_is_refused(host_home: Path, problem: str) -> None:
    run = host_home / "run"
    if problem == "mode":
        run.mkdir(mode=0o755)
        run.chmod(0o755)
        expected = "mode 0755, expected 0700"
    else:
        (host_home / "elsewhere").mkdir(mode=0o700)
        run.symlink_to(host_home / "elsewhere")
        expected = "it is a symlink"
    browser = await Browser(host_home, hello=False).start()
    try:
        assert await browser.wait() != 0
        assert expected in browser.log_text()
        await until(lambda: bool(browser.other), "error frame to the extension")
        assert browser.other[0]["type"] == "error" and expected in browser.other[0]["message"]
        assert list((host_home / "elsewhere").iterdir() if problem == "symlink" else run.iterdir()) == []
        with pytest.raises(UnsafeRuntimeDir, match=expected):
            discover_hosts(run)
    finally:
        await browser.stop()


def test_run_dir_of_another_user_is_refused(host_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = host_home / "run"
    run.mkdir(mode=0o700)
    if os.getuid() == 0:
        os.chown(run, 65534, -1)  # really someone else's
    else:
        monkeypatch.setattr(os, "getuid", lambda: run.stat().st_uid + 1)
    with pytest.raises(UnsafeRuntimeDir, match="owned by uid"):
        check_private_dir(run)


async def test_stale_files_of_dead_hosts_are_ignored_then_removed(host_home: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    run = host_home / "run"
    run.mkdir(mode=0o700)
    for name in (f"{finished.pid}.sock", f"{finished.pid}.ws.json"):
        (run / name).write_text("{}")
    assert discover_hosts(run) == []
    browser = await Browser(host_home).start()
    try:
        await address_of(browser)
        assert sorted(p.name for p in run.iterdir()) == [f"{browser.pid}.sock"]
    finally:
        await browser.stop()


@pytest.mark.parametrize("with_home", [True, False])
def test_host_logs_where_the_cli_looks(host_home: Path, monkeypatch: pytest.MonkeyPatch, with_home: bool) -> None:
    """The host computes the log dir without platformdirs (start-up time); it must agree with mcp_bridge.paths."""
    if not with_home:
        monkeypatch.delenv("COMPASS_BRIDGE_HOME")
    assert log_dir() == state_paths().log_dir


def test_peer_credentials_name_the_connecting_process() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        uid, pid = unix.peer_credentials(left)
    if sys.platform.startswith("linux") or sys.platform == "darwin":
        assert (uid, pid) == (os.getuid(), os.getpid())


# ---- WebSocket transport ------------------------------------------------------------------------------------

@pytest.fixture
async def ws_browser(host_home: Path) -> AsyncIterator[Browser]:
    async with running(host_home, "--transport", "ws") as started:
        yield started


async def test_ws_transport_with_the_right_secret(ws_browser: Browser) -> None:
    address = await address_of(ws_browser)
    assert address.kind == "ws" and address.path.name == f"{ws_browser.pid}.ws.json"
    assert stat.S_IMODE(address.path.stat().st_mode) == 0o600
    assert set(json.loads(address.path.read_text())) >= {"port", "pid", "secret"}
    client = await HostClient.connect(address, name="ws-agent", version="1")
    results = await asyncio.gather(*(client.request("echo", {"n": n, "pad": "y" * SIZES[n % 6]}) for n in range(60)))
    assert [r["echo"]["n"] for r in results] == list(range(60))
    assert results[0]["client"]["name"] == "ws-agent"
    await client.close()
    ws_browser.close_stdin()
    assert await ws_browser.wait() == 0
    assert not address.path.exists()


async def test_ws_transport_refuses_a_wrong_secret(ws_browser: Browser) -> None:
    address = await address_of(ws_browser)
    forged = address.path.with_name("forged.json")
    forged.write_text(json.dumps({**json.loads(address.path.read_text()), "secret": "0" * 64}))
    with pytest.raises(RelayError) as refused:
        await HostClient.connect(HostAddress(address.pid, "ws", forged), name="intruder", version="1")
    assert refused.value.code == "unauthorized"
    port = json.loads(address.path.read_text())["port"]
    async with ws_connect(f"ws://127.0.0.1:{port}/") as ws:  # a hello without any answer
        await ws.recv()
        await ws.send(json.dumps({"type": "hello", "client": {"name": "x"}}))
        assert json.loads(await ws.recv())["code"] == "unauthorized"
    assert all(update == [] for update in ws_browser.clients_updates), "refused clients are never listed"


async def test_ws_transport_refuses_web_pages(ws_browser: Browser) -> None:
    address = await address_of(ws_browser)
    info = json.loads(address.path.read_text())
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(f"ws://127.0.0.1:{info['port']}/", origin=Origin("https://evil.example")):
            pass
    assert refused.value.response.status_code == 403


async def test_ws_challenge_answer_is_an_hmac_of_the_nonce(ws_browser: Browser) -> None:
    """What docs/PROTOCOL.md tells other client authors to compute."""
    address = await address_of(ws_browser)
    info = json.loads(address.path.read_text())
    async with ws_connect(f"ws://127.0.0.1:{info['port']}/") as ws:
        challenge = json.loads(await ws.recv())
        assert challenge["type"] == "challenge"
        expected = hmac.new(info["secret"].encode(), challenge["nonce"].encode(), hashlib.sha256).hexdigest()
        assert answer_challenge(info["secret"], challenge["nonce"]) == expected
        await ws.send(json.dumps({"type": "hello", "client": {"name": "by-hand"}, "auth": expected}))
        assert json.loads(await ws.recv())["type"] == "welcome"


def test_bad_transport_argument_is_refused(host_home: Path) -> None:
    completed = subprocess.run([sys.executable, "-m", "native_host", "chrome-extension://x/", "--transport", "tcp"],
                               capture_output=True, text=True, cwd=REPO, timeout=30, stdin=subprocess.DEVNULL)
    assert completed.returncode == 2
    assert "--transport must be one of unix, ws, not 'tcp'" in completed.stderr
    assert completed.stdout == ""

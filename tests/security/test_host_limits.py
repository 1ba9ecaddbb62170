"""The native host against hostile local clients: every resource they can make it spend is bounded, each refusal
is answered and logged, and everyone else keeps being served (issue 11, items 7 and 9; docs/PROTOCOL.md §2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from native_host.client import HostClient, RelayError
from native_host.framing import FROM_CLIENT_MAX, MIB
from native_host.host import MAX_CLIENTS, MAX_PARTIAL_TOTAL
from native_host.ws import AUTH_TIMEOUT, FAILURES_BURST, MAX_UNAUTHENTICATED, answer_challenge
from tests.support.native_host_harness import (
    Browser,
    RawClient,
    address_of,
    client_of,
    memory_peak_mib,
    running,
    until,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def browser(host_home: Path) -> AsyncIterator[Browser]:
    async with running(host_home) as started:
        yield started


@pytest.fixture
async def ws_browser(host_home: Path) -> AsyncIterator[Browser]:
    async with running(host_home, "--transport", "ws") as started:
        yield started


# ---- half-sent frames, many clients ---------------------------------------------------------------------------

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the host's peak memory from /proc")
async def test_many_half_sent_frames_stay_within_the_cap_and_others_are_served(browser: Browser) -> None:
    address = await address_of(browser)
    good = await client_of(browser, "good")
    assert (await good.request("echo", {"before": True}))["echo"] == {"before": True}
    baseline = memory_peak_mib(browser.pid)

    stallers = [await RawClient.connect(address.path) for _ in range(32)]
    half = 4 * MIB  # of a frame announced at the full 16 MiB: 32 of them would hold 128 MiB, twice the cap
    for raw in stallers:
        with contextlib.suppress(ConnectionError):
            await raw.send_raw(struct.pack("<I", FROM_CLIENT_MAX) + b"x" * half)
        # Served in between, while unfinished frames pile up.
        assert (await good.request("echo", {"n": 1}))["echo"] == {"n": 1}

    async def replies(raw: RawClient) -> list[dict[str, object]]:
        """What the host says until it closes the connection."""
        said = []
        with contextlib.suppress(ConnectionError):
            while (message := await raw.read_one()) is not None:
                said.append(message)
        return said

    listening = [asyncio.ensure_future(replies(raw)) for raw in stallers]
    # Each survivor holds at least the 4 MiB it sent, so at most cap / 4 MiB of them can be left.
    must_go = len(stallers) - MAX_PARTIAL_TOTAL // half
    await until(lambda: sum(task.done() for task in listening) >= must_go, "the longest-unfinished frames refused")
    refused = [task.result() for task in listening if task.done()]
    assert all(len(said) == 1 and said[0]["type"] == "error" and said[0]["code"] == "too_large"
               and "unfinished" in str(said[0]["message"]) for said in refused), refused
    # Memory: what it had, plus the cap, plus one frame's worth of growing room; the 128 MiB sent never all at once.
    assert memory_peak_mib(browser.pid) < baseline + MAX_PARTIAL_TOTAL / MIB + 32
    assert "unfinished" in browser.log_text()
    assert (await good.request("echo", {"after": True}))["echo"] == {"after": True}
    for task in listening:
        task.cancel()
    for raw in stallers:
        await raw.close()
    await good.close()


async def test_a_refused_frame_is_answered_even_while_its_body_is_still_coming(browser: Browser) -> None:
    """Closing a socket with unread input resets the connection, and the client would lose the error: the host reads
    the rest away first."""
    raw = await RawClient.connect((await address_of(browser)).path)
    raw.writer.write(struct.pack("<I", FROM_CLIENT_MAX + 1) + b"y" * (256 * 1024))
    with contextlib.suppress(ConnectionError):
        await raw.writer.drain()
    error = await raw.receive()
    assert error is not None and error["code"] == "too_large" and "limit for client frames" in error["message"]
    assert await raw.receive() is None
    await raw.close()


# ---- the connection cap -------------------------------------------------------------------------------------

async def test_connections_past_the_cap_are_refused_with_a_reason(browser: Browser) -> None:
    address = await address_of(browser)
    held = [await RawClient.connect(address.path) for _ in range(MAX_CLIENTS)]
    with pytest.raises(RelayError) as refused:
        await HostClient.connect(address, name="one-too-many", version="1")
    assert refused.value.code == "host_unavailable"
    assert f"its limit of {MAX_CLIENTS}" in refused.value.message
    assert "limit of" in browser.log_text()
    for raw in held[:10]:  # the held connections still work
        await raw.send({"type": "ping", "id": 1})
        assert await raw.receive() == {"type": "pong", "id": 1}
    await held.pop().close()
    await until(lambda: len(browser.clients_updates[-1]) == MAX_CLIENTS - 1, "a slot freed")
    late = await client_of(browser, "late")
    assert (await late.request("echo", {"late": True}))["echo"] == {"late": True}
    await late.close()
    for raw in held:
        await raw.close()


# ---- numbers JSON allows and Python cannot write back -----------------------------------------------------------

@pytest.mark.parametrize("value", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"1" + b"0" * 5000])
async def test_an_unrepresentable_number_gets_an_error_and_the_connection_stays(browser: Browser, value: bytes
                                                                                   ) -> None:
    address = await address_of(browser)
    raw = await RawClient.connect(address.path)
    payload = b'{"type":"request","id":1,"tool":"echo","args":{"n":%s}}' % value
    await raw.send_raw(struct.pack("<I", len(payload)) + payload)
    error = await raw.receive()
    assert error is not None and (error["type"], error["code"]) == ("error", "bad_request")
    assert "not valid JSON" in error["message"]
    await raw.send({"type": "ping", "id": 2})
    assert await raw.receive() == {"type": "pong", "id": 2}
    await raw.send({"type": "request", "id": 3, "tool": "echo", "args": {"n": 1e300}})
    reply = await raw.receive()
    assert reply["id"] == 3 and reply["result"]["echo"] == {"n": 1e300}
    assert not any(r["args"].get("n") not in (None, 1e300) for r in browser.requests), "nothing odd forwarded"
    await raw.close()


# ---- the WebSocket transport before authentication ---------------------------------------------------------------

def ws_url(browser: Browser) -> str:
    info = json.loads((browser.home / "run" / f"{browser.pid}.ws.json").read_text())
    return f"ws://127.0.0.1:{info['port']}/"


def ws_secret(browser: Browser) -> str:
    return str(json.loads((browser.home / "run" / f"{browser.pid}.ws.json").read_text())["secret"])


async def test_ws_silence_before_authentication_is_cut_off(ws_browser: Browser) -> None:
    await address_of(ws_browser)
    url = ws_url(ws_browser)
    port = int(url.rsplit(":", 1)[1].strip("/"))
    silent: list[ClientConnection] = []
    tcp = socket.create_connection(("127.0.0.1", port))  # not even the HTTP handshake
    try:
        for _ in range(MAX_UNAUTHENTICATED):
            ws = await ws_connect(url, compression=None)
            assert json.loads(await ws.recv())["type"] == "challenge"
            silent.append(ws)
        with pytest.raises(InvalidStatus) as busy:  # every slot for authenticating is taken
            async with ws_connect(url, compression=None):
                pass
        assert busy.value.response.status_code == 503
        for ws in silent:  # then, AUTH_TIMEOUT seconds on, each is told why and closed
            error = json.loads(await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT * 4))
            assert error["code"] == "unauthorized" and f"within {AUTH_TIMEOUT:g} s" in error["message"]
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008
        tcp.settimeout(AUTH_TIMEOUT * 4)
        assert tcp.recv(1024) == b"", "the connection that never started its handshake is closed too"
    finally:
        tcp.close()
        for ws in silent:
            await ws.close()
    # Silence is not counted as a wrong secret: the right one is let in at once.
    client = await HostClient.connect(await address_of(ws_browser), name="patient", version="1")
    assert (await client.request("echo", {"ok": 1}))["echo"] == {"ok": 1}
    await client.close()


async def test_ws_wrong_secrets_are_rate_limited(ws_browser: Browser) -> None:
    await address_of(ws_browser)
    url = ws_url(ws_browser)
    for attempt in range(FAILURES_BURST):
        async with ws_connect(url, compression=None) as ws:
            challenge = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "hello", "client": {"name": f"guess-{attempt}"},
                                      "auth": answer_challenge("0" * 64, challenge["nonce"])}))
            assert json.loads(await ws.recv())["code"] == "unauthorized"
    with pytest.raises(InvalidStatus) as throttled:  # refused before any secret is checked
        async with ws_connect(url, compression=None):
            pass
    assert throttled.value.response.status_code == 429
    assert b"too many failed authentications" in throttled.value.response.body
    assert "too many failed authentications" in ws_browser.log_text()

    async def right_secret_gets_in() -> bool:
        try:
            async with ws_connect(url, compression=None) as ws:
                challenge = json.loads(await ws.recv())
                await ws.send(json.dumps({"type": "hello", "client": {"name": "owner"},
                                          "auth": answer_challenge(ws_secret(ws_browser), challenge["nonce"])}))
                return bool(json.loads(await ws.recv())["type"] == "welcome")
        except InvalidStatus:
            return False

    admitted = False
    for _ in range(100):  # the bucket refills at one attempt per FAILURE_INTERVAL
        if admitted := await right_secret_gets_in():
            break
        await asyncio.sleep(0.1)
    assert admitted, "the rate limit lifts once attempts slow down"
    assert all(update == [] or [c["name"] for c in update] == ["owner"] for update in ws_browser.clients_updates)

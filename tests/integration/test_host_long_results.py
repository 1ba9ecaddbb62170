"""Long results through the real host: byte-exact, in order and to their own client, however the browser writes
them (whole, in pieces, around the size of its pipe, not plainly laid out) and whatever the clients do meanwhile
(two at once, one that stops reading, one that leaves while its result is on the way)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.native_host_harness import (
    Browser,
    RawClient,
    address_of,
    client_of,
    running,
    until,
)

if sys.platform == "win32":
    pytest.skip("the host's Unix socket transport and pipes", allow_module_level=True)

import fcntl  # after the skip: POSIX only
import termios

pytestmark = pytest.mark.anyio

KIB = 1024
MB = 1_000_000
ON_LINUX = sys.platform == "linux"
ALARMING = ("error", "Error", "Traceback", "ignoring", "refus", "dropped", "too large")
"""Words of the host's log that mean something went wrong (a client leaving is logged as `disconnected`)."""


@pytest.fixture
async def browser(host_home: Path) -> AsyncIterator[Browser]:
    async with running(host_home) as started:
        yield started
        # Whatever a test did, the host noticed nothing wrong.
        assert not any(word in started.log_text() for word in ALARMING), started.log_text()
    assert started.stderr_path.read_text() == ""


async def raw_client(browser: Browser) -> RawClient:
    return await RawClient.connect((await address_of(browser)).path)


async def read_raw(client: RawClient) -> bytes:
    """The next frame's payload as sent, unparsed."""
    async with asyncio.timeout(20):
        header = await client.reader.readexactly(4)
        return await client.reader.readexactly(struct.unpack("<I", header)[0])


def sized_reply(size: int, client_id: int) -> bytes:
    """What a client gets for a `sized` result: the browser's result bytes spliced between the host's own."""
    return b'{"result":"' + b"x" * size + b'","type":"response","id":%d}' % client_id


def in_socket(client: RawClient) -> int:
    """Bytes waiting in the client's socket, unread (Linux's FIONREAD on a Unix socket)."""
    fd = client.writer.get_extra_info("socket").fileno()
    waiting: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return waiting


async def host_id_of(browser: Browser, tool: str, count: int = 1) -> int:
    """The host-wide id of the `count`th request for `tool`, once the browser has it."""
    await until(lambda: sum(r["tool"] == tool for r in browser.requests) >= count, f"{tool} request at the browser")
    request_id: int = [r for r in browser.requests if r["tool"] == tool][count - 1]["id"]
    return request_id


def plain_result(request_id: int, result: bytes) -> bytes:
    """A browser frame laid out as Chrome writes a successful reply (the host's plain prefix)."""
    return b'{"type":"tool_response","id":%d,"result":%s}' % (request_id, result)


def framed(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


# ---- sizes, order, routing ----------------------------------------------------------------------------------------

# Below and above the host's read size (256 KiB) and the buffer it keeps (1 MiB + 64 KiB), mixed with short ones.
SEQUENCE = [10, 20 * KIB, 100, 64 * KIB, 1, MB, 50, 2 * MB, 7, 64 * KIB, 0, MB, 3]


async def test_long_results_arrive_intact_in_order_for_two_clients_at_once(browser: Browser) -> None:
    clients = [await raw_client(browser), await raw_client(browser)]

    async def one(c: int, client: RawClient) -> None:
        # The second client's sizes differ by one byte: a reply delivered to the wrong client cannot pass.
        for n, size in enumerate(SEQUENCE, 1):
            await client.send({"type": "request", "id": n, "tool": "sized", "args": {"size": size + c}})
        for n, size in enumerate(SEQUENCE, 1):
            assert await read_raw(client) == sized_reply(size + c, n), f"client {c}, request {n}"

    await asyncio.gather(*(one(c, client) for c, client in enumerate(clients)))
    for client in clients:
        await client.close()


# ---- results about as long as the pipe -----------------------------------------------------------------------------

# The host widens stdin's pipe to 1 MiB (256 pages): frames of about that size fill it to the last page.
NEAR_A_MIB = [1_036_000, 1_040_000, 1_043_000, 1_044_500, 1_046_000, 1_047_000, 1_048_000, 1_048_600]


async def test_results_about_as_long_as_the_pipe(browser: Browser) -> None:
    client = await raw_client(browser)
    for n, size in enumerate([*NEAR_A_MIB, 100], 1):
        await client.send({"type": "request", "id": n, "tool": "sized", "args": {"size": size}})
        assert await read_raw(client) == sized_reply(size, n), f"result of {size} bytes"
    await client.close()


@pytest.mark.skipif(not ON_LINUX, reason="the page layout of a Linux pipe")
async def test_a_long_result_written_in_many_small_pieces(browser: Browser) -> None:
    """A browser that writes a frame in many small writes while the host is busy (stopped here): every write
    starts a new page of stdin's pipe, so the frame's bytes fill all of its 256 pages though they are fewer than
    1 MiB."""
    client = await raw_client(browser)
    await client.send({"type": "request", "id": 1, "tool": "hang", "args": {}})
    request_id = await host_id_of(browser, "hang")
    piece, pieces = 3_900, 254  # 3,900 bytes do not fit the rest of a page after another 3,900
    prefix = b'{"type":"tool_response","id":%d,"result":"' % request_id
    length = 2 * 4096 + piece * pieces - 4  # the first two pages full, then one piece a page
    frame = framed(prefix + b"p" * (length - len(prefix) - 2) + b'"}')
    os.kill(browser.pid, signal.SIGSTOP)
    try:
        await browser.send_raw(frame[: 2 * 4096])
        for at in range(2 * 4096, len(frame), piece):
            await browser.send_raw(frame[at : at + piece])
    finally:
        os.kill(browser.pid, signal.SIGCONT)
    assert await read_raw(client) == b'{"result":"' + b"p" * (length - len(prefix) - 2) + b'","type":"response","id":1}'
    await client.send({"type": "request", "id": 2, "tool": "sized", "args": {"size": 64 * KIB}})
    assert await read_raw(client) == sized_reply(64 * KIB, 2)
    await client.close()


# ---- a client that stops reading ----------------------------------------------------------------------------------

@pytest.mark.skipif(not ON_LINUX, reason="FIONREAD on a socket tells when it is full")
async def test_a_client_that_stops_reading_mid_result_gets_it_all_later(browser: Browser) -> None:
    """1 MB results go to a client that reads nothing until its socket fills up in the middle of one: the rest of
    that one is queued in the host, another client is served meanwhile, and once the slow client reads again it
    gets every frame complete. (The limit that fills is the host's send buffer: a Unix socket's receive buffer
    size does not hold back its peer.)"""
    slow = await raw_client(browser)
    transport = slow.writer.transport
    assert isinstance(transport, asyncio.ReadTransport)
    transport.pause_reading()
    lively = await client_of(browser, "lively")
    sent = 0
    for n in range(1, 9):  # the host's send buffer is at most 4 MiB (2 × its SEND_BUFFER, capped by wmem_max)
        await slow.send({"type": "request", "id": n, "tool": "sized", "args": {"size": MB}})
        await host_id_of(browser, "sized", n)
        # The browser answers in the order it is asked, and the host relays in that order: once the lively
        # client has its answer, the host has handled the slow client's result.
        assert (await lively.request("echo", {"n": n}))["echo"] == {"n": n}
        sent += 4 + len(sized_reply(MB, n))
        if in_socket(slow) < sent:
            break  # the socket filled up in the middle of result n
    else:
        raise AssertionError("the slow client's socket never filled up")
    # Later results for the slow client wait behind its backlog; others are served meanwhile.
    for later in range(n + 1, n + 3):
        await slow.send({"type": "request", "id": later, "tool": "sized", "args": {"size": MB}})
    assert await lively.request("sized", {"size": MB}) == "x" * MB
    assert (await lively.request("echo", {"still": "here"}))["echo"] == {"still": "here"}
    transport.resume_reading()
    for got in range(1, n + 3):
        assert await read_raw(slow) == sized_reply(MB, got), f"frame {got}"
    await slow.close()
    await lively.close()


# ---- a client that leaves while its result is on the way ----------------------------------------------------------

@pytest.mark.parametrize("leaving", ["shutdown", "close"])
async def test_a_client_leaving_while_its_long_result_arrives_loses_no_sync(browser: Browser, leaving: str) -> None:
    """`shutdown`: the client stops receiving but the host does not know yet, so sending it the result fails.
    `close`: the host may see the client leave first (nobody waits for the result) or not; either way, the frames
    after it are relayed right."""
    leaver = await raw_client(browser)
    await leaver.send({"type": "request", "id": 1, "tool": "hang", "args": {}})
    request_id = await host_id_of(browser, "hang")
    sock: socket.socket = leaver.writer.get_extra_info("socket")
    if leaving == "shutdown":
        sock.shutdown(socket.SHUT_RD)
        await browser.send_raw(framed(plain_result(request_id, b'"' + b"x" * MB + b'"')))
    else:
        await browser.send_raw(framed(plain_result(request_id, b'"' + b"x" * MB + b'"')))
        await leaver.close()
    await until(lambda: "disconnected" in browser.log_text(), "the host noticed the client leave")
    other = await raw_client(browser)
    for n, size in enumerate([64 * KIB, 10, MB, 20 * KIB, 64 * KIB], 1):
        await other.send({"type": "request", "id": n, "tool": "sized", "args": {"size": size}})
        assert await read_raw(other) == sized_reply(size, n)
    await other.close()
    await leaver.close()


# ---- long frames that are not plain results -----------------------------------------------------------------------

@pytest.mark.parametrize("size", [64 * KIB, MB])
async def test_plain_prefix_with_trailing_whitespace_is_parsed(browser: Browser, size: int) -> None:
    client = await raw_client(browser)
    await client.send({"type": "request", "id": 5, "tool": "hang", "args": {}})
    request_id = await host_id_of(browser, "hang")
    # Valid JSON, plain prefix, but the last byte is not the closing brace: parsed and re-serialized.
    await browser.send_raw(framed(plain_result(request_id, b'"' + b"y" * size + b'"') + b" \n"))
    assert json.loads(await read_raw(client)) == {"type": "response", "id": 5, "result": "y" * size}
    await client.send({"type": "request", "id": 6, "tool": "sized", "args": {"size": size}})
    assert await read_raw(client) == sized_reply(size, 6)
    await client.close()


async def test_long_frames_that_are_not_plain_results_arrive_right(browser: Browser) -> None:
    client = await raw_client(browser)
    # Keys in another order, not compact: the `loose` tool.
    pad = "z" * 300_000
    await client.send({"type": "request", "id": 1, "tool": "loose", "args": {"pad": pad}})
    reply = json.loads(await read_raw(client))
    assert reply["id"] == 1 and reply["result"]["echo"] == {"pad": pad}
    # A long error reply.
    await client.send({"type": "request", "id": 2, "tool": "hang", "args": {}})
    request_id = await host_id_of(browser, "hang")
    message = "m" * 200_000
    await browser.send({"type": "tool_response", "id": request_id, "error": {"code": "tool_error", "message": message}})
    reply = json.loads(await read_raw(client))
    assert reply["id"] == 2 and reply["error"]["code"] == "tool_error" and reply["error"]["message"] == message
    # A long plain result nobody waits for (an id never issued) is dropped, and the stream stays in sync.
    await browser.send_raw(framed(plain_result(999_999, b'"' + b"q" * MB + b'"')))
    await client.send({"type": "request", "id": 3, "tool": "sized", "args": {"size": 64 * KIB}})
    assert await read_raw(client) == sized_reply(64 * KIB, 3)
    await client.close()


async def test_a_websocket_client_gets_long_results(host_home: Path) -> None:
    """The WebSocket transport (Windows' own) relays long results as the Unix socket does."""
    async with running(host_home, "--transport", "ws") as ws_browser:
        client = await client_of(ws_browser, "ws-agent")
        for size in (64 * KIB, MB, 10):
            assert await client.request("sized", {"size": size}) == "x" * size
        await client.close()
        assert not any(word in ws_browser.log_text() for word in ALARMING), ws_browser.log_text()


# ---- a long frame that arrives in two pieces ----------------------------------------------------------------------

@pytest.mark.parametrize("first", [3, 20 * KIB])
async def test_a_long_frame_written_in_two_pieces(browser: Browser, first: int) -> None:
    """The host's first read finds only part of it in the pipe (with `3`, not even the whole header): it
    arrives as it would have whole."""
    client = await raw_client(browser)
    await client.send({"type": "request", "id": 9, "tool": "hang", "args": {}})
    request_id = await host_id_of(browser, "hang")
    frame = framed(plain_result(request_id, b'"' + b"w" * (200 * KIB) + b'"'))
    await browser.send_raw(frame[:first])
    await asyncio.sleep(0.2)
    await browser.send_raw(frame[first:])
    assert await read_raw(client) == b'{"result":"' + b"w" * (200 * KIB) + b'","type":"response","id":9}'
    await client.send({"type": "request", "id": 10, "tool": "sized", "args": {"size": 64 * KIB}})
    assert await read_raw(client) == sized_reply(64 * KIB, 10)
    await client.close()


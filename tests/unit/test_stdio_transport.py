"""The stdio transport's two bounds: lines in, and bytes queued for a client that does not read."""

from __future__ import annotations

import asyncio

import pytest

from mcp_bridge import stdio_transport
from mcp_bridge.stdio_transport import StdioTransport

pytestmark = pytest.mark.anyio


class Pipe:
    """A stdout whose writes block until the test lets them through, and a stdin fed by the test."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.writing = asyncio.Event()
        self.drain = asyncio.Event()
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.broken = False

    async def read(self) -> bytes:
        return await self.chunks.get()

    async def write(self, data: bytes) -> None:
        self.writing.set()
        if self.broken:
            raise BrokenPipeError("client gone")
        await self.drain.wait()
        self.written.append(data)


async def test_senders_wait_while_the_client_does_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdio_transport, "_QUEUED_BYTES", 100)
    pipe = Pipe()
    transport = StdioTransport(pipe.read, pipe.write)
    await transport.send(b"a" * 60)
    await pipe.writing.wait()  # the writer holds the first message, blocked on the pipe
    await transport.send(b"b" * 60)  # room: 60 of 100 bytes are queued
    blocked = asyncio.create_task(transport.send(b"c" * 10))
    await asyncio.sleep(0)
    assert not blocked.done()  # over the budget: the sender waits for the client
    pipe.drain.set()
    await blocked
    await transport.close()
    assert b"".join(pipe.written) == b"a" * 60 + b"b" * 60 + b"c" * 10


async def test_a_closed_stdout_drops_answers_without_blocking() -> None:
    pipe = Pipe()
    pipe.broken = True
    transport = StdioTransport(pipe.read, pipe.write)
    await transport.send(b"lost\n")
    await pipe.writing.wait()
    for _ in range(10):
        await transport.send(b"x" * 1_000_000)  # returns at once: nothing can reach the client
    await transport.close()
    assert pipe.written == []


async def test_lines_are_split_and_the_last_one_needs_no_newline() -> None:
    pipe = Pipe()
    transport = StdioTransport(pipe.read, pipe.write)
    for chunk in (b'{"a":', b' 1}\n\n  \n{"b": 2}\n{"c"', b": 3}", b""):
        pipe.chunks.put_nowait(chunk)
    received = [await transport.receive() for _ in range(4)]
    assert received == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}', None]
    await transport.close()

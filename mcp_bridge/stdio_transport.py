"""The stdio transport of `serve`: the MCP SDK's message streams over stdin/stdout, without a thread per message.

The SDK's `mcp.server.stdio.stdio_server` wraps stdin and stdout with `anyio.wrap_file`, so every line read,
write and flush is a hand-off to a worker thread (three per request, ~350 µs). Here stdin and stdout are
asyncio pipe transports instead, and the replay of the early `initialize` (see early_initialize) happens
in the same place, so it adds no hop of its own:

- the reader yields the first line, already read by `answer_first_message`, before anything else, then one
  `SessionMessage` per line — or, for a line that is not a JSON-RPC message, the validation exception, as
  the SDK's reader does (lines are decoded as UTF-8 with replacement and validated exactly as it does);
- the writer writes `model_dump_json(by_alias=True, exclude_unset=True)` + newline, exactly the SDK's bytes,
  and drops the SDK's answer to an `initialize` that was already answered, after checking it is the same.

As in the SDK, while serving fd 0 reads the null device and fd 1 writes to stderr, so a stray `print` or a
child process can neither eat protocol input nor corrupt the output; the wire is served from private
duplicates and both descriptors are restored on exit. When stdin or stdout is not a pipe or socket (a file,
a terminal), that side is read or written in a worker thread, as the SDK does: asyncio cannot watch a
regular file, and switching a terminal to non-blocking mode would affect the shell that shares it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage

from mcp_bridge.early_initialize import FirstMessage

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024

if sys.platform != "win32":  # pragma: no branch
    import fcntl


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _same_file(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


class _Claim:
    """fd 0 and 1 diverted (to the null device and stderr), the wire kept on private descriptors."""

    def __init__(self) -> None:
        self.wire: dict[int, int] = {}

    def take(self, fd: int, diversion: Callable[[], int]) -> int:
        private = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        self.wire[fd] = private
        target = diversion()
        try:
            os.dup2(target, fd)
        finally:
            os.close(target)
        return private

    def release(self) -> None:
        for fd, private in self.wire.items():
            with suppress(OSError):
                os.dup2(private, fd)
                os.set_blocking(fd, True)  # the asyncio transport made the shared description non-blocking


async def _pipe_reader(fd: int, stack: AsyncExitStack) -> Callable[[], Awaitable[bytes]]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK)
    # The transport owns (and on close closes) its own duplicate; `fd` stays for restoring fd 0.
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    stack.callback(transport.close)

    async def read() -> bytes:
        return await reader.read(_CHUNK)

    return read


def _thread_reader(fd: int) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        # abandon_on_cancel: a read blocked on a terminal must not hold up the exit. The descriptor is
        # therefore never closed (like the SDK's closefd=False), so it cannot be recycled under that read.
        return await anyio.to_thread.run_sync(os.read, fd, _CHUNK, abandon_on_cancel=True)

    return read


async def _pipe_writer(fd: int, stack: AsyncExitStack) -> Callable[[bytes], Awaitable[None]]:
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(os.dup(fd), "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, pipe)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    stack.callback(transport.close)

    async def write(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    return write


def _thread_writer(fd: int) -> Callable[[bytes], Awaitable[None]]:
    def write_all(data: bytes) -> None:
        while data:
            data = data[os.write(fd, data):]

    async def write(data: bytes) -> None:
        await anyio.to_thread.run_sync(write_all, data)

    return write


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line.decode("utf-8", "replace"),
                                                                          by_name=False))
    except Exception as exc:  # what the SDK's reader does with a bad line: hand the exception to the session
        return exc


@asynccontextmanager
async def stdio_transport(first: FirstMessage) -> AsyncIterator[tuple[Any, Any]]:
    """(read_stream, write_stream) for `BridgeServer.serve`, over this process's stdin and stdout."""
    claim = _Claim()
    try:
        wire_in = claim.take(0, lambda: os.open(os.devnull, os.O_RDONLY))
        wire_out = claim.take(1, lambda: os.dup(2))
        async with AsyncExitStack() as stack:
            read = await _pipe_reader(wire_in, stack) if _is_pipe(wire_in) else _thread_reader(wire_in)
            # A stdout that is the same pipe as stderr (`2>&1`) shares its file description, and making
            # it non-blocking would make stderr writes fail with EAGAIN: write it in a thread instead.
            pipe_out = _is_pipe(wire_out) and not _same_file(wire_out, 2)
            write = await _pipe_writer(wire_out, stack) if pipe_out else _thread_writer(wire_out)
            async with _streams(first, read, write) as streams:
                yield streams
    finally:
        claim.release()


@asynccontextmanager
async def _streams(first: FirstMessage, read: Callable[[], Awaitable[bytes]],
                   write: Callable[[bytes], Awaitable[None]]) -> AsyncIterator[tuple[Any, Any]]:
    to_server, server_reads = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    server_writes, to_client = anyio.create_memory_object_stream[SessionMessage](0)
    reader_scope = anyio.CancelScope()

    async def reader() -> None:
        with reader_scope:
            async with to_server:
                buffer = bytearray()
                if first.line.endswith(b"\n"):
                    if first.line.strip():
                        await to_server.send(_parse(first.line))
                else:  # cut short by early_initialize's length cap: the rest of the line follows
                    buffer += first.line
                searched = 0
                while True:
                    chunk = await read()
                    if not chunk:
                        if buffer:  # a last line without a newline, which the SDK's reader also yields
                            await to_server.send(_parse(bytes(buffer)))
                        return
                    buffer += chunk
                    start = 0
                    while (end := buffer.find(b"\n", max(start, searched))) >= 0:
                        await to_server.send(_parse(bytes(buffer[start:end + 1])))
                        start = end + 1
                    del buffer[:start]
                    searched = len(buffer)

    async def writer() -> None:
        pending = first.answered
        async with to_client:
            async for outgoing in to_client:
                data = outgoing.message.model_dump_json(by_alias=True, exclude_unset=True)
                if pending is not None and isinstance(outgoing.message, types.JSONRPCResponse) \
                        and outgoing.message.id == pending["id"]:
                    if json.loads(data) != pending:
                        log.error("early initialize answer differed from the SDK's: sent %s, SDK %s",
                                  pending, data)
                    pending = None
                    continue
                await write((data + "\n").encode())

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield server_reads, server_writes
        finally:
            server_writes.close()  # the writer sends what is left, then ends
            reader_scope.cancel()

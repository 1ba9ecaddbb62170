"""The stdio transport of `serve`: lines from stdin, messages to stdout, both bounded.

- `receive()` yields one line at a time. A line longer than `wire.MAX_LINE_BYTES` is not kept: its start
  and end are, so the refusal can name the request id, and the rest is read and dropped.
- `send()` puts an encoded message on a bounded queue that one writer task empties, so a client that
  stops reading slows the server's senders down (backpressure) instead of growing memory without limit.

While serving, fd 0 reads the null device and fd 1 writes to stderr, so a stray `print` or a child process
can neither eat protocol input nor corrupt the output; the wire is served from private duplicates and both
descriptors are restored on exit. A pipe or socket is served by the event loop (POSIX); anything else (a
file, a terminal, every handle on Windows, a stdout shared with stderr by `2>&1`) by a daemon thread, so a
blocked read or write can never hold up the exit.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress

from mcp_bridge.protocol import wire

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_QUEUED_BYTES = 8 * 1024 * 1024
"""Bytes waiting for stdout before senders wait (one message larger than this still goes, alone)."""
_THREAD_CHUNKS = 16
"""Chunks a reader thread may read ahead of the server."""
_SNIFF = 4096
_CLOSE_TIMEOUT_S = 10.0
"""How long the answers still queued at exit may take to reach a client that has stopped reading."""


def _is_pipe(fd: int) -> bool:
    if sys.platform == "win32":
        return False  # the Windows event loop cannot watch a console or anonymous pipe handle
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
        private = os.dup(fd)  # not inheritable: child processes of tools never see the wire
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
                if sys.platform != "win32":
                    os.set_blocking(fd, True)  # an asyncio transport made the shared description non-blocking


class _Lines:
    """Splits chunks into lines, keeping at most MAX_LINE_BYTES of one line."""

    def __init__(self) -> None:
        self.ready: collections.deque[bytes | wire.Malformed] = collections.deque()
        self._buffer = bytearray()
        self._head: bytes | None = None  # set while dropping an oversized line
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if self._head is not None:
                self._tail = (self._tail + piece)[-_SNIFF:]
            else:
                self._buffer += piece
                if len(self._buffer) > wire.MAX_LINE_BYTES:
                    self._head, self._tail = bytes(self._buffer[:_SNIFF]), bytes(self._buffer[-_SNIFF:])
                    self._buffer = bytearray()
            if end < 0:
                return
            self._finish()
            start = end + 1

    def end(self) -> None:
        """End of input: a last line without a newline still counts."""
        self._finish()

    def _finish(self) -> None:
        if self._head is not None:
            self.ready.append(wire.oversized(self._head, self._tail))
            self._head, self._tail = None, b""
        elif self._buffer.strip():
            self.ready.append(bytes(self._buffer))
        self._buffer = bytearray()


class StdioTransport:
    def __init__(self, read: Callable[[], Awaitable[bytes]], write: Callable[[bytes], Awaitable[None]]) -> None:
        self._read = read
        self._write = write
        self._lines = _Lines()
        self._eof = False
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._room = asyncio.Condition()
        self._ready = asyncio.Event()
        self._closing = False
        self._broken = False
        self._writer = asyncio.create_task(self._write_forever())

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[StdioTransport]:
        """The transport over this process's stdin and stdout; flushes what is queued on exit."""
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
                transport = cls(read, write)
                try:
                    yield transport
                finally:
                    await transport.close()
        finally:
            claim.release()

    async def receive(self) -> bytes | wire.Malformed | None:
        while not self._lines.ready:
            if self._eof:
                return None
            chunk = await self._read()
            if chunk:
                self._lines.feed(chunk)
            else:
                self._eof = True
                self._lines.end()
        return self._lines.ready.popleft()

    async def send(self, data: bytes) -> None:
        async with self._room:
            await self._room.wait_for(lambda: self._broken or self._pending_bytes < _QUEUED_BYTES)
            if self._broken:
                return  # the client is gone; see _write_forever
            self._pending.append(data)
            self._pending_bytes += len(data)
        self._ready.set()

    async def close(self) -> None:
        """Deliver what is queued (for at most _CLOSE_TIMEOUT_S), then stop writing."""
        self._closing = True
        self._ready.set()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await asyncio.shield(self._writer)
        except TimeoutError:
            log.warning("the client stopped reading; %d bytes of answers were not delivered", self._pending_bytes)
            self._writer.cancel()

    async def _write_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            data = b"".join(self._pending)  # whatever is queued goes out in one write
            self._pending.clear()
            try:
                await self._write(data)
            except OSError as exc:
                # The client is gone: nothing more can reach it. Keep serving until stdin ends (the running
                # requests still finish and are logged), but stop queueing.
                log.warning("stdout closed (%s); answers from now on are dropped", exc)
                self._broken = True
            async with self._room:
                self._pending_bytes -= len(data)
                self._room.notify_all()
            if self._broken:
                return
            self._ready.set()  # look again: more may have come, or close() may be waiting


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


def _thread_reader(fd: int) -> Callable[[], Awaitable[bytes]]:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    room = threading.Semaphore(_THREAD_CHUNKS)

    def read_forever() -> None:
        while True:
            room.acquire()
            try:
                chunk = os.read(fd, _CHUNK)
            except OSError:
                chunk = b""
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            if not chunk:
                return

    threading.Thread(target=read_forever, name="stdin-reader", daemon=True).start()

    async def read() -> bytes:
        chunk = await chunks.get()
        room.release()
        return chunk

    return read


def _thread_writer(fd: int) -> Callable[[bytes], Awaitable[None]]:
    loop = asyncio.get_running_loop()
    work: collections.deque[tuple[bytes, asyncio.Future[None]]] = collections.deque()
    wake = threading.Semaphore(0)

    def write_forever() -> None:
        while True:
            wake.acquire()
            data, done = work.popleft()
            try:
                while data:
                    data = data[os.write(fd, data):]
            except OSError as exc:
                loop.call_soon_threadsafe(_settle, done, exc)
                return
            loop.call_soon_threadsafe(_settle, done, None)

    threading.Thread(target=write_forever, name="stdout-writer", daemon=True).start()

    async def write(data: bytes) -> None:
        done = loop.create_future()
        work.append((data, done))
        wake.release()
        await done

    return write


def _settle(future: asyncio.Future[None], error: OSError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)

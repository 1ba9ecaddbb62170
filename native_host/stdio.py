"""The browser's end of the relay: frames on the host's stdin and stdout.

Where stdin and stdout are pipes or sockets (how Chrome and Firefox start the host on macOS and Linux) the event
loop drives them directly. Otherwise — on Windows, whose event loop cannot wait on the pipe handles the browser
hands over, or when a file is redirected in — two threads do blocking reads and writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from native_host.framing import FROM_BROWSER_MAX, MIB, FrameDecoder, FrameTooLarge

if TYPE_CHECKING:
    from native_host.host import BrowserLink, Host

PAUSE_CLIENTS_AT = 4 * MIB
"""Bytes queued for the browser beyond which the host stops reading client requests until the browser catches up."""
RESUME_CLIENTS_AT = 1 * MIB
FLUSH_GRACE = 0.5
"""Seconds spent on exit handing the browser what is still queued for it."""
READ_CHUNK = 1 * MIB
PIPE_CAPACITY = 1 * MIB


async def open_browser(host: Host, stdin_fd: int, stdout_fd: int) -> BrowserLink:
    """Attach the browser's stdio to `host` (as `host.browser`, set before the first frame can arrive)."""
    loop = asyncio.get_running_loop()
    if sys.platform != "win32" and _pollable(stdin_fd) and _pollable(stdout_fd):
        _widen_pipe(stdin_fd)
        _widen_pipe(stdout_fd)
        link = _PipeLink(host)
        await loop.connect_write_pipe(lambda: link, os.fdopen(stdout_fd, "wb", buffering=0))
        host.browser = link
        _StdinReader(host, loop, stdin_fd)
        return link
    host.browser = _ThreadLink(host, loop, stdin_fd, stdout_fd)
    return host.browser


def _widen_pipe(fd: int) -> None:
    """Let a pipe hold a whole 1 MiB frame (Linux). At the default 64 KiB, a screenshot crosses in sixteen
    rounds of the writer filling the pipe and waking the reader."""
    if sys.platform != "linux":
        return
    import fcntl

    with contextlib.suppress(OSError):  # past /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_CAPACITY)


def _pollable(fd: int) -> bool:
    """Pipes and sockets; not files (always "ready") nor devices like /dev/null (epoll refuses them)."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Frames:
    """Cuts the browser's byte stream into frames for the host."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._decoder = FrameDecoder(FROM_BROWSER_MAX)

    def feed(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except FrameTooLarge as exc:
            self._refuse(exc)
            return
        self._deliver(frames)

    def read(self, fd: int) -> int:
        """One read of `fd` straight into the decoder's reused buffer. Bytes read: 0 at end of file."""
        with self._decoder.get_buffer() as space:
            nbytes = os.readv(fd, [space])
        if nbytes:
            try:
                frames = self._decoder.buffer_updated(nbytes)
            except FrameTooLarge as exc:
                self._refuse(exc)
            else:
                self._deliver(frames)
        return nbytes

    def _refuse(self, exc: FrameTooLarge) -> None:
        # Past a bad header there is no telling where the next frame starts.
        self._host.browser_closed(f"it sent a frame of {exc.size} bytes, over the {exc.limit}-byte limit")

    def _deliver(self, frames: list[bytes]) -> None:
        for payload in frames:
            self._host.browser_frame(payload)


class _StdinReader:
    """stdin read by the event loop, straight into the decoder's reused buffer.

    Not `loop.connect_read_pipe`: its transport reads each time into a fresh 256 KiB `bytes` (an mmap and a munmap
    per read, ~12 µs of every round trip), and it takes no BufferedProtocol. This does what it did otherwise: a
    non-blocking fd watched by the loop, end of file or a read error closing the browser's side.
    """

    def __init__(self, host: Host, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._host = host
        self._loop = loop
        self._fd = fd
        self._frames = _Frames(host)
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            nbytes = self._frames.read(self._fd)
        except (BlockingIOError, InterruptedError):
            return  # woken for nothing; the loop calls again when there is data
        except OSError as exc:
            self._stop(f"stdin failed: {exc}")
            return
        except Exception as exc:  # a bug handling a frame: like asyncio's transport, report it and stop reading
            self._loop.call_exception_handler({"message": "Fatal error: reading stdin failed", "exception": exc})
            self._stop(f"stdin failed: {exc}")
            return
        if nbytes == 0:
            self._stop("stdin reached end of file")

    def _stop(self, why: str) -> None:
        self._loop.remove_reader(self._fd)
        self._host.browser_closed(why)


class _PipeLink(asyncio.BaseProtocol):
    """stdout as an event-loop pipe transport; its flow control pauses and resumes the clients."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._transport: asyncio.WriteTransport | None = None
        self._closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport
        transport.set_write_buffer_limits(high=PAUSE_CLIENTS_AT, low=RESUME_CLIENTS_AT)

    def pause_writing(self) -> None:
        self._host.pause_clients()

    def resume_writing(self) -> None:
        self._host.resume_clients()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)
        self._host.browser_closed(f"stdout failed: {exc}" if exc else "stdout closed")

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def aclose(self) -> None:
        if self._transport is None:
            return
        self._transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), FLUSH_GRACE)
        except TimeoutError:
            self._transport.abort()


class _ThreadLink:
    """Blocking stdin/stdout in two daemon threads, so a read that never returns cannot keep the process alive."""

    def __init__(self, host: Host, loop: asyncio.AbstractEventLoop, stdin_fd: int, stdout_fd: int) -> None:
        self._host = host
        self._loop = loop
        self._frames = _Frames(host)
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._queued = 0  # touched on the loop thread only
        self._paused = False
        self._stdout_fd = stdout_fd
        threading.Thread(target=self._read, args=(stdin_fd,), name="stdin", daemon=True).start()
        self._writer = threading.Thread(target=self._write, name="stdout", daemon=True)
        self._writer.start()

    def _on_loop(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has finished: the host is exiting anyway
            self._loop.call_soon_threadsafe(callback, *args)

    def _read(self, fd: int) -> None:
        try:
            while data := os.read(fd, READ_CHUNK):
                self._on_loop(self._frames.feed, data)
            why = "stdin reached end of file"
        except OSError as exc:
            why = f"stdin failed: {exc}"
        self._on_loop(self._host.browser_closed, why)

    def _write(self) -> None:
        try:
            while (data := self._queue.get()) is not None:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._stdout_fd, view) :]
                self._on_loop(self._written, len(data))
        except OSError as exc:
            self._on_loop(self._host.browser_closed, f"stdout failed: {exc}")
        finally:
            os.close(self._stdout_fd)

    def _written(self, size: int) -> None:
        self._queued -= size
        if self._paused and self._queued <= RESUME_CLIENTS_AT:
            self._paused = False
            self._host.resume_clients()

    def write(self, data: bytes) -> None:
        if not self._writer.is_alive():
            return
        self._queue.put(data)
        self._queued += len(data)
        if not self._paused and self._queued > PAUSE_CLIENTS_AT:
            self._paused = True
            self._host.pause_clients()

    async def aclose(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._writer.join, FLUSH_GRACE)

"""The browser's end of the relay: frames on the host's stdin and stdout.

Where stdin and stdout are pipes or sockets (how Chrome and Firefox start the host on macOS and Linux) the event
loop drives them directly: non-blocking descriptors, reads straight into the decoder's reused buffer, frames
written with one `writev` of their pieces. Otherwise — on Windows, whose select() takes only sockets, or when a
file is redirected in — two threads do blocking reads and writes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import sys

from native_host.framing import FROM_BROWSER_MAX, MIB, Bytes, FrameDecoder, FrameTooLarge, frame
from native_host.outbox import Outbox

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, ~2 ms of the start-up the browser waits for
if TYPE_CHECKING:
    import queue
    from collections.abc import Callable

    from native_host.host import BrowserLink, Host
    from native_host.loop import Cancellable, Loop

PAUSE_CLIENTS_AT = 4 * MIB
"""Bytes queued for the browser beyond which the host stops reading client requests until all of it is written."""
FLUSH_GRACE = 0.5
"""Seconds spent on exit handing the browser what is still queued for it."""
READ_CHUNK = 1 * MIB
PIPE_CAPACITY = 1 * MIB


def open_browser(host: Host, loop: Loop, stdin_fd: int, stdout_fd: int) -> BrowserLink:
    """Attach the browser's stdio to `host` (as `host.browser`, set before the first frame can arrive)."""
    link: BrowserLink
    if sys.platform != "win32" and _pollable(stdin_fd) and _pollable(stdout_fd):
        _widen_pipe(stdin_fd)
        _widen_pipe(stdout_fd)
        link = _PipeLink(host, loop, stdin_fd, stdout_fd)
    else:
        link = _ThreadLink(host, loop, stdin_fd, stdout_fd)
    host.browser = link
    return link


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


def _deliver(host: Host, decoder: FrameDecoder, nbytes: int) -> bool:
    """Hand the frames completed by `nbytes` more bytes to the host, copied (the rest of the reader thread's chunk
    goes into the same buffer next); False if the stream is broken."""
    try:
        frames = decoder.buffer_updated(nbytes)
    except FrameTooLarge as exc:
        _too_large(host, exc)
        return False
    for payload in frames:
        host.browser_frame(payload)
    return True


def _too_large(host: Host, exc: FrameTooLarge) -> None:
    # Past a bad header there is no telling where the next frame starts.
    host.browser_closed(f"it sent a frame of {exc.size} bytes, over the {exc.limit}-byte limit")


if sys.platform != "win32":

    class _PipeLink:
        """stdin and stdout as non-blocking pipes watched by the loop. Past PAUSE_CLIENTS_AT queued for the
        browser the clients are paused, so memory stays bounded and nothing is lost."""

        def __init__(self, host: Host, loop: Loop, stdin_fd: int, stdout_fd: int) -> None:
            self._host = host
            self._loop = loop
            self._in = stdin_fd
            self._out_fd = stdout_fd
            self._decoder = FrameDecoder(FROM_BROWSER_MAX)
            # partial, not lambda: no Python frame between the Outbox and the system call.
            self._out = Outbox(loop, stdout_fd, functools.partial(os.writev, stdout_fd),
                               functools.partial(os.write, stdout_fd), self._fail, self._drained)
            self._paused = False
            self._broken = False
            self._closing: Callable[[], object] | None = None
            self._grace: Cancellable | None = None
            os.set_blocking(stdin_fd, False)
            os.set_blocking(stdout_fd, False)
            loop.add_reader(stdin_fd, self._readable)

        # ---- in ---------------------------------------------------------------------------------------------

        def _readable(self) -> None:
            try:
                with self._decoder.get_buffer() as space:
                    nbytes = os.readv(self._in, [space])
            except (BlockingIOError, InterruptedError):
                return  # woken for nothing; the loop calls again when there is data
            except OSError as exc:
                self._stop_reading(f"stdin failed: {exc}")
                return
            if nbytes == 0:
                self._stop_reading("stdin reached end of file")
                return
            # _deliver, written out: this runs for every message from the browser.
            try:
                frames = self._decoder.views_updated(nbytes)
            except FrameTooLarge as exc:
                self._loop.remove_reader(self._in)
                _too_large(self._host, exc)
                return
            browser_frame = self._host.browser_frame
            for payload in frames:
                browser_frame(payload)

        def _stop_reading(self, why: str) -> None:
            self._loop.remove_reader(self._in)
            self._host.browser_closed(why)

        # ---- out --------------------------------------------------------------------------------------------

        def write_frame(self, *parts: Bytes) -> None:
            if self._broken:
                return
            if self._out.send(parts) > PAUSE_CLIENTS_AT and not self._paused:
                self._paused = True
                self._host.pause_clients()

        def _drained(self) -> None:
            if self._paused:
                self._paused = False
                self._host.resume_clients()
            if self._closing is not None:
                self._finish()

        def _fail(self, exc: OSError) -> None:
            self._broken = True
            self._out.clear()
            self._host.browser_closed(f"stdout failed: {exc}")
            if self._closing is not None:
                self._finish()

        def close(self, then: Callable[[], object]) -> None:
            self._loop.remove_reader(self._in)
            self._closing = then
            if not self._out.queued:
                self._finish()
            else:
                self._grace = self._loop.call_later(FLUSH_GRACE, self._finish)

        def _finish(self) -> None:
            then, self._closing = self._closing, None
            if then is None:
                return
            if self._grace is not None:
                self._grace.cancel()
            self._out.clear()
            self._broken = True
            with contextlib.suppress(OSError):
                os.close(self._out_fd)
            then()


class _ThreadLink:
    """Blocking stdin/stdout in two daemon threads, so a read that never returns cannot keep the process alive."""

    def __init__(self, host: Host, loop: Loop, stdin_fd: int, stdout_fd: int) -> None:
        import queue
        import threading  # only here: the pipes of Linux and macOS need neither

        self._host = host
        self._loop = loop
        self._decoder = FrameDecoder(FROM_BROWSER_MAX)
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
                self._on_loop(self._feed, data)
            why = "stdin reached end of file"
        except OSError as exc:
            why = f"stdin failed: {exc}"
        self._on_loop(self._host.browser_closed, why)

    def _feed(self, data: bytes) -> None:
        with memoryview(data) as rest:
            at = 0
            while at < len(rest):
                with self._decoder.get_buffer() as space:
                    n = min(len(space), len(rest) - at)
                    space[:n] = rest[at : at + n]
                if not _deliver(self._host, self._decoder, n):
                    return
                at += n

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
        if self._paused and not self._queued:
            self._paused = False
            self._host.resume_clients()

    def write_frame(self, *parts: Bytes) -> None:
        if not self._writer.is_alive():
            return
        data = frame(*parts)
        self._queue.put(data)
        self._queued += len(data)
        if not self._paused and self._queued > PAUSE_CLIENTS_AT:
            self._paused = True
            self._host.pause_clients()

    def close(self, then: Callable[[], object]) -> None:
        self._queue.put(None)
        self._writer.join(FLUSH_GRACE)
        then()

"""The stdio transport of `serve`: lines from stdin, messages to stdout, both bounded.

- `receive()` blocks the reading thread for the next line. A line longer than `wire.MAX_LINE_BYTES` is not
  kept: its start and end are, so the refusal can name the request id, and the rest is read and dropped.
- `send()` may be called from any thread. When nothing is being written, the caller writes its message
  itself (no hand-off to another thread: the answer to a quick call leaves in one `write`); while another
  thread writes, the message is queued and that thread writes it next. Queued bytes are bounded: past
  `_QUEUED_BYTES` a sender waits, so a client that stops reading slows the server's senders down
  (backpressure) instead of growing memory without limit.

While serving, fd 0 reads the null device and fd 1 writes to stderr, so a stray `print` or a child process
can neither eat protocol input nor corrupt the output; the wire is served from private duplicates and both
descriptors are restored on exit. Reads and writes are plain blocking calls on those duplicates, the same
on every platform and for every kind of stdin and stdout (pipe, socket, file, terminal).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from mcp_bridge.protocol import wire

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_QUEUED_BYTES = 8 * 1024 * 1024
"""Bytes waiting for stdout before senders wait (one message larger than this still goes, alone)."""
_SNIFF = 4096
_CLOSE_TIMEOUT_S = 10.0
"""How long the answers still queued at exit may take to reach a client that has stopped reading."""


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
    def __init__(self, read: Callable[[], bytes], write: Callable[[bytes], object]) -> None:
        """`read` returns the next chunk of input (b"" at its end); `write` writes all of its bytes or raises."""
        self._read = read
        self._write = write
        self._lines = _Lines()
        self._eof = False
        self._state = threading.Condition(threading.Lock())
        self._pending: collections.deque[bytes] = collections.deque()
        self._unwritten = 0
        """Bytes queued or being written."""
        self._writing = False
        self._broken = False

    @classmethod
    @contextmanager
    def open(cls) -> Iterator[StdioTransport]:
        """The transport over this process's stdin and stdout; delivers what is queued on exit."""
        claim = _Claim()
        try:
            wire_in = claim.take(0, lambda: os.open(os.devnull, os.O_RDONLY))
            wire_out = claim.take(1, lambda: os.dup(2))

            def read() -> bytes:
                try:
                    return os.read(wire_in, _CHUNK)
                except OSError:
                    return b""  # a stdin that fails is a stdin that ended

            def write(data: bytes) -> None:
                view = memoryview(data)
                while view:
                    view = view[os.write(wire_out, view):]

            transport = cls(read, write)
            try:
                yield transport
            finally:
                transport.close()
        finally:
            claim.release()

    def receive(self) -> bytes | wire.Malformed | None:
        """The next line, a refusal of one that was too long, or None at end of input (one reading thread)."""
        while not self._lines.ready:
            if self._eof:
                return None
            chunk = self._read()
            if chunk:
                self._lines.feed(chunk)
            else:
                self._eof = True
                self._lines.end()
        return self._lines.ready.popleft()

    def send(self, data: bytes) -> None:
        """Write one encoded message, or queue it behind the one being written (see the module's docstring)."""
        with self._state:
            while not self._broken and self._writing and self._unwritten >= _QUEUED_BYTES:
                self._state.wait()
            if self._broken:
                return  # the client is gone; see _write_all
            self._unwritten += len(data)
            if self._writing:
                self._pending.append(data)
                return
            self._writing = True
        self._write_all(data)

    def close(self, timeout: float = _CLOSE_TIMEOUT_S) -> None:
        """Wait (for at most `timeout`) until what is queued has been written."""
        with self._state:
            if not self._state.wait_for(lambda: not self._writing, timeout):
                log.warning("the client stopped reading; %d bytes of answers were not delivered", self._unwritten)

    def _write_all(self, data: bytes) -> None:
        """Write `data`, then whatever others queued meanwhile, in one write per round; then stop writing."""
        while True:
            try:
                self._write(data)
            except OSError as exc:
                # The client is gone: nothing more can reach it. Keep serving until stdin ends (the running
                # requests still finish and are logged), but stop queueing.
                log.warning("stdout closed (%s); answers from now on are dropped", exc)
                with self._state:
                    self._broken = True
                    self._writing = False
                    self._pending.clear()
                    self._unwritten = 0
                    self._state.notify_all()
                return
            with self._state:
                self._unwritten -= len(data)
                self._state.notify_all()
                if not self._pending:
                    self._writing = False
                    return
                data = b"".join(self._pending)  # whatever is queued goes out in one write
                self._pending.clear()

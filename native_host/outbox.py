"""Frames out on a non-blocking descriptor (stdout's pipe, a client's socket), driven by the host's loop."""

from __future__ import annotations

from collections import deque

from native_host.framing import HEADER, Bytes

_pack_header = HEADER.pack
_HEADER_SIZE = HEADER.size

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable

    from native_host.loop import Loop


class Outbox:
    """A frame goes out at once in one vectored write of its pieces (header, spliced parts), with no copy. Only
    what the descriptor does not take is copied — once — and queued; the loop's write-readiness drains the queue.
    `queued` is what is still waiting: the peer's backlog."""

    def __init__(self, loop: Loop, fd: int, writev: Callable[[list[Bytes]], int], write: Callable[[Bytes], int],
                 failed: Callable[[OSError], object], drained: Callable[[], object]) -> None:
        self._loop = loop
        self._fd = fd
        self._writev = writev
        self._write = write
        self._failed = failed
        self._drained = drained
        self._queue: deque[memoryview] = deque()
        self.queued = 0

    def send(self, parts: tuple[Bytes, ...]) -> int:
        """Send one frame whose payload is `parts` joined (they need to stay valid only during the call); what is
        queued afterwards."""
        size = sum(map(len, parts))
        pieces: list[Bytes] = [_pack_header(size), *parts]
        sent = 0
        if not self._queue:
            try:
                sent = self._writev(pieces)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._failed(exc)
                return self.queued
        if sent == _HEADER_SIZE + size:
            return self.queued
        rest = memoryview(b"".join(pieces))[sent:]
        if not self._queue:
            self._loop.add_writer(self._fd, self._writable)
        self._queue.append(rest)
        self.queued += len(rest)
        return self.queued

    def _writable(self) -> None:
        queue = self._queue
        while queue:
            data = queue[0]
            try:
                sent = self._write(data)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._failed(exc)
                return
            self.queued -= sent
            if sent < len(data):
                queue[0] = data[sent:]
                return
            queue.popleft()
        self._loop.remove_writer(self._fd)
        self._drained()

    def clear(self) -> None:
        """Drop what is queued and stop waiting to write (the descriptor is being closed)."""
        if self._queue:
            self._loop.remove_writer(self._fd)
            self._queue.clear()
        self.queued = 0

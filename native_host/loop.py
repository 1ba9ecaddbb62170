"""The host's event loop: one thread waiting on file descriptors with epoll (Linux), else `selectors` (kqueue).

Not asyncio: importing asyncio is most of the time a host takes to start (the browser waits for it), and its
callback and transport layers cost about as much CPU per relayed message as everything else the host does. The
host needs little of it: readiness callbacks on a few descriptors, timers, and callbacks from other threads.
`Loop` names exactly that part of asyncio's API, so the WebSocket transport — whose library is built on asyncio —
runs the same host code on an `asyncio.SelectorEventLoop` instead of this one.
"""

from __future__ import annotations

import heapq
import os
import signal
import sys
import time
from collections import deque

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, ~2 ms of the start-up the browser waits for
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    class Poller(Protocol):
        def watch(self, fd: int, events: int) -> None: ...

        def wait(self, timeout: float | None) -> list[tuple[int, int]]: ...

    class Cancellable(Protocol):
        def cancel(self) -> None: ...

    class Loop(Protocol):
        """The part of asyncio's event loop API the host uses; `SelectLoop` and asyncio's selector loop provide it."""

        def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...

        def remove_reader(self, fd: int) -> bool: ...

        def add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> None: ...

        def remove_writer(self, fd: int) -> bool: ...

        def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> Any: ...

        def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...

        def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: Any) -> None: ...

        def stop(self) -> None: ...


class _Timer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _Timer) -> bool:
        return self.when < other.when


class SelectLoop:
    """Readiness callbacks, timers and thread-safe calls, run by `run_forever()` until `stop()`.

    A callback that raises is reported through `on_error` and the loop keeps running: one bad message must not end
    the relay for every client.
    """

    def __init__(self, on_error: Callable[[str, BaseException], None], poller: Poller | None = None) -> None:
        if poller is not None:
            self._poller = poller
        elif sys.platform == "linux":
            self._poller = EpollPoller()
        else:
            self._poller = SelectorsPoller()
        self._readers: dict[int, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        self._writers: dict[int, tuple[Callable[..., object], tuple[Any, ...]]] = {}
        self._timers: list[_Timer] = []
        # Appended to by other threads and signal handlers: deque appends and pops are atomic, and a lock could
        # deadlock against a signal handler.
        self._calls: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._stopping = False
        self._on_error = on_error
        # Written to by other threads and by signals so that a wait in progress returns at once.
        self._wakeup = _Wakeup()
        self._poller.watch(self._wakeup.read_fd, READABLE)

    # ---- registration ------------------------------------------------------------------------------------------

    def _update(self, fd: int) -> None:
        self._poller.watch(fd, (READABLE if fd in self._readers else 0) | (WRITABLE if fd in self._writers else 0))

    def add_reader(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self._readers[fd] = (callback, args)
        self._update(fd)

    def remove_reader(self, fd: int) -> bool:
        if self._readers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def add_writer(self, fd: int, callback: Callable[..., object], *args: Any) -> None:
        self._writers[fd] = (callback, args)
        self._update(fd)

    def remove_writer(self, fd: int) -> bool:
        if self._writers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Timer:
        timer = _Timer(time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        self._calls.append((callback, args))
        self._wakeup.wake()

    def add_signal_handler(self, signum: int, callback: Callable[..., object], *args: Any) -> None:
        """Run `callback` on the loop when `signum` arrives (the main thread only, like asyncio's)."""
        signal.set_wakeup_fd(self._wakeup.write_fd, warn_on_full_buffer=False)
        signal.signal(signum, lambda _signum, _frame: self._calls.append((callback, args)))

    def stop(self) -> None:
        self._stopping = True

    # ---- running -----------------------------------------------------------------------------------------------

    def run_forever(self) -> None:
        # Readers are called here rather than through _call, and timers are looked at only when there are any:
        # this runs twice per relayed round trip, and every Python call it saves shows in the host's CPU per
        # message (the other processes on the path evict its code from the caches between messages).
        wait = self._poller.wait
        readers, writers, timers, calls = self._readers, self._writers, self._timers, self._calls
        wake_r, on_error = self._wakeup.read_fd, self._on_error
        while not self._stopping:
            timeout = self._run_timers() if timers or calls else None
            if self._stopping:
                break
            for fd, events in wait(timeout):
                if fd == wake_r:
                    self._wakeup.drain()
                    continue
                # An error or hang-up wakes both sides: the read or write that follows says what happened.
                if events & _WAKES_WRITER and fd in writers:
                    self._call(*writers[fd])
                if events & _WAKES_READER and fd in readers:
                    callback, args = readers[fd]  # as _call does, without its frame (the common case)
                    try:
                        callback(*args)
                    except Exception as exc:  # reported, and the relay goes on for everyone else
                        on_error(getattr(callback, "__qualname__", repr(callback)), exc)
            if calls:
                self._run_calls()
        self._stopping = False

    def _run_timers(self) -> float | None:
        """Run the timers that are due; seconds until the next one (None: no timer, 0: calls are waiting)."""
        timers = self._timers
        now = time.monotonic()
        while timers and (timers[0].cancelled or timers[0].when <= now):
            timer = heapq.heappop(timers)
            if not timer.cancelled:
                self._call(timer.callback, timer.args)
        if self._calls:
            return 0
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
        return max(0.0, timers[0].when - time.monotonic()) if timers else None

    def _run_calls(self) -> None:
        calls = self._calls
        for _ in range(len(calls)):  # not those the calls themselves add: they wait for the next round
            self._call(*calls.popleft())

    def _call(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            callback(*args)
        except Exception as exc:  # reported, and the relay goes on for everyone else
            self._on_error(getattr(callback, "__qualname__", repr(callback)), exc)


READABLE = 1  # select.EPOLLIN, select.POLLIN
WRITABLE = 4  # select.EPOLLOUT, select.POLLOUT
_WAKES_READER = READABLE | 8 | 16  # and EPOLLERR, EPOLLHUP
_WAKES_WRITER = WRITABLE | 8 | 16

class SelectorsPoller:
    """The platform's best (kqueue on macOS) through `selectors`, events translated to epoll's bits."""

    def __init__(self) -> None:
        import selectors

        self._selectors = selectors
        self._selector = selectors.DefaultSelector()

    def watch(self, fd: int, events: int) -> None:
        """Wait for `events` (READABLE | WRITABLE) on `fd` from now on; 0 to stop watching it."""
        selectors = self._selectors
        wanted = (selectors.EVENT_READ if events & READABLE else 0) | \
            (selectors.EVENT_WRITE if events & WRITABLE else 0)
        try:
            key = self._selector.get_key(fd)
        except KeyError:
            if wanted:
                self._selector.register(fd, wanted)
            return
        if not wanted:
            self._selector.unregister(fd)
        elif key.events != wanted:
            self._selector.modify(fd, wanted)

    def wait(self, timeout: float | None) -> list[tuple[int, int]]:
        read, write = self._selectors.EVENT_READ, self._selectors.EVENT_WRITE
        return [(key.fd, (READABLE if events & read else 0) | (WRITABLE if events & write else 0))
                for key, events in self._selector.select(timeout)]


if sys.platform == "linux":
    import select

    class EpollPoller:
        """epoll itself: `selectors` wraps every wait in bookkeeping that costs ~0.5 µs, twice per relayed
        round trip."""

        def __init__(self) -> None:
            self._epoll = select.epoll()
            self._watched: dict[int, int] = {}
            # epoll's own method, no Python frame around it (a timeout of None waits without end, as here).
            self.wait: Callable[[float | None], list[tuple[int, int]]] = self._epoll.poll

        def watch(self, fd: int, events: int) -> None:
            """Wait for `events` (READABLE | WRITABLE) on `fd` from now on; 0 to stop watching it."""
            before = self._watched.get(fd)
            if before == events or (before is None and not events):
                return
            if not events:
                del self._watched[fd]
                self._epoll.unregister(fd)
            elif before is None:
                self._watched[fd] = events
                self._epoll.register(fd, events)
            else:
                self._watched[fd] = events
                self._epoll.modify(fd, events)


class _Wakeup:
    """A non-blocking descriptor pair the selector waits on, written to wake it: a pipe, or on Windows (whose
    select() takes only sockets) a socket pair."""

    def __init__(self) -> None:
        if sys.platform == "win32":
            import socket

            self._sockets = socket.socketpair()
            for sock in self._sockets:
                sock.setblocking(False)
            self.read_fd, self.write_fd = (sock.fileno() for sock in self._sockets)
        else:
            self.read_fd, self.write_fd = os.pipe()
            os.set_blocking(self.read_fd, False)
            os.set_blocking(self.write_fd, False)

    def wake(self) -> None:
        try:
            if sys.platform == "win32":
                self._sockets[1].send(b"\0")
            else:
                os.write(self.write_fd, b"\0")
        except OSError:  # full: a wake-up is pending anyway
            pass

    def drain(self) -> None:
        try:
            if sys.platform == "win32":
                self._sockets[0].recv(4096)
            else:
                os.read(self.read_fd, 4096)
        except OSError:
            pass

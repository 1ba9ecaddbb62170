"""What bounds the run service: run slots (a FIFO queue with a time-out in front) and runs started per key."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from mcp_bridge.agent.errors import ServiceError

_WINDOW_S = 60.0


class Slots:
    """`size` runs at once; up to `max_queued` more wait in arrival order, each at most `timeout_s`."""

    def __init__(self, size: int, max_queued: int, timeout_s: float, make_room: Callable[[], None]) -> None:
        self.size = size
        self._free = size
        self._max_queued = max_queued
        self._timeout_s = timeout_s
        self._make_room = make_room
        """Asked, when a run must wait, to free a slot if it can (by closing a resting session)."""
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def check(self) -> None:
        """Refuse at once, rather than queue, when the queue is full."""
        if self._free <= 0 and len(self._waiting) >= self._max_queued:
            raise ServiceError("busy", f"busy: {self.size} runs are active and {len(self._waiting)} are queued "
                               "(limits [agent] max_concurrent, max_queued); try again later or abort a run "
                               "(`compass-bridge runs abort ID`)")

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        self._make_room()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._timeout_s)
        except TimeoutError:
            if waiter.done():  # the slot was handed over as the time ran out: keep it
                return
            self._waiting.remove(waiter)
            raise ServiceError("busy", f"busy: no run slot became free within {self._timeout_s:g} s "
                               "([agent] queue_timeout_s); try again later") from None
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.done():
                self.release()
            raise

    def release(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self._free += 1


class RateLimit:
    """At most `per_minute` starts per key name in any sliding minute."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._started: dict[str, deque[float]] = {}

    def check(self, key_name: str) -> None:
        now = time.monotonic()
        window = self._started.setdefault(key_name, deque())
        while window and window[0] <= now - _WINDOW_S:
            window.popleft()
        if len(window) >= self._per_minute:
            retry = round(window[0] + _WINDOW_S - now, 1)
            raise ServiceError("rate_limited", f"busy: the key '{key_name}' started {len(window)} runs or "
                               f"follow-ups in the last minute (limit [agent] runs_per_minute = {self._per_minute}); "
                               f"try again in {retry} s", retry_after=retry)
        window.append(now)

"""Waiting for events that another task or process brings about."""

from __future__ import annotations

import anyio


class Occurrences:
    """Counts an event as it happens (`note`) and lets a test wait for the next one (`next`)."""

    def __init__(self, limit_s: float) -> None:
        self.count = 0
        self._limit_s = limit_s  # a hang guard only
        self._event = anyio.Event()

    def note(self) -> None:
        self.count += 1
        self._event.set()

    async def next(self) -> None:
        """Wait until the event has happened since the previous `next` (at once if it already has)."""
        with anyio.fail_after(self._limit_s):
            await self._event.wait()
        self._event = anyio.Event()

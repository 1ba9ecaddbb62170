"""The event-loop thread: where coroutine tools and sources run, started the first time one needs it.

`serve` answers on plain threads (`mcp_bridge.protocol.frontend`). Work that waits on the network or on
child processes — browser and Compass tools, run_command, the sources' background connections — is written
as coroutines, and runs here: one asyncio event loop on one daemon thread per process. The loop is started
lazily, so a server that only lists tools and reads files never imports asyncio (~25 ms and ~5 MiB per
process; docs/BENCHMARKS.md has the figures).

Two ways in: `run()` blocks the calling (worker) thread until the coroutine is done, and cancels it when the
call's `Cancellation` is set; `start()` runs a background coroutine for the rest of the process's life.
`close()` cancels whatever still runs and stops the thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from mcp_bridge.tools.base import Cancellation

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSE_TIMEOUT_S = 5.0
"""How long cancelled coroutines may take to unwind (close connections, kill children) at shut-down."""


class Cancelled(Exception):
    """The coroutine was cancelled: its call's `Cancellation` was set, or the runtime closed."""


class AsyncRuntime:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        """Touched only on the loop's thread."""

    @property
    def started(self) -> bool:
        return self._loop is not None

    def run(self, work: Awaitable[T], cancelled: Cancellation) -> T:
        """Run `work` on the loop and wait for its result; `Cancelled` if `cancelled` is set first."""
        import asyncio
        import concurrent.futures

        try:
            loop = self._started()
        except Cancelled:
            if isinstance(work, Coroutine):
                work.close()  # never to run: say so quietly rather than warn that it was never awaited
            raise
        future = asyncio.run_coroutine_threadsafe(_awaited(work), loop)
        cancelled.on_cancel(future.cancel)  # cancels the task in the loop, and wakes us with CancelledError
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise Cancelled from None

    def start(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` in the background until it returns or the runtime closes."""
        loop = self._started()

        def create() -> None:
            # The loop keeps only weak references to its tasks: hold this one until it is done.
            task = loop.create_task(work, name=name)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        loop.call_soon_threadsafe(create)

    def close(self) -> None:
        """Cancel everything still running, give it `CLOSE_TIMEOUT_S` to unwind, and stop the thread."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        import asyncio

        done = asyncio.run_coroutine_threadsafe(_cancel_all(), loop)
        try:
            done.result(CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("work on the event loop did not stop within %g s of being cancelled", CLOSE_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CLOSE_TIMEOUT_S)

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise Cancelled("the server is stopping")
            if self._loop is None:
                import asyncio

                loop = asyncio.new_event_loop()
                ready = threading.Event()
                self._thread = threading.Thread(target=_serve_loop, args=(loop, ready), name="event-loop",
                                                daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop


def _serve_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    import asyncio

    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    try:
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


async def _awaited(work: Awaitable[T]) -> T:
    return await work


async def _cancel_all() -> None:
    import asyncio

    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, Exception) and not isinstance(outcome, asyncio.CancelledError):
            log.warning("background work ended with %s: %s", type(outcome).__name__, outcome)

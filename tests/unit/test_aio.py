"""The event-loop thread: started only when a coroutine must run, cancelled calls unwind, close stops everything."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

from mcp_bridge.aio import AsyncRuntime, Cancelled
from mcp_bridge.tools.base import Cancellation

GUARD_S = 10.0
"""A hang guard only: every wait below ends on an event."""


def test_the_loop_starts_with_the_first_coroutine_and_answers_on_its_own_thread() -> None:
    runtime = AsyncRuntime()
    assert not runtime.started

    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    try:
        assert runtime.run(where(), Cancellation()) == "event-loop"
        assert runtime.started
    finally:
        runtime.close()


def test_a_cancelled_call_unwinds_its_coroutine_and_raises_cancelled() -> None:
    runtime = AsyncRuntime()
    started, unwound = threading.Event(), threading.Event()
    cancelled = Cancellation()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            unwound.set()

    def cancel_once_started() -> None:
        assert started.wait(GUARD_S)
        cancelled.set()

    canceller = threading.Thread(target=cancel_once_started)
    canceller.start()
    try:
        with pytest.raises(Cancelled):
            runtime.run(forever(), cancelled)
        assert unwound.wait(GUARD_S)
    finally:
        canceller.join(GUARD_S)
        runtime.close()


def test_close_cancels_background_work_and_later_calls_are_refused_quietly() -> None:
    runtime = AsyncRuntime()
    running, unwound = threading.Event(), threading.Event()

    async def background() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        finally:
            unwound.set()

    runtime.start(background(), name="test background")
    assert running.wait(GUARD_S)
    runtime.close()
    assert unwound.is_set()  # close() returns once the cancelled work has unwound

    async def late() -> None:
        raise AssertionError("never runs")

    refused = late()
    with pytest.raises(Cancelled):
        runtime.run(refused, Cancellation())
    assert inspect.getcoroutinestate(refused) == "CORO_CLOSED"  # so nothing warns that it was never awaited

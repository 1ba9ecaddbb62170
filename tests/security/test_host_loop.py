"""The native host's event loop keeps serving whatever a callback does (native_host/loop.py)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

import pytest

from native_host import loop as loop_module
from native_host.loop import SelectLoop, SelectorsPoller

POLLERS = ["selectors", *(["epoll"] if sys.platform.startswith("linux") else [])]


@pytest.fixture(params=POLLERS)
def make_loop(request: pytest.FixtureRequest) -> Callable[[Callable[[str, BaseException], None]], SelectLoop]:
    """The loop on each way of waiting the platform has: epoll on Linux, and `selectors` (what macOS uses)."""
    def make(on_error: Callable[[str, BaseException], None]) -> SelectLoop:
        if sys.platform == "linux" and request.param == "epoll":
            return SelectLoop(on_error, loop_module.EpollPoller())
        return SelectLoop(on_error, SelectorsPoller())

    return make


def fail(where: str, exc: BaseException) -> None:
    pytest.fail(f"{where}: {exc}")


Make = Callable[[Callable[[str, BaseException], None]], SelectLoop]


def test_a_failing_callback_is_reported_and_the_loop_goes_on(make_loop: Make) -> None:
    errors: list[tuple[str, BaseException]] = []
    loop = make_loop(lambda where, exc: errors.append((where, exc)))
    left, right = socket.socketpair()
    served: list[bytes] = []

    def bad() -> None:
        raise RuntimeError("a bug in one handler")

    def readable() -> None:
        served.append(left.recv(100))
        if len(served) == 2:
            loop.stop()

    loop.call_later(0, bad)
    loop.add_reader(left.fileno(), readable)
    right.send(b"one")
    loop.call_later(0.01, right.send, b"two")
    loop.run_forever()
    assert served == [b"one", b"two"]
    assert [(type(exc), str(exc)) for _, exc in errors] == [(RuntimeError, "a bug in one handler")]
    assert "bad" in errors[0][0]
    left.close()
    right.close()


def test_calls_from_other_threads_wake_a_waiting_loop(make_loop: Make) -> None:
    loop = make_loop(fail)
    seen: list[str] = []

    def from_thread() -> None:
        loop.call_soon_threadsafe(seen.append, threading.current_thread().name)
        loop.call_soon_threadsafe(loop.stop)

    # Nothing else to wait for: without the wake-up the loop would sleep for ever, and the test would hang.
    threading.Thread(target=from_thread, name="worker").start()
    loop.run_forever()
    assert seen == ["worker"]


def test_timers_run_in_order_and_cancelled_ones_do_not(make_loop: Make) -> None:
    loop = make_loop(fail)
    order: list[int] = []
    loop.call_later(0.03, order.append, 3)
    loop.call_later(0.01, order.append, 1)
    loop.call_later(0.02, order.append, 2).cancel()
    loop.call_later(0.04, loop.stop)
    loop.run_forever()
    assert order == [1, 3]


def test_a_signal_reaches_its_handler_while_the_loop_waits(make_loop: Make) -> None:
    if sys.platform == "win32":
        pytest.skip("POSIX signals")
    loop = make_loop(fail)
    got: list[str] = []

    def on_usr1() -> None:
        got.append("usr1")
        loop.stop()

    previous = signal.getsignal(signal.SIGUSR1)
    try:
        loop.add_signal_handler(signal.SIGUSR1, on_usr1)
        threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        loop.run_forever()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.set_wakeup_fd(-1)
    assert got == ["usr1"]


def test_write_readiness_and_hang_up_reach_their_callbacks(make_loop: Make) -> None:
    """A writer is called while the socket has room and not after it is removed; the peer hanging up wakes the
    reader, whose read then finds the end."""
    loop = make_loop(fail)
    left, right = socket.socketpair()
    left.setblocking(False)
    seen: list[str] = []

    def writable() -> None:
        seen.append("writable")
        loop.remove_writer(left.fileno())
        right.close()

    def readable() -> None:
        seen.append(f"read {left.recv(10)!r}")
        loop.remove_reader(left.fileno())
        loop.stop()

    loop.add_writer(left.fileno(), writable)
    loop.add_reader(left.fileno(), readable)
    loop.run_forever()
    assert seen == ["writable", "read b''"]
    left.close()

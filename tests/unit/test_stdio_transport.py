"""The stdio transport's two bounds: lines in, and bytes queued for a client that does not read."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import pytest

from mcp_bridge import stdio_transport
from mcp_bridge.stdio_transport import StdioTransport

GUARD_S = 10.0
"""A hang guard only: every wait below ends on an event."""


class Pipe:
    """A stdout whose writes block until the test lets them through, and a stdin fed by the test."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.writing = threading.Event()
        self.drain = threading.Event()
        self.chunks: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.broken = False

    def read(self) -> bytes:
        return self.chunks.get(timeout=GUARD_S)

    def write(self, data: bytes) -> None:
        self.writing.set()
        if self.broken:
            raise BrokenPipeError("client gone")
        assert self.drain.wait(GUARD_S)
        self.written.append(data)


def in_thread(work: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_senders_wait_while_the_client_does_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdio_transport, "_QUEUED_BYTES", 100)
    pipe = Pipe()
    transport = StdioTransport(pipe.read, pipe.write)
    first = in_thread(lambda: transport.send(b"a" * 60))
    assert pipe.writing.wait(GUARD_S)  # the first sender writes itself, and is blocked on the pipe
    transport.send(b"b" * 60)  # returns at once: queued behind it (60 of 100 bytes)
    blocked = in_thread(lambda: transport.send(b"c" * 10))
    blocked.join(0.2)
    assert blocked.is_alive()  # over the budget: the sender waits for the client
    pipe.drain.set()
    blocked.join(GUARD_S)
    first.join(GUARD_S)
    transport.close()
    # The writer that was blocked wrote what queued meanwhile, in one write.
    assert pipe.written == [b"a" * 60, b"b" * 60 + b"c" * 10] or pipe.written == [b"a" * 60, b"b" * 60, b"c" * 10]
    assert not first.is_alive() and not blocked.is_alive()


def test_the_first_sender_writes_without_a_hand_off() -> None:
    pipe = Pipe()
    pipe.drain.set()
    writers: list[str] = []

    def record(data: bytes) -> None:
        writers.append(threading.current_thread().name)
        pipe.write(data)

    transport = StdioTransport(pipe.read, record)
    transport.send(b"answer\n")
    assert pipe.written == [b"answer\n"] and writers == [threading.current_thread().name]


def test_a_closed_stdout_drops_answers_without_blocking() -> None:
    pipe = Pipe()
    pipe.broken = True
    transport = StdioTransport(pipe.read, pipe.write)
    transport.send(b"lost\n")
    assert pipe.writing.is_set()
    for _ in range(10):
        transport.send(b"x" * 1_000_000)  # returns at once: nothing can reach the client
    transport.close(timeout=1)
    assert pipe.written == []


def test_close_gives_up_on_a_client_that_never_reads() -> None:
    pipe = Pipe()
    transport = StdioTransport(pipe.read, pipe.write)
    stuck = in_thread(lambda: transport.send(b"never read\n"))
    assert pipe.writing.wait(GUARD_S)
    transport.close(timeout=0.1)  # returns: the exit is not held up by a client that stopped reading
    assert stuck.is_alive()
    pipe.drain.set()
    stuck.join(GUARD_S)


def test_lines_are_split_and_the_last_one_needs_no_newline() -> None:
    pipe = Pipe()
    transport = StdioTransport(pipe.read, pipe.write)
    for chunk in (b'{"a":', b' 1}\n\n  \n{"b": 2}\n{"c"', b": 3}", b""):
        pipe.chunks.put(chunk)
    received = [transport.receive() for _ in range(4)]
    assert received == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}', None]
    transport.close()

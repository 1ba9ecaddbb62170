"""The real bridge (front end, catalog, pipeline, gate, key store, usage log) served in memory.

`running_bridge` serves a `BridgeServer` over `MemoryTransport` on a thread, as `serve` does on its main
thread; `RawClient` is an independent standard-library client that speaks both eras line by line, in the
test's event loop; `sdk_transport` lets the official SDK `Client` (the test oracle) drive the same in-memory
server in legacy or modern mode. Tools and sources a test defines run on the server's own threads or event
loop, so they are released with `threading.Event`s (`until` waits for one from a coroutine).
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage

from mcp_bridge.aio import AsyncRuntime
from mcp_bridge.gate import Gate
from mcp_bridge.keys import KeyStore
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.paths import state_paths
from mcp_bridge.protocol import wire
from mcp_bridge.protocol.frontend import Frontend
from mcp_bridge.scopes import parse_scopes
from mcp_bridge.server import BridgeServer
from mcp_bridge.tools.base import Resource, Tool, ToolSource
from mcp_bridge.usage import UsageLog

MODERN = "2026-07-28"
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
GUARD_S = 10.0
"""A hang guard only: every wait below ends on a message."""


async def until(event: threading.Event) -> None:
    """Wait in a coroutine (on any loop) until `event` is set; cancellable, unlike a thread blocked on it."""
    while not event.is_set():
        await asyncio.sleep(0.005)


class MemoryTransport:
    """The front end's transport, over two queues: lines in (None: end of input), encoded messages out to
    the test's event loop (the loop this is made in)."""

    def __init__(self) -> None:
        self.incoming: queue.SimpleQueue[bytes | wire.Malformed | None] = queue.SimpleQueue()
        self.outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def receive(self) -> bytes | wire.Malformed | None:
        return self.incoming.get()

    def send(self, data: bytes) -> None:
        self._loop.call_soon_threadsafe(self.outgoing.put_nowait, data)


class ChangingSource:
    """A tool source whose tools a test sets; `run()` blocks until `release` is set (a slow Compass)."""

    name = "changing"

    def __init__(self) -> None:
        self._tools: tuple[Tool, ...] = ()
        self._subscribers: list[Callable[[], None]] = []
        self.release = threading.Event()
        self.running = threading.Event()

    def tools(self) -> Sequence[Tool]:
        return self._tools

    def resources(self) -> Sequence[Resource]:
        return ()

    def status(self) -> dict[str, Any]:
        return {"tools": len(self._tools)}

    def subscribe(self, on_change: Callable[[], None]) -> None:
        self._subscribers.append(on_change)

    def needs_running(self) -> bool:
        return True

    async def run(self) -> None:
        self.running.set()
        await until(self.release)

    def close(self) -> None:
        return None

    def set_tools(self, tools: Sequence[Tool]) -> None:
        self._tools = tuple(tools)
        for notify in self._subscribers:
            notify()


@dataclass
class Bridge:
    server: BridgeServer
    transport: MemoryTransport
    usage: UsageLog
    home: Path
    raw: RawClient = field(init=False)

    def __post_init__(self) -> None:
        self.raw = RawClient(self.transport)


@asynccontextmanager
async def running_bridge(home: Path, root: Path, sources: Sequence[ToolSource], *, scopes: str | None = "admin",
                         default_scopes: str = "read") -> AsyncIterator[Bridge]:
    """The bridge with a key of `scopes` (None: no key, so `default_scopes` apply), served until the block ends;
    then input ends and the front end finishes what is running, as at stdin EOF. The usage log is complete
    once the block has ended (read it with `tests.support.bridge.usage_rows`)."""
    paths = state_paths().ensure()
    keys = KeyStore.open(paths)
    usage = UsageLog(paths.database)
    key = keys.create("agent", parse_scopes(scopes))[1] if scopes else None
    server = BridgeServer(Gate(keys, key, parse_scopes(default_scopes)), usage, PathPolicy([root]), sources,
                          paths, AsyncRuntime())
    transport = MemoryTransport()
    try:
        with server.catalog.running(server.runtime):
            serving = threading.Thread(target=Frontend(server, transport).serve, name="frontend")
            serving.start()
            try:
                yield Bridge(server, transport, usage, home)
            finally:
                transport.incoming.put(None)
                await asyncio.to_thread(serving.join)
    finally:
        usage.close()
        keys.close()


class RawClient:
    """An independent client: JSON-RPC lines in, dicts out, nothing from the SDK."""

    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport
        self._ids = iter(range(1, 1_000_000))
        self.notifications: list[dict[str, Any]] = []
        self._answers: dict[Any, dict[str, Any]] = {}

    def send_line(self, line: bytes | str) -> None:
        self._transport.incoming.put(line.encode() if isinstance(line, str) else line)

    def end_input(self) -> None:
        """What the server sees when the client closes stdin."""
        self._transport.incoming.put(None)

    def answered(self, request_id: Any) -> bool:
        """Whether an answer to `request_id` has been received (and not yet taken)."""
        return request_id in self._answers

    def send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps(message))

    def request(self, method: str, params: dict[str, Any] | None = None, *, modern: bool = False) -> int:
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if modern:
            params = {**(params or {}), "_meta": {**ENVELOPE, **(params or {}).get("_meta", {})}}
        if params is not None:
            message["params"] = params
        self.send(message)
        return request_id

    async def next_message(self) -> dict[str, Any]:
        with anyio.fail_after(GUARD_S):
            message: dict[str, Any] = json.loads(await self._transport.outgoing.get())
        return message

    async def answer(self, request_id: Any) -> dict[str, Any]:
        """The response to `request_id`; notifications and other responses met on the way are kept."""
        while request_id not in self._answers:
            message = await self.next_message()
            if "id" in message and ("result" in message or "error" in message):
                self._answers[message["id"]] = message
            else:
                self.notifications.append(message)
        return self._answers.pop(request_id)

    async def call(self, method: str, params: dict[str, Any] | None = None, *, modern: bool = False) -> dict[str, Any]:
        return await self.answer(self.request(method, params, modern=modern))

    async def initialize(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = await self.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": capabilities or {},
                                                "clientInfo": {"name": "raw-test-client", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    async def notification(self, method: str) -> dict[str, Any]:
        """The next notification of `method` (earlier ones kept are taken first)."""
        while True:
            for kept in self.notifications:
                if kept.get("method") == method:
                    self.notifications.remove(kept)
                    return kept
            message = await self.next_message()
            if "id" in message and ("result" in message or "error" in message):
                self._answers[message["id"]] = message
            else:
                self.notifications.append(message)


@asynccontextmanager
async def sdk_transport(transport: MemoryTransport) -> AsyncIterator[tuple[Any, Any]]:
    """(read, write) streams of SDK `SessionMessage`s over the in-memory front end, as the SDK's stdio does."""
    to_client, client_reads = anyio.create_memory_object_stream[SessionMessage | Exception](64)
    client_writes, from_client = anyio.create_memory_object_stream[SessionMessage](64)

    async def pump_out() -> None:
        while True:
            data = await transport.outgoing.get()
            await to_client.send(SessionMessage(types.jsonrpc_message_adapter.validate_json(data, by_name=False)))

    async def pump_in() -> None:
        async for outgoing in from_client:
            transport.incoming.put(outgoing.message.model_dump_json(by_alias=True, exclude_unset=True).encode())

    async with to_client, client_reads, client_writes, from_client, anyio.create_task_group() as tg:
        tg.start_soon(pump_out)
        tg.start_soon(pump_in)
        yield client_reads, client_writes
        tg.cancel_scope.cancel()

"""A scripted browser extension on a real native host's stdio, for tests of the browser tools.

The host under test (`python -m native_host`) is started the way Chrome starts it; this class plays the
extension: it sends `hello` with a catalog and answers each `tool_request` with a handler. The framing is
written out here rather than imported, so a bug in `native_host.framing` cannot hide itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import sys
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from mcp_bridge.extension_id import REFERENCE_EXTENSION_ID
from native_host.client import discover_hosts

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
"""Takes the whole `tool_request` (id, tool, args, client) and returns the result."""


class FakeToolError(Exception):
    """Raised by a handler: answered as `tool_response {error: {code: tool_error, message}}`."""


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG of the given size, all white."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff" * 3 * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def catalog_entry(name: str, scope: str | None, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "description": f"fake {name}",
                             "inputSchema": {"type": "object", "properties": properties or {}}}
    if scope is not None:
        entry["scope"] = scope
    return entry


DEFAULT_CATALOG = [
    catalog_entry("tabs_list", "read"),
    catalog_entry("get_page_text", "read", {"tabId": {"type": "integer"}}),
    catalog_entry("screenshot", "read", {"tabId": {"type": "integer"}}),
    catalog_entry("click", "write", {"selector": {"type": "string"}, "tabId": {"type": "integer"}}),
    catalog_entry("evaluate", "admin", {"expression": {"type": "string"}}),
    catalog_entry("hang", "read"),
    catalog_entry("mystery", "root"),
]


class ScriptedExtension:
    """One browser: a native host process plus the scripted extension on its stdin/stdout."""

    def __init__(self, home: Path, *, tabs: list[dict[str, Any]], name: str = "fake-extension",
                 version: str = "1.0", catalog: list[dict[str, Any]] | None = None) -> None:
        self.home = home
        self.tabs = tabs
        self.name = name
        self.version = version
        self.catalog = list(DEFAULT_CATALOG if catalog is None else catalog)
        self.requests: list[dict[str, Any]] = []
        self.cancels: list[Any] = []
        self._hanging: dict[Any, asyncio.Future[None]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self.handlers: dict[str, Handler] = {
            "tabs_list": self._tabs_list,
            "get_page_text": self._page_text,
            "screenshot": self._screenshot,
            "click": self._click,
            "evaluate": self._evaluate,
            "hang": self._hang,
        }

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self) -> ScriptedExtension:
        env = {**os.environ, "COMPASS_BRIDGE_HOME": str(self.home)}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "native_host", f"chrome-extension://{REFERENCE_EXTENSION_ID}/",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        self._reader = asyncio.create_task(self._read_loop())
        await self.send_hello()
        await until(lambda: any(h.pid == self.pid for h in discover_hosts(self.home / "run")))
        return self

    async def send_hello(self) -> None:
        await self._send({"type": "hello", "extension": {"name": self.name, "version": self.version},
                          "tools": self.catalog})

    async def stop(self) -> None:
        """Close the port as Chrome does (EOF on the host's stdin) and wait for the host to exit."""
        if self._process is None:
            return
        if self._process.stdin is not None and not self._process.stdin.is_closing():
            self._process.stdin.close()
        await self._process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(self._reader, return_exceptions=True)

    async def kill(self) -> None:
        """The host dies without warning (crash, `kill -9`)."""
        assert self._process is not None
        self._process.kill()
        await self.stop()

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        data = json.dumps(message, separators=(",", ":")).encode()
        self._process.stdin.write(struct.pack("<I", len(data)) + data)
        await self._process.stdin.drain()

    async def _read_loop(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        while True:
            try:
                header = await stdout.readexactly(4)
                message = json.loads(await stdout.readexactly(struct.unpack("<I", header)[0]))
            except asyncio.IncompleteReadError:
                return
            if message.get("type") == "tool_request":
                self.requests.append(message)
                task = asyncio.create_task(self._answer(message))
                self._answering.add(task)  # the loop keeps only a weak reference
                task.add_done_callback(self._answering.discard)
            elif message.get("type") == "tool_cancel":
                self.cancels.append(message["id"])
                hanging = self._hanging.pop(message["id"], None)
                if hanging is not None:
                    hanging.cancel()

    async def _answer(self, request: dict[str, Any]) -> None:
        handler = self.handlers.get(request["tool"])
        reply: dict[str, Any] = {"type": "tool_response", "id": request["id"]}
        try:
            if handler is None:
                raise FakeToolError(f"unknown tool {request['tool']}")
            reply["result"] = await handler(request)
        except FakeToolError as exc:
            reply["error"] = {"code": "tool_error", "message": str(exc)}
        except asyncio.CancelledError:
            return  # cancelled by the host: the reference extension answers nothing more either
        # A host that is gone has nobody waiting for the reply.
        with anyio.move_on_after(5), contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self._send(reply)

    # -- the scripted tools --------------------------------------------------------------------

    def _tab(self, request: dict[str, Any]) -> dict[str, Any]:
        tab_id = request["args"].get("tabId")
        for tab in self.tabs:
            if (tab_id is None and tab.get("active")) or tab["id"] == tab_id:
                return tab
        raise FakeToolError(f"no tab with id {tab_id}")

    async def _tabs_list(self, request: dict[str, Any]) -> Any:
        return {"tabs": self.tabs}

    async def _page_text(self, request: dict[str, Any]) -> Any:
        tab = self._tab(request)
        return {"tabId": tab["id"], "text": f"text of {tab['title']} in {self.name}"}

    async def _screenshot(self, request: dict[str, Any]) -> Any:
        return {"tabId": self._tab(request)["id"], "data": base64.b64encode(tiny_png()).decode(),
                "mimeType": "image/png"}

    async def _click(self, request: dict[str, Any]) -> Any:
        raise FakeToolError(f"no element matches {request['args'].get('selector')!r}")

    async def _evaluate(self, request: dict[str, Any]) -> Any:
        return {"value": request["args"].get("expression")}

    async def _hang(self, request: dict[str, Any]) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hanging[request["id"]] = future
        await future


async def until(condition: Callable[[], bool], *, limit_s: float = 20.0) -> None:
    """Wait for a condition that another process or task brings about (the limit only guards a hang)."""
    with anyio.fail_after(limit_s):
        while not condition():
            await anyio.sleep(0.02)

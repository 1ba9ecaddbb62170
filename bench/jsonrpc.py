"""A minimal MCP client over stdio (newline-delimited JSON-RPC), the same code for every server measured.

Blocking reads and writes on the pipes, no SDK, no threads: the client's own cost is small and identical for our
server and the peer, so the difference between their figures is the servers'.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any

PROTOCOL_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
               "io.modelcontextprotocol/clientCapabilities": {}}
"""The envelope every 2026-07-28 request carries in `params._meta` (that era has no handshake)."""


class RpcError(Exception):
    pass


class StdioRpc:
    def __init__(self, proc: subprocess.Popen[bytes], name: str, *, modern: bool = False) -> None:
        """`modern`: speak the stateless 2026-07-28 era (every request enveloped, `server/discover` instead of
        the `initialize` handshake); otherwise the handshake era, 2025-11-25."""
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.name = name
        self.modern = modern
        self._out = proc.stdin.fileno()
        self._in = proc.stdout.fileno()
        self._buf = bytearray()
        self._chunk = bytearray(1 << 20)  # reused: a fresh 1 MiB bytes per read costs an mmap and munmap
        self._view = memoryview(self._chunk)
        self._next_id = 0

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._out, view) :]

    def send(self, message: dict[str, Any]) -> None:
        self._write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def _line(self, deadline: float) -> bytes:
        if sys.platform == "win32":
            raise NotImplementedError("select() on a pipe and os.readv are POSIX's")
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise RpcError(f"{self.name}: no answer in time")
            got = os.readv(self._in, [self._chunk])
            if not got:
                raise RpcError(f"{self.name}: the server closed stdout (exit status {self.proc.poll()})")
            self._buf += self._view[:got]

    def request(self, method: str, params: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Send a request and return its `result`; notifications are skipped and server requests refused."""
        self._next_id += 1
        request_id = self._next_id
        if self.modern:
            params = {**params, "_meta": {**params.get("_meta", {}), **MODERN_META}}
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._line(deadline))
            if "method" in message:
                if "id" in message:  # a request from the server (we declare no capabilities, so none expected)
                    self.send({"jsonrpc": "2.0", "id": message["id"],
                               "error": {"code": -32601, "message": "not supported by the bench client"}})
                continue
            if message.get("id") != request_id:
                continue
            if "error" in message:
                raise RpcError(f"{self.name}: {method} failed: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result

    def initialize(self, timeout: float = 60.0) -> dict[str, Any]:
        """The handshake (`initialize`, then `notifications/initialized`); in the modern era `server/discover`."""
        if self.modern:
            return self.request("server/discover", {}, timeout)
        result = self.request("initialize", {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "compass-bridge-bench", "version": "1"},
        }, timeout)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def call_tool(self, name: str, arguments: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        result = self.request("tools/call", {"name": name, "arguments": arguments}, timeout)
        if result.get("isError"):
            raise RpcError(f"{self.name}: {name} returned an error: {tool_text(result)[:500]}")
        return result


def tool_text(result: dict[str, Any]) -> str:
    return "\n".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")

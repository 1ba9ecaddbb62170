"""An independent MCP client over a real `compass-bridge serve` process: JSON lines, the standard library only.

Speaks either era: `legacy` opens with `initialize`, `modern` sends the 2026-07-28 envelope on every request.
A reader thread collects stdout lines, so a wait can end on a message or on a hang guard.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "stdlib-test-client", "version": "1"}}
GUARD_S = 30.0
"""A hang guard only: waits end on a message."""


class StdioClient:
    def __init__(self, process: subprocess.Popen[bytes], era: str) -> None:
        self.process = process
        self.era = era
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._ids = iter(range(1, 1_000_000))
        self._kept: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def send_line(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line if line.endswith(b"\n") else line + b"\n")
        self.process.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps(message).encode())

    def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        request_id = next(self._ids)
        if self.era == "modern":
            params = {**(params or {}), "_meta": MODERN_META}
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return request_id

    def next_message(self) -> dict[str, Any]:
        line = self._lines.get(timeout=GUARD_S)
        if not line:
            raise EOFError("the server closed stdout")
        message: dict[str, Any] = json.loads(line)
        return message

    def answer(self, request_id: Any) -> dict[str, Any]:
        for kept in self._kept:
            if kept.get("id") == request_id and "method" not in kept:
                self._kept.remove(kept)
                return kept
        while True:
            message = self.next_message()
            if message.get("id") == request_id and "method" not in message:
                return message
            self._kept.append(message)

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.answer(self.request(method, params))

    def open(self) -> None:
        """The era's opening: `initialize` + `initialized`, or `server/discover`."""
        if self.era == "legacy":
            opened = self.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                              "clientInfo": {"name": "stdlib-test-client", "version": "1"}})
            assert opened["result"]["protocolVersion"] == "2025-11-25", opened
            self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        else:
            opened = self.call("server/discover")
            assert opened["result"]["supportedVersions"] == ["2026-07-28"], opened

    def tool_names(self) -> set[str]:
        return {t["name"] for t in self.call("tools/list")["result"]["tools"]}

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call("tools/call", {"name": name, "arguments": arguments})["result"]
        return result

    def notification(self, method: str) -> dict[str, Any]:
        """The next notification of `method`, kept or still to come."""
        while True:
            for kept in self._kept:
                if kept.get("method") == method:
                    self._kept.remove(kept)
                    return kept
            self._kept.append(self.next_message())


@contextmanager
def serve_process(home: Path, era: str, *, roots: Sequence[Path] = (), key: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[StdioClient]:
    """`compass-bridge serve` with stderr in a file (`client.stderr_text()` after the block), stopped by pid."""
    args = [sys.executable, "-m", "mcp_bridge", "serve"]
    for root in roots:
        args += ["--root", str(root)]
    full_env = {**os.environ, "COMPASS_BRIDGE_HOME": str(home), **(env or {})}
    full_env.pop("COMPASS_BRIDGE_KEY", None)
    if key is not None:
        full_env["COMPASS_BRIDGE_KEY"] = key
    stderr_path = home / f"serve-{era}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=full_env)
    client = StdioClient(process, era)
    try:
        yield client
    finally:
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        try:
            process.wait(timeout=GUARD_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

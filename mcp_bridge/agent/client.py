"""The client every front end uses to reach the run service, starting it on demand.

`AgentClient.connect()` connects to the user's run service, starting `compass-bridge agent` (detached: it
outlives the front end, so runs survive a terminal or browser closing) when none is listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp_bridge.agent.server import MAX_LINE, socket_file
from mcp_bridge.childenv import for_engine
from mcp_bridge.paths import StatePaths
from native_host.runtime_dir import UnsafeRuntimeDir, ensure_private_dir

START_TIMEOUT_S = 20.0


class AgentError(Exception):
    def __init__(self, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra or {}


def spawn_service(paths: StatePaths) -> subprocess.Popen[bytes]:
    """Start the run service in its own session, its output in the log directory."""
    paths.ensure()
    log_file = open(paths.log_dir / "agent-service.out", "ab")  # noqa: SIM115 - handed to the child
    try:
        # It starts the engines, so it keeps their pass-through (childenv.for_engine) and no other secret.
        return subprocess.Popen([sys.executable, "-m", "mcp_bridge", "agent"], stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=log_file, start_new_session=True, close_fds=True,
                                env=for_engine())
    finally:
        log_file.close()


class AgentClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._next = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, paths: StatePaths, *, start: bool = True) -> AgentClient:
        if sys.platform == "win32":
            raise AgentError("unsupported", "agent runs need Unix sockets; this platform is not supported yet")
        path = socket_file(paths.run_dir)
        try:
            return await cls._open(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if not start:
                raise AgentError("not_running", "the run service is not running (it starts with the first "
                                 "`compass-bridge run`)") from None
        try:
            ensure_private_dir(paths.run_dir)
            proc = spawn_service(paths)
        except (UnsafeRuntimeDir, OSError) as exc:
            raise AgentError("not_running", f"cannot start the run service: {exc}") from None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
                return await cls._open(path)
            if proc.poll() not in (None, 0):
                break
        out = paths.log_dir / "agent-service.out"
        tail = out.read_text(errors="replace")[-1500:] if out.exists() else ""
        raise AgentError("not_running", f"the run service did not start; its output ({out}) ends with: {tail}")

    @classmethod
    async def _open(cls, path: Path) -> AgentClient:
        if sys.platform == "win32":
            raise FileNotFoundError(path)
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE * 4)
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            async for line in self._reader:
                message = json.loads(line)
                request_id = message.get("id") if "ok" in message else None
                future = self._replies.pop(request_id, None) if isinstance(request_id, int) else None
                if future is not None:
                    if not future.done():
                        future.set_result(message)
                else:
                    self._events.put_nowait(message)
        except (ConnectionError, ValueError):
            pass
        finally:
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(AgentError("disconnected", "the run service closed the connection"))
            self._events.put_nowait(None)

    async def request(self, op: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next] = future
        self._writer.write(json.dumps({"id": self._next, "op": op, **params}).encode() + b"\n")
        await self._writer.drain()
        reply = await future
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise AgentError(str(error.get("code")), str(error.get("message")),
                             {k: v for k, v in error.items() if k not in ("code", "message")})
        return reply

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

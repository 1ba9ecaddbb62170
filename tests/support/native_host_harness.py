"""A real native host process with a scripted browser on its stdio, and raw socket clients, for the host's tests.

Frames are written out here with `struct` rather than imported from `native_host.framing`, so a codec bug
cannot hide itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from native_host.client import HostAddress, HostClient, discover_hosts

REPO = Path(__file__).resolve().parents[2]
EXTENSION_ORIGIN = "chrome-extension://abcdefghijklmnopabcdefghijklmnop/"
WAIT_LIMIT_S = 20.0
"""How long `until` waits before declaring a hang; only a broken host ever gets near it."""


@contextlib.contextmanager
def short_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state home with a short path (set as COMPASS_BRIDGE_HOME): a Unix socket path may not exceed ~104 bytes,
    and pytest's tmp_path can."""
    path = Path(tempfile.mkdtemp(prefix="cb-"))
    monkeypatch.setenv("COMPASS_BRIDGE_HOME", str(path))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def running(home: Path, *args: str) -> AsyncIterator[Browser]:
    """A started host with its scripted browser (`args` go to the host), stopped afterwards whatever happens."""
    started = await Browser(home, *args).start()
    try:
        yield started
    finally:
        await started.stop()


def pack(message: Any, *, compact: bool = True) -> bytes:
    data = json.dumps(message, separators=(",", ":") if compact else None).encode()
    return struct.pack("<I", len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at end of stream."""
    try:
        header = await reader.readexactly(4)
        return json.loads(await reader.readexactly(struct.unpack("<I", header)[0]))
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return None


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for something another process or task brings about."""
    async with asyncio.timeout(WAIT_LIMIT_S):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


class Browser:
    """A host process started the way Chrome starts it, and the extension's side of its stdio.

    Tools: `echo` answers `{"echo": args, "client": <client info>}` after `args.delay` seconds; `sized` answers a
    result of `args.size` bytes of "x"; `loose` answers echo-style in non-compact JSON with the keys reordered
    (the host's general path); `fail` answers a tool_error; `hang` answers only when cancelled (like the reference
    extension); anything else is an unknown tool.
    """

    def __init__(self, home: Path, *args: str, hello: bool = True) -> None:
        self.home = home
        self.args = args
        self.send_hello = hello
        self.process: asyncio.subprocess.Process | None = None
        self.requests: list[dict[str, Any]] = []
        self.cancels: list[int] = []
        self.clients_updates: list[list[dict[str, Any]]] = []
        self.other: list[dict[str, Any]] = []
        self._hanging: dict[int, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self.stderr_path = home / f"host-stderr-{id(self)}.txt"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> Browser:
        env = {**os.environ, "COMPASS_BRIDGE_HOME": str(self.home)}
        with self.stderr_path.open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "native_host", EXTENSION_ORIGIN, *self.args,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env, cwd=REPO)
        self._reader = asyncio.create_task(self._read())
        if self.send_hello:
            await self.send({"type": "hello", "extension": {"name": "scripted", "version": "1.0"},
                             "tools": [{"name": "echo", "description": "echo", "scope": "read",
                                        "inputSchema": {"type": "object"}}]})
        return self

    async def send(self, message: Any, *, compact: bool = True) -> None:
        await self.send_raw(pack(message, compact=compact))

    async def send_raw(self, data: bytes) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while (message := await read_frame(self.process.stdout)) is not None:
            kind = message.get("type")
            if kind == "tool_request":
                self.requests.append(message)
                task = asyncio.create_task(self._answer(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif kind == "tool_cancel":
                self.cancels.append(message["id"])
                hanging = self._hanging.pop(message["id"], None)
                if hanging is not None and not hanging.done():
                    hanging.set_result(None)
            elif kind == "clients":
                self.clients_updates.append(message["clients"])
            else:
                self.other.append(message)

    async def _answer(self, request: dict[str, Any]) -> None:
        tool, args, request_id = request["tool"], request["args"], request["id"]
        reply: dict[str, Any] = {"type": "tool_response", "id": request_id}
        compact = True
        if tool in ("echo", "loose"):
            await asyncio.sleep(args.get("delay", 0))
            reply["result"] = {"echo": args, "client": request["client"]}
            if tool == "loose":
                reply = {"result": reply["result"], "id": request_id, "type": "tool_response"}
                compact = False
        elif tool == "sized":
            reply["result"] = "x" * args["size"]
        elif tool == "fail":
            reply["error"] = {"code": "tool_error", "message": f"failed on purpose: {args.get('why')}"}
        elif tool == "hang":
            hanging = asyncio.get_running_loop().create_future()
            self._hanging[request_id] = hanging
            await hanging
            reply["error"] = {"code": "cancelled", "message": "cancelled by the agent"}
        else:
            reply["error"] = {"code": "tool_error", "message": f"unknown tool {tool}"}
        # A host that has gone away has nobody waiting for the answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self.send(reply, compact=compact)

    def stop_reading(self, stopped: bool = True) -> None:
        """Stop (or resume) reading the host's stdout, as a browser busy elsewhere would: the pipe fills up."""
        assert self.process is not None
        # asyncio's Process offers no public way to pause reading one of its pipes; its transport does.
        pipe = self.process._transport.get_pipe_transport(1)  # type: ignore[attr-defined]
        pipe.pause_reading() if stopped else pipe.resume_reading()

    def close_stdin(self) -> None:
        """What Chrome does when the extension's port closes: EOF on the host's stdin."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()

    def kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()  # SIGKILL on POSIX

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def stop(self) -> None:
        """Leave nothing running: EOF, then SIGKILL if the host lingers."""
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                self.close_stdin()
            try:
                async with asyncio.timeout(5):
                    await self.process.wait()
            except TimeoutError:
                self.kill()
                await self.process.wait()
        for task in [*self._tasks, *([self._reader] if self._reader else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._reader] if self._reader else []), return_exceptions=True)
        stderr = self.stderr_path.read_text()
        if stderr:  # shown by pytest when the test fails
            print(f"host {self.pid} stderr:\n{stderr}")

    def log_text(self) -> str:
        path = self.home / "logs" / "native-host.log"
        return path.read_text() if path.exists() else ""


class RawClient:
    """A socket client that speaks frames by hand, for what a well-behaved HostClient never sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: Path, *, hello: bool = True) -> RawClient:
        if sys.platform == "win32":
            raise NotImplementedError("a raw client speaks to the host's Unix socket, and Windows hosts have none")
        reader, writer = await asyncio.open_unix_connection(str(path), limit=2**26)
        client = cls(reader, writer)
        if hello:
            await client.send({"type": "hello", "client": {"name": "raw", "version": "0", "pid": os.getpid()}})
            welcome = await client.receive()
            assert welcome["type"] == "welcome", welcome
        return client

    async def send(self, message: Any) -> None:
        await self.send_raw(pack(message))

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self) -> Any:
        async with asyncio.timeout(WAIT_LIMIT_S):
            return await read_frame(self.reader)

    async def read_one(self) -> Any:
        """The next message, or None at end of stream, however long it takes."""
        return await read_frame(self.reader)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def address_of(browser: Browser) -> HostAddress:
    """The browser's host as discovery finds it, once it is listening."""
    def mine() -> list[HostAddress]:
        run = browser.home / "run"
        return [a for a in discover_hosts(run) if a.pid == browser.pid] if run.exists() else []

    await until(lambda: bool(mine()), f"host {browser.pid} never appeared in the run dir")
    return mine()[0]


async def client_of(browser: Browser, name: str = "agent") -> HostClient:
    return await HostClient.connect(await address_of(browser), name=name, version="1.0")


def memory_peak_mib(pid: int) -> float:
    """The most resident memory the process has ever had (VmHWM, Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")

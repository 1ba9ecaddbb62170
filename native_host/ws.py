"""Clients over a loopback WebSocket, for Windows (no Unix sockets) and `--transport ws`.

A loopback port is open to every local user and to every web page the browser shows, so two gates stand in
front of the relay: a request carrying an `Origin` header (which browsers always send, and agents never do) is
refused during the handshake, and a client must then prove it can read `<pid>.ws.json` — a 0600 file in the
private run dir — by answering a random challenge with an HMAC of its secret. The secret never crosses the wire.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import os
from pathlib import Path

from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from native_host import PROTOCOL_VERSION
from native_host.framing import FROM_CLIENT_MAX
from native_host.host import ClientConn, Host
from native_host.protocol import UNAUTHORIZED, MalformedMessage, dumps, parse
from native_host.runtime_dir import ws_info_path

AUTH_TIMEOUT = 5.0
"""Seconds a new connection has to answer the challenge."""


def answer_challenge(secret: str, nonce: str) -> str:
    """HMAC-SHA256 of the nonce under the secret (both as UTF-8), in lowercase hex."""
    return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()


class WsListener:
    def __init__(self, server: Server, info_path: Path, port: int) -> None:
        self._server = server
        self._info_path = info_path
        self._port = port

    @property
    def address(self) -> str:
        return f"ws://127.0.0.1:{self._port}/ (details in {self._info_path})"

    async def aclose(self) -> None:
        self._info_path.unlink(missing_ok=True)
        # Connections stay open: the host still owes them their last replies.
        self._server.close(close_connections=False)


def _refuse_browsers(connection: ServerConnection, request: Request) -> Response | None:
    headers: Headers = request.headers
    if "Origin" in headers:
        return connection.respond(403, "Web pages may not connect to the compass-bridge native host.\n")
    return None


async def start_ws(host: Host, run_dir: Path) -> WsListener:
    secret = os.urandom(32).hex()

    async def handler(ws: ServerConnection) -> None:
        await _serve_client(host, ws, secret)

    server = await serve(
        handler, "127.0.0.1", 0, process_request=_refuse_browsers, compression=None, max_size=FROM_CLIENT_MAX,
        server_header=None, ping_interval=None, close_timeout=1,
    )
    port = next(iter(server.sockets)).getsockname()[1]
    info_path = ws_info_path(run_dir, os.getpid())
    _write_private(info_path, dumps({"port": port, "pid": os.getpid(), "secret": secret,
                                     "protocol": PROTOCOL_VERSION}))
    return WsListener(server, info_path, port)


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file that readers never see half-written."""
    partial = path.with_name(path.name + ".tmp")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out:
        out.write(data)
    partial.replace(path)


async def _serve_client(host: Host, ws: ServerConnection, secret: str) -> None:
    nonce = os.urandom(32).hex()
    await ws.send(json.dumps({"type": "challenge", "nonce": nonce}))
    try:
        async with asyncio.timeout(AUTH_TIMEOUT):
            hello = await ws.recv(decode=False)
        answer = parse(hello).get("auth")
    except (TimeoutError, ConnectionClosed, MalformedMessage):
        answer = None
    expected = answer_challenge(secret, nonce).encode()
    if not isinstance(answer, str) or not hmac.compare_digest(expected, answer.encode()):
        host.log("refusing a WebSocket client that did not answer the challenge")
        with contextlib.suppress(ConnectionClosed):  # it may have gone already
            await ws.send(json.dumps({"type": "error", "code": UNAUTHORIZED, "message": (
                "the first message must be hello with `auth`: the HMAC-SHA256 of the challenge nonce under the "
                "secret in the host's .ws.json file")}))
            await ws.close(1008, "unauthorized")
        return
    conn = WsConn(host, ws)
    host.client_connected(conn)
    try:
        host.client_frame(conn, hello)
        while True:
            await conn.may_read.wait()
            host.client_frame(conn, await ws.recv(decode=False))
    except ConnectionClosed:
        pass
    finally:
        host.client_gone(conn)
        conn.sender.stop()


class QueuedSender:
    """Sends frames over a WebSocket in order from a queue drained by one task, so callers never wait on a slow
    peer. The 4-byte length header is dropped: a WebSocket message has its own length, and carries text."""

    def __init__(self, ws: Connection) -> None:
        self._ws = ws
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._ready = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    data = self._queue.popleft()
                    self._queued -= len(data)
                    await self._ws.send(str(memoryview(data)[4:], "utf-8"))
                if self._closing:
                    await self._ws.close()
                    return
        except ConnectionClosed:
            pass

    def send(self, data: bytes) -> None:
        self._queue.append(data)
        self._queued += len(data)
        self._ready.set()

    def backlog(self) -> int:
        return self._queued + self._ws.transport.get_write_buffer_size()

    def close(self) -> None:
        """Send what is queued, then close the WebSocket."""
        self._closing = True
        self._ready.set()

    def abort(self) -> None:
        self._task.cancel()
        self._ws.transport.abort()

    def stop(self) -> None:
        """The connection is over: stop sending, unless close() is still flushing."""
        if not self._closing:
            self._task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.wait([self._task])


class WsConn(ClientConn):
    def __init__(self, host: Host, ws: ServerConnection) -> None:
        super().__init__(host)
        self.sender = QueuedSender(ws)
        self.may_read = asyncio.Event()
        self.may_read.set()

    def write(self, data: bytes) -> None:
        self.sender.send(data)

    def backlog(self) -> int:
        return self.sender.backlog()

    def pause_reading(self) -> None:
        self.may_read.clear()

    def resume_reading(self) -> None:
        self.may_read.set()

    def close(self) -> None:
        self.sender.close()

    def abort(self) -> None:
        self.sender.abort()

    async def wait_closed(self) -> None:
        await self.sender.wait_closed()

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
import time

from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from native_host import PROTOCOL_VERSION
from native_host.framing import FROM_CLIENT_MAX, KIB, Bytes, frame
from native_host.host import ClientConn, Host
from native_host.protocol import HOST_UNAVAILABLE, UNAUTHORIZED, MalformedMessage, dumps, parse
from native_host.runtime_dir import ws_info_path

AUTH_TIMEOUT = 5.0
"""Seconds a new connection has for the WebSocket handshake, and then again for answering the challenge."""
MAX_UNAUTHENTICATED = 16
"""Connections still proving they can read the secret, at once. They also count against MAX_CLIENTS."""
MAX_HELLO = 64 * KIB
"""The largest message accepted before authentication (a hello is a few hundred bytes)."""
MAX_QUEUE = 2
"""Messages the WebSocket library reads ahead of the host per connection (its own default is 16)."""
FAILURES_BURST = 5
"""Wrong or missing answers to the challenge accepted in a burst; afterwards one per FAILURE_INTERVAL seconds."""
FAILURE_INTERVAL = 2.0


def answer_challenge(secret: str, nonce: str) -> str:
    """HMAC-SHA256 of the nonce under the secret (both as UTF-8), in lowercase hex."""
    return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()


class FailureThrottle:
    """A token bucket of failed authentications: a burst of FAILURES_BURST, refilled one per FAILURE_INTERVAL.
    While it is empty, new connections are refused before any secret is checked, so guessing runs at a fixed slow
    rate whatever the attacker's speed."""

    def __init__(self) -> None:
        self._tokens = float(FAILURES_BURST)
        self._at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(FAILURES_BURST), self._tokens + (now - self._at) / FAILURE_INTERVAL)
        self._at = now

    def wait(self) -> float:
        """Seconds until a connection may try again; 0 if it may now."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) * FAILURE_INTERVAL

    def failed(self) -> None:
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)


class WsListener:
    def __init__(self, server: Server, info_path: str, port: int) -> None:
        self._server = server
        self._info_path = info_path
        self._port = port

    @property
    def address(self) -> str:
        return f"ws://127.0.0.1:{self._port}/ (details in {self._info_path})"

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._info_path)
        # Connections stay open: the host still owes them their last replies.
        self._server.close(close_connections=False)


class _Gate:
    """What stands before the relay: no web pages, a connection cap, a cap on connections still authenticating,
    and a rate limit on failed authentications."""

    def __init__(self, host: Host, secret: str) -> None:
        self.host = host
        self.secret = secret
        self.throttle = FailureThrottle()

    def why_not(self) -> tuple[int, str] | None:
        """(HTTP status, reason) to refuse a new connection with, or None to let it try."""
        wait = self.throttle.wait()
        if wait:
            return 429, (f"too many failed authentications; try again in {wait:.0f} s (read the secret from the "
                         "host's .ws.json file)")
        full = self.host.room_for_client()
        if full is not None:
            return 503, full
        if self.host.connecting >= MAX_UNAUTHENTICATED:
            return 503, (f"{self.host.connecting} connections are already authenticating, the limit; "
                         "retry in a few seconds")
        return None

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers: Headers = request.headers
        if "Origin" in headers:
            self.host.log.refusal("origin", "refusing a WebSocket connection from a web page "
                                  f"(Origin: {headers['Origin'][:200]!r})")
            return connection.respond(403, "Web pages may not connect to the compass-bridge native host.\n")
        refused = self.why_not()
        if refused is not None:
            status, reason = refused
            self.host.log.refusal("ws-gate", f"refusing a WebSocket connection: {reason}")
            return connection.respond(status, f"compass-bridge native host: {reason}\n")
        return None


async def start_ws(host: Host, run_dir: str) -> WsListener:
    gate = _Gate(host, os.urandom(32).hex())

    async def handler(ws: ServerConnection) -> None:
        await _serve_client(gate, ws)

    server = await serve(
        handler, "127.0.0.1", 0, process_request=gate.process_request, compression=None, max_size=MAX_HELLO,
        max_queue=MAX_QUEUE, open_timeout=AUTH_TIMEOUT, server_header=None, ping_interval=None, close_timeout=1,
    )
    port = next(iter(server.sockets)).getsockname()[1]
    info_path = ws_info_path(run_dir, os.getpid())
    _write_private(info_path, dumps({"port": port, "pid": os.getpid(), "secret": gate.secret,
                                     "protocol": PROTOCOL_VERSION}))
    return WsListener(server, info_path, port)


def _write_private(path: str, data: bytes) -> None:
    """Write a 0600 file that readers never see half-written."""
    partial = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out:
        out.write(data)
    os.replace(partial, path)


async def _refuse(ws: ServerConnection, code: str, message: str, close_code: int) -> None:
    with contextlib.suppress(ConnectionClosed):  # it may have gone already
        await ws.send(json.dumps({"type": "error", "code": code, "message": message}))
        await ws.close(close_code, code)


async def _authenticate(gate: _Gate, ws: ServerConnection) -> bytes | None:
    """The client's hello if it answers the challenge in time; None (after telling it why) if not."""
    nonce = os.urandom(32).hex()
    hello: bytes | None = None
    answered = False  # only answers count against the rate limit: silence costs nothing to check
    try:
        await ws.send(json.dumps({"type": "challenge", "nonce": nonce}))
        async with asyncio.timeout(AUTH_TIMEOUT):
            received = await ws.recv(decode=False)
        answered = True
        answer = parse(received).get("auth")
    except TimeoutError:
        why = f"no answer to the challenge within {AUTH_TIMEOUT:g} s"
    except ConnectionClosed as exc:
        why = f"it left before answering the challenge ({exc})"
    except MalformedMessage as exc:
        why = f"its first message is not a valid hello ({exc})"
    else:
        expected = answer_challenge(gate.secret, nonce).encode()
        if isinstance(answer, str) and hmac.compare_digest(expected, answer.encode()):
            hello = received
        why = "a wrong or missing `auth` in its hello"
    if hello is not None:
        return hello
    if answered:
        gate.throttle.failed()
    gate.host.log.refusal("unauthorized", f"refusing a WebSocket client: {why}")
    await _refuse(ws, UNAUTHORIZED, (
        f"not authenticated: {why}. The first message must be hello with `auth`: the HMAC-SHA256 of the challenge "
        f"nonce under the secret in the host's .ws.json file, sent within {AUTH_TIMEOUT:g} s"), 1008)
    return None


async def _serve_client(gate: _Gate, ws: ServerConnection) -> None:
    host = gate.host
    refused = gate.why_not()  # again: connections may have passed process_request together
    if refused is not None:
        host.log.refusal("ws-gate", f"refusing a WebSocket connection: {refused[1]}")
        await _refuse(ws, HOST_UNAVAILABLE if refused[0] == 503 else UNAUTHORIZED, refused[1], 1013)
        return
    host.connecting += 1
    try:
        hello = await _authenticate(gate, ws)
    finally:
        host.connecting -= 1
    if hello is None:
        return
    ws.protocol.max_message_size = FROM_CLIENT_MAX
    conn = WsConn(host, ws)
    host.client_connected(conn)
    try:
        host.client_frame(conn, hello)
        while not conn.gone:
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

    def send_frame(self, *parts: Bytes) -> int:
        self.sender.send(frame(*parts))
        return self.sender.backlog()

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

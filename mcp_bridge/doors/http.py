"""A small HTTP/1.1 server on asyncio for the loopback doors: one request per connection, bounded everywhere.

No framework: the run API needs JSON in, JSON or server-sent events out, and strict limits on what an
untrusted local process can make the door hold (connections, header and body sizes, time to send them).
Every connection is closed after its response (`Connection: close`), so there is no pipelining to get wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0


class HttpError(Exception):
    """An answer other than success: status, a code for programs and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its first value."""
    body: bytes = b""

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HttpError(400, "bad_request", f"the body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise HttpError(400, "bad_request", "the body must be a JSON object")
        return value


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class EventStream:
    """A `text/event-stream` response, written as events arrive; a comment every few seconds keeps proxies
    and clients from timing out while a run waits (for a review, a slow tool)."""

    HEARTBEAT_S = 15.0

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._beat: asyncio.Task[None] | None = None

    async def open(self, headers: Mapping[str, str] | None = None) -> None:
        head = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no", **(headers or {})}
        self._writer.write(_head(200, head))
        await self._writer.drain()
        self._beat = asyncio.create_task(self._heartbeat())

    async def send(self, data: Any, *, event: str | None = None, event_id: int | None = None) -> None:
        lines = []
        if event_id is not None:
            lines.append(f"id: {event_id}")
        if event is not None:
            lines.append(f"event: {event}")
        lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
        self._writer.write(("\n".join(lines) + "\n\n").encode())
        await self._writer.drain()

    async def _heartbeat(self) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                await asyncio.sleep(self.HEARTBEAT_S)
                self._writer.write(b": keep-alive\n\n")
                await self._writer.drain()

    def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[Response | None]]
"""Answers a request with a Response, or streams its own answer (an EventStream) and returns None."""


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {status} {reason}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode(response: Response) -> bytes:
    body = json.dumps(response.body, separators=(",", ":"), default=str).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)),
               "Cache-Control": "no-store", **response.headers}
    return _head(response.status, headers) + body


def error_response(exc: HttpError) -> Response:
    return Response(exc.status, {"error": {"code": exc.code, "message": str(exc)}}, exc.headers)


async def read_request(reader: asyncio.StreamReader, max_body: int) -> Request:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
    except asyncio.LimitOverrunError:
        raise HttpError(431, "too_large", f"the request line and headers are over {MAX_HEAD_BYTES} bytes") from None
    except TimeoutError:
        raise HttpError(408, "timeout", f"the request headers did not arrive within {HEAD_TIMEOUT_S:g} s") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, "bad_request", "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise HttpError(505, "bad_request", "only HTTP/1.x is spoken here")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "bad_request", f"malformed header line {line[:80]!r}")
        headers.setdefault(name.lower(), value.strip())
        if len(headers) > MAX_HEADERS:
            raise HttpError(431, "too_large", f"more than {MAX_HEADERS} headers")
    if "transfer-encoding" in headers:
        raise HttpError(411, "length_required", "chunked bodies are not accepted; send Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(400, "bad_request", "Content-Length must be a number")
    length = int(length_text)
    if length > max_body:
        raise HttpError(413, "too_large", f"the body is {length} bytes, over the limit of {max_body}")
    body = b""
    if length:
        try:
            body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError):
            raise HttpError(400, "bad_request", "the body was shorter than its Content-Length") from None
    parts = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return Request(method.upper(), unquote(parts.path), query, headers, body)


class HttpServer:
    """Accepts up to `max_connections` at once and hands each request to `handler`."""

    def __init__(self, handler: Handler, *, max_connections: int, max_body: int) -> None:
        self._handler = handler
        self._max_connections = max_connections
        self._max_body = max_body
        self._open = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, port, limit=MAX_HEAD_BYTES)
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._open += 1
        try:
            if self._open > self._max_connections:
                writer.write(encode(error_response(HttpError(
                    503, "busy", f"{self._max_connections} connections are open, the limit ([agent.http] "
                    "max_connections); retry in a moment", {"Retry-After": "1"}))))
            else:
                await self._serve(reader, writer)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._open -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await read_request(reader, self._max_body)
        except HttpError as exc:
            writer.write(encode(error_response(exc)))
            return
        except asyncio.IncompleteReadError:
            return
        try:
            response = await self._until_hangup(self._handler(request, writer), reader)
        except HttpError as exc:
            response = error_response(exc)
        except Exception as exc:  # one failed request must not end the door
            log.exception("request %s %s failed", request.method, request.path)
            response = error_response(HttpError(500, "internal", f"the door failed on this request "
                                                f"({type(exc).__name__}); its log has the details"))
        if response is not None:
            writer.write(encode(response))

    @staticmethod
    async def _until_hangup(answer: Awaitable[Response | None], reader: asyncio.StreamReader) -> Response | None:
        """The handler's answer; cancelled when the client hangs up first, so an event stream nobody reads
        (waiting on a quiet run) does not hold its key's stream slot and its service connection."""
        task = asyncio.ensure_future(answer)
        watch = asyncio.ensure_future(reader.read(4096))
        try:
            while not task.done():
                await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
                if watch.done() and not task.done():
                    if not watch.result():  # end of stream: nobody is there to answer
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                        return None
                    watch = asyncio.ensure_future(reader.read(4096))  # bytes after the request: ignored
            return task.result()
        finally:
            watch.cancel()
            if not task.done():
                task.cancel()

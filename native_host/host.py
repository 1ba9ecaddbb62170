"""The relay: one browser on stdio, any number of agent clients on a socket (docs/PROTOCOL.md).

Every forwarded request gets a host-wide id, and the browser's answer goes back to the one client that asked,
under that client's own id. Replies are never broadcast: that is how another host mixes up its sessions.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Protocol

from native_host import PROTOCOL_VERSION, __version__
from native_host.framing import MIB, TO_BROWSER_MAX, frame
from native_host.log import Log
from native_host.protocol import (
    BAD_REQUEST,
    BROWSER_DISCONNECTED,
    CANCELLED,
    HOST_UNAVAILABLE,
    TOO_LARGE,
    TOOL_ERROR,
    ClientId,
    MalformedMessage,
    dumps,
    encode,
    error_body,
    parse,
    valid_client_id,
)
from native_host.runtime_dir import UnsafeRuntimeDir, ensure_private_dir, remove_stale, runtime_dir

MAX_CLIENT_BACKLOG = 96 * MIB
"""Unsent bytes a client may fall behind by. A client that stopped reading is disconnected once the next message
would take it past this, so it costs bounded memory and never holds up anyone else. Above the largest single
frame, so a client that reads, however slowly, is never cut off for receiving one big result."""
CLIENT_CLOSE_GRACE = 0.5
"""Seconds the host spends, on its way out, letting clients read their last replies."""

# What Chrome writes for a successful reply from the reference extension: `{type, id, result}` in that order,
# compact. Such a frame is forwarded without parsing its (possibly megabytes of) result.
_PLAIN_RESULT = re.compile(rb'\{"type":"tool_response","id":([1-9][0-9]{0,15}),"result":')


class BrowserLink(Protocol):
    """The browser's side of the relay: frames out on stdout (its frames in arrive via Host.browser_frame)."""

    def write(self, data: bytes) -> None: ...

    async def aclose(self) -> None:
        """Flush what is still queued for the browser, briefly, and close stdout."""


class ClientConn:
    """One agent connection. Transports subclass it and report to the Host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.id = host.new_client_id()
        self.name = "unnamed"
        self.pid: int | None = None
        self.welcomed = False
        self.gone = False
        self.inflight: dict[ClientId, int] = {}
        """This client's request ids → the host-wide ids the browser knows them by."""
        self.tag = b""
        """`{"id":…,"name":…}`, serialized once for every tool_request of this client."""

    def describe(self) -> str:
        pid = f" pid {self.pid}" if self.pid is not None else ""
        return f"client {self.id} ({self.name}{pid})"

    # What each transport provides.
    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def backlog(self) -> int:
        """Bytes written but not yet taken by the peer."""
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Send what is queued, then close."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close now, dropping what is queued."""
        raise NotImplementedError

    async def wait_closed(self) -> None:
        raise NotImplementedError


class _Pending:
    __slots__ = ("client_id", "conn")

    def __init__(self, conn: ClientConn, client_id: ClientId) -> None:
        self.conn = conn
        self.client_id = client_id


class Host:
    """Routing state, independent of how bytes travel."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.browser: BrowserLink | None = None
        self.extension: dict[str, Any] | None = None
        self.tools: list[dict[str, Any]] = []
        self.clients: dict[int, ClientConn] = {}
        self._pending: dict[int, _Pending] = {}
        self._request_ids = itertools.count(1)
        self._client_ids = itertools.count(1)
        self._reading_paused = False
        self._stopped: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    def new_client_id(self) -> int:
        return next(self._client_ids)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def stop(self, code: str, message: str) -> None:
        """Ask `run` to wind down; pending requests will fail with `code`."""
        if not self._stopped.done():
            self._stopped.set_result((code, message))

    async def stopped(self) -> tuple[str, str]:
        return await self._stopped

    def browser_closed(self, why: str) -> None:
        self.stop(BROWSER_DISCONNECTED, f"the browser closed its connection to the native host ({why})")

    def shut_down(self, code: str, message: str) -> None:
        """Fail every pending request with `code`, then close every client after its last reply."""
        # Settle everything first: sending may drop a slow client, which would withdraw its requests again.
        pending, self._pending = self._pending, {}
        for conn in self.clients.values():
            conn.inflight.clear()
        for request in pending.values():
            self.send(request.conn, encode({"type": "response", "id": request.client_id,
                                            "error": error_body(code, message)}))
        for conn in list(self.clients.values()):
            conn.close()

    async def wait_clients_closed(self) -> None:
        waits = [asyncio.ensure_future(conn.wait_closed()) for conn in list(self.clients.values())]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=CLIENT_CLOSE_GRACE)
        for conn in list(self.clients.values()):
            conn.abort()
        for task in late:
            task.cancel()

    # ---- clients --------------------------------------------------------------------------------------------

    def client_connected(self, conn: ClientConn) -> None:
        self.clients[conn.id] = conn
        if self._reading_paused:
            conn.pause_reading()

    def client_gone(self, conn: ClientConn) -> None:
        """The connection closed, for whatever reason: withdraw its requests from the extension."""
        if conn.gone:
            return
        conn.gone = True
        self.clients.pop(conn.id, None)
        for request_id in conn.inflight.values():
            del self._pending[request_id]
            self._to_browser(encode({"type": "tool_cancel", "id": request_id}))
        conn.inflight.clear()
        if conn.welcomed:
            self.log(f"{conn.describe()} disconnected")
            self._announce_clients()

    def send(self, conn: ClientConn, data: bytes) -> None:
        if conn.gone:
            return
        backlog = conn.backlog()
        if backlog and backlog + len(data) > MAX_CLIENT_BACKLOG:
            self.log(f"{conn.describe()} stopped reading ({backlog} bytes unsent); disconnecting it")
            conn.abort()
            self.client_gone(conn)
            return
        conn.write(data)

    def client_frame(self, conn: ClientConn, payload: bytes) -> None:
        try:
            message = parse(payload)
        except MalformedMessage as exc:
            self._client_error(conn, BAD_REQUEST, str(exc))
            return
        kind = message["type"]
        if kind == "request" and conn.welcomed:
            self._request(conn, message, payload)
        elif kind == "cancel":
            self._cancel(conn, message.get("id"))
        elif kind == "ping":
            self.send(conn, encode(_pong(message)))
        elif kind == "hello":
            self._hello(conn, message)
        elif kind == "request":
            self._client_error(conn, BAD_REQUEST, "send `hello` before any request", message.get("id"))
        else:
            self._client_error(conn, BAD_REQUEST, f"unknown message type {kind!r}; protocol v{PROTOCOL_VERSION} "
                               "clients send hello, request, cancel or ping")

    def _client_error(self, conn: ClientConn, code: str, message: str, request_id: object = None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if valid_client_id(request_id):
            body["id"] = request_id
        self.send(conn, encode(body))

    def _hello(self, conn: ClientConn, message: dict[str, Any]) -> None:
        info = message.get("client")
        info = info if isinstance(info, dict) else {}
        name, pid = info.get("name"), info.get("pid")
        if isinstance(name, str) and name:
            conn.name = name[:200]
        if type(pid) is int:
            conn.pid = pid
        conn.tag = dumps({"id": conn.id, "name": conn.name})
        first = not conn.welcomed
        conn.welcomed = True
        self.send(conn, encode({
            "type": "welcome",
            "host": {"version": __version__, "pid": os.getpid(), "protocol": PROTOCOL_VERSION},
            "client": {"id": conn.id},
            "extension": self.extension,
            "tools": self.tools,
        }))
        if first:
            version = info.get("version")
            self.log(f"{conn.describe()} connected" + (f", version {version}" if isinstance(version, str) else ""))
        self._announce_clients()

    def _request(self, conn: ClientConn, message: dict[str, Any], payload: bytes) -> None:
        client_id = message.get("id")
        if not valid_client_id(client_id):
            self._client_error(conn, BAD_REQUEST, "a request needs an `id`: an integer, or a string of at most 256 "
                               "characters, that is not in flight on this connection")
            return
        if client_id in conn.inflight:
            # An `error`, not a `response`: a response with this id would settle the request already in flight.
            self._client_error(conn, BAD_REQUEST, f"request id {client_id!r} is already in flight on this "
                               "connection; use a new id for every request", client_id)
            return
        tool, args = message.get("tool"), message.get("args", {})
        problem = None
        if not isinstance(tool, str) or not tool:
            problem = "a request needs `tool`: the name of one of the extension's tools"
        elif not isinstance(args, dict):
            problem = "`args` must be a JSON object"
        if problem:
            self.send(conn, encode({"type": "response", "id": client_id, "error": error_body(BAD_REQUEST, problem)}))
            return
        request_id = next(self._request_ids)
        data = self._tool_request(conn, request_id, message, payload)
        size = len(data) - 4
        if size > TO_BROWSER_MAX:
            self.send(conn, encode({"type": "response", "id": client_id, "error": error_body(
                TOO_LARGE, f"the request to {tool} is {size} bytes as sent to the browser, over the {TO_BROWSER_MAX}"
                "-byte limit of one native message (Chrome would drop the connection); send less in one request")}))
            return
        self._pending[request_id] = _Pending(conn, client_id)
        conn.inflight[client_id] = request_id
        self._to_browser(data)

    def _tool_request(self, conn: ClientConn, request_id: int, message: dict[str, Any], payload: bytes) -> bytes:
        """The tool_request frame; when the client wrote the canonical layout, its args bytes are reused as is."""
        tool_json = dumps(message["tool"])
        if len(message) == 4 and "args" in message and payload.endswith(b"}"):
            prefix = b'{"type":"request","id":%s,"tool":%s,"args":' % (dumps(message["id"]), tool_json)
            if payload.startswith(prefix):
                # The whole frame parsed as JSON, so what follows `"args":` is the args value (plus any repeated
                # keys, which JSON readers resolve the same way, last one wins). The host's own keys go last so
                # nothing in those bytes can override them.
                ours = b',"type":"tool_request","id":%d,"tool":%s,"client":%s}' % (request_id, tool_json, conn.tag)
                return frame(b'{"args":', memoryview(payload)[len(prefix) : -1], ours)
        return encode({"type": "tool_request", "id": request_id, "tool": message["tool"],
                       "args": message.get("args", {}), "client": {"id": conn.id, "name": conn.name}})

    def _cancel(self, conn: ClientConn, client_id: object) -> None:
        if not valid_client_id(client_id):
            self._client_error(conn, BAD_REQUEST, "`cancel` needs the `id` of a request in flight")
            return
        request_id = conn.inflight.pop(client_id, None)
        if request_id is None:
            return  # answered while the cancel was on its way: nothing left to do
        del self._pending[request_id]
        self._to_browser(encode({"type": "tool_cancel", "id": request_id}))
        self.send(conn, encode({"type": "response", "id": client_id,
                                "error": error_body(CANCELLED, "cancelled at the client's request")}))

    def _announce_clients(self) -> None:
        listing = [{"id": c.id, "name": c.name, "pid": c.pid} for c in self.clients.values() if c.welcomed]
        self._to_browser(encode({"type": "clients", "clients": listing}))

    def _broadcast(self, data: bytes) -> None:
        for conn in list(self.clients.values()):
            if conn.welcomed:
                self.send(conn, data)

    # ---- browser --------------------------------------------------------------------------------------------

    def _to_browser(self, data: bytes) -> None:
        if self.browser is not None:
            self.browser.write(data)

    def pause_clients(self) -> None:
        """The browser is not keeping up: stop reading requests until it drains."""
        self._reading_paused = True
        for conn in self.clients.values():
            conn.pause_reading()

    def resume_clients(self) -> None:
        self._reading_paused = False
        for conn in self.clients.values():
            conn.resume_reading()

    def _settle(self, request_id: int) -> _Pending | None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            del pending.conn.inflight[pending.client_id]
        return pending

    def browser_frame(self, payload: bytes) -> None:
        plain = _PLAIN_RESULT.match(payload)
        if plain is not None and payload.endswith(b"}"):
            # Splice the result bytes through untouched; `type` and `id` go last, so they win over anything the
            # result bytes might repeat.
            pending = self._settle(int(plain[1]))
            if pending is not None:
                self.send(pending.conn, frame(b'{"result":', memoryview(payload)[plain.end() : -1],
                                              b',"type":"response","id":%s}' % dumps(pending.client_id)))
            return
        try:
            message = parse(payload)
        except MalformedMessage as exc:
            self.log(f"ignoring a frame from the browser: {exc}")
            return
        kind = message["type"]
        if kind == "tool_response":
            self._tool_response(message)
        elif kind == "event":
            self._broadcast(frame(payload))
        elif kind == "hello":
            self._extension_hello(message)
        elif kind == "ping":
            self._to_browser(encode(_pong(message)))
        else:
            self.log(f"ignoring a browser message of unknown type {kind!r}")

    def _tool_response(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        pending = self._settle(request_id) if type(request_id) is int else None
        if pending is None:
            return  # cancelled, or its client left: nobody is waiting
        reply: dict[str, Any] = {"type": "response", "id": pending.client_id}
        error = message.get("error")
        if error is not None:
            error = error if isinstance(error, dict) else {"message": error}
            code, text = error.get("code"), error.get("message")
            reply["error"] = {**error, "code": code if isinstance(code, str) else TOOL_ERROR,
                              "message": text if isinstance(text, str) else dumps(text).decode()}
        else:
            reply["result"] = message.get("result")
        self.send(pending.conn, encode(reply))

    def _extension_hello(self, message: dict[str, Any]) -> None:
        extension, tools = message.get("extension"), message.get("tools")
        self.extension = extension if isinstance(extension, dict) else None
        self.tools = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
        name = self.extension.get("name") if self.extension else None
        version = self.extension.get("version") if self.extension else None
        self.log(f"extension {name!r} {version!r} says hello with {len(self.tools)} tools")
        self._broadcast(encode({"type": "tools", "tools": self.tools, "extension": self.extension}))
        self._announce_clients()


def _pong(ping: dict[str, Any]) -> dict[str, Any]:
    pong: dict[str, Any] = {"type": "pong"}
    if "id" in ping:
        pong["id"] = ping["id"]
    return pong


class Listener(Protocol):
    """A started transport: where clients reach it, and how to stop it (removing its file from the run dir)."""

    @property
    def address(self) -> str: ...

    async def aclose(self) -> None: ...


class HostStartError(Exception):
    """The host cannot listen for clients; the message says why and what to do."""


async def run(transport: str, log: Log, stdin_fd: int, stdout_fd: int) -> int:
    """Relay until the browser goes away (or a signal arrives). The exit status for the process."""
    from native_host.stdio import open_browser

    host = Host(log)
    browser = await open_browser(host, stdin_fd, stdout_fd)
    try:
        run_dir = ensure_private_dir(runtime_dir())
        for path in remove_stale(run_dir):
            log(f"removed {path.name}, left behind by a host that is no longer running")
        listener = await _listen(transport, host, run_dir)
    except (UnsafeRuntimeDir, HostStartError, OSError) as exc:
        log(f"cannot start: {exc}")
        browser.write(encode({"type": "error", "code": HOST_UNAVAILABLE,
                              "message": f"compass-bridge native host cannot start: {exc}"}))
        await browser.aclose()
        return 1
    log(f"listening on {listener.address}")
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            name = signal.Signals(signum).name
            loop.add_signal_handler(signum, host.stop, HOST_UNAVAILABLE, f"the native host was stopped ({name})")
    code, message = await host.stopped()
    log(f"stopping: {message}")
    await listener.aclose()
    host.shut_down(code, message)
    await host.wait_clients_closed()
    await browser.aclose()
    return 0


async def _listen(transport: str, host: Host, run_dir: Path) -> Listener:
    if transport == "unix" and sys.platform != "win32":
        from native_host.unix import start_unix

        return await start_unix(host, run_dir)
    from native_host.ws import start_ws  # imports websockets: only when asked for

    return await start_ws(host, run_dir)

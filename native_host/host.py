"""The relay: one browser on stdio, any number of agent clients on a socket (docs/PROTOCOL.md).

Every forwarded request gets a host-wide id, and the browser's answer goes back to the one client that asked,
under that client's own id. Replies are never broadcast: that is how another host mixes up its sessions.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import time
from json.encoder import encode_basestring_ascii as _json_string  # dumps_scalar's C function, without its wrapper

from native_host import PROTOCOL_VERSION, __version__
from native_host.framing import MIB, TO_BROWSER_MAX, Bytes
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
    dumps_scalar,
    error_body,
    parse,
    valid_client_id,
)
from native_host.runs import RunRelay
from native_host.runtime_dir import UnsafeRuntimeDir, ensure_private_dir, remove_stale, runtime_dir_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, ~2 ms of the start-up the browser waits for
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from native_host.loop import Cancellable, Loop

    class BrowserLink(Protocol):
        """The browser's side of the relay: frames out on stdout (its frames in arrive via Host.browser_frame)."""

        def write_frame(self, *parts: Bytes) -> None:
            """Send one frame whose payload is `parts` joined; the parts need to stay valid only during the call."""

        def close(self, then: Callable[[], object]) -> None:
            """Stop reading, flush what is still queued for the browser (briefly), close stdout, then call `then`."""

    class Listener(Protocol):
        """A started transport: where clients reach it, and how to stop it (removing its file from the run dir)."""

        @property
        def address(self) -> str: ...

        def close(self) -> None: ...

MAX_CLIENT_BACKLOG = 96 * MIB
"""Unsent bytes a client may fall behind by. A client that stopped reading is disconnected once the next message
would take it past this, so it costs bounded memory and never holds up anyone else. Above the largest single
frame, so a client that reads, however slowly, is never cut off for receiving one big result."""
MAX_TOTAL_BACKLOG = 192 * MIB
"""Unsent bytes for all clients together; past it the client furthest behind is disconnected."""
MAX_PARTIAL_TOTAL = 64 * MIB
"""Memory held for client frames that have not fully arrived, all connections together (one connection holds at
most one frame, of at most FROM_CLIENT_MAX). Past it, the connection whose frame has been unfinished longest is
closed: a client writing a frame in one go finishes it in milliseconds, one that stalls halfway is the suspect."""
MAX_CLIENTS = 64
"""Client connections at once, on any transport (counting WebSocket connections still authenticating)."""
CLIENT_CLOSE_GRACE = 0.5
"""Seconds the host spends, on its way out, letting clients read their last replies."""

# What Chrome writes for a successful reply from the reference extension: `{type, id, result}` in that order,
# compact. Such a frame is forwarded without parsing its (possibly megabytes of) result.
_PLAIN_RESULT = re.compile(rb'\{"type":"tool_response","id":([1-9][0-9]{0,15}),"result":')
_CLOSE_BRACE = ord("}")
_NO_ARGS: dict[str, Any] = {}
"""A request's `args` when it has none: one shared empty object, never changed (it is only serialized)."""


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
        self.partial_since = 0.0
        """When the frame now arriving began to arrive (time.monotonic()); 0 when none is under way."""

    def describe(self) -> str:
        pid = f" pid {self.pid}" if self.pid is not None else ""
        return f"client {self.id} ({self.name}{pid})"

    # What each transport provides.
    def send_frame(self, *parts: Bytes) -> int:
        """Queue one frame whose payload is `parts` joined (valid only during the call: copy what is kept); the
        backlog afterwards, as `backlog()` would tell."""
        raise NotImplementedError

    def backlog(self) -> int:
        """Bytes written but not yet taken by the peer."""
        raise NotImplementedError

    def partial(self) -> int:
        """Bytes of memory held for a frame that has not fully arrived."""
        return 0

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Send what is queued, then close; the transport calls Host.client_gone once closed."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close now, dropping what is queued."""
        raise NotImplementedError

    def refuse(self, payload: bytes) -> None:
        """Send this last message (an `error`) and close, so that the client can read it."""
        self.send_frame(payload)
        self.close()


# A request in flight, by its host-wide id: (the client that asked, its own id for the request, how the spliced
# result's response ends: `,"type":"response","id":<its id>}`, made when the id is serialized anyway). A tuple, not
# an object: no Python call to make one, for every request relayed.
_Pending = tuple[ClientConn, ClientId, bytes]


class Host:
    """Routing state, independent of how bytes travel."""

    def __init__(self, log: Log, loop: Loop) -> None:
        self.log = log
        self.loop = loop
        self.browser: BrowserLink | None = None
        self.extension: dict[str, Any] | None = None
        self.tools: list[dict[str, Any]] = []
        self.clients: dict[int, ClientConn] = {}
        self.connecting = 0
        """Connections accepted but not yet clients (WebSocket ones authenticating): they count against
        MAX_CLIENTS too."""
        self._pending: dict[int, _Pending] = {}
        self._request_ids = itertools.count(1)
        self._client_ids = itertools.count(1)
        self._reading_paused = False
        self.on_stop: Callable[[str, str], object] | None = None
        """What `stop` sets going (the run's shutdown sequence)."""
        self._stopping = False
        self._all_gone: Callable[[], None] | None = None
        self.runs = RunRelay(self)
        """Agent runs between the browser and the run service's link (native_host/runs.py)."""

    def new_client_id(self) -> int:
        return next(self._client_ids)

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def stop(self, code: str, message: str) -> None:
        """Wind down (once): pending requests fail with `code`, clients get their last replies, the loop stops."""
        if self._stopping:
            return
        self._stopping = True
        if self.on_stop is not None:
            self.on_stop(code, message)

    def browser_closed(self, why: str) -> None:
        self.stop(BROWSER_DISCONNECTED, f"the browser closed its connection to the native host ({why})")

    def shut_down(self, code: str, message: str, then: Callable[[], object]) -> None:
        """Fail every pending request with `code`, close every client after its last reply (for at most
        CLIENT_CLOSE_GRACE seconds, then drop the rest), then call `then`."""
        # Settle everything first: sending may drop a slow client, which would withdraw its requests again.
        pending, self._pending = self._pending, {}
        for conn in self.clients.values():
            conn.inflight.clear()
        for conn, client_id, _tail in pending.values():
            self.send(conn, dumps({"type": "response", "id": client_id,
                                           "error": error_body(code, message)}))
        done = False
        timer: Cancellable | None = None

        def finish() -> None:
            nonlocal done
            if done:
                return
            done = True
            if timer is not None:
                timer.cancel()
            for conn in list(self.clients.values()):
                conn.abort()
                self.client_gone(conn)
            then()

        self._all_gone = finish
        if not self.clients:
            finish()
            return
        timer = self.loop.call_later(CLIENT_CLOSE_GRACE, finish)
        for conn in list(self.clients.values()):
            conn.close()

    # ---- clients --------------------------------------------------------------------------------------------

    def room_for_client(self) -> str | None:
        """Why a new connection cannot be taken now (the connection cap), or None if it can."""
        if self._stopping:
            return "the native host is stopping"
        held = len(self.clients) + self.connecting
        if held >= MAX_CLIENTS:
            return (f"the native host already has {held} connections, its limit of {MAX_CLIENTS}; close sessions "
                    "you no longer use, or retry later")
        return None

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
        self.runs.gone(conn)
        for request_id in conn.inflight.values():
            del self._pending[request_id]
            self._to_browser(b'{"type":"tool_cancel","id":%d}' % request_id)
        conn.inflight.clear()
        if conn.welcomed:
            self.log(f"{conn.describe()} disconnected")
            self._announce_clients()
        if not self.clients and self._all_gone is not None:
            self._all_gone()

    def _drop(self, conn: ClientConn, why: str) -> None:
        self.log.refusal("dropped", f"{conn.describe()} {why}; disconnecting it")
        conn.abort()
        self.client_gone(conn)

    def send(self, conn: ClientConn, *parts: Bytes) -> None:
        if conn.gone:
            return
        backlog = conn.backlog()
        if backlog:
            size = sum(map(len, parts))
            if backlog + size > MAX_CLIENT_BACKLOG:
                self._drop(conn, f"stopped reading ({backlog} bytes unsent, limit {MAX_CLIENT_BACKLOG})")
                return
        if conn.send_frame(*parts):
            self._check_total_backlog()

    def _check_total_backlog(self) -> None:
        backlogs = {conn: conn.backlog() for conn in self.clients.values()}
        total = sum(backlogs.values())
        while total > MAX_TOTAL_BACKLOG:
            slowest = max(backlogs, key=backlogs.__getitem__)
            self._drop(slowest, f"is furthest behind ({backlogs[slowest]} bytes unsent) while all clients together "
                       f"are {total} bytes behind, over the limit of {MAX_TOTAL_BACKLOG}")
            total -= backlogs.pop(slowest)

    def check_partial(self, conn: ClientConn) -> None:
        """After `conn` read part of a frame: keep the memory held for unfinished frames of all clients under
        MAX_PARTIAL_TOTAL, closing the connections whose frames have been unfinished longest."""
        held = {c: c.partial() for c in self.clients.values()}
        held[conn] = conn.partial()  # it may not be a client yet
        total = sum(held.values())
        while total > MAX_PARTIAL_TOTAL:
            stalled = min((c for c in held if held[c]), key=lambda c: c.partial_since)
            self.log.refusal("partial", f"{stalled.describe()} has had a frame unfinished for "
                             f"{time.monotonic() - stalled.partial_since:.1f} s while unfinished frames hold {total} "
                             f"bytes, over the limit of {MAX_PARTIAL_TOTAL}; closing it")
            stalled.refuse(dumps({"type": "error", "code": TOO_LARGE, "message": (
                f"the host is holding {total} bytes of unfinished frames from its clients, over its limit of "
                f"{MAX_PARTIAL_TOTAL}, and this connection's frame has been unfinished longest; closing it. Send "
                "each frame whole, without pausing in the middle")}))
            total -= held.pop(stalled)

    def client_frame(self, conn: ClientConn, payload: Bytes) -> None:
        """One frame from a client. Anything that goes wrong handling it is answered and logged; the connection
        stays open."""
        # One function, not a wrapper around another: a try costs nothing until it catches, a call does.
        try:
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
                self.send(conn, dumps(_pong(message)))
            elif kind == "hello":
                self._hello(conn, message)
            elif kind == "request":
                self._client_error(conn, BAD_REQUEST, "send `hello` before any request", message.get("id"))
            elif not (conn.welcomed and self.runs.from_client(conn, kind, payload)):
                self._client_error(conn, BAD_REQUEST, f"unknown message type {kind!r}; protocol "
                                   f"v{PROTOCOL_VERSION} clients send hello, request, cancel, ping (or run_* when "
                                   "serving agent runs)")
        except Exception as exc:  # a bug; the client still deserves an answer, and everyone else the relay
            self.log(f"error handling a frame from {conn.describe()}: {type(exc).__name__}: {exc}")
            self._client_error(conn, BAD_REQUEST, f"the host could not handle this message ({type(exc).__name__}: "
                               f"{exc}); the connection stays open")

    def _client_error(self, conn: ClientConn, code: str, message: str, request_id: object = None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if valid_client_id(request_id):
            body["id"] = request_id
        self.send(conn, dumps(body))

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
        self.send(conn, dumps({
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
        self.runs.hello(conn, info)

    def _request(self, conn: ClientConn, message: dict[str, Any], payload: Bytes) -> None:
        client_id = message.get("id")
        if type(client_id) is not int and not valid_client_id(client_id):  # most ids are ints: no call for them
            self._client_error(conn, BAD_REQUEST, "a request needs an `id`: an integer, or a string of at most 256 "
                               "characters, that is not in flight on this connection")
            return
        if client_id in conn.inflight:
            # An `error`, not a `response`: a response with this id would settle the request already in flight.
            self._client_error(conn, BAD_REQUEST, f"request id {client_id!r} is already in flight on this "
                               "connection; use a new id for every request", client_id)
            return
        tool: Any = message.get("tool")  # a str from here on, unless refused just below
        args = message.get("args", _NO_ARGS)
        problem = None
        if not isinstance(tool, str) or not tool:
            problem = "a request needs `tool`: the name of one of the extension's tools"
        elif not isinstance(args, dict):
            problem = "`args` must be a JSON object"
        if problem:
            self.send(conn, dumps({"type": "response", "id": client_id, "error": error_body(BAD_REQUEST, problem)}))
            return
        request_id = next(self._request_ids)
        id_json = b"%d" % client_id if type(client_id) is int else dumps_scalar(client_id)
        tool_json = _json_string(tool).encode("ascii")
        # The canonical layout, which clients write: the client's args bytes are reused as they are.
        prefix = b'{"type":"request","id":%s,"tool":%s,"args":' % (id_json, tool_json)
        if len(message) == 4 and "args" in message and payload[-1] == _CLOSE_BRACE and \
                bytes(payload[: len(prefix)]) == prefix:  # as bytes: faster than comparing views
            # The whole frame parsed as JSON, so what follows `"args":` is the args value (plus any repeated keys,
            # which JSON readers resolve the same way, last one wins). The host's own keys go last so nothing in
            # those bytes can override them.
            parts: tuple[Bytes, ...] = (
                b'{"args":', memoryview(payload)[len(prefix) : -1],
                b',"type":"tool_request","id":%d,"tool":%s,"client":%s}' % (request_id, tool_json, conn.tag))
        else:
            parts = (dumps({"type": "tool_request", "id": request_id, "tool": tool, "args": args,
                            "client": {"id": conn.id, "name": conn.name}}),)
        size = sum(map(len, parts))
        if size > TO_BROWSER_MAX:
            self.send(conn, dumps({"type": "response", "id": client_id, "error": error_body(
                TOO_LARGE, f"the request to {tool} is {size} bytes as sent to the browser, over the {TO_BROWSER_MAX}"
                "-byte limit of one native message (Chrome would drop the connection); send less in one request")}))
            return
        self._pending[request_id] = (conn, client_id, b',"type":"response","id":%s}' % id_json)
        conn.inflight[client_id] = request_id
        if self.browser is not None:  # _to_browser, written out: this runs for every request relayed
            self.browser.write_frame(*parts)

    def _cancel(self, conn: ClientConn, client_id: object) -> None:
        if not valid_client_id(client_id):
            self._client_error(conn, BAD_REQUEST, "`cancel` needs the `id` of a request in flight")
            return
        request_id = conn.inflight.pop(client_id, None)
        if request_id is None:
            return  # answered while the cancel was on its way: nothing left to do
        del self._pending[request_id]
        self._to_browser(b'{"type":"tool_cancel","id":%d}' % request_id)
        self.send(conn, dumps({"type": "response", "id": client_id,
                               "error": error_body(CANCELLED, "cancelled at the client's request")}))

    def _announce_clients(self) -> None:
        listing = [{"id": c.id, "name": c.name, "pid": c.pid} for c in self.clients.values() if c.welcomed]
        self._to_browser(dumps({"type": "clients", "clients": listing}))

    def _broadcast(self, *parts: Bytes) -> None:
        for conn in list(self.clients.values()):
            if conn.welcomed:
                self.send(conn, *parts)

    # ---- browser --------------------------------------------------------------------------------------------

    def _to_browser(self, *parts: Bytes) -> None:
        if self.browser is not None:
            self.browser.write_frame(*parts)

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
            del pending[0].inflight[pending[1]]
        return pending

    def browser_frame(self, payload: Bytes) -> None:
        """One frame from the browser. A failure handling it is logged; the relay goes on."""
        try:
            plain = _PLAIN_RESULT.match(payload)
            if plain is not None and payload[-1] == _CLOSE_BRACE:
                # Splice the result bytes through untouched; `type` and `id` go last, so they win over anything
                # the result bytes might repeat. (_settle, written out: this runs for every result relayed.)
                pending = self._pending.pop(int(plain[1]), None)
                if pending is not None:
                    conn, client_id, tail = pending
                    del conn.inflight[client_id]
                    self.send(conn, b'{"result":', memoryview(payload)[plain.end() : -1], tail)
                return
            self._browser_message(payload)
        except Exception as exc:  # a bug: one bad frame must not end the relay for every client
            self.log(f"error handling a frame from the browser: {type(exc).__name__}: {exc}")

    def _browser_message(self, payload: Bytes) -> None:
        """Any browser frame but a plainly laid out successful tool_response (browser_frame splices those)."""
        try:
            message = parse(payload)
        except MalformedMessage as exc:
            self.log(f"ignoring a frame from the browser: {exc}")
            return
        kind = message["type"]
        if kind == "tool_response":
            self._tool_response(message)
        elif kind == "event":
            self._broadcast(payload)
        elif kind == "hello":
            self._extension_hello(message)
        elif kind == "ping":
            self._to_browser(dumps(_pong(message)))
        elif not self.runs.from_browser(kind, message, payload):
            self.log(f"ignoring a browser message of unknown type {kind!r}")

    def _tool_response(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        pending = self._settle(request_id) if type(request_id) is int else None
        if pending is None:
            return  # cancelled, or its client left: nobody is waiting
        conn, client_id, _tail = pending
        reply: dict[str, Any] = {"type": "response", "id": client_id}
        error = message.get("error")
        if error is not None:
            error = error if isinstance(error, dict) else {"message": error}
            code, text = error.get("code"), error.get("message")
            reply["error"] = {**error, "code": code if isinstance(code, str) else TOOL_ERROR,
                              "message": text if isinstance(text, str) else dumps(text).decode()}
        else:
            reply["result"] = message.get("result")
        self.send(conn, dumps(reply))

    def _extension_hello(self, message: dict[str, Any]) -> None:
        extension, tools = message.get("extension"), message.get("tools")
        self.extension = extension if isinstance(extension, dict) else None
        self.tools = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
        name = self.extension.get("name") if self.extension else None
        version = self.extension.get("version") if self.extension else None
        self.log(f"extension {name!r} {version!r} says hello with {len(self.tools)} tools")
        self._broadcast(dumps({"type": "tools", "tools": self.tools, "extension": self.extension}))
        self._announce_clients()


def _pong(ping: dict[str, Any]) -> dict[str, Any]:
    pong: dict[str, Any] = {"type": "pong"}
    if "id" in ping:
        pong["id"] = ping["id"]
    return pong


class HostStartError(Exception):
    """The host cannot listen for clients; the message says why and what to do."""


def run(transport: str, log: Log, stdin_fd: int, stdout_fd: int) -> int:
    """Relay until the browser goes away (or a signal arrives). The exit status for the process."""
    from native_host.stdio import open_browser

    def on_error(where: str, exc: BaseException) -> None:
        log(f"error in {where}: {type(exc).__name__}: {exc}")

    loop: Loop
    if transport == "ws":
        import asyncio  # the WebSocket library runs on asyncio: only then is it imported

        loop = asyncio.SelectorEventLoop()  # add_reader on sockets everywhere (Windows' default loop has none)
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(lambda _loop, context: log(f"error: {context.get('message')}: "
                                                               f"{context.get('exception')!r}"))
        run_loop = loop.run_forever
    else:
        from native_host.loop import SelectLoop

        select_loop = SelectLoop(on_error)
        loop, run_loop = select_loop, select_loop.run_forever
    host = Host(log, loop)
    status = 0

    def finished() -> None:
        loop.stop()

    def stop(code: str, message: str) -> None:
        log(f"stopping: {message}")
        if listener is not None:
            listener.close()
        host.shut_down(code, message, then=lambda: browser.close(then=finished))

    host.on_stop = stop
    listener: Listener | None = None
    browser = open_browser(host, loop, stdin_fd, stdout_fd)
    try:
        run_dir = ensure_private_dir(runtime_dir_name())
        for path in remove_stale(run_dir):
            log(f"removed {os.path.basename(path)}, left behind by a host that is no longer running")
        listener = _listen(transport, host, loop, run_dir)
    except (UnsafeRuntimeDir, HostStartError, OSError) as exc:
        log(f"cannot start: {exc}")
        browser.write_frame(dumps({"type": "error", "code": HOST_UNAVAILABLE,
                                   "message": f"compass-bridge native host cannot start: {exc}"}))
        browser.close(then=finished)
        status = 1
    else:
        log(f"listening on {listener.address}")
        if sys.platform != "win32":
            import signal

            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                name = signal.Signals(signum).name
                loop.add_signal_handler(signum, host.stop, HOST_UNAVAILABLE, f"the native host was stopped ({name})")
    run_loop()
    log.summary()
    return status


def _listen(transport: str, host: Host, loop: Loop, run_dir: str) -> Listener:
    if transport == "unix" and sys.platform != "win32":
        from native_host.unix import start_unix

        return start_unix(host, loop, run_dir)
    import asyncio

    from native_host.ws import start_ws  # imports websockets: only when asked for

    assert isinstance(loop, asyncio.AbstractEventLoop)
    return loop.run_until_complete(start_ws(host, run_dir))

"""The protocol front end: answers every request on one stdio connection, in the request's own era.

One `Frontend` serves one connection. `serve()` reads messages from the transport and starts one task per
request, so a slow tool never holds up a quick `tools/list`; each task answers in the request's era (see
`eras`) and hands the MCP methods that mean something to the bridge (tools and resources) to the
`Application`. Everything else is answered here: the handshake, `server/discover`, `ping`, cancellation,
progress, change notices (unsolicited `list_changed` for a 2025 client, `subscriptions/listen` streams for
a 2026-07-28 one), and an error for anything malformed, unknown or sent too early. When stdin closes,
requests still running get `SHUTDOWN_GRACE_S` to finish, then are cancelled and answered with an error.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NamedTuple, Protocol

from mcp_bridge.protocol import eras, wire
from mcp_bridge.protocol.wire import Id

log = logging.getLogger(__name__)

Change = Literal["tools", "resources"]
ProgressReporter = Callable[[float, float | None, str | None], Awaitable[None]]

# The capabilities, stated once: what the method table below serves. Change notices reach a 2025 client
# unsolicited and a 2026-07-28 client on its `subscriptions/listen` stream; resources have no per-URI
# subscriptions (their content is refreshed with the Compass registration, not pushed).
CAPABILITIES: dict[str, Any] = {"tools": {"listChanged": True}, "resources": {"listChanged": True, "subscribe": False}}
_LISTEN_FLAGS: dict[str, Change] = {"toolsListChanged": "tools", "resourcesListChanged": "resources"}

SHUTDOWN_GRACE_S = 5.0
"""How long requests still running when stdin closes may take to finish before they are cancelled."""
ROOTS_TIMEOUT_S = 5.0
MAX_LISTENERS = 16
"""Open `subscriptions/listen` streams per connection; more are refused."""
MAX_RUNNING = 64
"""Requests running at once (listen streams aside); more are refused at once, so reading never stops (the
answer to our `roots/list` and `notifications/cancelled` must still get through)."""
DISCOVER_TTL_MS = 3_600_000
"""`server/discover` never changes while the process runs."""
LIST_TTL_MS = 0
"""Tool and resource lists change when a browser or Compass comes or goes, and cost microseconds to list
again: a client that does not listen for changes should ask again rather than trust a copy."""


class Client(NamedTuple):
    """What the protocol knows about the client behind one request."""

    version: str
    """The protocol version this request is answered in."""
    name: str | None
    report_progress: ProgressReporter
    list_roots: Callable[[], Awaitable[list[str] | None]] | None
    """Asks the client for its roots (`file://` URIs); None when it cannot be asked (2026-07-28, or no
    `roots` capability). Answers None if the client did not answer usefully."""
    roots_generation: int
    """Increases each time the client says its roots changed."""


class Failure(NamedTuple):
    """An answer that is a JSON-RPC error (say, an unknown resource)."""

    code: int
    message: str


class Application(Protocol):
    """What the front end needs from the bridge: identity, tools, resources, and change notices."""

    name: str
    version: str
    instructions: str

    async def list_tools(self, client: Client) -> list[dict[str, Any]]: ...

    async def call_tool(self, name: str, arguments: dict[str, Any], client: Client) -> dict[str, Any]: ...

    async def list_resources(self, client: Client) -> list[dict[str, Any]]: ...

    async def read_resource(self, uri: str, client: Client) -> dict[str, Any] | Failure: ...

    def on_change(self, listener: Callable[[Change], None]) -> None: ...


class Transport(Protocol):
    async def receive(self) -> bytes | wire.Malformed | None:
        """The next line, a refusal of one that was too long, or None at end of input."""
        ...

    async def send(self, data: bytes) -> None:
        """Queue one encoded message; waits while the queue is full (backpressure)."""
        ...


class _Handshake(NamedTuple):
    version: str
    capabilities: dict[str, Any]
    client_name: str | None


class _Listener:
    """One open `subscriptions/listen` stream: which changes it wants, and whether it should end."""

    def __init__(self, request_id: Id, changes: frozenset[Change]) -> None:
        self.request_id = request_id
        self.changes = changes
        self.done = asyncio.Event()


class Frontend:
    def __init__(self, app: Application, transport: Transport) -> None:
        self._app = app
        self._transport = transport
        self._server_info = {"name": app.name, "version": app.version}
        self._handshake: _Handshake | None = None
        self._running: dict[Id, asyncio.Task[None]] = {}
        self._cancelled: set[Id] = set()
        self._listeners: dict[Id, _Listener] = {}
        self._asked: dict[Id, asyncio.Future[dict[str, Any] | None]] = {}
        self._our_ids = itertools.count(1)
        self._roots_generation = 0
        self._pending_changes: set[Change] = set()
        self._change_ready = asyncio.Event()
        self._closing = False
        app.on_change(self._on_change)

    # -- the connection ------------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve until stdin ends, then answer or cancel what is still running."""
        notifier = asyncio.create_task(self._notify_changes())
        try:
            while (line := await self._transport.receive()) is not None:
                message = line if isinstance(line, wire.Malformed) else wire.decode(line)
                await self._dispatch(message)
        finally:
            await self._shutdown()
            notifier.cancel()

    async def _dispatch(self, message: wire.Message) -> None:
        if isinstance(message, wire.Request):
            if message.id in self._running:
                await self._send(wire.error(message.id, wire.INVALID_REQUEST,
                                            f"request id {message.id!r} is already in use by a request that has "
                                            "not been answered; use a new id"))
                return
            if len(self._running) - len(self._listeners) >= MAX_RUNNING:
                await self._send(wire.error(message.id, wire.SERVER_BUSY,
                                            f"{MAX_RUNNING} requests are already running on this connection; wait "
                                            "for some of their answers (or cancel them), then send this again"))
                return
            self._running[message.id] = asyncio.create_task(self._serve_request(message))
        elif isinstance(message, wire.Notification):
            self._on_notification(message)
        elif isinstance(message, wire.Response):
            asked = self._asked.pop(message.id, None)
            if asked is not None and not asked.done():
                asked.set_result(message.result)
        else:
            await self._send(wire.error(message.id, message.code, message.message))

    async def _shutdown(self) -> None:
        self._closing = True
        for asked in self._asked.values():
            if not asked.done():
                asked.set_result(None)  # the client can no longer answer
        for listener in self._listeners.values():
            listener.done.set()  # each stream ends with its result
        running = list(self._running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=SHUTDOWN_GRACE_S)
            for task in late:
                task.cancel("stdin closed")
            if late:
                await asyncio.wait(late)

    async def _send(self, message: dict[str, Any]) -> None:
        await self._transport.send(wire.encode(message))

    # -- requests ------------------------------------------------------------------------------

    async def _serve_request(self, request: wire.Request) -> None:
        try:
            answer = await self._answer(request)
        except asyncio.CancelledError:
            if request.id in self._cancelled:
                return  # the client cancelled it: MCP says no answer is sent
            answer = wire.error(request.id, wire.REQUEST_ABANDONED,
                                f"{request.method} was cancelled: the client closed stdin before it finished "
                                f"(the server waits {SHUTDOWN_GRACE_S:g} s for running requests)")
        except Exception as exc:
            log.exception("answering %s failed", request.method)
            answer = wire.error(request.id, wire.INTERNAL_ERROR,
                                f"{request.method} failed inside the server ({type(exc).__name__}: {exc}); "
                                "the server log has the details, and the server keeps serving")
        finally:
            self._running.pop(request.id, None)
            self._cancelled.discard(request.id)
        try:
            data = wire.encode(answer)
        except ValueError as exc:  # NaN or infinity in a result: not JSON
            log.warning("the answer to %s cannot be sent as JSON: %s", request.method, exc)
            data = wire.encode(wire.error(request.id, wire.INTERNAL_ERROR,
                                          f"the result of {request.method} holds a value JSON cannot carry ({exc}, "
                                          "e.g. NaN or an infinite number); nothing was sent in its place"))
        await self._transport.send(data)

    async def _answer(self, request: wire.Request) -> dict[str, Any]:
        method, params = request.method, request.params
        if method == "initialize":
            return self._initialize(request)
        if eras.is_modern(params):
            found = eras.envelope(params)
            if isinstance(found, eras.EnvelopeError):
                return wire.error(request.id, found.code, found.message, found.data)
            client = self._client(request, found.version, _client_name(found.client_info), None)
            body = await self._modern(request, client)
            if "result" in body:
                body["result"].setdefault("resultType", "complete")
                body["result"].setdefault("_meta", {})[eras.SERVER_INFO_KEY] = dict(self._server_info)
            return body
        if method == "server/discover":
            return wire.result(request.id, self._discover())
        if method == "ping":
            return wire.result(request.id, {})
        handshake = self._handshake
        if handshake is None:
            return wire.error(request.id, wire.INVALID_REQUEST,
                              f"{method} before initialize: send initialize first (protocol "
                              f"{eras.HANDSHAKE_VERSIONS[-1]} and earlier), or put the 2026-07-28 envelope "
                              f"(_meta {eras.PROTOCOL_VERSION_KEY!r}, {eras.CLIENT_CAPABILITIES_KEY!r}) on "
                              "every request")
        roots = self._ask_roots if "roots" in handshake.capabilities else None
        return await self._common(request, self._client(request, handshake.version, handshake.client_name, roots))

    def _initialize(self, request: wire.Request) -> dict[str, Any]:
        params = request.params
        requested, info = params.get("protocolVersion"), params.get("clientInfo")
        capabilities = params.get("capabilities", {})
        if not isinstance(requested, str) or not isinstance(capabilities, dict):
            return wire.error(request.id, wire.INVALID_PARAMS,
                              "initialize needs params.protocolVersion (a string) and params.capabilities (an "
                              "object)")
        version = eras.negotiate(requested)
        self._handshake = _Handshake(version, capabilities, _client_name(info))
        self._roots_generation += 1  # a new handshake may bring new roots
        return wire.result(request.id, {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": self._server_info,
            "instructions": self._app.instructions,
        })

    def _discover(self) -> dict[str, Any]:
        return {
            "supportedVersions": list(eras.MODERN_VERSIONS),
            "capabilities": CAPABILITIES,
            "instructions": self._app.instructions,
            "ttlMs": DISCOVER_TTL_MS,
            "cacheScope": "public",
        }

    async def _modern(self, request: wire.Request, client: Client) -> dict[str, Any]:
        if request.method == "server/discover":
            return wire.result(request.id, self._discover())
        if request.method == "subscriptions/listen":
            return await self._listen(request)
        if request.method in ("ping", "logging/setLevel"):
            return wire.error(request.id, wire.METHOD_NOT_FOUND,
                              f"{request.method} is not a method of protocol {client.version}")
        body = await self._common(request, client)
        result = body.get("result")
        if result is not None and request.method in ("tools/list", "resources/list", "resources/templates/list"):
            result.update(ttlMs=LIST_TTL_MS, cacheScope="private")  # the lists depend on the key
        return body

    async def _common(self, request: wire.Request, client: Client) -> dict[str, Any]:
        """The methods both eras share."""
        method, params, rid = request.method, request.params, request.id
        if method == "tools/list":
            return wire.result(rid, {"tools": await self._app.list_tools(client)})
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments")
            if arguments is None:
                arguments = {}
            if not isinstance(name, str) or not isinstance(arguments, dict):
                return wire.error(rid, wire.INVALID_PARAMS,
                                  "tools/call needs params.name (a string) and params.arguments (an object)")
            if len(arguments) > wire.MAX_ARGUMENTS:
                return wire.error(rid, wire.INVALID_PARAMS,
                                  f"tools/call with {len(arguments)} arguments; at most {wire.MAX_ARGUMENTS}")
            return wire.result(rid, await self._app.call_tool(name, arguments, client))
        if method == "resources/list":
            return wire.result(rid, {"resources": await self._app.list_resources(client)})
        if method == "resources/templates/list":
            return wire.result(rid, {"resourceTemplates": []})
        if method == "resources/read":
            uri = params.get("uri")
            if not isinstance(uri, str):
                return wire.error(rid, wire.INVALID_PARAMS, "resources/read needs params.uri (a string)")
            read = await self._app.read_resource(uri, client)
            if isinstance(read, Failure):
                return wire.error(rid, read.code, read.message)
            return wire.result(rid, read)
        return wire.error(rid, wire.METHOD_NOT_FOUND,
                          f"unknown method {method!r}; this server serves tools/* and resources/*")

    def _client(self, request: wire.Request, version: str, name: str | None,
                roots: Callable[[], Awaitable[list[str] | None]] | None) -> Client:
        meta = request.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        progress = self._progress(token) if isinstance(token, int | str) and not isinstance(token, bool) \
            else _no_progress
        return Client(version, name, progress, roots, self._roots_generation)

    def _progress(self, token: Id) -> ProgressReporter:
        async def report(done: float, total: float | None, message: str | None) -> None:
            params: dict[str, Any] = {"progressToken": token, "progress": done}
            if total is not None:
                params["total"] = total
            if message is not None:
                params["message"] = message
            await self._send(wire.notification("notifications/progress", params))

        return report

    async def _ask_roots(self) -> list[str] | None:
        """`roots/list` to a handshake client that declared roots: its `file://` root URIs."""
        if self._closing:
            return None
        our_id = f"compass-bridge-{next(self._our_ids)}"
        answer = asyncio.get_running_loop().create_future()
        self._asked[our_id] = answer
        try:
            await self._send(wire.request(our_id, "roots/list"))
            async with asyncio.timeout(ROOTS_TIMEOUT_S):
                result = await answer
        except TimeoutError:
            log.warning("the client declared roots but did not answer roots/list within %g s; keeping the "
                        "configured roots", ROOTS_TIMEOUT_S)
            return None
        finally:
            self._asked.pop(our_id, None)
        roots = result.get("roots") if result else None
        if not isinstance(roots, list):
            log.warning("the client's roots/list answer has no list of roots; keeping the configured roots")
            return None
        return [r["uri"] for r in roots if isinstance(r, dict) and isinstance(r.get("uri"), str)]

    # -- notifications and change notices ------------------------------------------------------

    def _on_notification(self, message: wire.Notification) -> None:
        if message.method == "notifications/cancelled":
            target = message.params.get("requestId")
            task = self._running.get(target) if isinstance(target, int | str) else None
            if task is not None and target is not None:
                self._cancelled.add(target)
                listener = self._listeners.get(target)
                if listener is not None:
                    listener.done.set()
                task.cancel()
        elif message.method == "notifications/roots/list_changed":
            self._roots_generation += 1
        # notifications/initialized and anything else: nothing to do (the initialize answer is what counts).

    def _on_change(self, change: Change) -> None:
        self._pending_changes.add(change)
        self._change_ready.set()

    async def _notify_changes(self) -> None:
        """Tell every client that listens: one notice per kind of change, however many happened meanwhile."""
        while True:
            await self._change_ready.wait()
            self._change_ready.clear()
            changes, self._pending_changes = self._pending_changes, set()
            for change in sorted(changes):
                method = f"notifications/{change}/list_changed"
                if self._handshake is not None:
                    await self._send(wire.notification(method))
                for listener in list(self._listeners.values()):
                    if change in listener.changes:
                        await self._send(wire.notification(
                            method, {"_meta": {eras.SUBSCRIPTION_ID_KEY: listener.request_id}}))

    async def _listen(self, request: wire.Request) -> dict[str, Any]:
        wanted = request.params.get("notifications")
        if not isinstance(wanted, dict):
            return wire.error(request.id, wire.INVALID_PARAMS,
                              "subscriptions/listen needs params.notifications (an object such as "
                              '{"toolsListChanged": true})')
        if len(self._listeners) >= MAX_LISTENERS:
            return wire.error(request.id, wire.INVALID_REQUEST,
                              f"{MAX_LISTENERS} subscriptions/listen streams are already open on this connection; "
                              "cancel one before opening another")
        honoured = {flag: True for flag in _LISTEN_FLAGS if wanted.get(flag) is True}
        meta = {eras.SUBSCRIPTION_ID_KEY: request.id}
        listener = _Listener(request.id, frozenset(_LISTEN_FLAGS[f] for f in honoured))
        self._listeners[request.id] = listener
        try:
            await self._send(wire.notification("notifications/subscriptions/acknowledged",
                                               {"notifications": honoured, "_meta": meta}))
            await listener.done.wait()
        finally:
            self._listeners.pop(request.id, None)
        return wire.result(request.id, {"_meta": meta})


async def _no_progress(done: float, total: float | None, message: str | None) -> None:
    return None


def _client_name(info: Any) -> str | None:
    name = info.get("name") if isinstance(info, dict) else None
    return name if isinstance(name, str) else None

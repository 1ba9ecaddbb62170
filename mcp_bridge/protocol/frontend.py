"""The protocol front end: answers every request on one stdio connection, in the request's own era.

One `Frontend` serves one connection, on plain threads. One worker thread at a time reads stdin (`_lead`):
a request answered from memory or by bounded local work (a file read; `Tool.quick`) it answers itself before
reading on; before anything slower it wakes another worker to read on and then answers the request, so a slow
tool never holds up a quick `tools/list` and reading never stops. Each answer is in the request's era (see
`eras`); the MCP methods that mean something to the bridge (tools and resources) go to the `Application`.
Everything else is answered here: the handshake, `server/discover`, `ping`, cancellation, progress, change
notices (unsolicited `list_changed` for a 2025 client, `subscriptions/listen` streams for a 2026-07-28 one),
and an error for anything malformed, unknown or sent too early. When stdin closes, requests still running get
`SHUTDOWN_GRACE_S` to finish; then they are cancelled and answered with an error.

Why threads and not asyncio: the path to the first answer is mostly imports, and asyncio is ~25 ms and
~5 MiB of them per process. Why the reading thread answers quick requests itself: handing a request to another
thread cost ~175 µs of a ~480 µs read_file on a 2-core VM (a wake-up on the other core, the GIL passed back and
forth). Coroutine tools still run on an event loop, started only when one is called (`mcp_bridge.aio`).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol

from mcp_bridge.protocol import eras, wire
from mcp_bridge.protocol.wire import Id
from mcp_bridge.tools.base import Cancellation

log = logging.getLogger(__name__)

Change = Literal["tools", "resources"]
ProgressReporter = Callable[[float, float | None, str | None], None]

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
ABANDON_WAIT_S = 2.0
"""After the grace period, how long cancelled requests may take to unwind (and log their usage row)."""
_AT_ONCE = frozenset({"initialize", "ping", "server/discover", "tools/list", "resources/list",
                      "resources/templates/list"})
"""Methods answered from memory: the thread that read one answers it before reading on."""
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
    list_roots: Callable[[], list[str] | None] | None
    """Asks the client for its roots (`file://` URIs) and waits for the answer; None when it cannot be asked
    (2026-07-28, or no `roots` capability). Answers None if the client did not answer usefully."""
    roots_generation: int
    """Increases each time the client says its roots changed."""
    cancelled: Cancellation
    """Set when the client cancels this request, or the server stops before it is answered."""


class Failure(NamedTuple):
    """An answer that is a JSON-RPC error (say, an unknown resource)."""

    code: int
    message: str


class Application(Protocol):
    """What the front end needs from the bridge: identity, tools, resources, and change notices."""

    name: str
    version: str
    instructions: str

    def list_tools(self, client: Client) -> list[dict[str, Any]]: ...

    def quick_call(self, name: str, roots_generation: int | None) -> bool:
        """Whether calling `name` is bounded local work (`Tool.quick`) that needs nothing from the client, answered
        before reading on. `roots_generation`: of a client that can be asked for its roots, else None."""
        ...

    def call_tool(self, name: str, arguments: dict[str, Any], client: Client) -> dict[str, Any]: ...

    def list_resources(self, client: Client) -> list[dict[str, Any]]: ...

    def read_resource(self, uri: str, client: Client) -> dict[str, Any] | Failure: ...

    def on_change(self, listener: Callable[[Change], None]) -> None: ...


class Transport(Protocol):
    def receive(self) -> bytes | wire.Malformed | None:
        """The next line, a refusal of one that was too long, or None at end of input (one reading thread)."""
        ...

    def send(self, data: bytes) -> None:
        """Send one encoded message, from any thread; waits while too much is queued (backpressure)."""
        ...


class _Handshake(NamedTuple):
    version: str
    capabilities: dict[str, Any]
    client_name: str | None


class _Running:
    """One request being answered: how to cancel it, and whether its answer should still be sent."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.cancelled = Cancellation()
        self.silenced = False
        """Set when the answer must not be sent: the client cancelled it, or shut-down already answered it."""
        self.done = threading.Event()
        """For a `subscriptions/listen` stream: set when the stream should end."""
        self.listening: frozenset[Change] | None = None
        """For an open `subscriptions/listen` stream: the changes it wants."""


class _Asked:
    """A request of ours (`roots/list`) waiting for the client's answer."""

    def __init__(self) -> None:
        self.answered = threading.Event()
        self.result: dict[str, Any] | None = None


class _Workers:
    """Threads that read stdin and answer requests: an idle one takes the next job, and one is added when
    none is idle.

    At most MAX_RUNNING + MAX_LISTENERS requests run at once (the front end refuses more), plus the one
    thread reading, so the pool is bounded by that; threads stay for the connection's life and cost nothing
    while they wait."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        if spawn:
            threading.Thread(target=self._work, name="request", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            job()
            with self._lock:
                self._idle += 1


class Frontend:
    def __init__(self, app: Application, transport: Transport) -> None:
        self._app = app
        self._transport = transport
        self._server_info = {"name": app.name, "version": app.version}
        self._handshake: _Handshake | None = None
        self._lock = threading.Condition(threading.Lock())
        """Guards `_running` and `_asked`; notified when a request finishes."""
        self._running: dict[Id, _Running] = {}
        self._listening = 0
        """How many of `_running` are open `subscriptions/listen` streams."""
        self._asked: dict[Id, _Asked] = {}
        self._workers = _Workers()
        self._our_ids = itertools.count(1)
        self._roots_generation = 0
        self._closing = False
        self._ended = threading.Event()
        """Set when stdin has ended (or reading it failed: then `_failure`)."""
        self._failure: BaseException | None = None
        app.on_change(self._on_change)

    # -- the connection ------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve until stdin ends, then answer or cancel what is still running.

        The calling thread only waits (so a signal's `SystemExit` lands here, never inside a tool): reading is
        done by `_lead`, on the worker threads."""
        self._workers.submit(self._lead)
        try:
            self._ended.wait()
        finally:
            self._shutdown()
        if self._failure is not None:
            raise self._failure

    def _lead(self) -> None:
        """Read messages and answer quick requests (`_at_once`) here; at a slow one, hand reading on and answer it.

        Leader and followers: the thread that read a request answers it itself. A quick one (answered from
        memory, or bounded local work such as a file read) is answered before reading on, so it costs no
        thread hand-off at all (~175 µs per call on a 2-core VM, measured: a wake-up on the other core and the
        GIL passed back and forth). Before anything slower, an idle worker is woken to read on, so reading
        never stops behind a slow tool and a cancel for it is always read."""
        try:
            while (line := self._transport.receive()) is not None:
                message = line if isinstance(line, wire.Malformed) else wire.decode(line)
                if not isinstance(message, wire.Request):
                    self._dispatch(message)
                    continue
                running = self._admit(message)
                if not isinstance(running, _Running):
                    self._send(running)  # refused at once: reading goes on here
                    continue
                if self._at_once(message):
                    self._serve_request(message, running)
                    continue
                self._workers.submit(self._lead)
                self._serve_request(message, running)
                return
        except BaseException as exc:  # handed to serve(), which re-raises it after the shut-down
            log.exception("reading stdin failed")
            self._failure = exc
        self._ended.set()

    def _at_once(self, request: wire.Request) -> bool:
        """Whether the reading thread may answer `request` before reading on: it never waits on the client (a
        `roots/list` answer must be read by someone) or on anything slower than the local disk."""
        if request.method in _AT_ONCE:
            return True
        if request.method != "tools/call":
            return False
        name = request.params.get("name")
        if not isinstance(name, str):
            return True  # an error, answered at once
        handshake = self._handshake
        askable = handshake is not None and "roots" in handshake.capabilities and not eras.is_modern(request.params)
        return self._app.quick_call(name, self._roots_generation if askable else None)

    def _dispatch(self, message: wire.Message) -> None:
        if isinstance(message, wire.Notification):
            self._on_notification(message)
        elif isinstance(message, wire.Response):
            with self._lock:
                asked = self._asked.pop(message.id, None)
            if asked is not None:
                asked.result = message.result
                asked.answered.set()
        elif isinstance(message, wire.Malformed):
            self._send(wire.error(message.id, message.code, message.message))

    def _admit(self, request: wire.Request) -> _Running | dict[str, Any]:
        """The request registered as running, or the error that refuses it."""
        with self._lock:
            if self._closing:
                return wire.error(request.id, wire.REQUEST_ABANDONED,
                                  f"{request.method} arrived while the server is stopping; start it again and "
                                  "send it there")
            if request.id in self._running:
                return wire.error(request.id, wire.INVALID_REQUEST,
                                  f"request id {request.id!r} is already in use by a request that has not been "
                                  "answered; use a new id")
            if len(self._running) - self._listening >= MAX_RUNNING:
                return wire.error(request.id, wire.SERVER_BUSY,
                                  f"{MAX_RUNNING} requests are already running on this connection; wait for "
                                  "some of their answers (or cancel them), then send this again")
            running = self._running[request.id] = _Running(request.method)
        return running

    def _shutdown(self) -> None:
        with self._lock:
            self._closing = True
            asked, self._asked = list(self._asked.values()), {}
            for running in self._running.values():
                running.done.set()  # each listen stream ends with its result
        for waiting in asked:
            waiting.answered.set()  # the client can no longer answer
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        with self._lock:
            self._lock.wait_for(lambda: not self._running, SHUTDOWN_GRACE_S)
            late = [(rid, r) for rid, r in self._running.items() if not r.silenced]
            for _, running in late:
                running.silenced = True
        for rid, running in late:
            self._send(wire.error(rid, wire.REQUEST_ABANDONED,
                                  f"{running.method} was cancelled: the client closed stdin before it finished "
                                  f"(the server waits {SHUTDOWN_GRACE_S:g} s for running requests)"))
            running.cancelled.set()
        with self._lock:
            # Cancelled work unwinds (and logs its usage row) before the process goes on to exit.
            self._lock.wait_for(lambda: not self._running, max(deadline - time.monotonic(), 0) + ABANDON_WAIT_S)

    def _send(self, message: dict[str, Any]) -> None:
        self._transport.send(wire.encode(message))

    # -- requests ------------------------------------------------------------------------------

    def _serve_request(self, request: wire.Request, running: _Running) -> None:
        try:
            answer = self._answer(request, running)
        except Exception as exc:
            log.exception("answering %s failed", request.method)
            answer = wire.error(request.id, wire.INTERNAL_ERROR,
                                f"{request.method} failed inside the server ({type(exc).__name__}: {exc}); "
                                "the server log has the details, and the server keeps serving")
        try:
            data = wire.encode(answer)
        except ValueError as exc:  # NaN or infinity in a result: not JSON
            log.warning("the answer to %s cannot be sent as JSON: %s", request.method, exc)
            data = wire.encode(wire.error(request.id, wire.INTERNAL_ERROR,
                                          f"the result of {request.method} holds a value JSON cannot carry ({exc}, "
                                          "e.g. NaN or an infinite number); nothing was sent in its place"))
        with self._lock:
            silenced = running.silenced  # cancelled by the client (MCP: no answer), or answered at shut-down
            running.silenced = True
        try:
            if not silenced:
                self._transport.send(data)
        finally:
            with self._lock:
                self._running.pop(request.id, None)
                self._lock.notify_all()

    def _answer(self, request: wire.Request, running: _Running) -> dict[str, Any]:
        method, params = request.method, request.params
        if method == "initialize":
            return self._initialize(request)
        if eras.is_modern(params):
            found = eras.envelope(params)
            if isinstance(found, eras.EnvelopeError):
                return wire.error(request.id, found.code, found.message, found.data)
            client = self._client(request, running, found.version, _client_name(found.client_info), None)
            body = self._modern(request, running, client)
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
        return self._common(request, self._client(request, running, handshake.version, handshake.client_name, roots))

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

    def _modern(self, request: wire.Request, running: _Running, client: Client) -> dict[str, Any]:
        if request.method == "server/discover":
            return wire.result(request.id, self._discover())
        if request.method == "subscriptions/listen":
            return self._listen(request, running)
        if request.method in ("ping", "logging/setLevel"):
            return wire.error(request.id, wire.METHOD_NOT_FOUND,
                              f"{request.method} is not a method of protocol {client.version}")
        body = self._common(request, client)
        result = body.get("result")
        if result is not None and request.method in ("tools/list", "resources/list", "resources/templates/list"):
            result.update(ttlMs=LIST_TTL_MS, cacheScope="private")  # the lists depend on the key
        return body

    def _common(self, request: wire.Request, client: Client) -> dict[str, Any]:
        """The methods both eras share."""
        method, params, rid = request.method, request.params, request.id
        if method == "tools/list":
            return wire.result(rid, {"tools": self._app.list_tools(client)})
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
            return wire.result(rid, self._app.call_tool(name, arguments, client))
        if method == "resources/list":
            return wire.result(rid, {"resources": self._app.list_resources(client)})
        if method == "resources/templates/list":
            return wire.result(rid, {"resourceTemplates": []})
        if method == "resources/read":
            uri = params.get("uri")
            if not isinstance(uri, str):
                return wire.error(rid, wire.INVALID_PARAMS, "resources/read needs params.uri (a string)")
            read = self._app.read_resource(uri, client)
            if isinstance(read, Failure):
                return wire.error(rid, read.code, read.message)
            return wire.result(rid, read)
        return wire.error(rid, wire.METHOD_NOT_FOUND,
                          f"unknown method {method!r}; this server serves tools/* and resources/*")

    def _client(self, request: wire.Request, running: _Running, version: str, name: str | None,
                roots: Callable[[], list[str] | None] | None) -> Client:
        meta = request.params.get("_meta")
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        progress = self._progress(token, running) if isinstance(token, int | str) and not isinstance(token, bool) \
            else _no_progress
        return Client(version, name, progress, roots, self._roots_generation, running.cancelled)

    def _progress(self, token: Id, running: _Running) -> ProgressReporter:
        def report(done: float, total: float | None, message: str | None) -> None:
            if running.silenced:
                return  # answered or cancelled: no more notices for it
            params: dict[str, Any] = {"progressToken": token, "progress": done}
            if total is not None:
                params["total"] = total
            if message is not None:
                params["message"] = message
            self._send(wire.notification("notifications/progress", params))

        return report

    def _ask_roots(self) -> list[str] | None:
        """`roots/list` to a handshake client that declared roots: its `file://` root URIs."""
        our_id = f"compass-bridge-{next(self._our_ids)}"
        asked = _Asked()
        with self._lock:
            if self._closing:
                return None
            self._asked[our_id] = asked
        try:
            self._send(wire.request(our_id, "roots/list"))
            if not asked.answered.wait(ROOTS_TIMEOUT_S):
                log.warning("the client declared roots but did not answer roots/list within %g s; keeping the "
                            "configured roots", ROOTS_TIMEOUT_S)
                return None
        finally:
            with self._lock:
                self._asked.pop(our_id, None)
        result = asked.result
        roots = result.get("roots") if result else None
        if not isinstance(roots, list):
            log.warning("the client's roots/list answer has no list of roots; keeping the configured roots")
            return None
        return [r["uri"] for r in roots if isinstance(r, dict) and isinstance(r.get("uri"), str)]

    # -- notifications and change notices ------------------------------------------------------

    def _on_notification(self, message: wire.Notification) -> None:
        if message.method == "notifications/cancelled":
            target = message.params.get("requestId")
            with self._lock:
                running = self._running.get(target) if isinstance(target, int | str) else None
                if running is None:
                    return
                running.silenced = True  # MCP: a cancelled request gets no answer
            running.done.set()
            running.cancelled.set()
        elif message.method == "notifications/roots/list_changed":
            self._roots_generation += 1
        # notifications/initialized and anything else: nothing to do (the initialize answer is what counts).

    def _on_change(self, change: Change) -> None:
        """Tell every client that listens (called from whichever thread saw the change)."""
        method = f"notifications/{change}/list_changed"
        if self._handshake is not None:
            self._send(wire.notification(method))
        with self._lock:
            streams = [(rid, r.listening) for rid, r in self._running.items() if r.listening is not None]
        for rid, listening in streams:
            if change in listening:
                self._send(wire.notification(method, {"_meta": {eras.SUBSCRIPTION_ID_KEY: rid}}))

    def _listen(self, request: wire.Request, running: _Running) -> dict[str, Any]:
        wanted = request.params.get("notifications")
        if not isinstance(wanted, dict):
            return wire.error(request.id, wire.INVALID_PARAMS,
                              "subscriptions/listen needs params.notifications (an object such as "
                              '{"toolsListChanged": true})')
        honoured = {flag: True for flag in _LISTEN_FLAGS if wanted.get(flag) is True}
        meta = {eras.SUBSCRIPTION_ID_KEY: request.id}
        with self._lock:
            if self._listening >= MAX_LISTENERS:
                return wire.error(request.id, wire.INVALID_REQUEST,
                                  f"{MAX_LISTENERS} subscriptions/listen streams are already open on this "
                                  "connection; cancel one before opening another")
            running.listening = frozenset(_LISTEN_FLAGS[f] for f in honoured)
            self._listening += 1
        self._send(wire.notification("notifications/subscriptions/acknowledged",
                                     {"notifications": honoured, "_meta": meta}))
        running.done.wait()  # set by a cancel, or by the shut-down (for every running request)
        with self._lock:
            running.listening = None
            self._listening -= 1
        return wire.result(request.id, {"_meta": meta})


def _no_progress(done: float, total: float | None, message: str | None) -> None:
    return None


def _client_name(info: Any) -> str | None:
    name = info.get("name") if isinstance(info, dict) else None
    return name if isinstance(name, str) else None

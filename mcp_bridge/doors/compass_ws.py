"""Compass's bridge WebSocket (`[agent.compass_ws]`), wire-compatible with Compass's web client, on the run
service.

Compass's client sends no token: on connect it waits for `auth_ok`. So the only gates are the handshake's:
the `Origin` must be one of the configured Compass origins (by default the stored Compass URL's) and the
`Host` a loopback name; anything else is refused with an HTTP error before the WebSocket opens, so no
`auth_ok` is ever sent to it. The user in `auth_ok` is the Compass user the stored Compass key belongs to
(asked of Compass). Any local *process* can claim an allowed Origin, which is why this door is off by default
(docs/DOORS.md). Runs are started as the key-less default identity (`default_scopes`), with the Compass
context in the prompt, the engine from config; reviews wait for `compass-bridge approvals` (or time out).

Client → server: `chat.send {id, trigger?, messages, model?, context}`, `chat.abort {runId}`, `ping`,
`auth {compassUrl, apiKey}`. Server → client: `auth_ok {user}`, `auth_error {message}`, `chat.ack {id, runId}`,
`chunk {runId, chunk}`, `chat.done {runId}`, `chat.error {runId, error}`, `pong`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.http11 import Response as WsResponse

from mcp_bridge.agent.client import AgentClient, AgentError
from mcp_bridge.agent.service import Listener
from mcp_bridge.compass.client import CompassClient, CompassError, Registration
from mcp_bridge.compass.credentials import ApiKey, CredentialsError, check_url, load_credentials
from mcp_bridge.config import Config
from mcp_bridge.doors.loopback import host_refusal, normalize_origin, origin_refusal
from mcp_bridge.doors.prompt import PromptError, compass_context, latest_user_text, split
from mcp_bridge.doors.service import TERMINAL, connect, default_cwd
from mcp_bridge.doors.settings import CompassWsSettings
from mcp_bridge.paths import StatePaths

log = logging.getLogger(__name__)

REGISTRATION_TTL_S = 60.0
"""How long Compass's answer about the stored key is reused, so connections cannot make the door hammer it."""
MAX_CONVERSATIONS = 256
"""Conversations remembered (conversationId → run) for follow-ups; the oldest is forgotten first."""
OPEN_TIMEOUT_S = 10.0


def default_origins(paths: StatePaths, config: Config) -> frozenset[str]:
    """The origin of the stored (or environment's) Compass URL; empty when Compass is not configured."""
    try:
        credentials = load_credentials(paths, config.compass)
    except CredentialsError:
        return frozenset()
    return frozenset({normalize_origin(credentials.url)}) if credentials else frozenset()


class Refused(Exception):
    """auth_error: the message says why and what to do."""


@dataclass
class _Run:
    events: Listener
    """Bounded like the service's own subscribers: a run whose page reads too slowly overflows, and the door
    re-reads the rest from the service's store when the page has caught up."""
    pump: asyncio.Task[None] | None = None


class CompassWsDoor:
    def __init__(self, paths: StatePaths, config: Config, settings: CompassWsSettings,
                 origins: frozenset[str]) -> None:
        self.paths = paths
        self.config = config
        self.settings = settings
        self.origins = origins
        self.conversations: OrderedDict[str, str] = OrderedDict()
        self.started: OrderedDict[str, None] = OrderedDict()
        """Runs started through this door (the only ones `chat.abort` may end)."""
        self._connections = 0
        self._registration: tuple[float, Registration] | None = None
        self._server: Server | None = None

    async def start(self) -> int:
        self._server = await serve(
            self._serve, self.settings.host, self.settings.port, process_request=self._check,
            max_size=self.settings.max_message_bytes, max_queue=4, compression=None, server_header=None,
            open_timeout=OPEN_TIMEOUT_S, close_timeout=2)
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Request) -> WsResponse | None:
        """Before the handshake: a loopback Host, an allowed Origin, room for one more connection."""
        refused = host_refusal(request.headers.get("Host"))
        if refused is None:
            refused = origin_refusal(request.headers.get("Origin"), self.origins, required=True)
        if refused is not None:
            log.warning("compass_ws: refused a connection: %s", refused)
            return connection.respond(403, f"compass-bridge: {refused}\n")
        if self._connections >= self.settings.max_connections:
            return connection.respond(503, f"compass-bridge: {self._connections} connections are open, the limit "
                                      "([agent.compass_ws] max_connections); close a tab and retry\n")
        return None

    async def registration(self, fresh: bool = False) -> Registration:
        """Who the stored Compass key belongs to, and their context (asked of Compass at most once a minute)."""
        now = time.monotonic()
        if not fresh and self._registration is not None and now - self._registration[0] < REGISTRATION_TTL_S:
            return self._registration[1]
        try:
            credentials = load_credentials(self.paths, self.config.compass)
        except CredentialsError as exc:
            raise Refused(str(exc)) from None
        if credentials is None:
            raise Refused("compass-bridge has no Compass key; run `compass-bridge compass login --url "
                          "https://YOUR-COMPASS`")
        registration = await self._register(credentials.url, credentials.key)
        self._registration = (now, registration)
        return registration

    async def _register(self, url: str, key: ApiKey) -> Registration:
        try:
            async with CompassClient(url, key, self.config.compass) as client:
                return await client.register()
        except CompassError as exc:
            raise Refused(str(exc)) from None

    async def check_auth(self, message: Mapping[str, Any]) -> Registration:
        """`auth {compassUrl, apiKey}`: the key is checked against that Compass, which must be an allowed origin."""
        url, key = message.get("compassUrl"), message.get("apiKey")
        if not isinstance(url, str) or not isinstance(key, str):
            raise Refused("auth needs compassUrl and apiKey (strings)")
        try:
            url = check_url(url, source="compassUrl")
            if normalize_origin(url) not in self.origins:
                raise Refused(f"compassUrl {url} is not one of the allowed Compass origins "
                              f"({', '.join(sorted(self.origins))}); set [agent.compass_ws] origins")
            return await self._register(url, ApiKey(key, source="apiKey"))
        except (CredentialsError, ValueError) as exc:
            raise Refused(str(exc)) from None

    def remember(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > MAX_CONVERSATIONS:
            table.popitem(last=False)

    async def _serve(self, ws: ServerConnection) -> None:
        self._connections += 1
        try:
            if self._connections > self.settings.max_connections:  # handshakes that passed _check together
                await ws.close(1013, "too many connections; retry later")
                return
            await _Session(self, ws).run()
        except ConnectionClosed:
            pass
        finally:
            self._connections -= 1


def _user(registration: Registration) -> dict[str, Any]:
    u = registration.user
    return {"id": u.id, "name": u.name, "role": u.role}


class _Session:
    """One page's connection: its Compass identity, the runs it started and their pumps."""

    def __init__(self, door: CompassWsDoor, ws: ServerConnection) -> None:
        self.door = door
        self.ws = ws
        self.registration: Registration | None = None
        self.client: AgentClient | None = None
        self.reader: asyncio.Task[None] | None = None
        self.runs: dict[str, _Run] = {}

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message, separators=(",", ":"), default=str))

    async def run(self) -> None:
        try:
            self.registration = await self.door.registration()
        except Refused as exc:
            await self.send({"type": "auth_error", "message": str(exc)})
            await self.ws.close(1008, "auth_error")
            return
        await self.send({"type": "auth_ok", "user": _user(self.registration)})
        try:
            async for raw in self.ws:
                await self.handle(raw)
        finally:
            for state in self.runs.values():
                if state.pump is not None:
                    state.pump.cancel()
            if self.reader is not None:
                self.reader.cancel()
            if self.client is not None:
                await self.client.close()

    async def handle(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.send({"type": "error", "message": "a message is a JSON object with a string `type`"})
            return
        kind = message["type"]
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "auth":
            try:
                self.registration = await self.door.check_auth(message)
            except Refused as exc:
                await self.send({"type": "auth_error", "message": str(exc)})
                await self.ws.close(1008, "auth_error")
                return
            await self.send({"type": "auth_ok", "user": _user(self.registration)})
        elif kind == "chat.send":
            await self.chat_send(message)
        elif kind == "chat.abort":
            await self.chat_abort(message)
        else:
            await self.send({"type": "error", "message": f"unknown message type {kind[:50]!r}; this door speaks "
                             "chat.send, chat.abort, ping and auth"})

    async def service(self) -> AgentClient:
        if self.client is None:
            self.client = await connect(self.door.paths)
            self.reader = asyncio.create_task(self._read(self.client))
        return self.client

    async def _read(self, client: AgentClient) -> None:
        """Every event of this connection's subscriptions, into the bounded queue of its run; when the
        service connection is lost, each streaming run is told so (the next chat.send connects again)."""
        async for event in client.events():
            run_id = str(event.get("run_id"))
            events = self.runs.setdefault(run_id, _Run(Listener(run_id))).events
            if event.get("event") == "overflow":  # the service's side of this connection fell behind
                events.overflowed = True
            else:
                events.put(event)
        self.client = None
        await client.close()
        for run_id, state in self.runs.items():
            state.events.put({"event": "state", "run_id": run_id, "state": "failed", "error": (
                "the connection to the run service was lost; the run may go on: `compass-bridge runs show "
                f"{run_id}`")})

    async def chat_send(self, message: Mapping[str, Any]) -> None:
        request_id = message.get("id")
        active = [r for r, s in self.runs.items() if s.pump is not None and not s.pump.done()]
        if len(active) >= self.door.settings.runs_per_connection:
            await self.send({"type": "chat.error", "id": request_id, "runId": None, "error": (
                f"{len(active)} runs of this page are still streaming, the limit ([agent.compass_ws] "
                "runs_per_connection); wait for one to finish or abort it")})
            return
        context = message.get("context") if isinstance(message.get("context"), Mapping) else {}
        assert isinstance(context, Mapping)
        try:
            run_id = await self._start_or_follow(message.get("messages"), context)
        except (PromptError, AgentError) as exc:
            await self.send({"type": "chat.error", "id": request_id, "runId": None, "error": str(exc)})
            return
        await self.send({"type": "chat.ack", "id": request_id, "runId": run_id})
        state = self.runs.setdefault(run_id, _Run(Listener(run_id)))
        state.pump = asyncio.create_task(self._pump(run_id, state))

    async def _start_or_follow(self, messages: Any, context: Mapping[str, Any]) -> str:
        client = await self.service()
        conversation = context.get("conversationId")
        previous = self.door.conversations.get(conversation) if isinstance(conversation, str) else None
        if previous is not None:
            text = latest_user_text(messages)
            # Its replay arrives before the reply: nothing stale of an earlier turn may precede it.
            state = self.runs[previous] = _Run(Listener(previous))
            try:
                await client.request("send", run_id=previous, prompt=text, can_review=True)
                return previous
            except AgentError:  # aborted, busy or gone: the conversation starts afresh
                if self.runs.get(previous) is state:
                    del self.runs[previous]
        assert self.registration is not None
        r = self.registration
        prompt, earlier = split(messages)
        reply = await client.request(
            "start", prompt=prompt, messages=earlier, engine=self.door.settings.engine, can_review=True,
            system=compass_context(_user(r), r.memories, r.dashboards, r.installed_skills, context),
            cwd=default_cwd(self.door.config, self.door.settings.cwd))
        run_id = str(reply["run_id"])
        self.door.remember(self.door.started, run_id, None)
        if isinstance(conversation, str):
            self.door.remember(self.door.conversations, conversation, run_id)
        return run_id

    async def _pump(self, run_id: str, state: _Run) -> None:
        """The run's chunks to the page, in order and once each, then chat.done or chat.error."""
        try:
            await self._forward(run_id, state.events)
        except AgentError as exc:
            with contextlib.suppress(ConnectionClosed):
                await self.send({"type": "chat.error", "runId": run_id, "error": str(exc)})
        except ConnectionClosed:
            pass  # the page left; the run goes on in the service
        finally:
            if self.runs.get(run_id) is state:  # a follow-up may have begun a new stream for the run already
                del self.runs[run_id]

    async def _forward(self, run_id: str, events: Listener) -> None:
        last = 0
        while True:
            if events.overflowed and events.queue.empty():
                if self.client is None:
                    raise AgentError("disconnected", "the connection to the run service was lost")
                events.overflowed = False
                await self.client.request("subscribe", run_id=run_id, after=last)
            event = await events.queue.get()
            if event.get("event") == "chunk":
                if int(event["seq"]) <= last:
                    continue
                last = int(event["seq"])
                await self.send({"type": "chunk", "runId": run_id, "chunk": event["chunk"]})
            elif event.get("event") == "state" and event.get("state") in TERMINAL:
                # Unsubscribed before the page hears of the end: its follow-up subscribes afresh.
                if self.client is not None:
                    with contextlib.suppress(AgentError):
                        await self.client.request("unsubscribe", run_id=run_id)
                if event["state"] in ("failed", "interrupted"):
                    await self.send({"type": "chat.error", "runId": run_id,
                                     "error": event.get("error") or f"the run {event['state']}"})
                else:
                    await self.send({"type": "chat.done", "runId": run_id})
                return

    async def chat_abort(self, message: Mapping[str, Any]) -> None:
        run_id = message.get("runId")
        if not isinstance(run_id, str) or run_id not in self.door.started:
            await self.send({"type": "chat.error", "runId": run_id, "error": (
                "chat.abort names no run started through this door; send the runId from chat.ack")})
            return
        try:
            await (await self.service()).request("abort", run_id=run_id)
        except AgentError as exc:
            await self.send({"type": "chat.error", "runId": run_id, "error": str(exc)})

"""The Compass tools: registered in the background, offered while the Compass key works.

`run()` registers with Compass and keeps trying with capped, jittered backoff while Compass is
unreachable, so the local and browser tools never wait on it. Once registered, every tool Compass
announces becomes an MCP tool with the scope Compass declares. The server's gate checks that scope
against the bridge key; this source checks it against the Compass key — a call needs it in both — and
does not even list a tool the Compass key could not use. A 401 at any time withdraws the tools until
registration works again. The registration is repeated every few minutes (and after every write) to
pick up a revoked key, changed tools and the user's fresh context.

Importing and constructing this is cheap — no anyio, asyncio, httpx or Compass client: the server builds
the source as it starts, and a server with no Compass configured never runs it (`needs_running`). The client,
the tool schemas and anyio's primitives are loaded by `run()`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mcp_bridge.compass.credentials import (
    LOGIN_HINT,
    NEW_KEY_HINT,
    CompassCredentials,
    CredentialsError,
    load_credentials,
)
from mcp_bridge.config import CompassSettings
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import Scope, ScopeError, allows, format_scopes, parse_scope
from mcp_bridge.tools.base import CallContext, Resource, Tool, ToolFailure, ToolOutput

if TYPE_CHECKING:
    import anyio

    from mcp_bridge.compass.client import AnnouncedTool, CompassClient, CompassError, Registration

log = logging.getLogger(__name__)

# MCP tool names allow letters, digits, `_`, `-` and `.`; a name outside that is not offered.
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# Past this size the structured copy would double what the agent reads; large results go out as text only.
_STRUCTURED_MAX_CHARS = 64_000
_SUMMARY_NAMES = 20

REFRESH_INTERVAL_S = 300.0
"""How often a working registration is repeated, to notice a revoked key, changed tools and fresh context."""

RESOURCE_PREFIX = "compass://context/"
_CONTEXT = (
    ("memories", "memories", "The user's saved Compass memories: preferences, decisions, facts and workflows."),
    ("dashboards", "dashboards", "The user's saved custom Compass dashboards."),
    ("skills", "installed_skills", "The agent skills installed in Compass, with whether each is enabled."),
)


class CompassSource:
    """The Compass tools and context (ToolSource protocol).

    Build it with `from_environment`; `credentials` None means Compass is not configured (or not usable,
    with `problem` saying why), and the source then offers nothing and says so in `status()`.
    """

    name = "compass"

    def __init__(self, credentials: CompassCredentials | None, settings: CompassSettings, *,
                 problem: str | None = None, reload: Callable[[], CompassCredentials | None] | None = None,
                 retry_initial_s: float = 1.0, retry_max_s: float = 60.0) -> None:
        self._credentials = credentials
        self._settings = settings
        self._reload = reload
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._client: CompassClient | None = None
        self._registration: Registration | None = None
        self._tools: tuple[Tool, ...] = ()
        self._hidden: dict[str, str] = {}
        self._subscribers: list[Callable[[], None]] = []
        # anyio's events need the running event loop, so they are made by `run()` and `ready()`, never here.
        self._wake: anyio.Event | None = None
        """Set to cut `run()`'s wait short (a call found the key rejected, or a write changed the context)."""
        self._ready: anyio.Event | None = None
        self._attempted = credentials is None
        """The first registration attempt has finished (or there is nothing to attempt)."""
        self._failures = 0
        self._next_attempt_at: float | None = None
        self._last_error: str | None = None
        self._registered_at: float | None = None
        if credentials is None:
            self._state = "invalid configuration" if problem else "not configured"
            self._problem: str | None = problem or f"Compass is not configured: {LOGIN_HINT}"
        else:
            self._state = "connecting"
            self._problem = "registration with Compass has not completed yet"
        self._resources = tuple(
            Resource(uri=RESOURCE_PREFIX + slug, name=f"compass-{slug}", description=description,
                     mime_type="application/json", read=self._reader(field))
            for slug, field, description in _CONTEXT
        )

    @classmethod
    def from_environment(cls, paths: StatePaths, settings: CompassSettings, environ: Mapping[str, str] | None = None,
                         *, retry_initial_s: float = 1.0, retry_max_s: float = 60.0) -> CompassSource:
        """The source for this user's set-up; never raises — a bad set-up is reported by `status()`.

        While registration fails, the credentials are read again before each attempt, so a key replaced
        with `compass login` is picked up by a running server without a restart.
        """
        env = os.environ if environ is None else environ

        def reload() -> CompassCredentials | None:
            return load_credentials(paths, settings, env)

        try:
            credentials = reload()
        except CredentialsError as exc:
            return cls(None, settings, problem=str(exc))
        return cls(credentials, settings, reload=reload, retry_initial_s=retry_initial_s, retry_max_s=retry_max_s)

    # -- ToolSource --------------------------------------------------------------------------

    def tools(self) -> Sequence[Tool]:
        return self._tools

    def resources(self) -> Sequence[Resource]:
        return self._resources if self._registration is not None else ()

    def subscribe(self, on_change: Callable[[], None]) -> None:
        self._subscribers.append(on_change)

    def needs_running(self) -> bool:
        """Only a configured Compass has something to register with; an unconfigured or unusable set-up
        stays as it is until the server is restarted (its `status()` says how to fix it)."""
        return self._credentials is not None

    def close(self) -> None:
        return None  # `run()` closes its HTTP client as it is cancelled; nothing else is held

    def status(self) -> Mapping[str, Any]:
        creds = self._credentials
        status: dict[str, Any] = {"configured": creds is not None, "state": self._state}
        if creds is not None:
            status.update(url=creds.url, credentials=creds.origin, key=creds.key.hint)
        reg = self._registration
        if reg is not None:
            status["user"] = {"id": reg.user.id, "name": reg.user.name, "role": reg.user.role}
            status["compass_key_scopes"] = format_scopes(reg.scopes)
            status["registered_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._registered_at))
            status["context"] = {
                "memories": len(reg.memories),
                "dashboards": _labels(reg.dashboards),
                "installed_skills": _labels(reg.installed_skills),
                "resources": [r.uri for r in self._resources],
            }
        status["tools"] = len(self._tools)
        if self._hidden:
            status["hidden_tools"] = dict(self._hidden)
        if not self._tools and self._problem:
            status["problem"] = self._problem
        if self._last_error is not None:
            status["last_error"] = self._last_error
        if self._next_attempt_at is not None and (self._failures or reg is None):
            status["next_attempt_in_s"] = max(0, round(self._next_attempt_at - time.monotonic()))
        return status

    async def ready(self) -> None:
        """Return once the first registration attempt has finished, whatever its outcome.

        A client that lists tools once, right after `initialize` (`claude -p`), sees the Compass tools only
        if the server waits on this — briefly — before answering its first `tools/list`.
        """
        if not self._attempted:
            await self._ready_event().wait()

    def _ready_event(self) -> anyio.Event:
        if self._ready is None:
            import anyio

            self._ready = anyio.Event()
        return self._ready

    async def run(self) -> None:
        creds = self._credentials
        if creds is None:
            return
        import anyio

        from mcp_bridge.compass.client import CompassClient

        client = CompassClient(creds.url, creds.key, self._settings)
        self._client = client
        try:
            while True:
                self._wake = anyio.Event()
                if self._failures:
                    client = await self._reloaded(client)
                await self._register(client)
                self._attempted = True
                self._ready_event().set()
                wait = self._backoff() if self._failures else REFRESH_INTERVAL_S
                self._next_attempt_at = time.monotonic() + wait
                with anyio.move_on_after(wait):
                    await self._wake.wait()
        finally:
            self._client = None
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def _reloaded(self, client: CompassClient) -> CompassClient:
        """A client for the credentials as they are now, if they changed since `client` was made."""
        if self._reload is None or self._credentials is None:
            return client
        try:
            fresh = self._reload()
        except CredentialsError as exc:
            log.warning("the Compass credentials cannot be read again (%s); still trying the old ones", exc)
            return client
        # Logged out (None): keep what this server started with, as `compass logout` says.
        old = self._credentials
        if fresh is None or (fresh.url, fresh.key.reveal()) == (old.url, old.key.reveal()):
            return client
        log.info("the Compass credentials changed (%s, %s at %s); registering with them", fresh.origin,
                 fresh.key.hint, fresh.url)
        import anyio

        from mcp_bridge.compass.client import CompassClient

        self._credentials = fresh
        self._client = CompassClient(fresh.url, fresh.key, self._settings)
        with anyio.CancelScope(shield=True):
            await client.aclose()
        return self._client

    async def check(self) -> None:
        """One registration attempt, for `compass-bridge compass status`; the result is in `status()`."""
        creds = self._credentials
        if creds is None:
            return
        from mcp_bridge.compass.client import CompassClient

        async with CompassClient(creds.url, creds.key, self._settings) as client:
            await self._register(client)

    # -- registration ------------------------------------------------------------------------

    async def _register(self, client: CompassClient) -> None:
        from mcp_bridge.compass.client import CompassError, KeyRejected

        try:
            registration = await client.register()
        except KeyRejected as exc:
            self._failures += 1
            self._withdraw(str(exc))
        except CompassError as exc:
            self._failures += 1
            self._failed(exc)
        else:
            self._failures = 0
            self._install(registration)

    def _install(self, registration: Registration) -> None:
        tools, hidden = self._build(registration)
        changed = self._registration is None or _signature(tools) != _signature(self._tools)
        first = self._state != "registered"
        self._registration, self._tools, self._hidden = registration, tools, hidden
        self._state, self._problem, self._last_error = "registered", None, None
        self._registered_at = time.time()
        if first:
            log.info("registered with Compass at %s as %s (%s; Compass key scopes %s): %d tools",
                     self._url, registration.user.name, registration.user.role, format_scopes(registration.scopes),
                     len(tools))
            for name, why in hidden.items():
                log.info("Compass tool %s not offered: %s", name, why)
        if changed:
            self._notify()

    def _withdraw(self, why: str) -> None:
        """The Compass key stopped working: no tools, no context, until a registration succeeds."""
        had = self._registration is not None
        self._registration, self._tools, self._hidden = None, (), {}
        self._state, self._problem, self._last_error = "key rejected", why, why
        if had:
            log.warning("Compass tools withdrawn: %s", why)
            self._notify()
        else:
            log.warning("cannot register with Compass: %s", why)

    def _failed(self, exc: CompassError) -> None:
        message = str(exc)
        repeated = message == self._last_error
        self._last_error = message
        if self._registration is not None:
            # Keep the tools through an outage: a call explains the failure better than a vanished tool.
            if not repeated:
                log.warning("refreshing the Compass registration failed (tools kept): %s", message)
            return
        self._state = "unreachable" if exc.transient else "error"
        self._problem = message
        (log.debug if repeated else log.warning)("cannot register with Compass (will retry): %s", message)

    def _build(self, registration: Registration) -> tuple[tuple[Tool, ...], dict[str, str]]:
        tools: dict[str, Tool] = {}
        hidden: dict[str, str] = {}
        for announced in registration.tools:
            name = announced.name
            if not _TOOL_NAME.fullmatch(name):
                hidden[name[:100]] = "its name is not a valid MCP tool name"
                continue
            try:
                scope = parse_scope(announced.scope)
            except ScopeError:
                hidden[name] = (f"Compass declares the scope {announced.scope!r}, which this bridge does not know; "
                                "update compass-bridge")
                continue
            if not allows(registration.scopes, scope):
                hidden[name] = (f"needs the '{scope}' scope in the Compass API key, which has "
                                f"{format_scopes(registration.scopes)}")
                continue
            tools.setdefault(name, self._tool(announced, scope))
        return tuple(tools.values()), hidden

    def _tool(self, announced: AnnouncedTool, scope: Scope) -> Tool:
        # The bridge's own schemas for Compass's tools matter only once Compass has announced some.
        from mcp_bridge.compass.schemas import ANY_ARGUMENTS, KNOWN_TOOLS, hints_for_scope

        name = announced.name
        known = KNOWN_TOOLS.get(name)
        schema = announced.input_schema
        if schema is not None and schema.get("type") != "object":
            log.warning("Compass sent an input schema for %s that is not an object schema; not using it", name)
            schema = None
        if schema is None:
            schema = known.input_schema if known else ANY_ARGUMENTS

        async def run(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
            return await self._call(name, scope, args)

        return Tool(
            name=name,
            title=f"{name} (Compass)",
            description=announced.description.strip() or (known.description if known else f"Compass tool {name}."),
            scope=scope,
            hints=known.hints if known else hints_for_scope(scope),
            input_schema=schema,
            run=run,
        )

    # -- calls -------------------------------------------------------------------------------

    async def _call(self, name: str, scope: Scope, args: Mapping[str, Any]) -> ToolOutput:
        from mcp_bridge.compass.client import CompassError, CompassUnavailable, KeyRejected

        client, registration = self._client, self._registration
        if client is None or registration is None:
            why = self._problem or "the bridge is not connected to Compass"
            raise ToolFailure(f"Compass tool '{name}' is not available now: {why}. The Compass tools "
                              "come back by themselves once the bridge can register again; bridge_status shows why")
        if not allows(registration.scopes, scope):
            raise ToolFailure(
                f"refused: Compass tool '{name}' needs the '{scope}' scope in both keys. The bridge key allows it, "
                f"but the Compass API key ({self._key_hint}, Compass user {registration.user.name}) has "
                f"{format_scopes(registration.scopes)}. To use it, {NEW_KEY_HINT} with '{scope}' and run "
                "`compass-bridge compass login`")
        # Only a read may be repeated: a write that timed out may have been applied, and a second
        # attempt could apply it twice.
        retries = 1 if scope is Scope.READ else 0
        while True:
            try:
                result = await client.call_tool(name, args)
            except KeyRejected as exc:
                self._withdraw(str(exc))
                self._poke()  # back to registering, with backoff
                raise ToolFailure(f"{exc}. The Compass tools are withdrawn until the key works again") from None
            except CompassUnavailable as exc:
                if retries:
                    retries -= 1
                    log.info("retrying read-only Compass tool %s once: %s", name, exc)
                    continue
                message = str(exc)
                if scope is not Scope.READ and exc.may_have_run:
                    message += (f". '{name}' changes data and may have been applied before the failure: check in "
                                "Compass before calling it again")
                raise ToolFailure(message) from None
            except CompassError as exc:
                raise ToolFailure(str(exc)) from None
            if scope is not Scope.READ:
                self._poke()  # a write may have changed the user's context: refresh it now
            return _output(result)

    def _reader(self, field: str) -> Callable[[], Awaitable[str]]:
        async def read() -> str:
            registration = self._registration
            if registration is None:
                from mcp_bridge.compass.client import CompassError

                raise CompassError(f"the Compass context is not available now: {self._problem}")
            return json.dumps(list(getattr(registration, field)), indent=2, ensure_ascii=False, default=str)

        return read

    # -- helpers -----------------------------------------------------------------------------

    @property
    def _url(self) -> str:
        return self._credentials.url if self._credentials else "-"

    @property
    def _key_hint(self) -> str:
        return self._credentials.key.hint if self._credentials else "-"

    def _backoff(self) -> float:
        import random

        ceiling = min(self._retry_max_s, self._retry_initial_s * 2 ** min(self._failures - 1, 16))
        # Jitter keeps many bridges from hammering a Compass that is coming back up in lockstep.
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 — timing jitter, not a secret

    def _poke(self) -> None:
        """Cut `run()`'s wait short (called on the event loop, where `run()` is)."""
        if self._wake is not None:
            self._wake.set()

    def _notify(self) -> None:
        for on_change in self._subscribers:
            on_change()


def _signature(tools: Sequence[Tool]) -> list[tuple[str, ...]]:
    return [(t.name, str(t.scope), t.description, json.dumps(t.input_schema, sort_keys=True), repr(t.hints))
            for t in tools]


def _labels(items: Sequence[Any]) -> list[str]:
    """Dashboards or skills by name, for a short summary in `bridge_status` (the resources hold the rest)."""
    labels = [str(next((i[k] for k in ("name", "title", "id") if i.get(k)), "?")) if isinstance(i, dict) else str(i)
              for i in items[:_SUMMARY_NAMES]]
    if len(items) > _SUMMARY_NAMES:
        labels.append(f"… and {len(items) - _SUMMARY_NAMES} more")
    return labels


def _output(result: Any) -> ToolOutput:
    text = result if isinstance(result, str) else json.dumps(result, indent=2, ensure_ascii=False, default=str)
    structured = result if isinstance(result, dict) and len(text) <= _STRUCTURED_MAX_CHARS else None
    return ToolOutput.text(text, structured)

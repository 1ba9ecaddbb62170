"""Browser tools: the extension's catalog, relayed through the native hosts the browsers started.

Every browser (or profile) running the extension has its own native host, each listening on a socket in
the runtime dir. This source finds them, keeps one connection to each, and offers the extension's tools
as `browser_<name>`. The catalog outlives the connections: it is kept in a small JSON file, so the tools
stay listed (and explain how to connect a browser) while none is connected, even in a fresh server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcp_bridge import __version__
from mcp_bridge.scopes import Scope, ScopeError, parse_scope
from mcp_bridge.tools.base import (
    CallContext,
    Content,
    Handler,
    Hints,
    ImageContent,
    Resource,
    TextContent,
    Tool,
    ToolFailure,
    ToolOutput,
)
from native_host.client import HostAddress, HostClient, RelayError, discover_hosts
from native_host.runtime_dir import UnsafeRuntimeDir

log = logging.getLogger(__name__)

PREFIX = "browser_"
TIMEOUT_ARG = "timeout_s"
MAX_TIMEOUT_S = 600.0
"""The same ceiling as run_command: past ten minutes an agent is better off polling."""

_CATALOG_FORMAT = 1
_CONNECT_TIMEOUT_S = 5.0
_BACKOFF_MIN_S = 1.0
_BACKOFF_MAX_S = 30.0
# The MCP spec asks for structured content to be repeated as text; past this size (a long page's text)
# the copy would double what the agent has to read, so large results go out as text only.
_STRUCTURED_MAX_CHARS = 64_000
# MCP tool names allow letters, digits, `_`, `-` and `.`; keep what an extension declares within that.
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


_RELAY_ERRORS: Mapping[str, str] = {
    "bad_request": "the native host rejected the request as malformed ({message})",
    "too_large": "the arguments are too large to send to the browser (over 1 MiB as JSON); send less at once",
    "timeout": "the browser did not answer within {timeout:g} s; the call was cancelled in the browser. "
    f"Pass a larger `{TIMEOUT_ARG}` if the page is slow",
    "cancelled": "the call was cancelled before the browser answered",
    "browser_disconnected": "the browser closed its connection to the native host during the call "
    "(browser closed, or extension reloaded); it reconnects by itself — try again in a few seconds",
    "tool_error": "{message}",
    "host_unavailable": "the native host went away during the call ({message}); try again in a few seconds",
}


def how_to_connect() -> str:
    """What to do when no browser is connected: where to load the extension from and the steps per browser."""
    # Imported here: it is needed only when a call finds no browser, and reads the extension's files then.
    from mcp_bridge.extension_id import extension_location, how_to_load

    where = extension_location()
    load = how_to_load(Path(where["path"])) if where["path"] else "Load the compass-bridge browser extension."
    problem = f"\n({where['problem']})" if where["problem"] else ""
    return ("To connect a browser: run `compass-bridge install` (so the browser can start the native host) and keep "
            f"the browser open.\n{load}{problem}\n`bridge_status` shows what the server found.")



class _LoopState:
    """The source's asyncio primitives, made on the event-loop thread when its work first runs there (asyncio
    is not loaded before: see `mcp_bridge.aio`)."""

    def __init__(self) -> None:
        import asyncio

        self.scan_lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.scanned_once = asyncio.Event()


class _Host:
    """One native host found in the runtime dir, and our connection to it if we have one. A plain class, not a
    dataclass: `serve` imports this module, and dataclasses would bring in inspect (~1.1 MiB per server: issue 10)."""

    __slots__ = ("address", "client", "connected_at", "failures", "last_error", "retry_at", "tab_ids")

    def __init__(self, address: HostAddress) -> None:
        self.address = address
        self.client: HostClient | None = None
        self.connected_at = 0.0
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: str | None = None
        self.tab_ids: set[int] = set()

    @property
    def label(self) -> str:
        return f"native host pid {self.address.pid}"

    def extension_label(self) -> str:
        ext = (self.client.extension if self.client else None) or {}
        return f"{ext.get('name', 'unknown extension')} {ext.get('version', '')}".strip()


class BrowserSource:
    """The `browser_*` tools (ToolSource protocol).

    `run_dir` is where native hosts put their sockets (`native_host.runtime_dir.runtime_dir()`),
    `state_file` where the last known catalog is kept (e.g. `StatePaths.data_dir / "browser-tools.json"`),
    `default_timeout_s` the per-call time-out when the call names none (`Limits.browser_timeout_s`).
    """

    name = "browser"

    def __init__(self, run_dir: Path, state_file: Path, default_timeout_s: float, *,
                 rescan_interval_s: float = 2.0) -> None:
        self._run_dir = run_dir
        self._state_file = state_file
        self._default_timeout_s = default_timeout_s
        self._rescan_interval_s = rescan_interval_s
        self._hosts: dict[HostAddress, _Host] = {}
        self._scan_problem: str | None = None
        self._subscribers: list[Callable[[], None]] = []
        self._loop_state: _LoopState | None = None
        self._catalog: list[dict[str, Any]] = self._load_catalog()
        # The saved catalog is only a file on disk, which others than the extension can write: until a live
        # extension declares its tools again, every one of them needs `admin` (see _build_tools).
        self._confirmed = False
        self._tools = self._build_tools(self._catalog)

    # -- ToolSource --------------------------------------------------------------------------

    def tools(self) -> Sequence[Tool]:
        return self._tools

    def resources(self) -> Sequence[Resource]:
        return ()

    def subscribe(self, on_change: Callable[[], None]) -> None:
        self._subscribers.append(on_change)

    def status(self) -> Mapping[str, Any]:
        connected = self._connected()
        status: dict[str, Any] = {
            "runtime_dir": str(self._run_dir),
            "hosts": [{
                "pid": h.address.pid,
                "extension": h.client.extension if h.client else None,
                "tools": len(h.client.tools) if h.client else 0,
            } for h in connected],
            "tools": len(self._tools),
        }
        if not connected:
            status["problem"] = self._why_none()
        return status

    def needs_running(self) -> bool:
        """Only once a native host is there to connect to: until then a scan would find nothing."""
        return bool(self._discover())

    async def run(self) -> None:
        import asyncio

        import anyio

        state = self._state()
        try:
            while True:
                await self._scan()
                state.scanned_once.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._rescan_interval_s):
                        await state.wake.wait()
                state.wake = asyncio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                for host in list(self._hosts.values()):
                    if host.client is not None:
                        await host.client.close()

    def close(self) -> None:
        return None  # the connections close as `run()` is cancelled

    async def ready(self) -> None:
        """Return once the first scan for hosts (and connecting to those found) has finished."""
        await self._state().scanned_once.wait()

    def _state(self) -> _LoopState:
        if self._loop_state is None:
            self._loop_state = _LoopState()
        return self._loop_state

    # -- discovery and connections -----------------------------------------------------------

    def _connected(self) -> list[_Host]:
        hosts = [h for h in self._hosts.values() if h.client is not None and not h.client.closed]
        return sorted(hosts, key=lambda h: h.connected_at, reverse=True)

    def _discover(self) -> list[HostAddress] | None:
        """The live hosts in the runtime dir; None (and the problem, for `status`) when it cannot be read."""
        try:
            found = discover_hosts(self._run_dir)
        except UnsafeRuntimeDir as exc:
            self._scan_problem = str(exc)
            return None
        except OSError as exc:
            self._scan_problem = f"cannot read the runtime dir {self._run_dir}: {exc}"
            return None
        self._scan_problem = None
        return found

    async def _scan(self) -> None:
        """Find live hosts and connect to the ones we are not connected to (unless backing off)."""
        import asyncio

        async with self._state().scan_lock:
            found = await asyncio.to_thread(self._discover)
            if found is None:
                return
            for address in set(self._hosts) - set(found):
                host = self._hosts[address]
                if host.client is None or host.client.closed:
                    del self._hosts[address]
            now = time.monotonic()
            for address in found:
                host = self._hosts.setdefault(address, _Host(address))
                if (host.client is None or host.client.closed) and now >= host.retry_at:
                    await self._connect(host)

    async def _connect(self, host: _Host) -> None:
        try:
            client = await HostClient.connect(host.address, name="compass-bridge", version=__version__,
                                              pid=os.getpid(), timeout=_CONNECT_TIMEOUT_S)
        except RelayError as exc:
            host.client = None
            host.failures += 1
            host.last_error = f"{host.label}: {exc.message}"
            delay = min(_BACKOFF_MIN_S * 2 ** (host.failures - 1), _BACKOFF_MAX_S)
            host.retry_at = time.monotonic() + delay
            log.warning("%s; retrying in %.0f s", host.last_error, delay)
            return
        host.client, host.failures, host.last_error = client, 0, None
        host.connected_at = time.monotonic()
        host.tab_ids = set()
        client.on_tools(lambda _tools: self._refresh_catalog())
        client.on_close(lambda: self._on_host_closed(host, client))
        log.info("connected to %s (%s, %d tools)", host.label, host.extension_label(), len(client.tools))
        self._refresh_catalog()

    def _on_host_closed(self, host: _Host, client: HostClient) -> None:
        if host.client is client:
            host.client = None
            host.tab_ids = set()
            log.info("%s closed the connection", host.label)
        self._refresh_catalog()
        self._state().wake.set()  # a browser that restarts its host shows up at once, not at the next tick

    def _why_none(self) -> str:
        if self._scan_problem:
            return self._scan_problem
        errors = [h.last_error for h in self._hosts.values() if h.last_error]
        if errors:
            return "; ".join(errors)
        return (f"no native host is running (none found in {self._run_dir}): no browser with the "
                "compass-bridge extension is open, or the extension cannot start the host")

    # -- the catalog -------------------------------------------------------------------------

    def _refresh_catalog(self) -> None:
        """Rebuild the tools from the connected hosts; with none connected, keep the last known ones."""
        connected = self._connected()
        if not connected:
            return
        merged: dict[str, dict[str, Any]] = {}
        for host in connected:
            assert host.client is not None
            for entry in host.client.tools:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    merged.setdefault(entry["name"], entry)
        catalog = [merged[name] for name in sorted(merged)]
        if catalog == self._catalog and self._confirmed:
            return
        self._catalog, self._confirmed = catalog, True
        self._tools = self._build_tools(catalog)
        self._save_catalog(catalog)
        for notify in self._subscribers:
            notify()

    def _load_catalog(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self._state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring the saved browser catalog %s: %s", self._state_file, exc)
            return []
        tools = data.get("tools") if isinstance(data, dict) and data.get("format") == _CATALOG_FORMAT else None
        if not isinstance(tools, list):
            log.warning("ignoring the saved browser catalog %s: not a format-%d catalog",
                        self._state_file, _CATALOG_FORMAT)
            return []
        return [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]

    def _save_catalog(self, catalog: list[dict[str, Any]]) -> None:
        temporary = self._state_file.with_name(self._state_file.name + ".tmp")
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            temporary.write_text(json.dumps({"format": _CATALOG_FORMAT, "tools": catalog}, indent=1),
                                 encoding="utf-8")
            temporary.replace(self._state_file)
        except OSError as exc:
            # Only a fresh server's listing suffers: it will show no browser tools until a browser connects.
            log.warning("cannot save the browser catalog to %s: %s", self._state_file, exc)

    def _build_tools(self, catalog: list[dict[str, Any]]) -> tuple[Tool, ...]:
        tools = []
        for entry in catalog:
            name = entry["name"]
            if not _TOOL_NAME.match(name):
                log.warning("skipping the extension tool %r: names may use only letters, digits, _ . -", name)
                continue
            try:
                scope = parse_scope(str(entry.get("scope", "")))
            except ScopeError:
                # An extension that forgets or misspells a scope gets the strictest one, not the loosest.
                scope = Scope.ADMIN
            description = str(entry.get("description") or f"The browser extension's `{name}` tool.")
            if not self._confirmed:
                scope = Scope.ADMIN
                description += (" (Known from the saved catalog only: needs the admin scope until a browser "
                                "with the extension connects and declares it again.)")
            tools.append(Tool(
                name=PREFIX + name,
                description=description,
                scope=scope,
                hints=Hints(read_only=scope is Scope.READ, destructive=scope is not Scope.READ,
                            idempotent=scope is Scope.READ, open_world=True),
                input_schema=self._schema(entry.get("inputSchema")),
                run=self._handler(name),
            ))
        return tuple(tools)

    def _schema(self, declared: Any) -> dict[str, Any]:
        schema: dict[str, Any] = dict(declared) if isinstance(declared, dict) else {}
        schema["type"] = "object"
        properties = dict(schema.get("properties") or {})
        properties[TIMEOUT_ARG] = {
            "type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S,
            "description": f"Seconds to wait for the browser (default {self._default_timeout_s:g}).",
        }
        schema["properties"] = properties
        return schema

    # -- calls -------------------------------------------------------------------------------

    def _handler(self, tool: str) -> Handler:
        async def run(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
            return await self._call(tool, args)

        return run

    async def _call(self, tool: str, raw_args: Mapping[str, Any]) -> ToolOutput:
        args = dict(raw_args)
        timeout = self._timeout(args.pop(TIMEOUT_ARG, None))
        hosts = self._connected()
        if not hosts:
            # The browser may have (re)started its host since the last scan.
            await self._scan()
            hosts = self._connected()
        if not hosts:
            raise ToolFailure(f"{PREFIX}{tool}: no browser is connected — {self._why_none()}. {how_to_connect()}")
        if tool == "tabs_list":
            return await self._tabs_list(hosts, timeout)
        host = await self._route(tool, hosts, args.get("tabId"), timeout)
        result = await self._request(host, tool, args, timeout)
        return _output(result)

    def _timeout(self, value: Any) -> float:
        if value is None:
            return self._default_timeout_s
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_S:
            raise ToolFailure(f"`{TIMEOUT_ARG}` must be a number of seconds above 0 and at most "
                              f"{MAX_TIMEOUT_S:g}, got {value!r}")
        return float(value)

    async def _route(self, tool: str, hosts: list[_Host], tab_id: Any, timeout_s: float) -> _Host:
        """The host whose browser should run the call: the tab's owner, else the newest connection."""
        if len(hosts) == 1 or not isinstance(tab_id, int) or isinstance(tab_id, bool):
            return hosts[0]
        owners = [h for h in hosts if tab_id in h.tab_ids]
        if not owners:
            # A tab opened since the last listing: ask every browser for its tabs again.
            await self._collect_tabs(hosts, timeout_s)
            owners = [h for h in hosts if tab_id in h.tab_ids]
        if len(owners) == 1:
            return owners[0]
        if not owners:
            raise ToolFailure(f"{PREFIX}{tool}: no connected browser has a tab {tab_id}; "
                              f"call {PREFIX}tabs_list for the open tabs")
        pids = ", ".join(str(h.address.pid) for h in owners)
        raise ToolFailure(f"{PREFIX}{tool}: tab {tab_id} exists in several connected browsers (native hosts "
                          f"{pids}); close the other browsers or omit tabId to use the most recent one")

    async def _request(self, host: _Host, tool: str, args: dict[str, Any], timeout_s: float) -> Any:
        assert host.client is not None
        try:
            return await host.client.request(tool, args, timeout=timeout_s)
        except RelayError as exc:
            template = _RELAY_ERRORS.get(exc.code, "the browser returned an error {code}: {message}")
            detail = template.format(code=exc.code, message=exc.message, timeout=timeout_s)
            raise ToolFailure(f"{PREFIX}{tool} failed in the browser ({host.extension_label()}, "
                              f"{host.label}): {detail}") from None

    async def _collect_tabs(self, hosts: list[_Host], timeout_s: float) -> tuple[list[dict[str, Any]], list[str]]:
        """Every host's tabs, each annotated with its host; records which host owns which tab id."""
        tabs: list[dict[str, Any]] = []
        errors: list[str] = []

        async def one(host: _Host) -> None:
            try:
                result = await self._request(host, "tabs_list", {}, timeout_s)
            except ToolFailure as exc:
                errors.append(str(exc))
                return
            listed = result.get("tabs") if isinstance(result, dict) else result
            if not isinstance(listed, list):
                errors.append(f"{host.label} answered tabs_list without a list of tabs")
                return
            owned = [t for t in listed if isinstance(t, dict)]
            host.tab_ids = {t["id"] for t in owned if isinstance(t.get("id"), int)}
            browser = {"host_pid": host.address.pid, "extension": host.extension_label()}
            tabs.extend({**t, "browser": browser} for t in owned)

        import anyio

        async with anyio.create_task_group() as tg:
            for host in hosts:
                tg.start_soon(one, host)
        return tabs, errors

    async def _tabs_list(self, hosts: list[_Host], timeout_s: float) -> ToolOutput:
        tabs, errors = await self._collect_tabs(hosts, timeout_s)
        if errors and not tabs:
            raise ToolFailure("; ".join(errors))
        result: dict[str, Any] = {"tabs": tabs}
        if errors:
            result["errors"] = errors  # a partial answer beats none when one of several browsers fails
        return _output(result)


def _output(result: Any) -> ToolOutput:
    """Images (`{data, mimeType: image/...}`) become MCP image content; anything else JSON text."""
    if isinstance(result, dict) and isinstance(result.get("data"), str) \
            and str(result.get("mimeType", "")).startswith("image/"):
        rest = {k: v for k, v in result.items() if k not in ("data", "mimeType")}
        content: list[Content] = [ImageContent(type="image", data=result["data"], mime_type=result["mimeType"])]
        if rest:
            content.append(TextContent(type="text", text=json.dumps(rest)))
        return ToolOutput(content, rest or None)
    text = json.dumps(result, indent=1, ensure_ascii=False)
    structured = result if isinstance(result, dict) and len(text) <= _STRUCTURED_MAX_CHARS else None
    return ToolOutput.text(text, structured)

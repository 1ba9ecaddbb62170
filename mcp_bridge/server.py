"""The MCP server: every tool and resource request passes the scope gate and lands in the usage log.

Built on the SDK's low-level `Server` because the tool list is dynamic (browser and Compass tools come
and go). Sources start their background work only after the client's `initialized` notification, so
nothing slow stands between the client and the `initialize` answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError

from mcp_bridge import __version__
from mcp_bridge.early_initialize import BRIDGE
from mcp_bridge.gate import Caller, Gate
from mcp_bridge.keys import Rejected
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.scopes import Scope, format_scopes
from mcp_bridge.tools.base import READ_ONLY, CallContext, Tool, ToolFailure, ToolOutput, ToolSource
from mcp_bridge.usage import Outcome, UsageLog, UsageRecord

log = logging.getLogger(__name__)

STATUS_TOOL = "bridge_status"
_ROOTS_TIMEOUT_S = 5.0
# How long the first tools/list may wait for sources (browser, Compass) to make their first attempt.
# Clients such as `claude -p` list tools only once; past this they get what is there and, later,
# notifications/tools/list_changed.
_FIRST_LIST_WAIT_S = 3.0

Context = ServerRequestContext[Any, Any]


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _mcp_tool(tool: Tool) -> types.Tool:
    return types.Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=dict(tool.input_schema),
        annotations=types.ToolAnnotations(
            read_only_hint=tool.hints.read_only,
            destructive_hint=tool.hints.destructive,
            idempotent_hint=tool.hints.idempotent,
            open_world_hint=tool.hints.open_world,
        ),
    )


class BridgeServer:
    def __init__(self, gate: Gate, usage: UsageLog, policy: PathPolicy, sources: Sequence[ToolSource]) -> None:
        self._gate = gate
        self._usage = usage
        self._policy = policy
        self._sources = tuple(sources)
        self._status_tool = Tool(
            name=STATUS_TOOL,
            description="Show the bridge's version, the calling key's name and scopes, the allowed roots, "
            "and what is connected (browser, Compass) — or why it is not.",
            scope=Scope.READ,
            hints=READ_ONLY,
            input_schema={"type": "object", "properties": {}},
            run=self._run_status,
        )
        self._catalog: dict[str, Tool] | None = None
        self._session: ServerSession | None = None
        self._initialized = anyio.Event()
        self._catalog_changed = anyio.Event()
        self._roots_stale = True
        self._sources_settled = False
        self.lowlevel: Server[Any] = Server(
            BRIDGE.name,
            version=BRIDGE.version,
            instructions=BRIDGE.instructions,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_read_resource=self._read_resource,
        )
        # Registered directly (not via the constructor's deprecated hooks) so no warning is printed.
        self.lowlevel.add_notification_handler(
            "notifications/initialized", types.NotificationParams, self._on_initialized
        )
        self.lowlevel.add_notification_handler(
            "notifications/roots/list_changed", types.NotificationParams, self._on_roots_changed
        )
        for source in self._sources:
            source.subscribe(self._on_catalog_change)

    # -- lifecycle ---------------------------------------------------------------------------

    async def serve(self, read_stream: Any, write_stream: Any) -> None:
        options = self.lowlevel.create_initialization_options(
            NotificationOptions(tools_changed=True, resources_changed=True)
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._background, tg)
            await self.lowlevel.run(read_stream, write_stream, options)
            tg.cancel_scope.cancel()

    async def _background(self, tg: anyio.abc.TaskGroup) -> None:
        await self._initialized.wait()
        for source in self._sources:
            tg.start_soon(self._run_source, source)
        while True:
            await self._catalog_changed.wait()
            self._catalog_changed = anyio.Event()
            if self._session is not None:
                try:
                    await self._session.send_tool_list_changed()
                    await self._session.send_resource_list_changed()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return

    @staticmethod
    async def _run_source(source: ToolSource) -> None:
        try:
            await source.run()
        except Exception:
            # One broken source (say, Compass) must not take down the local tools.
            log.exception("tool source %s stopped", source.name)

    async def _on_initialized(self, ctx: Context, params: types.NotificationParams | None) -> None:
        self._session = ctx.session
        self._initialized.set()

    async def _on_roots_changed(self, ctx: Context, params: types.NotificationParams | None) -> None:
        self._roots_stale = True

    def _on_catalog_change(self) -> None:
        self._catalog = None
        self._catalog_changed.set()

    # -- tools -------------------------------------------------------------------------------

    def _tools(self) -> dict[str, Tool]:
        if self._catalog is None:
            catalog = {STATUS_TOOL: self._status_tool}
            for source in self._sources:
                for tool in source.tools():
                    # First come wins: a browser or Compass tool can never shadow a local one.
                    catalog.setdefault(tool.name, tool)
            self._catalog = catalog
        return self._catalog

    async def _await_sources(self) -> None:
        if self._sources_settled:
            return
        with anyio.move_on_after(_FIRST_LIST_WAIT_S):
            async with anyio.create_task_group() as tg:
                for source in self._sources:
                    tg.start_soon(source.ready)
        self._sources_settled = True

    async def _list_tools(self, ctx: Context, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        await self._await_sources()
        caller = self._gate.identify()
        if isinstance(caller, Rejected):
            return types.ListToolsResult(tools=[_mcp_tool(self._status_tool)])
        return types.ListToolsResult(tools=[_mcp_tool(t) for t in self._gate.visible(self._tools().values(), caller)])

    async def _call_tool(self, ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
        started = time.perf_counter()
        caller = self._gate.identify()
        client = self._client_name(ctx)
        outcome: Outcome = "ok"
        error: str | None = None
        try:
            result = await self._gated_call(ctx, params, caller, client)
            if result.is_error:
                outcome, error = "failed", _text_of(result)
            return result
        except _Refused as refused:
            outcome, error = "refused", str(refused)
            return _error(str(refused))
        finally:
            key_id, key_name = (None, "rejected-key") if isinstance(caller, Rejected) else (caller.key_id, caller.name)
            self._usage.record(UsageRecord(
                key_id=key_id, key_name=key_name, tool=params.name, outcome=outcome, error=error,
                duration_ms=(time.perf_counter() - started) * 1000, client=client, ts=time.time(),
            ))

    async def _gated_call(
        self, ctx: Context, params: types.CallToolRequestParams, caller: Caller | Rejected, client: str | None
    ) -> types.CallToolResult:
        if isinstance(caller, Rejected):
            raise _Refused(f"refused: {caller.explain()}")
        tool = self._tools().get(params.name)
        if tool is None:
            return _error(f"unknown tool '{params.name}'; list the tools again (tools/list) to see what exists")
        refusal = self._gate.check(tool, caller)
        if refusal is not None:
            raise _Refused(refusal.reason)
        await self._refresh_roots(ctx)

        async def progress(done: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(done, total, message)

        call = CallContext(key_name=caller.name, client_name=client, report_progress=progress)
        try:
            output = await tool.run(params.arguments or {}, call)
        except ToolFailure as failure:
            return _error(str(failure))
        except Exception as exc:
            log.exception("tool %s failed", tool.name)
            return _error(f"tool '{tool.name}' failed unexpectedly ({type(exc).__name__}: {exc}); "
                          "the server log has the details")
        return types.CallToolResult(content=list(output.content), structured_content=output.structured)

    async def _refresh_roots(self, ctx: Context) -> None:
        """Narrow the configured roots to the client's MCP roots (never widen them)."""
        if not self._roots_stale:
            return
        self._roots_stale = False
        capabilities = ctx.session.client_capabilities
        if capabilities is None or capabilities.roots is None:
            return
        try:
            with anyio.fail_after(_ROOTS_TIMEOUT_S):
                listed = await ctx.session.list_roots()
        except Exception as exc:
            log.warning("client declared roots but roots/list failed (%s); keeping the configured roots", exc)
            return
        client_roots = [Path(_file_uri_path(str(r.uri))) for r in listed.roots if str(r.uri).startswith("file://")]
        if client_roots:
            self._policy.narrow(client_roots)

    @staticmethod
    def _client_name(ctx: Context) -> str | None:
        client_params = ctx.session.client_params
        return client_params.client_info.name if client_params is not None else None

    async def _run_status(self, args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        status = self.status()
        return ToolOutput.text(json.dumps(status, indent=2, default=str), status)

    def status(self) -> dict[str, Any]:
        caller = self._gate.identify()
        if isinstance(caller, Rejected):
            key: dict[str, Any] = {"problem": caller.explain()}
        else:
            key = {"name": caller.name, "scopes": format_scopes(caller.scopes)}
        return {
            "version": __version__,
            "key": key,
            "roots": [str(r) for r in self._policy.roots],
            "configured_roots": [str(r) for r in self._policy.configured_roots],
            **{source.name: dict(source.status()) for source in self._sources},
        }

    # -- resources ---------------------------------------------------------------------------

    def _readable(self) -> bool:
        caller = self._gate.identify()
        return not isinstance(caller, Rejected) and Scope.READ in caller.scopes

    async def _list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        if not self._readable():
            return types.ListResourcesResult(resources=[])
        return types.ListResourcesResult(resources=[
            types.Resource(uri=r.uri, name=r.name, description=r.description, mime_type=r.mime_type)
            for source in self._sources for r in source.resources()
        ])

    async def _read_resource(self, ctx: Context, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        caller = self._gate.identify()
        if isinstance(caller, Rejected):
            raise MCPError(types.INVALID_REQUEST, f"refused: {caller.explain()}")
        if Scope.READ not in caller.scopes:
            raise MCPError(types.INVALID_REQUEST, f"refused: reading resources needs the 'read' scope; "
                           f"the bridge key '{caller.name}' has {format_scopes(caller.scopes)}")
        uri = str(params.uri)
        for source in self._sources:
            for resource in source.resources():
                if resource.uri == uri:
                    text = await resource.read()
                    return types.ReadResourceResult(
                        contents=[types.TextResourceContents(uri=uri, mime_type=resource.mime_type, text=text)]
                    )
        raise MCPError(types.INVALID_PARAMS, f"no resource '{uri}'; list the resources again to see what exists")


class _Refused(Exception):
    """The gate said no: recorded as a refusal, answered as an error result."""


def _text_of(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))[:2000]


def _file_uri_path(uri: str) -> str:
    return unquote(urlparse(uri).path)

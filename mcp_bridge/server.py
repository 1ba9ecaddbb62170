"""The bridge as an MCP application: what tools/list, tools/call and the resource methods mean here.

The protocol front end (`mcp_bridge.protocol.frontend`) decodes a request and calls one of the methods
below; tools come from the `Catalog`, a call goes through the `CallPipeline` (identify → authorize →
resolve roots → run → record), and the answer is shaped for the wire here. The built-in `bridge_status`
tool reports what `status()` builds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mcp_bridge import __version__, extension_id, logs
from mcp_bridge.aio import AsyncRuntime, Cancelled
from mcp_bridge.catalog import Catalog
from mcp_bridge.gate import Gate
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.paths import StatePaths
from mcp_bridge.pipeline import Answer, CallPipeline
from mcp_bridge.protocol.frontend import Change, Client, Failure
from mcp_bridge.protocol.wire import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST
from mcp_bridge.scopes import Scope, format_scopes
from mcp_bridge.tools.base import READ_ONLY, CallContext, TextContent, Tool, ToolOutput, ToolSource
from mcp_bridge.usage import UsageLog

STATUS_TOOL = "bridge_status"
INSTRUCTIONS = ("Tools for the user's files (inside the allowed roots), browser and Compass data. "
                "Call bridge_status to see what this key may do and what is connected.")
_STATUS_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "version": {"type": "string"},
        "key": {"type": "object", "description": "the calling key's name and scopes, or its problem"},
        "roots": {"type": "array", "items": {"type": "string"}},
        "configured_roots": {"type": "array", "items": {"type": "string"}},
        "roots_notice": {"type": "string",
                         "description": "why no root is in force (the implicit default was home-wide) and how to "
                         "name roots; absent when roots are in force"},
        "usage": {"type": "object", "description": "the usage log's writer: pending, written and dropped rows, "
                  "and its last error"},
        "extension": {"type": "object", "description": "where to load the browser extension from, the steps per "
                      "browser, and what is wrong with that copy, if anything"},
        "logs": {"type": "string", "description": "the log directory, and this server's log file"},
    },
    "required": ["version", "key", "roots", "configured_roots", "usage", "extension", "logs"],
}
_Stamp = tuple[int, int] | None
"""A file's modification time and size, or None when it is missing."""


class BridgeServer:
    """The `Application` the protocol front end serves."""

    name = "compass-bridge"
    version = __version__
    instructions = INSTRUCTIONS

    def __init__(self, gate: Gate, usage: UsageLog, policy: PathPolicy, sources: Sequence[ToolSource],
                 paths: StatePaths, runtime: AsyncRuntime) -> None:
        """`runtime` runs coroutine tools and resources, and the sources' background work."""
        self._gate = gate
        self.runtime = runtime
        self._usage = usage
        self._policy = policy
        self._paths = paths
        self._extension: tuple[tuple[_Stamp, _Stamp], dict[str, Any]] | None = None
        status_tool = Tool(
            name=STATUS_TOOL,
            description="Show the bridge's version, the calling key's name and scopes, the allowed roots (or why "
            "there are none), what is connected (browser, Compass) or why not, where to load the browser extension "
            "from, the usage log's state and where the logs are.",
            scope=Scope.READ,
            hints=READ_ONLY,
            input_schema={"type": "object", "properties": {}, "additionalProperties": False},
            run=self._run_status,
            output_schema=_STATUS_SCHEMA,
            quick=True,
        )
        self._status_tool = status_tool
        self.catalog = Catalog([status_tool], sources)
        self._pipeline = CallPipeline(gate, self.catalog, policy, usage, runtime)

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self.catalog.on_change(listener)

    # -- tools ---------------------------------------------------------------------------------

    def list_tools(self, client: Client) -> list[dict[str, Any]]:
        verdict = self._gate.identify()
        if not verdict.allowed:
            # A key that does not work still sees the tool that says why.
            return [_wire_tool(self._status_tool)]
        return [_wire_tool(t) for t in self._gate.visible(self.catalog.tools().values(), verdict)]

    def quick_call(self, name: str, roots_generation: int | None) -> bool:
        if roots_generation is not None and self._pipeline.roots_pending(roots_generation):
            return False  # the call first asks the client for its roots, whose answer someone must read
        tool = self.catalog.tools().get(name)
        return tool is None or tool.quick  # an unknown tool is an error answered at once

    def call_tool(self, name: str, arguments: dict[str, Any], client: Client) -> dict[str, Any]:
        return _wire_result(self._pipeline.call(name, arguments, client))

    def _run_status(self, args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        status = self.status()
        return ToolOutput.text(json.dumps(status, indent=2, default=str), status)

    def status(self) -> dict[str, Any]:
        """What `bridge_status` reports: the one place to add a field to it."""
        verdict = self._gate.identify()
        caller = verdict.caller
        key: dict[str, Any] = {"problem": verdict.refusal} if verdict.refusal is not None \
            else {"name": caller.name, "scopes": format_scopes(caller.scopes)}
        notice = self._policy.notice
        return {
            "version": __version__,
            "key": key,
            "roots": [str(r) for r in self._policy.roots],
            "configured_roots": [str(r) for r in self._policy.configured_roots],
            **({"roots_notice": notice} if notice is not None else {}),
            "usage": self._usage.status(),
            "extension": self._extension_location(),
            "logs": logs.log_location(self._paths),
            **{source.name: dict(source.status()) for source in self.catalog.sources},
        }

    def _extension_location(self) -> dict[str, Any]:
        """`extension_id.extension_location`, which reads every extension file, read again only when config.toml
        or the stable copy's manifest changed — `install` rewrites the manifest whenever the copy's version or
        pages change — so an agent calling bridge_status in a loop costs two stat calls each."""
        stamp = (_stamp(self._paths.config_file),
                 _stamp(extension_id.stable_extension_dir(self._paths) / "manifest.json"))
        if self._extension is None or self._extension[0] != stamp:
            self._extension = (stamp, extension_id.extension_location(self._paths))
        return self._extension[1]

    # -- resources -----------------------------------------------------------------------------

    def list_resources(self, client: Client) -> list[dict[str, Any]]:
        if not self._gate.may_read_resources(self._gate.identify()).allowed:
            return []
        return [{"uri": r.uri, "name": r.name, "description": r.description, "mimeType": r.mime_type}
                for r in self.catalog.resources()]

    def read_resource(self, uri: str, client: Client) -> dict[str, Any] | Failure:
        verdict = self._gate.may_read_resources(self._gate.identify())
        if verdict.refusal is not None:
            return Failure(INVALID_REQUEST, verdict.refusal)
        for resource in self.catalog.resources():
            if resource.uri == uri:
                try:
                    text = self.runtime.run(resource.read(), client.cancelled)
                except Cancelled:
                    return Failure(INTERNAL_ERROR, f"reading {uri} was cancelled before it finished")
                return {"contents": [{"uri": uri, "mimeType": resource.mime_type, "text": text}]}
        return Failure(INVALID_PARAMS, f"no resource '{uri}'; list the resources again to see what exists")


def _stamp(path: Path) -> _Stamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _wire_tool(tool: Tool) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "name": tool.name,
        "description": tool.description,
        "inputSchema": dict(tool.input_schema),
        "annotations": {
            "readOnlyHint": tool.hints.read_only,
            "destructiveHint": tool.hints.destructive,
            "idempotentHint": tool.hints.idempotent,
            "openWorldHint": tool.hints.open_world,
        },
    }
    if tool.title is not None:
        wire["title"] = tool.title
    if tool.output_schema is not None:
        wire["outputSchema"] = dict(tool.output_schema)
    if tool.meta:
        wire["_meta"] = dict(tool.meta)
    return wire


def _wire_result(answer: Answer) -> dict[str, Any]:
    output = answer.output
    if output is None:
        return {"content": [TextContent(answer.error or "failed").wire()], "isError": True}
    tool = answer.tool
    # Structured content only with a declared schema (the MCP spec requires one for it).
    structured = tool is not None and tool.output_schema is not None and output.structured is not None
    content = [c.wire() for c in output.readable(structured)]
    if not structured:
        return {"content": content, "isError": False}
    return {"content": content, "structuredContent": output.structured, "isError": False}

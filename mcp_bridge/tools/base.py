"""The contract between the server and every tool, local, browser or Compass.

A tool is data (name, schema, scope, hints) plus an async function. The server owns the scope gate
and the usage log, so a tool never sees a call it is not allowed to answer and never logs itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from mcp_types import ImageContent, TextContent
from pydantic import BaseModel, ValidationError

from mcp_bridge.scopes import Scope
from mcp_bridge.tools.failure import ToolFailure as ToolFailure  # part of the tool contract

Content = TextContent | ImageContent
ArgsT = TypeVar("ArgsT", bound=BaseModel)


@dataclass(frozen=True)
class Hints:
    """MCP tool annotations."""

    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False


READ_ONLY = Hints(read_only=True, idempotent=True)


@dataclass(frozen=True)
class ToolOutput:
    content: list[Content]
    structured: dict[str, Any] | None = None

    @classmethod
    def text(cls, text: str, structured: dict[str, Any] | None = None) -> ToolOutput:
        return cls([TextContent(type="text", text=text)], structured)


ProgressReporter = Callable[[float, float | None, str | None], Awaitable[None]]


async def _no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


@dataclass(frozen=True)
class CallContext:
    """What a tool may know about the call in flight."""

    key_name: str
    client_name: str | None = None
    report_progress: ProgressReporter = _no_progress


Handler = Callable[[Mapping[str, Any], CallContext], Awaitable[ToolOutput]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    scope: Scope
    hints: Hints
    input_schema: Mapping[str, Any]
    run: Handler
    title: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


def model_tool(
    *,
    name: str,
    description: str,
    scope: Scope,
    hints: Hints,
    args: type[ArgsT],
    run: Callable[[ArgsT, CallContext], Awaitable[ToolOutput]],
    title: str | None = None,
) -> Tool:
    """A tool whose arguments are a pydantic model: the schema comes from it and calls are validated."""

    async def validated(raw: Mapping[str, Any], call: CallContext) -> ToolOutput:
        try:
            parsed = args.model_validate(dict(raw))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolFailure(f"invalid arguments for {name}: {problems}") from None
        return await run(parsed, call)

    schema = args.model_json_schema()
    schema.pop("title", None)
    return Tool(name, description, scope, hints, schema, validated, title)


@dataclass(frozen=True)
class Resource:
    """Read-only context a source offers as an MCP resource (e.g. the user's Compass memories)."""

    uri: str
    name: str
    description: str
    mime_type: str
    read: Callable[[], Awaitable[str]]


class ToolSource(Protocol):
    """A family of tools (local, browser, Compass) whose list may change while the server runs.

    The server calls `tools()`/`resources()` whenever it lists them, so they must be cheap; a source
    calls the callback given to `subscribe` after its lists changed, and the server then tells the
    client (`notifications/tools/list_changed`). `run()` is started once the server is answering
    requests, for background work (connecting, registering, retrying); it may return at once.
    `ready()` lets the server hold its first `tools/list` (briefly) until each source has tried once:
    some clients list tools only once, right after `initialize`.
    """

    name: str

    def tools(self) -> Sequence[Tool]: ...

    def resources(self) -> Sequence[Resource]: ...

    def status(self) -> Mapping[str, Any]:
        """A JSON-able summary for `bridge_status`: what is connected, and if not, why."""
        ...

    def subscribe(self, on_change: Callable[[], None]) -> None: ...

    async def run(self) -> None: ...

    async def ready(self) -> None:
        """Return once `run()` has made its first attempt to populate the tools, whatever the outcome."""
        ...


class StaticSource:
    """Tools that never change (the local file and command tools)."""

    def __init__(self, name: str, tools: Sequence[Tool], status: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self._tools = tuple(tools)
        self._status = dict(status or {})

    def tools(self) -> Sequence[Tool]:
        return self._tools

    def resources(self) -> Sequence[Resource]:
        return ()

    def status(self) -> Mapping[str, Any]:
        return self._status

    def subscribe(self, on_change: Callable[[], None]) -> None:
        return None  # nothing ever changes

    async def run(self) -> None:
        return None

    async def ready(self) -> None:
        return None

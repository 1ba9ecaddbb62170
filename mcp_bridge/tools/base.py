"""The contract between the server and every tool, local, browser or Compass.

A tool is data (name, schema, scope, hints) plus an async function. The server owns the scope gate
and the usage log, so a tool never sees a call it is not allowed to answer and never logs itself.

Local tools declare their arguments as an `Args` class (annotated attributes with `arg(...)` defaults);
the input JSON schema is derived from it and every call is validated against it here, with the standard
library only: pydantic would cost ~80 ms and ~8 MiB per server at start for the same work.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, TypeVar

from mcp_bridge.scopes import Scope
from mcp_bridge.tools.failure import ToolFailure as ToolFailure  # part of the tool contract


class TextContent(NamedTuple):
    text: str
    type: Literal["text"] = "text"

    def wire(self) -> dict[str, Any]:
        return {"type": "text", "text": self.text}


class ImageContent(NamedTuple):
    data: str
    """Base64."""
    mime_type: str
    type: Literal["image"] = "image"

    def wire(self) -> dict[str, Any]:
        return {"type": "image", "data": self.data, "mimeType": self.mime_type}


Content = TextContent | ImageContent


class Hints(NamedTuple):
    """MCP tool annotations."""

    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False


READ_ONLY = Hints(read_only=True, idempotent=True)


class ToolOutput(NamedTuple):
    content: list[Content]
    structured: dict[str, Any] | None = None

    @classmethod
    def text(cls, text: str, structured: dict[str, Any] | None = None) -> ToolOutput:
        return cls([TextContent(text)], structured)


ProgressReporter = Callable[[float, float | None, str | None], Awaitable[None]]


async def _no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


class CallContext(NamedTuple):
    """What a tool may know about the call in flight."""

    key_name: str
    client_name: str | None = None
    report_progress: ProgressReporter = _no_progress


Handler = Callable[[Mapping[str, Any], CallContext], Awaitable[ToolOutput]]


class Tool(NamedTuple):
    name: str
    description: str
    scope: Scope
    hints: Hints
    input_schema: Mapping[str, Any]
    run: Handler
    title: str | None = None
    meta: Mapping[str, Any] = MappingProxyType({})
    output_schema: Mapping[str, Any] | None = None
    """Declared by every tool that returns structured content; the server sends structured content only
    for tools that declare it (the MCP spec requires a declared schema for it)."""


# -- argument declarations ----------------------------------------------------------------------

_REQUIRED: Any = object()

# The annotation (as written: modules use `from __future__ import annotations`) → JSON type and checker.
_KINDS: Mapping[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("string", lambda v: isinstance(v, str)),
    "int": ("integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    "bool": ("boolean", lambda v: isinstance(v, bool)),
    "list[str]": ("array", lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v)),
}
_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "array": "a list of strings"}


class _Arg(NamedTuple):
    default: Any = _REQUIRED
    default_factory: Callable[[], Any] | None = None
    description: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_length: int | None = None


def arg(default: Any = _REQUIRED, *, default_factory: Callable[[], Any] | None = None, description: str = "",
        ge: float | None = None, gt: float | None = None, le: float | None = None,
        min_length: int | None = None) -> Any:
    """One argument of an `Args` class: its default (none: required), description and bounds."""
    return _Arg(default, default_factory, description, ge, gt, le, min_length)


class _Field(NamedTuple):
    name: str
    json_type: str
    check: Callable[[Any], bool]
    optional: bool
    spec: _Arg

    @property
    def required(self) -> bool:
        return self.spec.default is _REQUIRED and self.spec.default_factory is None

    def default(self) -> Any:
        return self.spec.default_factory() if self.spec.default_factory else self.spec.default

    def schema(self) -> dict[str, Any]:
        kind: dict[str, Any] = {"type": self.json_type}
        if self.json_type == "array":
            kind["items"] = {"type": "string"}
        bounds = {"minimum": self.spec.ge, "exclusiveMinimum": self.spec.gt, "maximum": self.spec.le,
                  "minLength": self.spec.min_length}
        kind.update({k: v for k, v in bounds.items() if v is not None})
        schema: dict[str, Any] = {"anyOf": [kind, {"type": "null"}]} if self.optional else kind
        if self.spec.description:
            schema["description"] = self.spec.description
        if not self.required:
            schema["default"] = self.default()
        return schema

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable for this argument, or None."""
        if value is None and self.optional:
            return None
        if not self.check(value):
            return f"must be {_TYPE_WORDS[self.json_type]}{' or null' if self.optional else ''}, " \
                   f"not {_json_name(value)}"
        s = self.spec
        if s.ge is not None and value < s.ge:
            return f"must be at least {s.ge:g}, not {value!r}"
        if s.gt is not None and value <= s.gt:
            return f"must be greater than {s.gt:g}, not {value!r}"
        if s.le is not None and value > s.le:
            return f"must be at most {s.le:g}, not {value!r}"
        if s.min_length is not None and len(value) < s.min_length:
            return "must not be empty" if s.min_length == 1 else f"must have at least {s.min_length} characters"
        return None


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


class Args:
    """A tool's arguments: subclass with annotated attributes (`str`, `int`, `float`, `bool`, `list[str]`,
    optionally `| None`) whose values are `arg(...)`. Unknown arguments are refused: a misspelt one (say
    `file_path`) is an error, not silently ignored."""

    _fields: ClassVar[tuple[_Field, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, _Field] = {f.name: f for f in cls._fields}
        for name, annotation in inspect.get_annotations(cls).items():
            if name.startswith("_"):
                continue
            text = str(annotation).replace(" ", "")
            optional = text.endswith("|None")
            kind = _KINDS.get(text.removesuffix("|None"))
            spec = cls.__dict__.get(name)
            if kind is None or not isinstance(spec, _Arg):
                raise TypeError(f"{cls.__name__}.{name}: declare as `name: str|int|float|bool|list[str] = arg(...)`")
            fields[name] = _Field(name, kind[0], kind[1], optional, spec)
        cls._fields = tuple(fields.values())

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: f.schema() for f in cls._fields},
            "additionalProperties": False,
        }
        required = [f.name for f in cls._fields if f.required]
        if required:
            schema["required"] = required
        return schema

    @classmethod
    def parse(cls, raw: Mapping[str, Any], tool: str) -> Any:
        """The validated arguments as an instance of `cls`; a ToolFailure naming every problem otherwise."""
        known = {f.name for f in cls._fields}
        problems = [f"{name}: unknown argument (this tool takes {', '.join(sorted(known)) or 'none'})"
                    for name in raw if name not in known]
        values: dict[str, Any] = {}
        for f in cls._fields:
            if f.name not in raw:
                if f.required:
                    problems.append(f"{f.name}: required")
                else:
                    values[f.name] = f.default()
                continue
            why = f.problem(raw[f.name])
            if why is not None:
                problems.append(f"{f.name}: {why}")
            values[f.name] = raw[f.name]
        if problems:
            raise ToolFailure(f"invalid arguments for {tool}: {'; '.join(problems)}. The tool's inputSchema "
                              "(tools/list) describes each argument")
        parsed = cls.__new__(cls)
        parsed.__dict__.update(values)
        return parsed


ArgsT = TypeVar("ArgsT", bound=Args)


def declared_tool(
    *,
    name: str,
    description: str,
    scope: Scope,
    hints: Hints,
    args: type[ArgsT],
    run: Callable[[ArgsT, CallContext], Awaitable[ToolOutput]],
    title: str | None = None,
    output_schema: Mapping[str, Any] | None = None,
) -> Tool:
    """A tool whose arguments are declared by an `Args` class: the schema comes from it and calls are validated."""

    async def validated(raw: Mapping[str, Any], call: CallContext) -> ToolOutput:
        parsed: ArgsT = args.parse(raw, name)
        return await run(parsed, call)

    return Tool(name, description, scope, hints, args.json_schema(), validated, title, output_schema=output_schema)


class Resource(NamedTuple):
    """Read-only context a source offers as an MCP resource (e.g. the user's Compass memories)."""

    uri: str
    name: str
    description: str
    mime_type: str
    read: Callable[[], Awaitable[str]]


class ToolSource(Protocol):
    """A family of tools (local, browser, Compass) whose list may change while the server runs.

    The server calls `tools()`/`resources()` whenever it lists them, so they must be cheap and answer at
    once with what is known; a source calls the callback given to `subscribe` after its lists changed, and
    the server then tells the clients. `run()` is started with the server, before any request is read, for
    background work (connecting, registering, retrying), and cancelled when the server stops; it may
    return at once.
    """

    name: str

    def tools(self) -> Sequence[Tool]: ...

    def resources(self) -> Sequence[Resource]: ...

    def status(self) -> Mapping[str, Any]:
        """A JSON-able summary for `bridge_status`: what is connected, and if not, why."""
        ...

    def subscribe(self, on_change: Callable[[], None]) -> None: ...

    async def run(self) -> None: ...


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

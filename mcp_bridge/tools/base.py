"""The contract between the server and every tool, local, browser or Compass.

A tool is data (name, schema, scope, hints) plus a handler. The server owns the scope gate and the usage
log, so a tool never sees a call it is not allowed to answer and never logs itself.

A handler is called on one of the server's worker threads. Local work (files) is plain blocking code that
returns a `ToolOutput` and checks `CallContext.cancelled` while it walks. Work that waits on the network or
on children (browser, Compass, commands) is an `async def`: calling it returns a coroutine, which the server
runs on its event-loop thread (`mcp_bridge.aio`), started the first time one is needed, so a server that only
reads files never loads asyncio.

Local tools declare their arguments as an `Args` class (annotated attributes with `arg(...)` defaults);
the input JSON schema is derived from it and every call is validated against it here, with the standard
library only: pydantic would cost ~80 ms and ~8 MiB per server at start for the same work.
"""

from __future__ import annotations

import json
import threading
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
    """The tool's own content; may be empty when the structured result says everything (see `readable`)."""
    structured: dict[str, Any] | None = None

    @classmethod
    def text(cls, text: str, structured: dict[str, Any] | None = None) -> ToolOutput:
        return cls([TextContent(text)], structured)

    def readable(self, with_structured: bool) -> list[Content]:
        """What a reader of content blocks (a client, the model) gets. `with_structured`: the structured result
        is sent too (only for a tool that declares its output schema); then its JSON comes first — the MCP
        spec's advice, for clients that do not read structured content — followed by the tool's own text only
        where it says more than the JSON (a time-out's advice, a truncation note)."""
        if not with_structured or self.structured is None:
            return list(self.content)
        text = json.dumps(self.structured, ensure_ascii=False, separators=(",", ":"), default=str)
        return [TextContent(text), *(c for c in self.content if not _same_json(c, self.structured))]


def _same_json(block: Content, structured: dict[str, Any]) -> bool:
    if not isinstance(block, TextContent) or not block.text.startswith("{"):
        return False
    try:
        return bool(json.loads(block.text) == structured)
    except ValueError:
        return False


ProgressReporter = Callable[[float, float | None, str | None], None]
"""Sends a progress notice for the call (from any thread); a no-op when the client asked for none."""


def _no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


class Cancellation:
    """Set once when a call is cancelled: the client cancelled it, or the server is stopping.

    Blocking work polls `is_set()` as it goes; the event-loop thread subscribes with `on_cancel` to cancel
    the coroutine it runs for the call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._set = False
        self._callbacks: list[Callable[[], object]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            if self._set:
                return
            self._set = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Call `callback` (from the thread that cancels) when this is set; at once if it already is."""
        with self._lock:
            if not self._set:
                self._callbacks.append(callback)
                return
        callback()


class CallContext(NamedTuple):
    """What a tool may know about the call in flight."""

    key_name: str
    client_name: str | None = None
    report_progress: ProgressReporter = _no_progress
    cancelled: Cancellation = Cancellation()
    """The default is never set: a call made outside the server (a test, a door) that nobody cancels."""


Handler = Callable[[Mapping[str, Any], CallContext], ToolOutput | Awaitable[ToolOutput]]
"""Returns the output (blocking work) or an awaitable of it (`async def`: run on the event-loop thread)."""


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
    quick: bool = False
    """Blocking work bounded to milliseconds on the local disk (a file read, write or listing; a status): the
    server answers it on the thread that read the request, before reading on, instead of handing reading to
    another thread first (that hand-off is most of a small call's cost). Never for work that may take long
    or wait on anything else (a search of a tree, the network, a child process)."""


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
        # The class's own annotations, as inspect.get_annotations(cls) gives them, without importing inspect (with
        # ast, dis, tokenize...: ~1 MiB per `serve`, issue 10).
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
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
    run: Callable[[ArgsT, CallContext], ToolOutput | Awaitable[ToolOutput]],
    title: str | None = None,
    output_schema: Mapping[str, Any] | None = None,
    quick: bool = False,
) -> Tool:
    """A tool whose arguments are declared by an `Args` class: the schema comes from it and calls are validated
    (before anything runs, on the calling thread, blocking and async handlers alike)."""

    def validated(raw: Mapping[str, Any], call: CallContext) -> ToolOutput | Awaitable[ToolOutput]:
        parsed: ArgsT = args.parse(raw, name)
        return run(parsed, call)

    return Tool(name, description, scope, hints, args.json_schema(), validated, title, output_schema=output_schema,
                quick=quick)


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
    once with what is known; a source calls the callback given to `subscribe` after its lists changed (from
    any thread), and the server then tells the clients.

    Background work (connecting, registering, retrying) is `run()`, a coroutine run on the server's
    event-loop thread until the server stops. It is started only once `needs_running()` says there is
    something to do (a native host to connect to, a Compass to register with): the catalog asks as the server
    starts and then every couple of seconds, so a server with nothing to connect to never starts the loop.
    `close()` is called once as the server stops, after `run()` (if it ran) was cancelled.
    """

    name: str

    def tools(self) -> Sequence[Tool]: ...

    def resources(self) -> Sequence[Resource]: ...

    def status(self) -> Mapping[str, Any]:
        """A JSON-able summary for `bridge_status`: what is connected, and if not, why."""
        ...

    def subscribe(self, on_change: Callable[[], None]) -> None: ...

    def needs_running(self) -> bool:
        """Whether `run()` has work to do now; cheap (a directory listing at most), called from a timer thread."""
        ...

    async def run(self) -> None: ...

    def close(self) -> None: ...


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

    def needs_running(self) -> bool:
        return False

    async def run(self) -> None:
        return None

    def close(self) -> None:
        return None

"""JSON-RPC 2.0 messages as MCP's stdio transport carries them: one JSON object per line.

`decode` turns a line into exactly one of `Request`, `Notification`, `Response` or `Malformed`; a
`Malformed` says what is wrong and carries the request id when one can be found, so that every bad line
still gets an answer the client can match. Sizes are bounded before anything is built from them: the
line length (by the transport, with `MAX_LINE_BYTES`), the nesting depth and the number of arguments.
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

# JSON-RPC 2.0 and MCP error codes (mcp_types.jsonrpc has the same numbers; a test keeps them equal).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNSUPPORTED_PROTOCOL_VERSION = -32022
REQUEST_ABANDONED = -32000
"""Implementation-defined: the server stopped before the request finished (stdin closed)."""
SERVER_BUSY = -32003
"""Implementation-defined: too many requests running at once; send again after some are answered."""

MAX_LINE_BYTES = 16 * 1024 * 1024
"""Larger than any file `write_file` should be handed in one call; a longer line is refused unread."""
MAX_DEPTH = 64
"""Nesting depth of a message; real MCP traffic stays below 10."""
MAX_ARGUMENTS = 256
"""Top-level keys of a `tools/call`'s arguments."""

Id = int | str

# `default=str`: a tool's result holding a path or a date still goes out; NaN and infinities are not JSON, so a
# result holding one is refused (ValueError) rather than sent as something a client cannot parse.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
# Where a request id can be found in a line that cannot be parsed whole: near the start (before "params")
# or as the last member (as JavaScript clients write it).
_ID = rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")'
_ID_AT_START = re.compile(_ID)
_ID_AT_END = re.compile(_ID + rb"\s*}\s*$")
_SNIFF = 4096


class Request(NamedTuple):
    id: Id
    method: str
    params: dict[str, Any]
    """Empty when the message had none."""


class Notification(NamedTuple):
    method: str
    params: dict[str, Any]


class Response(NamedTuple):
    """The client's answer to a request of ours (`roots/list`)."""

    id: Id
    result: dict[str, Any] | None
    error: dict[str, Any] | None


class Malformed(NamedTuple):
    id: Id | None
    code: int
    message: str


Message = Request | Notification | Response | Malformed


def decode(line: bytes) -> Message:
    try:
        value = json.loads(line)
    except RecursionError:
        return Malformed(sniff_id(line), INVALID_REQUEST, f"message nested deeper than {MAX_DEPTH} levels")
    except ValueError as exc:
        return Malformed(None, PARSE_ERROR, f"parse error: the line is not JSON ({exc}); send one JSON-RPC "
                                            "message per line, UTF-8")
    if isinstance(value, list):
        return Malformed(None, INVALID_REQUEST, "batches (JSON arrays) are not part of MCP; send each message "
                                                "on its own line")
    if not isinstance(value, dict):
        return Malformed(None, INVALID_REQUEST, "a JSON-RPC message must be a JSON object")
    raw_id = value.get("id")
    request_id: Id | None = raw_id if isinstance(raw_id, int | str) and not isinstance(raw_id, bool) else None
    if (line.count(b"[") + line.count(b"{")) > MAX_DEPTH and _too_deep(value):
        return Malformed(request_id, INVALID_REQUEST, f"message nested deeper than {MAX_DEPTH} levels")
    if value.get("jsonrpc") != "2.0":
        return Malformed(request_id, INVALID_REQUEST, 'missing "jsonrpc": "2.0"; every message must carry it')
    if "id" in value and request_id is None:
        return Malformed(None, INVALID_REQUEST, '"id" must be a string or an integer')
    method = value.get("method")
    if method is None and request_id is not None and ("result" in value or "error" in value):
        result, error = value.get("result"), value.get("error")
        return Response(request_id, result if isinstance(result, dict) else None,
                        error if isinstance(error, dict) else None)
    if not isinstance(method, str):
        return Malformed(request_id, INVALID_REQUEST, '"method" must be a string')
    params = value.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return Malformed(request_id, INVALID_PARAMS, f'"params" of {method} must be an object, not '
                                                     f"{type(params).__name__}")
    if request_id is None:
        return Notification(method, params)
    return Request(request_id, method, params)


def oversized(head: bytes, tail: bytes) -> Malformed:
    """The answer to a line longer than MAX_LINE_BYTES, of which only the start and end were kept."""
    return Malformed(_sniff(head, tail), INVALID_REQUEST,
                     f"message longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB, not read; send less at once "
                     "(for a large file, write it in parts with edit_file)")


def sniff_id(line: bytes) -> Id | None:
    return _sniff(line[:_SNIFF], line[-_SNIFF:])


def _sniff(head: bytes, tail: bytes) -> Id | None:
    params_at = head.find(b'"params"')
    found = _ID_AT_START.search(head, 0, params_at if params_at >= 0 else len(head)) or _ID_AT_END.search(tail)
    if found is None:
        return None
    try:
        value = json.loads(found.group(1))
    except ValueError:
        return None
    return value if isinstance(value, int | str) else None


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def encode(message: dict[str, Any]) -> bytes:
    return (_encoder.encode(message) + "\n").encode()


def result(request_id: Id, body: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": body}


def error(request_id: Id | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": err}


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def request(request_id: Id, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**notification(method, params), "id": request_id}

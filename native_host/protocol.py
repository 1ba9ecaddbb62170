"""Protocol v1 messages: the parts that the host and the client share (docs/PROTOCOL.md)."""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii

from native_host.framing import Bytes, frame

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, ~2 ms of the start-up the browser waits for
if TYPE_CHECKING:
    from typing import Any, TypeGuard

# Error codes. A client may see others from newer hosts or from extensions; it treats them like tool_error.
BAD_REQUEST = "bad_request"
TOO_LARGE = "too_large"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
BROWSER_DISCONNECTED = "browser_disconnected"
TOOL_ERROR = "tool_error"
HOST_UNAVAILABLE = "host_unavailable"
UNAUTHORIZED = "unauthorized"

MAX_CLIENT_ID_CHARS = 256

ClientId = int | str


class MalformedMessage(ValueError):
    """A frame that is not a JSON object with a string `type`."""


def _refuse_constant(name: str) -> Any:
    # Python reads NaN and Infinity, but they are not JSON: Chrome would reject the frame and drop the whole
    # port, taking every other client's requests with it.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # `1e999` is valid JSON syntax, but Python reads it as infinity, which no JSON writer can put back.
    value = float(text)
    if value - value != 0.0:
        raise ValueError(f"the number {text[:40]} is too large for a double")
    return value


_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_scan_once = _decoder.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__, not in typeshed


def parse(payload: Bytes) -> dict[str, Any]:
    """Decode one frame strictly: valid UTF-8, standard JSON with finite numbers, an object with a string `type`."""
    try:
        # Strict UTF-8 first: json.loads(bytes) lets through surrogates encoded in UTF-8, which Chrome refuses.
        text = str(payload, "utf-8")
        # The usual frame (an object, no whitespace around it) goes straight to the scanner, without decode()'s
        # two whitespace matches and raw_decode()'s frame: this runs for every request relayed. Anything else, or
        # anything the scanner stops short on, goes the full way, to the same result or the same error.
        end = -1
        if text[:1] == "{":
            try:  # noqa: SIM105 - contextlib.suppress would add two Python calls to every request
                message, end = _scan_once(text, 0)
            except StopIteration:
                pass
        if end != len(text):
            message = _decoder.decode(text)
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"frame is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise MalformedMessage(f"frame is not valid JSON ({exc})") from None
    except RecursionError:
        raise MalformedMessage("frame is not valid JSON (nested too deeply)") from None
    if not isinstance(message, dict):
        raise MalformedMessage(f"a message must be a JSON object, not {type(message).__name__}")
    if not isinstance(message.get("type"), str):
        raise MalformedMessage("a message needs a string `type`")
    return message


# Made once: json.dumps with non-default options builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dumps(obj: Any) -> bytes:
    """Compact ASCII JSON; refuses NaN and Infinity, which are not JSON.

    Compact, because Chrome's 1 MiB limit counts the serialized bytes. ASCII, because it is the fastest encoder,
    and it cannot fail on a lone surrogate that a client smuggled in as an escape.
    """
    return _encode(obj).encode("ascii")


def dumps_scalar(value: int | str) -> bytes:
    """An id or a name as JSON, like `dumps` but a few times faster: it is done for every message relayed."""
    if isinstance(value, str):
        return encode_basestring_ascii(value).encode("ascii")
    return b"%d" % value  # ids are never booleans (valid_client_id)


def encode(obj: Any) -> bytes:
    """`obj` as one complete frame."""
    return frame(dumps(obj))


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def valid_client_id(value: object) -> TypeGuard[ClientId]:
    """A request id is a JSON integer or a short string; booleans are ints to Python, but not ids."""
    if type(value) is int:
        return True
    return type(value) is str and len(value) <= MAX_CLIENT_ID_CHARS

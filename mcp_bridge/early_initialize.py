"""Answer the client's `initialize` before the MCP SDK has loaded.

Importing the `mcp` SDK takes ~0.5 s, and a stdio client waits for the `initialize` answer before it does
anything else. That answer depends only on the request and on constants of this server, so `serve` reads
the first line itself, answers a legacy `initialize` at once, and only then imports the SDK. The request is
then replayed into the SDK (by `mcp_bridge.stdio_transport`), so the session is set up exactly as if the
SDK had read it, and the SDK's own answer is dropped — after checking it says the same thing (a mismatch is
logged as an error and the test suite fails on it).

Everything else — a first message that is not `initialize`, or one this module is unsure about — goes to
the SDK untouched. Standard library only on the path to the answer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from mcp_bridge import __version__

log = logging.getLogger(__name__)

# The SDK's handshake-era protocol versions and its pick when the client asks for another
# (mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS; a test keeps these equal).
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
_MAX_FIRST_LINE = 1024 * 1024


@dataclass(frozen=True)
class ServerIdentity:
    name: str
    version: str
    instructions: str
    capabilities: dict[str, Any]


BRIDGE = ServerIdentity(
    name="compass-bridge",
    version=__version__,
    instructions="Tools for the user's files (inside the allowed roots), browser and Compass data. "
    "Call bridge_status to see what this key may do and what is connected.",
    # What the SDK derives from BridgeServer's handlers (tools and resources, both with list_changed).
    capabilities={"resources": {"listChanged": True, "subscribe": False}, "tools": {"listChanged": True}},
)


@dataclass(frozen=True)
class FirstMessage:
    line: bytes
    """As read, newline included; empty when the client closed stdin before sending anything."""
    answered: dict[str, Any] | None = None
    """The `initialize` answer already written to stdout, if any."""


def read_first_line(fd: int = 0) -> bytes:
    """Read up to and including the first newline, one byte at a time: a buffered read would swallow
    bytes of later messages that the SDK, reading the same descriptor afterwards, must see."""
    chunks = bytearray()
    while len(chunks) < _MAX_FIRST_LINE:
        byte = os.read(fd, 1)
        if not byte:
            break
        chunks += byte
        if byte == b"\n":
            break
    return bytes(chunks)


def initialize_answer(line: bytes, server: ServerIdentity) -> dict[str, Any] | None:
    """The JSON-RPC answer to `line` if it is a legacy `initialize` request, else None."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or message.get("method") != "initialize":
        return None
    request_id = message.get("id")
    params = message.get("params")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str) or not isinstance(params, dict):
        return None
    requested = params.get("protocolVersion")
    if not isinstance(requested, str) or not isinstance(params.get("clientInfo"), dict):
        return None  # malformed: let the SDK produce its error
    version = requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]
    return {"jsonrpc": "2.0", "id": request_id, "result": {
        "capabilities": server.capabilities,
        "instructions": server.instructions,
        "protocolVersion": version,
        "serverInfo": {"name": server.name, "version": server.version},
    }}


def answer_first_message(server: ServerIdentity, fd_in: int = 0, fd_out: int = 1) -> FirstMessage:
    line = read_first_line(fd_in)
    answer = initialize_answer(line, server)
    if answer is not None:
        data = (json.dumps(answer, separators=(",", ":")) + "\n").encode()
        while data:
            data = data[os.write(fd_out, data):]
    return FirstMessage(line, answer)

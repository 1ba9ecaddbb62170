"""The two protocol eras, and which one a request belongs to.

- **Handshake** (2024-11-05 … 2025-11-25): `initialize` fixes the version and the client's capabilities
  for the connection; the server may ask the client things (`roots/list`) and tells it of changes with
  unsolicited `notifications/*/list_changed`.
- **Modern** (2026-07-28, stateless): no handshake; every request carries its own envelope in
  `params._meta` (protocol version, client capabilities, optionally client info); results carry
  `resultType`; no `ping`, no logging, no server-to-client requests; change notices only on a
  `subscriptions/listen` stream the client opened.

The era is decided per request, from that request alone: a request whose `_meta` names a protocol
version is modern, anything else belongs to the connection's handshake.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mcp_bridge.protocol.wire import INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION

# The same tuples as mcp_types.version (a test keeps them equal).
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)

PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_ID_KEY = "io.modelcontextprotocol/subscriptionId"


class Envelope(NamedTuple):
    """What a modern request says about its client."""

    version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any] | None


class EnvelopeError(NamedTuple):
    code: int
    message: str
    data: dict[str, Any] | None = None


def is_modern(params: dict[str, Any]) -> bool:
    """Whether the request carries the 2026-07-28 envelope (its reserved version key is the signal)."""
    meta = params.get("_meta")
    return isinstance(meta, dict) and PROTOCOL_VERSION_KEY in meta


def envelope(params: dict[str, Any]) -> Envelope | EnvelopeError:
    """The envelope of a modern request (see `is_modern`), or why it is not usable."""
    meta: dict[str, Any] = params["_meta"]
    version = meta.get(PROTOCOL_VERSION_KEY)
    capabilities = meta.get(CLIENT_CAPABILITIES_KEY)
    if not isinstance(version, str):
        return EnvelopeError(INVALID_PARAMS, f"_meta[{PROTOCOL_VERSION_KEY!r}] must be a string")
    if version not in MODERN_VERSIONS:
        return EnvelopeError(UNSUPPORTED_PROTOCOL_VERSION,
                             f"protocol version {version!r} is not supported per request; this server speaks "
                             f"{', '.join(MODERN_VERSIONS)} that way, and {', '.join(HANDSHAKE_VERSIONS)} "
                             "through initialize",
                             {"supported": list(MODERN_VERSIONS), "requested": version})
    if not isinstance(capabilities, dict):
        return EnvelopeError(INVALID_PARAMS, f"params._meta is missing the required envelope key "
                                             f"{CLIENT_CAPABILITIES_KEY!r} (an object)")
    info = meta.get(CLIENT_INFO_KEY)
    return Envelope(version, capabilities, info if isinstance(info, dict) else None)


def negotiate(requested: Any) -> str:
    """The handshake version to answer an `initialize` asking for `requested` with."""
    return requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]

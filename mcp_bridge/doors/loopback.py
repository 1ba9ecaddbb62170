"""The checks every loopback door makes before it serves anyone: the Host (against DNS rebinding), the
Origin (against cross-site requests from web pages) and the listening address.

A loopback port is open to every local process and to every page the browser shows; a page on an attacker's
domain whose name was rebound to 127.0.0.1 sends its own name as `Host`, and any page's request carries its
`Origin`. So the Host must be a loopback name (or one the user listed) and an Origin, when a browser sends one,
must be one the user allowed.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mcp_bridge.compass.credentials import is_loopback

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def host_name(header: str) -> str:
    """The name in a `Host` header, lowercased, without the port or IPv6 brackets ("" when malformed)."""
    header = header.strip().lower().rstrip(".")
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else ""
    name, _, port = header.partition(":")
    if port and not port.isdigit():
        return ""
    return name.rstrip(".")


def host_refusal(header: str | None, extra: frozenset[str] = frozenset()) -> str | None:
    """Why a request with this `Host` is refused, or None when it names loopback (or a listed name)."""
    if not header:
        return "the request has no Host header; send Host: 127.0.0.1:PORT"
    name = host_name(header)
    if name and (is_loopback(name) or name in extra):
        return None
    listed = f" or one of {', '.join(sorted(extra))}" if extra else ""
    return (f"Host {header[:100]!r} is not a loopback name (localhost, 127.0.0.1, ::1{listed}); a web page may be "
            "reaching this port through a rebound DNS name. Connect to 127.0.0.1, or list the name in config.toml")


def normalize_origin(text: str) -> str:
    """`scheme://host[:port]` in canonical form (default ports dropped); ValueError when it is not an origin."""
    parts = urlsplit(text.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) origin such as https://compass.example.com")
    port = parts.port
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def origin_refusal(header: str | None, allowed: frozenset[str], *, required: bool) -> str | None:
    """Why a request with this `Origin` is refused, or None. Browsers always send Origin on WebSockets and
    cross-site writes; programs usually send none, which is accepted unless `required`."""
    if header is None:
        if required:
            return ("the connection has no Origin header; only the Compass web app (an allowed origin) may "
                    "connect")
        return None
    try:
        origin = normalize_origin(header)
    except ValueError:
        origin = header.strip()
    if origin in allowed:
        return None
    shown = ", ".join(sorted(allowed)) or "none configured"
    return (f"Origin {header[:200]!r} is not allowed (allowed: {shown}); add it to `origins` of this door in "
            "config.toml if it is yours")


def check_listen_host(host: str, where: str) -> str:
    """The listening address, which must be a loopback IP: the doors are never reachable from the network."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"{where}: the door listens on loopback only (127.0.0.1 or ::1), not {host!r}")

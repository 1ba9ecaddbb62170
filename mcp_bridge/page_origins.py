"""Web pages that may start agent runs through the browser extension (`[page_origins]` in config.toml).

Each entry is an exact origin, as the browser states it in `port.sender.origin` (scheme, host, port only when
not the scheme's default), with the scopes that origin's runs get:

    [page_origins]
    "https://compass.example.com" = "write"
    "http://127.0.0.1:5173" = "read"

The list is the ceiling for pages: `compass-bridge install` / `extension export` write it into the extension's
`externally_connectable.matches` (the browser lets no other page even connect) and into its `policy.json`, and
the browser link gives a page's runs exactly its origin's scopes. Scopes above `default_scopes` are refused:
a page never gets more than a local caller without a key. None configured: no page can connect.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit

from mcp_bridge.scopes import Scope, ScopeError, format_scopes, parse_scopes

SETTING = "[page_origins]"
LOOPBACK_NAMES = ("localhost",)


class OriginError(ValueError):
    """Not an origin a page can have; the message says what to write instead."""


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_origin(text: str) -> str:
    """`text` if it is an exact, canonical origin: https, or http on a loopback host; no path, no wildcard."""
    example = "e.g. \"https://compass.example.com\" or \"http://127.0.0.1:5173\""
    if not isinstance(text, str) or "*" in text:
        raise OriginError(f"{text!r} is not an exact origin (no wildcards); {example}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise OriginError(f"{text!r} is not an origin ({exc}); {example}") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise OriginError(f"{text!r} is not an http(s) origin; {example}")
    if parts.path or parts.query or parts.fragment or parts.username is not None or "@" in parts.netloc:
        raise OriginError(f"{text!r} has more than scheme, host and port; write just the origin, {example}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise OriginError(f"{text!r} uses http on a host that is not loopback: a network attacker could be "
                          "that page; use https (http is accepted only for localhost, 127.0.0.1 and [::1])")
    if not host.isascii():
        raise OriginError(f"{text!r}: write the host in its ASCII (punycode) form, as the browser reports it")
    if port == 0:
        raise OriginError(f"{text!r}: port 0 is not a port a page can be on; {example}")
    hostport = parts.netloc.lower()
    if port is not None:
        hostport = hostport[:hostport.rfind(":")]
    if port not in (None, {"https": 443, "http": 80}[parts.scheme]):
        hostport += f":{port}"
    canonical = f"{parts.scheme}://{hostport}"
    if canonical != text:
        raise OriginError(f"{text!r} is not written as the browser reports it; write {canonical!r}")
    return text


def parse_page_origins(table: object, default_scopes: frozenset[Scope], where: str) -> dict[str, frozenset[Scope]]:
    """The `[page_origins]` table: origin → scopes; ValueError naming the setting for a bad entry."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: {SETTING} must be a table of origin = scopes, e.g. "
                         "[page_origins] \"https://compass.example.com\" = \"read\"")
    parsed: dict[str, frozenset[Scope]] = {}
    for origin, value in table.items():
        try:
            parse_origin(origin)
            scopes = parse_scopes(value)
        except (OriginError, ScopeError) as exc:
            raise ValueError(f"{where} {SETTING} {origin!r}: {exc}") from None
        except (AttributeError, TypeError):
            raise ValueError(f"{where} {SETTING} {origin!r}: the value must be the scopes that origin's runs get, "
                             "\"read\", \"write\" or \"admin\"") from None
        if not scopes <= default_scopes:
            raise ValueError(f"{where} {SETTING} {origin!r}: {format_scopes(scopes)} is more than `default_scopes` "
                             f"({format_scopes(default_scopes)}); a page may not get more than a local caller "
                             "without a key: lower it, or raise `default_scopes`")
        parsed[origin] = scopes
    return parsed


def match_pattern(origin: str) -> str:
    """The `externally_connectable.matches` entry for `origin`. Chromium's patterns cannot name a default port
    and match every port when none is named; the extension then checks the exact origin."""
    return origin + "/*"

"""`[agent.compass_ws]` and `[agent.http]` of config.toml: whether each door is open, where, and its bounds.

Both doors are off unless `enabled = true`; `install` never writes these tables. A mistake here stops the
doors (which refuse to start and say why), never `serve` or the run service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mcp_bridge.doors.loopback import check_listen_host, normalize_origin


class DoorSettingsError(ValueError):
    """A door's table cannot be used; the message names the setting and the fix."""


@dataclass(frozen=True)
class CompassWsSettings:
    enabled: bool = False
    port: int = 18789
    host: str = "127.0.0.1"
    origins: tuple[str, ...] = ()
    """Allowed page origins; empty = the origin of the stored Compass URL."""
    engine: str = "anthropic"
    cwd: str = ""
    """The runs' working directory; empty = the first of `roots` (with no roots, runs are refused)."""
    max_connections: int = 8
    max_message_bytes: int = 1024 * 1024
    runs_per_connection: int = 4
    """Runs one connection may have streaming at once."""


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool = False
    listen: str = "127.0.0.1:18790"
    hosts: tuple[str, ...] = ()
    """Host names accepted besides loopback ones (e.g. host.docker.internal)."""
    origins: tuple[str, ...] = ()
    """Browser origins allowed; a request with any other Origin is refused."""
    requests_per_minute: int = 120
    """Requests one key may make per minute (every endpoint but /health)."""
    streams_per_key: int = 4
    """Event streams one key may hold open at once."""
    runs_per_key: int = 4
    """Runs one key may have active (queued, running or awaiting a review) at once."""
    max_body_bytes: int = 1024 * 1024
    max_connections: int = 64

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class DoorSettings:
    compass_ws: CompassWsSettings = CompassWsSettings()
    http: HttpSettings = HttpSettings()


def _parse(cls: type[Any], table: Any, where: str) -> Any:
    if not isinstance(table, Mapping):
        raise DoorSettingsError(f"{where} must be a table")
    defaults = cls()
    known = {f.name: getattr(defaults, f.name) for f in fields(cls)}
    unknown = set(table) - set(known)
    if unknown:
        raise DoorSettingsError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; known: "
                                f"{', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        default = known[name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        elif isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
            value = tuple(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            kind = type(default).__name__.replace("tuple", "list of strings").replace("int", "positive integer")
            raise DoorSettingsError(f"{where}: `{name}` must be a {kind}, got {value!r}")
        values[name] = value
    return cls(**values)


def parse_door_settings(tables: Mapping[str, Any], where: str = "config.toml") -> DoorSettings:
    ws: CompassWsSettings = _parse(CompassWsSettings, tables.get("compass_ws", {}), f"{where} [agent.compass_ws]")
    http: HttpSettings = _parse(HttpSettings, tables.get("http", {}), f"{where} [agent.http]")
    try:
        check_listen_host(ws.host, f"{where} [agent.compass_ws] host")
        if ws.port > 65535:
            raise ValueError(f"{where} [agent.compass_ws]: `port` must be at most 65535")
        if ws.engine not in ("anthropic", "claude-code"):
            raise ValueError(f"{where} [agent.compass_ws]: `engine` must be anthropic or claude-code")
        if ws.cwd and not Path(ws.cwd).expanduser().is_absolute():
            raise ValueError(f"{where} [agent.compass_ws]: `cwd` must be an absolute directory")
        ws = CompassWsSettings(**{**ws.__dict__, "origins": tuple(normalize_origin(o) for o in ws.origins)})
        host, _, port = http.listen.rpartition(":")
        if not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"{where} [agent.http]: `listen` must be HOST:PORT such as 127.0.0.1:18790, "
                             f"got {http.listen!r}")
        check_listen_host(host.strip("[]"), f"{where} [agent.http] listen")
        http = HttpSettings(**{**http.__dict__, "origins": tuple(normalize_origin(o) for o in http.origins),
                               "hosts": tuple(h.lower().rstrip(".") for h in http.hosts)})
    except ValueError as exc:
        raise DoorSettingsError(str(exc)) from None
    return DoorSettings(ws, http)

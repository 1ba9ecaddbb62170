"""The user's configuration file (`config.toml`) and its defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, NamedTuple

from mcp_bridge.page_origins import parse_page_origins
from mcp_bridge.scopes import Scope, ScopeError, parse_scopes

DOOR_TABLES = ("compass_ws", "http")
"""Sub-tables of `[agent]` that configure the loopback doors (mcp_bridge/doors/), not the run service."""


class ConfigError(Exception):
    """The configuration file cannot be used; the message says which setting and how to fix it."""


# The settings' groups are NamedTuples, not dataclasses: each of these costs ~0.5 ms less to create, and every
# `serve` creates them as it starts.
class Limits(NamedTuple):
    read_max_bytes: int = 2 * 1024 * 1024
    """Most bytes `read_file` returns in one call (and the largest file `edit_file` works on)."""
    search_max_results: int = 1000
    search_max_entries: int = 200_000
    """Most directory entries one `search_files` call looks at (and `list_directory` reads) before it stops."""
    search_timeout_s: float = 20.0
    """Longest one `search_files` call walks before it stops and returns what it found."""
    command_timeout_default_s: float = 30.0
    command_timeout_max_s: float = 600.0
    command_output_max_bytes: int = 50_000
    """Per stream (stdout and stderr each)."""
    browser_timeout_s: float = 30.0


class CompassSettings(NamedTuple):
    url: str | None = None
    connect_timeout_s: float = 5.0
    timeout_s: float = 30.0


_SCOPES = parse_scopes("read,write")
_LIMITS = Limits()
_COMPASS = CompassSettings()


class Config:
    """The whole configuration. A plain class rather than a frozen dataclass (dataclasses imports inspect, ~1.1 MiB
    per `serve`: issue 10) and not a NamedTuple (its dict defaults must be fresh for each instance); `Final`
    keeps it read-only for the type checker, as frozen did."""

    __slots__ = ("agent", "compass", "default_scopes", "doors", "limits", "log_level", "page_origins",
                 "protected_paths", "roots")

    def __init__(self, roots: tuple[Path, ...] = (), default_scopes: frozenset[Scope] = _SCOPES,
                 limits: Limits = _LIMITS, compass: CompassSettings = _COMPASS, log_level: str = "info",
                 protected_paths: tuple[Path, ...] = (), agent: dict[str, Any] | None = None,
                 doors: dict[str, Any] | None = None, page_origins: dict[str, frozenset[Scope]] | None = None) -> None:
        self.roots: Final = roots
        self.default_scopes: Final = default_scopes
        self.limits: Final = limits
        self.compass: Final = compass
        self.log_level: Final = log_level
        """`[log] level`: debug, info, warning or error (COMPASS_BRIDGE_LOG_LEVEL overrides it; see
        mcp_bridge/logs.py)."""
        self.protected_paths: Final = protected_paths
        """Added to the built-in protected paths (mcp_bridge/protected.py); nothing can remove those."""
        self.agent: Final[dict[str, Any]] = {} if agent is None else agent
        """The raw `[agent]` table; read by mcp_bridge/agent/settings.py when the run service starts, so a mistake
        there stops only the run service (which refuses to start and says why), never `serve`."""
        self.doors: Final[dict[str, Any]] = {} if doors is None else doors
        """The raw `[agent.compass_ws]` and `[agent.http]` tables (taken out of `agent`); read by
        mcp_bridge/doors/settings.py when `compass-bridge doors` starts."""
        self.page_origins: Final[dict[str, frozenset[Scope]]] = {} if page_origins is None else page_origins
        """`[page_origins]`: the web pages that may start runs through the extension, each with its runs' scopes
        (mcp_bridge/page_origins.py). None by default."""

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        # Defining __eq__ leaves the class unhashable, as the dataclass was in effect (its tables are dicts).
        return type(other) is Config and self._values() == other._values()

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


def _number(section: dict[str, Any], name: str, default: float, where: str) -> Any:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: `{name}` must be a positive number, got {value!r}")
    return type(default)(value)


def _section(data: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    return value


def _log_level(table: dict[str, Any], where: str) -> str:
    from mcp_bridge.logs import LEVELS

    level = table.get("level", "info")
    if not isinstance(level, str) or level.lower() not in LEVELS:
        raise ConfigError(f"{where} [log]: `level` must be one of {', '.join(LEVELS)}, got {level!r}")
    unknown = set(table) - {"level"}
    if unknown:
        raise ConfigError(f"{where} [log]: unknown setting(s) {', '.join(sorted(unknown))}")
    return level.lower()


def load_config(path: Path) -> Config:
    """Read `path` if it exists; a missing file means every default."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the configuration: {exc}") from exc
    import tomllib  # only a file that exists needs the parser (~7 ms to import, measured)

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: cannot read the configuration: {exc}") from exc

    roots = data.get("roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
        raise ConfigError(f"{where}: `roots` must be a list of directory paths")
    try:
        default_scopes = parse_scopes(data.get("default_scopes", "read,write"))
    except (ScopeError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{where}: `default_scopes`: {exc}") from exc

    protected = data.get("protected_paths", [])
    if not isinstance(protected, list) or not all(isinstance(p, str) and p for p in protected):
        raise ConfigError(f"{where}: `protected_paths` must be a list of paths (files or directories) that no "
                          "tool may read or write, e.g. protected_paths = [\"~/private\"]")

    limits_table = _section(data, "limits", where)
    defaults = Limits()
    limits = Limits(**{
        name: _number(limits_table, name, getattr(defaults, name), f"{where} [limits]")
        for name in Limits._fields
    })
    unknown = set(limits_table) - set(Limits._fields)
    if unknown:
        raise ConfigError(f"{where} [limits]: unknown setting(s) {', '.join(sorted(unknown))}")

    agent = _section(data, "agent", where)
    try:
        page_origins = parse_page_origins(data.get("page_origins", {}), default_scopes, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    compass_table = _section(data, "compass", where)
    url = compass_table.get("url")
    if url is not None and not isinstance(url, str):
        raise ConfigError(f"{where} [compass]: `url` must be a string")
    compass_defaults = CompassSettings()
    compass = CompassSettings(
        url=url,
        connect_timeout_s=_number(compass_table, "connect_timeout_s", compass_defaults.connect_timeout_s, where),
        timeout_s=_number(compass_table, "timeout_s", compass_defaults.timeout_s, where),
    )
    return Config(
        roots=tuple(Path(r).expanduser() for r in roots),
        default_scopes=default_scopes,
        limits=limits,
        compass=compass,
        log_level=_log_level(_section(data, "log", where), where),
        protected_paths=tuple(Path(p).expanduser() for p in protected),
        agent={k: v for k, v in agent.items() if k not in DOOR_TABLES},
        doors={k: v for k, v in agent.items() if k in DOOR_TABLES},
        page_origins=page_origins,
    )

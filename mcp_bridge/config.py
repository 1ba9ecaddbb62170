"""The user's configuration file (`config.toml`) and its defaults."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_bridge.scopes import Scope, ScopeError, parse_scopes


class ConfigError(Exception):
    """The configuration file cannot be used; the message says which setting and how to fix it."""


@dataclass(frozen=True)
class Limits:
    read_max_bytes: int = 2 * 1024 * 1024
    """Most bytes `read_file` returns in one call (and the largest file `edit_file` works on)."""
    search_max_results: int = 1000
    command_timeout_default_s: float = 30.0
    command_timeout_max_s: float = 600.0
    command_output_max_bytes: int = 50_000
    """Per stream (stdout and stderr each)."""
    browser_timeout_s: float = 30.0


@dataclass(frozen=True)
class CompassSettings:
    url: str | None = None
    connect_timeout_s: float = 5.0
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Config:
    roots: tuple[Path, ...] = ()
    default_scopes: frozenset[Scope] = field(default_factory=lambda: parse_scopes("read,write"))
    limits: Limits = field(default_factory=Limits)
    compass: CompassSettings = field(default_factory=CompassSettings)


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


def load_config(path: Path) -> Config:
    """Read `path` if it exists; a missing file means every default."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the configuration: {exc}") from exc

    roots = data.get("roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
        raise ConfigError(f"{where}: `roots` must be a list of directory paths")
    try:
        default_scopes = parse_scopes(data.get("default_scopes", "read,write"))
    except (ScopeError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{where}: `default_scopes`: {exc}") from exc

    limits_table = _section(data, "limits", where)
    defaults = Limits()
    limits = Limits(**{
        name: _number(limits_table, name, getattr(defaults, name), f"{where} [limits]")
        for name in defaults.__dataclass_fields__
    })
    unknown = set(limits_table) - set(defaults.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{where} [limits]: unknown setting(s) {', '.join(sorted(unknown))}")

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
    )

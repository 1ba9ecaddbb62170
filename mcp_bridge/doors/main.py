"""`compass-bridge doors`: the enabled loopback doors in one process, until SIGTERM.

It refuses to start when no door is enabled, when a door's table cannot be read, or when the Compass door
would have no origin to allow; each refusal says what to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable
from typing import TypeVar

from mcp_bridge.config import Config, ConfigError, load_config
from mcp_bridge.doors.settings import DoorSettings, DoorSettingsError, parse_door_settings
from mcp_bridge.paths import StatePaths

T = TypeVar("T")


def run(paths: StatePaths) -> int:
    try:
        config = load_config(paths.config_file)
        settings = parse_door_settings(config.doors, str(paths.config_file))
    except (ConfigError, DoorSettingsError) as exc:
        print(f"compass-bridge doors: refusing to start: {exc}", file=sys.stderr)
        return 2
    if not (settings.compass_ws.enabled or settings.http.enabled):
        print("compass-bridge doors: no door is enabled; set `enabled = true` in [agent.compass_ws] or "
              f"[agent.http] of {paths.config_file} (docs/DOORS.md)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(paths, config, settings))
    except _Refused as exc:
        print(f"compass-bridge doors: refusing to start: {exc}", file=sys.stderr)
        return 2


class _Refused(Exception):
    pass


async def _listening(start: Awaitable[T], address: str, setting: str) -> T:
    try:
        return await start
    except OSError as exc:
        raise _Refused(f"cannot listen on {address}: {exc.strerror or exc}; another program (Compass's own "
                       f"daemon?) may hold it: stop it, or change {setting}") from None


async def _serve(paths: StatePaths, config: Config, settings: DoorSettings) -> int:
    from mcp_bridge.keys import KeyStore
    from mcp_bridge.usage import UsageLog

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    keys = KeyStore.open(paths)
    usage = UsageLog(paths.database)
    closers = []
    try:
        if settings.compass_ws.enabled:
            from mcp_bridge.doors.compass_ws import CompassWsDoor, default_origins

            origins = frozenset(settings.compass_ws.origins) or default_origins(paths, config)
            if not origins:
                raise _Refused("[agent.compass_ws] has no origin to allow: set `origins = [\"https://YOUR-COMPASS\"]` "
                               "or run `compass-bridge compass login` (its URL's origin is the default)")
            door = CompassWsDoor(paths, config, settings.compass_ws, origins)
            port = await _listening(door.start(), f"{settings.compass_ws.host}:{settings.compass_ws.port}",
                                    "[agent.compass_ws] port")
            closers.append(door.close)
            print(f"compass-bridge doors: Compass WebSocket on ws://{settings.compass_ws.host}:{port} "
                  f"(origins: {', '.join(sorted(origins))})", file=sys.stderr, flush=True)
        if settings.http.enabled:
            from mcp_bridge.doors.http import HttpServer
            from mcp_bridge.doors.http_api import RunApi
            from mcp_bridge.pathpolicy import PathPolicy, RootError
            from mcp_bridge.tools.claude_config import ClaudeConfig

            try:
                policy = PathPolicy.named_only(list(config.roots), protected=config.protected_paths,
                                               who="the Claude Code configuration endpoints")
            except RootError as exc:
                raise _Refused(str(exc)) from None
            api = RunApi(paths, config, settings.http, keys, usage, ClaudeConfig(policy))
            server = HttpServer(api.handle, max_connections=settings.http.max_connections,
                                max_body=settings.http.max_body_bytes)
            host, port = await _listening(server.start(*settings.http.address()), settings.http.listen,
                                          "[agent.http] listen")
            closers.append(server.close)
            print(f"compass-bridge doors: HTTP run API on http://{host}:{port}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        for close in reversed(closers):
            await close()
        usage.close()
        keys.close()
    return 0

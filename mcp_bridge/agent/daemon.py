"""`compass-bridge agent`: one run service per user, started on demand, holding a lock while it lives.

It refuses to start when `[agent]` (or its approval envelope) cannot be read — an unreadable envelope never
means "allow" — and exits at once when another service of this user already holds the lock. When a loopback
door is enabled it runs the doors as its child (doors_child.py) and stops them when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mcp_bridge.agent.doors_child import DoorsChild
from mcp_bridge.agent.doors_child import wanted as doors_wanted
from mcp_bridge.agent.server import agent_dir, socket_file, start_server
from mcp_bridge.agent.settings import AgentSettings, AgentSettingsError, parse_agent_settings
from mcp_bridge.config import Config, ConfigError, load_config
from mcp_bridge.pathpolicy import PathPolicy, RootError
from mcp_bridge.paths import StatePaths

if TYPE_CHECKING:
    from mcp_bridge.agent.service import RunService
from native_host.runtime_dir import ensure_private_dir

log = logging.getLogger(__name__)

LOCK_NAME = "agent.lock"


class AlreadyRunning(Exception):
    pass


def _lock(path: Path) -> IO[str]:
    """An exclusive lock held for the life of the process (the OS drops it if we die)."""
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until exit
    if sys.platform != "win32":
        import fcntl

        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AlreadyRunning from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


async def _until_stopped_or_idle(stop: asyncio.Event, service: RunService, exit_idle_s: float,
                                 doors: DoorsChild | None) -> None:
    """Until SIGTERM/SIGINT, or — started on demand, stopped when unneeded — `exit_idle_s` of nothing to do. Open
    doors are never idle: a page or an orchestrator may connect at any time."""
    idle_since = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if service.busy() or (doors is not None and doors.alive()):
            idle_since = time.monotonic()
        elif exit_idle_s and time.monotonic() - idle_since >= exit_idle_s:
            log.info("idle for %.0f s ([agent] exit_idle_s): stopping", exit_idle_s)
            return


def run(paths: StatePaths) -> int:
    try:
        config = load_config(paths.config_file)
        settings = parse_agent_settings(config.agent, f"{paths.config_file} [agent]")
        # Serve's root policy without its implicit default: no roots named = every run refused, with how to
        # name them (the service still starts, so `runs list` and the doors can say so).
        roots = PathPolicy.named_only(list(config.roots), protected=config.protected_paths, who="the run service")
    except (ConfigError, AgentSettingsError, RootError) as exc:
        print(f"compass-bridge agent: refusing to start: {exc}", file=sys.stderr)
        return 2
    paths.ensure()
    ensure_private_dir(paths.run_dir)
    directory = ensure_private_dir(agent_dir(paths.run_dir))
    try:
        lock = _lock(directory / LOCK_NAME)
    except AlreadyRunning:
        print("compass-bridge agent: the run service is already running for this user", file=sys.stderr)
        return 0
    try:
        asyncio.run(_serve(paths, config, settings, roots))
    finally:
        lock.close()
    return 0


async def _serve(paths: StatePaths, config: Config, settings: AgentSettings, roots: PathPolicy) -> None:
    from mcp_bridge.agent.service import RunService
    from mcp_bridge.agent.store import RunStore
    from mcp_bridge.keys import KeyStore
    from mcp_bridge.tools.commands import command_tools
    from mcp_bridge.tools.files import file_tools
    from mcp_bridge.usage import UsageLog

    keys = KeyStore.open(paths)
    usage = UsageLog(paths.database)
    runs = RunStore.open(paths.database)
    # The scopes of the bridge's own tools, for the envelope's mcp_read/mcp_write/mcp_admin categories.
    local = [*file_tools(roots, config.limits), *command_tools(roots, config.limits)]
    service = RunService(paths, config, settings, keys, usage, runs, {t.name: t.scope for t in local}, roots)
    interrupted = service.recover()
    if interrupted:
        log.warning("marked %d run(s) interrupted: %s", len(interrupted), ", ".join(interrupted))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server = await start_server(service, paths.run_dir)
    print(f"compass-bridge agent: run service {os.getpid()} listening; "
          f"{settings.concurrency()} run(s) at once", file=sys.stderr, flush=True)
    doors = DoorsChild() if doors_wanted(config, sys.stderr) else None
    try:
        if doors is not None:
            doors.start()
        await _until_stopped_or_idle(stop, service, settings.exit_idle_s, doors)
    finally:
        server.close()
        socket_file(paths.run_dir).unlink(missing_ok=True)  # no client may knock on a door nobody answers
        await service.shutdown()  # the doors still relay the runs' end to their clients
        if doors is not None:
            doors.stop()
        runs.close()
        usage.close()
        keys.close()

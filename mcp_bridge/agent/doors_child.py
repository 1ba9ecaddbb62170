"""The loopback doors as a child of the run service: started with it when `[agent.compass_ws]` or `[agent.http]`
is enabled, stopped with it, so nobody starts them by hand (docs/DOORS.md).

A child, not a task of the service: the doors are `compass-bridge doors`, which reach the service through its
socket like any front end, and whatever goes wrong in a door (a port already taken, a bad table) ends that child
and is written to the service's log — it never stops the service or its runs. The child shares the service's
output (agent-service.out) and environment (the doors are our own code, and reach Compass as the service does).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import TextIO

from mcp_bridge.config import Config
from mcp_bridge.doors.settings import DoorSettingsError, parse_door_settings

_STOP_GRACE_S = 10.0


def wanted(config: Config, out: TextIO) -> bool:
    """Whether a door is enabled; a door table that cannot be read is reported on `out` and starts no door."""
    try:
        settings = parse_door_settings(config.doors, "config.toml")
    except DoorSettingsError as exc:
        print(f"compass-bridge agent: the doors do not start: {exc}", file=out, flush=True)
        return False
    return settings.compass_ws.enabled or settings.http.enabled


class DoorsChild:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # stdout/stderr inherited: the service's own output, where `compass-bridge doors` says what it listens on.
        # `env` from os.environ, never the process's own block, whose secrets selfguard has blanked.
        self._proc = subprocess.Popen([sys.executable, "-m", "mcp_bridge", "doors"], stdin=subprocess.DEVNULL,
                                      close_fds=True, env=dict(os.environ))

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (the doors close their connections and say why), then SIGKILL after the grace period."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

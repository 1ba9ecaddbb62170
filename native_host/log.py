"""The host's log: one small file, never stdout (stdout belongs to the browser's frames).

Not the `logging` package: importing it would add to the start-up the browser waits on, and the host writes
a handful of lines per session.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from native_host.runtime_dir import HOME_ENV, UnsafeRuntimeDir, ensure_private_dir

LOG_NAME = "native-host.log"
ROTATE_AT = 1024 * 1024


def log_dir() -> Path:
    """`$COMPASS_BRIDGE_HOME/logs`, else the platform's per-user log dir (the one platformdirs would pick)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "logs"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Logs" / "compass-bridge"
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(local) / "compass-bridge" / "Logs"
    state = os.environ.get("XDG_STATE_HOME", "").strip() or "~/.local/state"
    return Path(state).expanduser() / "compass-bridge" / "log"


class Log:
    """Appends timestamped lines tagged with the pid (several browsers may run hosts at once)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tag = f"[{os.getpid()}]"

    @classmethod
    def open(cls) -> Log:
        """The log file, rotated once it passes 1 MiB; stderr when the log dir cannot be used."""
        try:
            directory = ensure_private_dir(log_dir())
            path = directory / LOG_NAME
            try:
                if path.stat().st_size > ROTATE_AT:
                    path.replace(path.with_name(LOG_NAME + ".1"))
            except FileNotFoundError:
                pass
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            return cls(open(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace"))
        except (OSError, UnsafeRuntimeDir) as exc:
            log = cls(sys.stderr)
            log(f"cannot write the log file ({exc}); logging to stderr")
            return log

    def __call__(self, message: str) -> None:
        # A full disk or a closed stderr must not take the relay down.
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self._tag} {message}\n")

    def close(self) -> None:
        if self._stream is not sys.stderr:
            self._stream.close()

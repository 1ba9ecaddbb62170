"""The host's log: one small file, never stdout (stdout belongs to the browser's frames).

Not the `logging` package: importing it would add to the start-up the browser waits on, and the host writes
a handful of lines per session.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from native_host.runtime_dir import HOME_ENV, UnsafeRuntimeDir, ensure_private_dir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, ~2 ms of the start-up the browser waits for
if TYPE_CHECKING:
    from pathlib import Path
    from typing import TextIO

LOG_NAME = "native-host.log"
ROTATE_AT = 1024 * 1024
REFUSALS_IN_FULL = 20
"""Refusals of one kind logged line by line; past that, one line per REFUSALS_PER_LINE more (and a count at exit),
so that a flood of bad connections cannot fill the disk through the log."""
REFUSALS_PER_LINE = 1000


def log_dir() -> Path:
    """`$COMPASS_BRIDGE_HOME/logs`, else the platform's per-user log dir (the one platformdirs would pick)."""
    from pathlib import Path

    return Path(log_dir_name())


def log_dir_name() -> str:
    """`log_dir()` as a string, for the host (which does without pathlib: start-up time)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return os.path.join(os.path.expanduser(home), "logs")
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~"), "Library", "Logs", "compass-bridge")
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
        return os.path.join(local, "compass-bridge", "Logs")
    state = os.environ.get("XDG_STATE_HOME", "").strip() or "~/.local/state"
    return os.path.join(os.path.expanduser(state), "compass-bridge", "log")


class Log:
    """Appends timestamped lines tagged with the pid (several browsers may run hosts at once)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tag = f"[{os.getpid()}]"
        self._refusals: dict[str, int] = {}

    @classmethod
    def open(cls) -> Log:
        """The log file, rotated once it passes 1 MiB; stderr when the log dir cannot be used."""
        try:
            path = os.path.join(ensure_private_dir(log_dir_name()), LOG_NAME)
            try:
                if os.stat(path).st_size > ROTATE_AT:
                    os.replace(path, path + ".1")
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

    def refusal(self, kind: str, message: str) -> None:
        """A connection or frame the host refused: logged, but in bulk only counted."""
        count = self._refusals[kind] = self._refusals.get(kind, 0) + 1
        if count <= REFUSALS_IN_FULL:
            self(message)
        elif count % REFUSALS_PER_LINE == 0:
            self(f"{count} refusals of kind {kind!r} so far; the latest: {message}")

    def summary(self) -> None:
        """The count of every kind of refusal that was not logged line by line."""
        for kind, count in self._refusals.items():
            if count > REFUSALS_IN_FULL:
                self(f"{count} refusals of kind {kind!r} in all")

    def close(self) -> None:
        if self._stream is not sys.stderr:
            self._stream.close()

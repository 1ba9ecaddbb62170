"""Logging for long-running processes: one file per process, warnings also on stderr.

Many `serve` processes run at once (one per agent session), and Python's rotating handler does not support
several writers on one file: rotations race and lines land in the wrong file. So each process writes its
own `<program>-<UTC time>-<pid>.log`, rotated once at `_MAX_BYTES` (so one process holds at most twice
that), and at start-up the oldest files of processes that have ended are removed beyond `KEEP_FILES`.
stdout is never used: for `serve` it carries the MCP protocol.

The level comes from `COMPASS_BRIDGE_LOG_LEVEL`, else `[log] level` in config.toml, else `info`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mcp_bridge import __version__

if TYPE_CHECKING:
    from mcp_bridge.paths import StatePaths

LEVEL_ENV = "COMPASS_BRIDGE_LOG_LEVEL"
LEVELS = ("debug", "info", "warning", "error")
KEEP_FILES = 20
"""Log files of ended processes kept per program (the newest); those of running processes are never removed."""
_MAX_BYTES = 1_000_000
_REASON_MAX = 500
_NAME = re.compile(r"(?P<program>[a-z-]+)-\d{8}T\d{6}Z-(?P<pid>\d+)\.log(?:\.1)?")

_current: Path | None = None
calls = logging.getLogger("mcp_bridge.calls")


def resolve_level(configured: str = "info") -> tuple[int, str | None]:
    """The level to log at (the environment variable wins over the config file's `[log] level`), and a warning
    when the variable is not a level: it is then ignored rather than stopping the server."""
    value = os.environ.get(LEVEL_ENV, "").strip().lower()
    warning = None
    if value and value not in LEVELS:
        warning = f"{LEVEL_ENV}={value!r} is not a log level ({', '.join(LEVELS)}); using {configured!r}"
        value = ""
    level: int = getattr(logging, (value or configured).upper())
    return level, warning


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        return False  # Windows keeps an open file from being deleted; the unlink below just fails
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune(log_dir: Path, program: str, keep: int = KEEP_FILES) -> list[Path]:
    """Remove the oldest log files of `program` beyond `keep`, except those of running processes."""
    files = []
    for path in log_dir.glob(f"{program}-*.log*"):
        match = _NAME.fullmatch(path.name)
        if match and match["program"] == program and not _alive(int(match["pid"])):
            files.append(path)
    stems = sorted({p.name.removesuffix(".1") for p in files}, reverse=True)  # the name sorts by time
    removed = []
    for stem in stems[keep:]:
        for path in (log_dir / stem, log_dir / f"{stem}.1"):
            try:
                path.unlink()
            except OSError:
                continue
            removed.append(path)
    return removed


class _OwnFile(logging.FileHandler):
    """This process's log file, moved to `<name>.1` (replacing an earlier one) once it reaches `max_bytes`.

    What `logging.handlers.RotatingFileHandler(backupCount=1)` does, without importing `logging.handlers`: that
    brings socket, pickle and queue for handlers never used here, ~6 ms of every `serve`'s start-up. The size
    is checked after each record, so a file ends at most one record past `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self._max_bytes = max_bytes

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)  # opens the file first if it is not open (again)
        stream = self.stream
        if stream is None or stream.tell() < self._max_bytes:
            return
        # `handle` holds the handler's lock around `emit`: no other thread writes meanwhile.
        self.stream = None  # the next record opens a new file under the name
        try:
            stream.close()
            Path(self.baseFilename).replace(self.baseFilename + ".1")
        except OSError:
            self.handleError(record)


def configure(log_dir: Path, program: str, level: str = "info") -> Path:
    """Send this process's log to its own file (and warnings to stderr); returns the file.

    `level` is the config file's setting (already checked by mcp_bridge.config).
    """
    global _current
    resolved, warning = resolve_level(level)
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    prune(log_dir, program)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = log_dir / f"{program}-{stamp}-{os.getpid()}.log"
    file_handler = _OwnFile(path, _MAX_BYTES)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setLevel(logging.WARNING)
    stderr_handler.setFormatter(logging.Formatter(f"{program}: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [file_handler, stderr_handler]
    root.setLevel(resolved)
    _current = path
    log = logging.getLogger(__name__)
    # First line of every file: which program and version wrote it, so a file found later explains itself.
    log.info("%s %s started (pid %d, level %s)", program, __version__, os.getpid(), logging.getLevelName(resolved))
    if warning:
        log.warning(warning)
    return path


def log_location(paths: StatePaths) -> str:
    """Where the logs are, for `doctor` and `bridge_status`: the directory, and this process's file if any."""
    log_dir = paths.log_dir
    where = f"{log_dir} (one file per process: serve-<UTC time>-<pid>.log; the newest {KEEP_FILES} are kept)"
    if _current is not None and _current.parent == log_dir:
        where += f"; this server's: {_current.name}"
    return where


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _REASON_MAX else flat[:_REASON_MAX] + "…"


def call_outcome(tool: str, outcome: str, key_name: str, reason: str | None, duration_ms: float) -> None:
    """One line per tool call: refusals and failures with their reason (INFO and WARNING), others at DEBUG.

    The reason is flattened to one line and capped, so an agent cannot flood or forge log lines through it.
    """
    if outcome == "ok":
        calls.debug("%s by key %s: ok in %.1f ms", tool, key_name, duration_ms)
    elif outcome == "refused":
        calls.info("%s by key %s: refused: %s", tool, key_name, _one_line(reason or "no reason given"))
    else:
        calls.warning("%s by key %s: failed after %.1f ms: %s", tool, key_name, duration_ms,
                      _one_line(reason or "no reason given"))

"""Logging for long-running processes: a small rotating file per program, warnings also on stderr.

stdout is never used: for `serve` it carries the MCP protocol.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

_MAX_BYTES = 1_000_000
_BACKUPS = 3


def configure(log_dir: Path, program: str, level: int = logging.INFO) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = log_dir / f"{program}.log"
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=_MAX_BYTES, backupCount=_BACKUPS,
                                                        encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setLevel(logging.WARNING)
    stderr_handler.setFormatter(logging.Formatter(f"{program}: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [file_handler, stderr_handler]
    root.setLevel(level)
    return path

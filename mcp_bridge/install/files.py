"""File operations the installer relies on: atomic writes and directories it can later remove again."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, outermost first."""
    missing: list[Path] = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return list(reversed(missing))


def make_dirs(path: Path) -> list[Path]:
    """Create `path`'s missing parents and return them (outermost first), so uninstall can remove them."""
    created = missing_parents(path)
    for directory in created:
        directory.mkdir()
    return created


def atomic_write(path: Path, text: str | bytes, mode: int | None = None) -> None:
    """Replace `path` with `text` (or bytes) so that a reader sees the old file or the new one, never a torn one.

    `mode` defaults to the existing file's mode, so rewriting a user's config keeps its permissions.
    """
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_text(path: Path) -> str | None:
    """The file's exact text (CRLF kept, so a .bat compares equal to what was written), or None."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        return None


def remove_empty_dirs(dirs: list[Path]) -> list[Path]:
    """Remove each of `dirs` (innermost first) that is empty; return the ones removed."""
    removed: list[Path] = []
    for directory in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            continue  # not empty (someone else put something there) or already gone: leave it
        removed.append(directory)
    return removed

"""The temp files of atomic writes: named so they are recognisably ours, and removed after a crash.

`write_file` and `edit_file` write a temp file beside the target and rename it into place. A server killed in
between (kill -9, power loss) leaves the temp file behind, possibly as large as the content. So each server
keeps a journal — one small file per process in the data directory, locked while the process lives — of the
directories it made temp files in; every temp file's name carries the process's random token. A server that
starts finds the journals nobody holds any more, and in each directory they list that lies inside its roots,
removes the files carrying that journal's token, and nothing else. The work is bounded: at most
`MAX_DIRS` directories per journal and `MAX_ENTRIES` entries looked at per directory.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import sys
import threading
from pathlib import Path
from typing import IO

from mcp_bridge.pathpolicy import PathPolicy, PathRefused
from mcp_bridge.tools.failure import ToolFailure

SUFFIX = ".compass-bridge-tmp"
MAX_DIRS = 10_000
MAX_ENTRIES = 100_000
_JOURNAL_SUFFIX = ".dirs"
_NAME_KEEP = 100
"""Characters of the target's name kept in the temp file's name, so the latter stays within NAME_MAX."""

log = logging.getLogger(__name__)


def _lock(f: IO[str]) -> bool:
    """Take the journal's lock without waiting; False if a live process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            f.seek(0)  # a byte-range lock: every process must lock the same byte, the first
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class TempJournal:
    """This process's journal of the directories it made temp files in, and the cleaner of dead ones."""

    def __init__(self, directory: Path | None) -> None:
        """`directory` holds the journals (in the data directory); None records nothing (tests)."""
        self.directory = directory
        self.token = secrets.token_hex(6)
        self._file: IO[str] | None = None
        self._dirs: set[str] = set()
        self._lock = threading.Lock()  # writes run in worker threads, several at once

    def temp_name(self, target: str) -> str:
        """A new temp name for `target`: hidden, carrying our token, ending in SUFFIX."""
        return f".{target[:_NAME_KEEP]}.{self.token}{secrets.token_hex(4)}{SUFFIX}"

    def record(self, directory: str) -> None:
        """Note that a temp file is about to be made in `directory` (a real path), before it is made."""
        with self._lock:
            self._record(directory)

    def _record(self, directory: str) -> None:
        if self.directory is None or directory in self._dirs or len(self._dirs) >= MAX_DIRS:
            return
        try:
            if self._file is None:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                journal = self.directory / f"{self.token}{_JOURNAL_SUFFIX}"
                # Held open for the process's life: its lock tells other servers this one is alive.
                self._file = open(journal, "a", encoding="utf-8")  # noqa: SIM115
                _lock(self._file)
            self._file.write(directory + "\n")
            self._file.flush()
        except OSError as exc:
            # A journal that cannot be written costs only the clean-up after a crash, never the write itself.
            log.warning("cannot record %s in the temp-file journal %s: %s", directory, self.directory, exc)
            return
        self._dirs.add(directory)

    def close(self) -> None:
        """End of a clean run: every temp file was renamed or removed, so the journal goes too."""
        if self._file is not None and self.directory is not None:
            self._file.close()
            self._file = None
            with contextlib.suppress(OSError):
                (self.directory / f"{self.token}{_JOURNAL_SUFFIX}").unlink()

    def clean_stale(self, policy: PathPolicy) -> int:
        """Remove the temp files of dead servers inside `policy`'s roots; the number removed."""
        if self.directory is None:
            return 0
        removed = 0
        try:
            journals = sorted(self.directory.glob(f"*{_JOURNAL_SUFFIX}"))
        except OSError:
            return 0
        for journal in journals:
            token = journal.name[: -len(_JOURNAL_SUFFIX)]
            if token == self.token or not re.fullmatch(r"[0-9a-f]{12}", token):
                continue
            try:
                with open(journal, "r+", encoding="utf-8") as f:
                    if not _lock(f):
                        continue  # its server is still running
                    dirs = f.read(MAX_DIRS * 4096).splitlines()[:MAX_DIRS]
                    removed += sum(_clean_dir(policy, d, token) for d in dict.fromkeys(dirs))
                journal.unlink()
            except OSError as exc:
                log.warning("cannot clean up after the temp-file journal %s: %s", journal, exc)
        if removed:
            log.info("removed %d temp file(s) left by servers that were killed while writing", removed)
        return removed


def _clean_dir(policy: PathPolicy, directory: str, token: str) -> int:
    pattern = re.compile(rf"\..*\.{token}[0-9a-f]{{8}}{re.escape(SUFFIX)}", re.DOTALL)
    try:
        real = policy.resolve(directory, must_exist=True, writing=True)
        held = policy.open_dir(real, shown=directory, writing=True)
    except (PathRefused, ToolFailure, OSError):
        return 0  # outside today's roots, protected, or gone
    removed = 0
    with held:
        try:
            for seen, entry in enumerate(held.scandir()):
                if seen >= MAX_ENTRIES:
                    break
                # The name pattern is anchored on a 12-hex token no other program writes; regex work is linear.
                if entry.name.endswith(SUFFIX) and pattern.fullmatch(entry.name) \
                        and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        held.unlink(entry.name)
                        removed += 1
        except OSError as exc:
            log.warning("cannot clean temp files in %s: %s", directory, exc)
    return removed

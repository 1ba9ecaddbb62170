"""Every process the bench starts: each in a session of its own, stopped by its id when the bench is done.

The bench never signals a process it did not start: it keeps the Popen of every child and, on the way out
(normal exit, an exception, Ctrl-C, SIGTERM), ends each child's process group — which holds only that child and
whatever the child itself started.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

POSIX_ONLY = "the bench runs on Linux and macOS: it ends its children by process group and exits on SIGHUP"


class Procs:
    def __init__(self) -> None:
        self._live: dict[int, subprocess.Popen[bytes]] = {}
        atexit.register(self.stop_all)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        stdin: int | IO[Any] | None = subprocess.PIPE,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=dict(env), cwd=cwd,
            start_new_session=True, bufsize=0,
        )
        self._live[proc.pid] = proc
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
        """Close its stdin pipe if we hold one (the polite way to end a stdio server) and give it a moment,
        then SIGTERM, then SIGKILL its process group."""
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            deadline = time.monotonic() + grace / 2
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        if sys.platform == "win32":
            raise NotImplementedError(POSIX_ONLY)
        # The group start_new_session made for this child: the child and anything it started itself.
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace / 2)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._live.pop(proc.pid, None)

    def stop_all(self) -> None:
        for proc in list(self._live.values()):
            self.stop(proc, grace=1.0)


def pss(pid: int) -> int:
    """Proportional set size of a process in bytes, from /proc/<pid>/smaps_rollup (Linux): the memory it adds
    to the machine, shared pages (libpython, Node's binary) split among the processes mapping them."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no Pss in /proc/{pid}/smaps_rollup")


def _signal_group(pgid: int, sig: int) -> None:
    if sys.platform == "win32":
        raise NotImplementedError(POSIX_ONLY)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP end the bench like Ctrl-C does: through the `finally` blocks that stop children."""
    if sys.platform == "win32":
        raise NotImplementedError(POSIX_ONLY)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)

"""Processes a test session left running: any process whose COMPASS_BRIDGE_HOME is a state home of this session
(under pytest's base temp directory, or registered by a harness that made its home elsewhere — short socket
paths). A run service started detached (by `compass-bridge run`, a door or the browser link) outlives the test
that caused it unless the test stops it; the session guard in tests/conftest.py fails the run when one is left.

Only Linux shows another process's environment (/proc/PID/environ); elsewhere the guard finds nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

HOMES: set[Path] = set()
"""State homes outside the base temp directory that this session's tests made (see `register`)."""
_EXIT_GRACE_S = 15.0
"""A process told to stop (SIGTERM by its test) may still be closing when the session ends."""


def register(home: Path) -> None:
    HOMES.add(home.resolve())


def home_of(pid: int) -> Path | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"COMPASS_BRIDGE_HOME="):
            return Path(os.fsdecode(item.split(b"=", 1)[1]))
    return None


def stop_run_service(bridge_home: Path, run_dir: Path) -> None:
    """Stop the run service of a state home (one a test caused, e.g. started detached through the native host or
    a door) by the PID its lock file holds — only if that process still belongs to this home — and wait for it
    to exit."""
    from mcp_bridge.agent.daemon import LOCK_NAME
    from mcp_bridge.agent.server import agent_dir

    try:
        pid = int((agent_dir(run_dir) / LOCK_NAME).read_text() or 0)
    except (OSError, ValueError):
        return
    if not pid or home_of(pid) != bridge_home:  # gone, or the PID now belongs to someone else
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _EXIT_GRACE_S
    while home_of(pid) == bridge_home and time.monotonic() < deadline:
        time.sleep(0.05)


def find(roots: set[Path]) -> dict[int, str]:
    """pid → command line of every live process (not this one) whose state home lies under one of `roots`."""
    found: dict[int, str] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        home = home_of(int(entry.name))
        if home is None or not any(home == r or r in home.parents for r in roots):
            continue
        with contextlib.suppress(OSError):
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":  # a zombie has ended; only its parent's wait is missing
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return found


def check(base: Path) -> None:
    """Fail (AssertionError) if processes of this session's state homes are still running once the grace period
    is over; they are killed first, by PID, so one failure does not leave them behind either."""
    if sys.platform == "win32":  # no /proc: nothing to look at
        return
    roots = {base.resolve(), *HOMES}
    deadline = time.monotonic() + _EXIT_GRACE_S
    left = find(roots)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = find(roots)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    assert not left, ("the tests left processes running (killed now); stop what a test starts, by PID — a run "
                      "service's PID is in its agent.lock:\n" + "\n".join(f"  {p}: {c}" for p, c in left.items()))

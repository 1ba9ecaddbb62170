"""What a bridge process does to itself (Linux) so the processes it starts can neither read its secrets nor
slip out of its reach. Elsewhere than Linux each does nothing.

A child (a `run_command` shell, an agent engine's tool) runs as the same user, and a process of the same user may
read another's `/proc/<pid>/environ` and, unless the kernel forbids it, its memory. So at start-up:

- `blank_secret_environ()` overwrites, in place, the value of every secret variable (`childenv.is_secret`) in the
  environment block the kernel shows as `/proc/<pid>/environ`. The block is the process's own memory and
  `os.environ` holds a copy made at start-up, so the process still has its keys; any reader, even root, then
  finds `COMPASS_BRIDGE_KEY=` and nothing after it.
- `make_undumpable()` (`PR_SET_DUMPABLE` 0): the process's `/proc/<pid>/` files become root's, so a process of
  the same user can no longer read its environment, memory, open files or maps, nor attach a debugger to it
  (root, or anyone with CAP_SYS_PTRACE, still can). It also hides them from the user's own tools (PSS for a
  benchmark, a debugger), so only `serve`, which runs an agent's commands, sets it.
- `become_subreaper()`: see mcp_bridge/tools/commands.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mcp_bridge.childenv import is_secret

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_ENV_START_FIELD = 50
"""1-based field of /proc/<pid>/stat holding the start address of the environment block (env_end follows)."""


def _prctl(option: int, value: int) -> bool:
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux ≥ 3.4); False where that is impossible."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def blank_secret_environ() -> int:
    """Overwrite with NULs the values of the secret variables in this process's original environment block;
    returns how many were blanked. Only the bytes between a secret's `=` and its terminating NUL are written,
    inside the block the kernel itself reports, so nothing else in memory is touched."""
    if sys.platform != "linux":
        return 0
    import ctypes

    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        # fields[0] is field 3 of the file (the state)
        start, end = int(fields[_ENV_START_FIELD - 3]), int(fields[_ENV_START_FIELD - 2])
    except (OSError, ValueError, IndexError):
        return 0
    if not 0 < start < end:
        return 0
    block = ctypes.string_at(start, end - start)
    blanked = 0
    offset = 0
    for entry in block.split(b"\0"):
        name, equals, value = entry.partition(b"=")
        if equals and value and is_secret(name.decode(errors="replace")):
            ctypes.memset(start + offset + len(name) + 1, 0, len(value))
            blanked += 1
        offset += len(entry) + 1
    return blanked


def make_undumpable() -> bool:
    """Call first thing in a process that runs an agent's commands while holding keys (`serve`)."""
    return _prctl(_PR_SET_DUMPABLE, 0)

"""Process checks for tests that must prove nothing was left running."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio


def alive(pid: int) -> bool:
    """True if `pid` is running; a zombie (dead, waiting for a reaper that may never come) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return sys.platform != "linux"


async def wait_gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid) and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    return not alive(pid)

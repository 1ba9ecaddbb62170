"""What the numbers were measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    if sys.platform == "darwin":
        out = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True)
        if out.returncode == 0:
            return int(out.stdout) / 1024**3
    return None


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return out.stdout.strip() or out.stderr.strip() or "unknown"


def _revision() -> str:
    """The commit measured, and whether the working tree differed from it."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=normal", "--",
                                "mcp_bridge", "native_host"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def describe(peer_versions: dict[str, str]) -> dict[str, Any]:
    memory = _memory_gib()
    load = (0.0, 0.0, 0.0)
    if sys.platform != "win32":  # Windows keeps no load average
        with contextlib.suppress(OSError):
            load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1) if memory else None,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "node": _version(["node", "--version"]),
        "mcp_sdk": metadata.version("mcp"),
        "compass_bridge": metadata.version("compass-bridge"),
        "revision": _revision(),
        **peer_versions,
        "load_average_at_start": [round(x, 2) for x in load],
    }


def render(machine: dict[str, Any]) -> str:
    mem = f"{machine['memory_gib']} GiB" if machine["memory_gib"] else "unknown memory"
    peers = ", ".join(f"{k.removeprefix('peer:')} {v}" for k, v in machine.items() if k.startswith("peer:"))
    return (
        f"machine: {machine['cpu']}, {machine['cores']} cores, {mem}; {machine['os']}\n"
        f"runtimes: {machine['python']}, node {machine['node']}, mcp SDK {machine['mcp_sdk']}, "
        f"compass-bridge {machine['compass_bridge']} ({machine['revision']})\n"
        f"peers: {peers}\n"
        f"load average at start: {' '.join(str(x) for x in machine['load_average_at_start'])}"
    )

"""The file a host manifest's `path` points at: it starts the native host with a pinned interpreter.

A browser launched from the macOS Dock has `PATH=/usr/bin:/bin:/usr/sbin:/sbin`, so `#!/usr/bin/env python3`
finds the wrong Python or none, and the user sees only "Native host has exited". The launcher therefore names
the installed environment's interpreter by absolute path, and sends the host's stderr, one line per launch,
to a small rotated log, which is the only place the reason a host died can be read afterwards.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mcp_bridge.install.places import OS

LOG_NAME = "native-host-launch.log"
LOG_MAX_BYTES = 256 * 1024
HOST_MODULE = "native_host"


def launcher_name(os_: OS) -> str:
    # Chrome on Windows runs the host through cmd.exe, which runs .bat files; elsewhere any executable works.
    return "compass-bridge-host.bat" if os_ is OS.WINDOWS else "compass-bridge-host"


# Where a machine-wide launcher logs: the launching user's own log dir, the one platformdirs gives
# `compass-bridge doctor`, written in each launcher's language.
_PER_USER_LOG = {
    OS.LINUX: '"${XDG_STATE_HOME:-$HOME/.local/state}/compass-bridge/log/' + LOG_NAME + '"',
    OS.MACOS: '"$HOME/Library/Logs/compass-bridge/' + LOG_NAME + '"',
    OS.WINDOWS: "%LOCALAPPDATA%\\compass-bridge\\Logs\\" + LOG_NAME,
}


@dataclass(frozen=True)
class LauncherSpec:
    python: str
    """Absolute path of the interpreter of the environment compass-bridge is installed in."""
    log_file: Path | None
    """The launch log; None for a machine-wide launcher, which logs to each user's own log dir."""
    env: Mapping[str, str]
    """Variables the host must see although the browser does not have them (COMPASS_BRIDGE_HOME)."""


def _bat_literal(text: str) -> str:
    # Inside `set "X=..."` and double quotes only `%` is still special to cmd.exe.
    if '"' in text:
        raise ValueError(f"a path with a double quote cannot be used in a .bat file: {text}")
    return text.replace("%", "%%")


def _render_posix(spec: LauncherSpec, os_: OS) -> str:
    python = shlex.quote(spec.python)
    log = shlex.quote(str(spec.log_file)) if spec.log_file else _PER_USER_LOG[os_]
    exports = "".join(f"{name}={shlex.quote(value)}; export {name}\n" for name, value in sorted(spec.env.items()))
    return f"""#!/bin/sh
# compass-bridge native-messaging host launcher, written by `compass-bridge install`.
# The browser starts this with its own environment, so the interpreter is pinned here: re-run
# `compass-bridge install` after moving or recreating that Python environment.
{exports}log={log}
if (umask 077 && mkdir -p "${{log%/*}}") 2>/dev/null && {{ : >>"$log"; }} 2>/dev/null; then
    size=$(wc -c <"$log")
    if [ "$((size))" -gt {LOG_MAX_BYTES} ]; then mv -f "$log" "$log.1"; fi
    printf '%s launch pid=%s %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$$" "$*" >>"$log"
    exec {python} -I -m {HOST_MODULE} "$@" 2>>"$log"
fi
# No writable log: start the host anyway rather than fail the browser.
exec {python} -I -m {HOST_MODULE} "$@"
"""


def _render_bat(spec: LauncherSpec) -> str:
    log = _bat_literal(str(spec.log_file)) if spec.log_file else _PER_USER_LOG[OS.WINDOWS]
    sets = "".join(f'set "{name}={_bat_literal(value)}"\r\n' for name, value in sorted(spec.env.items()))
    # Every command is silent: stdout is the browser's message pipe and one stray line corrupts it.
    # - The size test runs only on an existing log: `if  GTR n` is a syntax error, which ends a batch file.
    # - The redirections come first so that a trailing digit in the arguments (--parent-window=0) cannot be
    #   read by cmd.exe as a handle number.
    # - cmd.exe skips a command whose redirection fails, so an unwritable log falls back to nul.
    lines = [
        "@echo off",
        "rem compass-bridge native-messaging host launcher, written by `compass-bridge install`.",
        "rem The interpreter is pinned: re-run `compass-bridge install` after moving that Python environment.",
        "setlocal",
        f"{sets}set \"LOG={log}\"",
        'for %%I in ("%LOG%") do if not exist "%%~dpI" mkdir "%%~dpI" >nul 2>&1',
        f'if exist "%LOG%" for %%I in ("%LOG%") do if %%~zI GTR {LOG_MAX_BYTES} move /y "%LOG%" "%LOG%.1" >nul 2>&1',
        '>>"%LOG%" 2>nul echo %DATE% %TIME% launch %* || set "LOG=nul"',
        f'"{_bat_literal(spec.python)}" -I -m {HOST_MODULE} %* 2>>"%LOG%"',
    ]
    return "\r\n".join(lines) + "\r\n"


def render(spec: LauncherSpec, os_: OS) -> str:
    return _render_bat(spec) if os_ is OS.WINDOWS else _render_posix(spec, os_)


def pinned_python(text: str, os_: OS) -> str | None:
    """The interpreter a launcher written by `render` starts, read back from its text."""
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if os_ is OS.WINDOWS and stripped.startswith('"') and f" -m {HOST_MODULE} " in stripped:
            return stripped[1:].split('"', 1)[0].replace("%%", "%")
        if os_ is not OS.WINDOWS and stripped.startswith("exec "):
            words = shlex.split(stripped)
            return words[1] if len(words) > 1 else None
    return None

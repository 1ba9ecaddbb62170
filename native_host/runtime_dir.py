"""Where live hosts put their sockets, and the checks that make that directory safe to trust.

Standard library only, and not even pathlib on the host's start-up path (~3 ms the browser waits for): the host
works with `str` paths; the functions for clients and the server return `Path`.
"""

from __future__ import annotations

import os
import re
import stat
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pathlib import Path
    from typing import TypeVar

    AnyPath = TypeVar("AnyPath", str, Path)

HOME_ENV = "COMPASS_BRIDGE_HOME"

# `<pid>.sock` for a Unix-socket host, `<pid>.ws.json` for a WebSocket host, plus `.tmp` while the latter is
# being written.
_HOST_FILE = re.compile(r"(?P<pid>[1-9][0-9]{0,9})\.(?P<kind>sock|ws\.json)(?P<tmp>\.tmp)?")


class UnsafeRuntimeDir(Exception):
    """The runtime directory could be read or replaced by someone else; nothing may be put in it."""


def runtime_dir() -> Path:
    """The per-user directory for sockets: `$COMPASS_BRIDGE_HOME/run`, `$XDG_RUNTIME_DIR/compass-bridge`,
    or a per-user folder in the temp dir, in that order."""
    from pathlib import Path

    return Path(runtime_dir_name())


def runtime_dir_name() -> str:
    """`runtime_dir()` as a string, for the host."""
    home = os.environ.get(HOME_ENV)
    if home:
        return os.path.join(os.path.expanduser(home), "run")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "compass-bridge")
    import tempfile  # only here: it costs the host several milliseconds of start-up

    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return os.path.join(tempfile.gettempdir(), f"compass-bridge-{user}")


def ensure_private_dir(path: AnyPath) -> AnyPath:
    """Create `path` as 0700 if missing; refuse one that is a symlink, not ours, or open to others."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError as exc:
        raise UnsafeRuntimeDir(f"{path} exists and is not a directory") from exc
    check_private_dir(path)
    return path


def check_private_dir(path: str | Path) -> None:
    """Raise UnsafeRuntimeDir unless `path` is a real directory owned by this user with mode 0700."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeRuntimeDir(f"refusing runtime dir {path}: it is a symlink; remove it and try again")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeRuntimeDir(f"refusing runtime dir {path}: it is not a directory")
    if sys.platform == "win32":
        return  # NTFS ACLs of the user's profile protect it; POSIX modes mean nothing there.
    if st.st_uid != os.getuid():
        raise UnsafeRuntimeDir(
            f"refusing runtime dir {path}: owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            "remove it or set COMPASS_BRIDGE_HOME to a directory you own"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        raise UnsafeRuntimeDir(
            f"refusing runtime dir {path}: mode {mode:04o}, expected 0700; run `chmod 700 {path}`"
        )


def socket_path(run_dir: str, pid: int) -> str:
    return os.path.join(run_dir, f"{pid}.sock")


def ws_info_path(run_dir: str, pid: int) -> str:
    return os.path.join(run_dir, f"{pid}.ws.json")


def host_files(run_dir: Path) -> list[tuple[int, str, Path]]:
    """(pid, "unix" | "ws", path) for every finished host file in `run_dir`, in no particular order."""
    from pathlib import Path

    found = []
    for entry in os.scandir(run_dir):
        match = _HOST_FILE.fullmatch(entry.name)
        if match and not match["tmp"]:
            found.append((int(match["pid"]), "unix" if match["kind"] == "sock" else "ws", Path(entry.path)))
    return found


def owned_by_me(path: Path, *, socket: bool) -> bool:
    """Whether `path` is a socket (or a regular file) that this user owns; never follows a symlink."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    kind_ok = stat.S_ISSOCK(st.st_mode) if socket else stat.S_ISREG(st.st_mode)
    return kind_ok and (sys.platform == "win32" or st.st_uid == os.getuid())


def remove_stale(run_dir: str) -> list[str]:
    """Delete the files of hosts that are no longer running (and our own pid's, left by a namesake).

    A host killed with SIGKILL cannot clean up, and its socket would send every client to a dead end.
    """
    me = os.getpid()
    removed = []
    for entry in os.scandir(run_dir):
        match = _HOST_FILE.fullmatch(entry.name)
        if not match:
            continue
        pid = int(match["pid"])
        if pid == me or not pid_alive(pid):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:  # another host starting at the same moment took it first
                continue
            removed.append(entry.path)
    return removed


def pid_alive(pid: int) -> bool:
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just is not ours
    return True


if sys.platform == "win32":

    def _windows_pid_alive(pid: int) -> bool:
        # os.kill(pid, 0) would terminate the process on Windows, so ask the kernel instead.
        import ctypes

        kernel32 = ctypes.windll.kernel32
        process_query_limited_information = 0x1000
        still_active = 259
        handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
        if not handle:
            access_denied = 5
            return bool(kernel32.GetLastError() == access_denied)
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == still_active
        finally:
            kernel32.CloseHandle(handle)

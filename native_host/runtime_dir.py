"""Where live hosts put their sockets, and the checks that make that directory safe to trust.

Standard library only: the browser waits on the host's start-up.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

HOME_ENV = "COMPASS_BRIDGE_HOME"


class UnsafeRuntimeDir(Exception):
    """The runtime directory could be read or replaced by someone else; nothing may be put in it."""


def runtime_dir() -> Path:
    """The per-user directory for sockets: `$COMPASS_BRIDGE_HOME/run`, `$XDG_RUNTIME_DIR/compass-bridge`,
    or a per-user folder in the temp dir, in that order."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "run"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "compass-bridge"
    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"compass-bridge-{user}"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` as 0700 if missing; refuse one that is a symlink, not ours, or open to others."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise UnsafeRuntimeDir(f"{path} exists and is not a directory") from exc
    check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """Raise UnsafeRuntimeDir unless `path` is a real directory owned by this user with mode 0700."""
    st = path.lstat()
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

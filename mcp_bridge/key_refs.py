"""Key references: a client config names a key (`serve --key-ref NAME`) instead of holding it.

`compass-bridge install` keeps each client's bridge key in `<data dir>/key-refs/NAME` (mode 0600, in the
0700 data dir that the file tools refuse), and writes `serve --key-ref NAME` into the client's config. So no
client config, command line or process environment ever holds a key: another user cannot read it, and an
agent that reads a client config learns only a name. The key itself is still checked on every start like any
other (HMAC lookup, revocation, expiry), so revoking it ends the reference too.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

from mcp_bridge.paths import StatePaths

REF_DIR = "key-refs"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY = re.compile(r"cb_[0-9a-f]{40}")


class KeyRefError(Exception):
    """A key reference cannot be used; the message says which, why, and what to run."""


def ref_dir(paths: StatePaths) -> Path:
    return paths.data_dir / REF_DIR


def ref_path(paths: StatePaths, name: str) -> Path:
    if not NAME.fullmatch(name):
        raise KeyRefError(f"--key-ref {name!r}: a key reference is a name of letters, digits, '.', '_' or '-' "
                          "(at most 64), as written by `compass-bridge install`")
    return ref_dir(paths) / name


def save(paths: StatePaths, name: str, key: str) -> Path:
    """Store `key` under `name`, readable by this user only; returns the file."""
    from native_host.runtime_dir import ensure_private_dir

    path = ref_path(paths, name)
    ensure_private_dir(path.parent)
    tmp = path.with_name(f".{name}.tmp")
    tmp.unlink(missing_ok=True)
    # Created 0600 from the start (O_EXCL): never readable by others, not even for a moment.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, (key + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    return path


def delete(paths: StatePaths, name: str) -> None:
    ref_path(paths, name).unlink(missing_ok=True)


def load(paths: StatePaths, name: str) -> str:
    """The key stored under `name`; KeyRefError (naming the file, never the key) when it cannot be used."""
    path = ref_path(paths, name)
    fix = "run `compass-bridge install` again to issue a new key for this client"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise KeyRefError(f"--key-ref {name}: no such key reference ({path} is missing); {fix}") from None
    except OSError as exc:
        raise KeyRefError(f"--key-ref {name}: cannot open {path} ({exc.strerror}); {fix}") from None
    try:
        st = os.fstat(fd)
        if sys.platform != "win32" and (st.st_uid != os.getuid() or st.st_mode & 0o077):
            raise KeyRefError(f"--key-ref {name}: {path} has mode {stat.S_IMODE(st.st_mode):04o} or another owner, "
                              f"so others may have read the key; revoke it (`compass-bridge keys revoke {name}`) "
                              f"and {fix[4:]}")
        text = os.read(fd, 256).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if not _KEY.fullmatch(text):
        raise KeyRefError(f"--key-ref {name}: {path} does not hold a compass-bridge key; {fix}")
    return text

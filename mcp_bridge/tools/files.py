"""The file tools: read_file, list_directory, search_files, write_file and edit_file.

Every path goes through the `PathPolicy` before anything touches it, and is then opened beneath its root's
directory descriptor without following any symlink (`PathPolicy.open`), so a swap after the check cannot lead
out. Each tool is a blocking handler: the server calls it on one of its worker threads, so a large file or
directory tree holds up that thread only, never the server's other requests. A search is bounded in results,
entries, depth and time, and stops when its call is cancelled (`CallContext.cancelled`).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import stat
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import partial
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO, NamedTuple

from mcp_bridge.beneath import Dir
from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy, PathRefused
from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import (
    READ_ONLY,
    Args,
    CallContext,
    Cancellation,
    Hints,
    Tool,
    ToolFailure,
    ToolOutput,
    arg,
    declared_tool,
)
from mcp_bridge.tools.glob import Glob, NameTest
from mcp_bridge.tools.tempfiles import TempJournal

DEFAULT_LINES = 2000
_CHUNK = 64 * 1024
_GITIGNORE_MAX_CHARS = 1024 * 1024
"""More than any real .gitignore; bounds the memory a hostile one could take."""
_GITIGNORE_MAX_RULES = 10_000
"""Most .gitignore rules one search loads, from all its files together (real ones hold tens to hundreds): each
rule takes memory and is tried against every name below its file, and the agent may have written them."""
_MAX_EXCLUDES = 1000
"""Most `exclude` globs one search takes, for the same reasons."""
_MAX_DEPTH = 128
"""Deepest directory a search enters: it holds one descriptor per level, and no real tree is this deep."""
_CHECK_EVERY = 256
"""A search looks at the clock and its cancel flag once per this many units of work: an entry visited is one,
plus one per glob (exclude or .gitignore rule) it may be matched against, so many rules mean frequent checks."""
_NAME = attrgetter("name")
# Flags that do nothing where they do not exist (O_NONBLOCK is POSIX).
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

_WRITE = Hints(read_only=False, destructive=True, idempotent=True)
_EDIT = Hints(read_only=False, destructive=True, idempotent=False)


class ReadFileArgs(Args):
    path: str = arg(description="File to read: absolute, or relative to the first allowed root.")
    offset: int = arg(0, ge=0, description="0-based index of the first line to return.")
    limit: int = arg(DEFAULT_LINES, ge=1, description="Most lines to return.")


class ListDirectoryArgs(Args):
    path: str = arg(".", description="Directory to list: absolute, or relative to the first allowed root.")


class SearchFilesArgs(Args):
    path: str = arg(".", description="Directory to search in: absolute, or relative to the first allowed root.")
    pattern: str = arg(min_length=1, description="Glob: `*` and `?` stay within one name, `**` spans "
                         "directories. Without a `/` it matches names at any depth (`*.py`); with one it is "
                         "anchored at `path` (`src/*.py`, `**/test_*.py`). A trailing `/` matches directories only.")
    exclude: list[str] = arg(default_factory=list, description="Globs (same rules) to leave out; an excluded "
                               "directory is not searched at all.")
    max_results: int | None = arg(None, ge=1, description="Most matches to return (default and maximum: the "
                                    "configured search_max_results).")
    respect_gitignore: bool = arg(True, description="Skip what .gitignore files exclude (the default).")


class WriteFileArgs(Args):
    path: str = arg(description="File to write: absolute, or relative to the first allowed root.")
    content: str = arg(description="The whole new content, written as UTF-8.")
    create_dirs: bool = arg(False, description="Create missing parent directories.")


class EditFileArgs(Args):
    path: str = arg(description="File to edit: absolute, or relative to the first allowed root.")
    old_text: str = arg(min_length=1, description="Exact text to replace; it must occur exactly once.")
    new_text: str = arg(description="Replacement text.")
    dry_run: bool = arg(False, description="Only show the diff; leave the file unchanged.")


# -- failures -----------------------------------------------------------------------------------


def _os_failure(action: str, exc: OSError) -> ToolFailure:
    """A ToolFailure for an OS error, with the advice that fits it."""
    advice = {
        errno.EACCES: "your user has no permission for it; change its permissions or choose another path",
        errno.EPERM: "the operating system does not allow it; change its permissions or choose another path",
        errno.ENOSPC: "the disk is full; free some space and try again",
        errno.EROFS: "the file system is read-only; choose a path on a writable one",
        errno.EISDIR: "it is a directory; give a file path",
        errno.ELOOP: "a symlink appeared in its path while the tool was working (symlinks found after the check "
                     "are never followed); check the path and try again",
        errno.EXDEV: "its path changed while the tool was working and now leads out of the root; check the path",
    }.get(exc.errno or 0, "check the path and try again")
    return ToolFailure(f"{action} failed: {exc.strerror or exc}; {advice}")


def _not_regular(shown: str, mode: int, purpose: str) -> ToolFailure:
    if stat.S_ISDIR(mode):
        return ToolFailure(f"{shown!r} is a directory; {purpose} works on files — use list_directory or "
                           "search_files to see what is in it")
    if stat.S_ISFIFO(mode):
        what = "a named pipe (FIFO): opening it could wait forever for a writer"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device: reading it could block, never end, or have side effects"
    elif stat.S_ISSOCK(mode):
        what = "a socket, which holds no content"
    else:
        what = "not a regular file"
    return ToolFailure(f"{shown!r} is {what}, so {purpose} refuses it; choose a regular file")


def _not_text(shown: str, why: str) -> ToolFailure:
    return ToolFailure(f"{shown!r} is not UTF-8 text ({why}); the file tools handle text only — inspect "
                       "binary files with run_command (e.g. `file`, `xxd`) if your key has admin")


def _too_large(what: str, limits: Limits, remedy: str) -> ToolFailure:
    return ToolFailure(f"{what} more than read_max_bytes ({limits.read_max_bytes:,} bytes); {remedy}, or ask "
                       "the user to raise `read_max_bytes` under [limits] in config.toml")


# -- reading ------------------------------------------------------------------------------------


def _open_regular(policy: PathPolicy, real: Path, shown: str, purpose: str) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading without ever opening a FIFO or device, or following a symlink."""
    try:
        before = real.stat()
    except OSError as exc:
        raise _os_failure(f"looking at {shown!r}", exc) from None
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(shown, before.st_mode, purpose)
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the check above, open must not hang.
        fd = policy.open(real, os.O_RDONLY | _O_NONBLOCK, shown=shown, writing=False)
    except OSError as exc:
        raise _os_failure(f"opening {shown!r}", exc) from None
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise ToolFailure(f"{shown!r} was replaced while it was being opened; try again")
    return os.fdopen(fd, "rb"), opened


# _Window is a NamedTuple and _Search a plain class, not dataclasses: `serve` imports this module, and dataclasses
# would bring in inspect (~1.1 MiB private per server: issue 10).
class _Window(NamedTuple):
    data: bytes
    """The requested lines exactly as stored, line endings included."""
    total: int | None
    """Lines in the whole file; None when the file is too large to scan to its end."""
    more: bool
    """Lines follow the window."""

    @property
    def lines(self) -> int:
        return self.data.count(b"\n") + (0 if not self.data or self.data.endswith(b"\n") else 1)


def _read_window(f: BinaryIO, shown: str, *, offset: int, limit: int, limits: Limits, countable: bool) -> _Window:
    """Lines [offset, offset+limit) of `f`, in bounded memory however long the file or its lines are.

    A file of at most read_max_bytes (`countable`) is scanned to its end so the total is exact; a larger
    one is read only up to the end of the window.
    """
    end = offset + limit
    line = 0
    window = bytearray()
    mid_line = False  # the last piece read ended before its line did
    while line < end:
        piece = f.readline(_CHUNK)
        if not piece:
            return _Window(bytes(window), line + mid_line, more=False)
        if b"\0" in piece:
            raise _not_text(shown, "it contains NUL bytes, so it looks binary")
        if line >= offset:
            window += piece
            if len(window) > limits.read_max_bytes:
                raise _too_large(f"lines {offset + 1}-{end} of {shown!r} hold", limits,
                                 "ask for fewer lines with `limit` (and page on with `offset`)")
        mid_line = not piece.endswith(b"\n")
        if not mid_line:
            line += 1
    if not countable:
        return _Window(bytes(window), None, more=bool(f.read(1)))
    rest = f.read(limits.read_max_bytes + 1)
    if b"\0" in rest:
        raise _not_text(shown, "it contains NUL bytes, so it looks binary")
    total = end + rest.count(b"\n") + (1 if rest and not rest.endswith(b"\n") else 0)
    return _Window(bytes(window), total, more=total > end)


def _line_start(data: bytes, n: int) -> int:
    """Where line `n` (0-based) of `data` starts; len(data) when it has no such line."""
    pos = 0
    for _ in range(n):
        pos = data.find(b"\n", pos) + 1
        if not pos:
            return len(data)
    return pos


def _read_whole_window(f: BinaryIO, shown: str, *, size: int, offset: int, limit: int, limits: Limits) -> _Window:
    """`_read_window` for a file of at most read_max_bytes (`size`, from its fstat), in one read instead of a
    readline per line.

    Same result and same failures: with the whole file in hand, no window can exceed read_max_bytes, and a
    NUL anywhere fails as the line-by-line scan (which reads to the end of a countable file) would. Memory is
    bounded alike (the line-by-line scan holds the window and the rest of the file). A file that grew past
    read_max_bytes since its fstat goes the line-by-line way.
    """
    # Ask for the size it had (+1 to see growth), not for read_max_bytes: a read asks for a buffer of the
    # size asked for, and a 2 MiB one per small read is an mmap and munmap per call.
    data = f.read(size + 1)
    if len(data) > size:
        data += f.read(limits.read_max_bytes + 1 - len(data))
    if len(data) > limits.read_max_bytes:
        f.seek(0)
        return _read_window(f, shown, offset=offset, limit=limit, limits=limits, countable=True)
    if b"\0" in data:
        raise _not_text(shown, "it contains NUL bytes, so it looks binary")
    newlines = data.count(b"\n")
    total = newlines + (1 if data and not data.endswith(b"\n") else 0)
    end = offset + limit
    stop = len(data) if end > newlines else _line_start(data, end)
    return _Window(data[_line_start(data, offset):stop], total, more=total > end)


def _decode(data: bytes, shown: str, first_line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = first_line + data[: exc.start].count(b"\n") + 1
        raise _not_text(shown, f"invalid UTF-8 at line {at}") from None


def _read_file(policy: PathPolicy, limits: Limits, args: ReadFileArgs, call: CallContext) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=True)
    f, st = _open_regular(policy, real, args.path, "read_file")
    with f:
        if st.st_size <= limits.read_max_bytes:
            window = _read_whole_window(f, args.path, size=st.st_size, offset=args.offset, limit=args.limit,
                                        limits=limits)
        else:
            window = _read_window(f, args.path, offset=args.offset, limit=args.limit, limits=limits, countable=False)
    text = _decode(window.data, args.path, args.offset)
    if window.total is not None and args.offset >= window.total and args.offset > 0:
        raise ToolFailure(f"offset {args.offset} is past the end of {args.path!r}, which has {window.total} "
                          f"line(s); use an offset below {window.total}")
    if window.total == 0:
        return ToolOutput.text(f"[{args.path} is empty]")
    first, last = args.offset + 1, args.offset + window.lines
    shown = f"line {first}" if first == last else f"lines {first}-{last}"
    of = f"{window.total}" if window.total is not None else f"a {st.st_size:,}-byte file"
    if window.more:
        note = f"[{shown} of {of}; call again with offset={last} for more]"
    elif args.offset > 0:
        note = f"[{shown} of {of}: the end of the file]"
    else:
        return ToolOutput.text(text)
    return ToolOutput.text(text + ("" if text.endswith("\n") else "\n") + note)


def _read_whole_text(policy: PathPolicy, real: Path, shown: str, limits: Limits,
                     purpose: str) -> tuple[str, os.stat_result]:
    f, st = _open_regular(policy, real, shown, purpose)
    with f:
        data = f.read(limits.read_max_bytes + 1)
    if len(data) > limits.read_max_bytes:
        raise _too_large(f"{shown!r} holds", limits, f"{purpose} needs the whole file in one piece")
    if b"\0" in data:
        raise _not_text(shown, "it contains NUL bytes, so it looks binary")
    return _decode(data, shown, 0), st


# -- listing ------------------------------------------------------------------------------------


def _printable(name: str) -> str:
    """`name` as JSON can carry it: bytes of a file name that are not UTF-8 (which Python keeps as lone
    surrogates, and no answer could be encoded with) are shown as `\\xff`. Such a name, which an agent can
    create to make a listing fail, is then listed like any other, though no tool can open it by that text."""
    if name.isascii():
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def _entry_line(held: Dir, entry: os.DirEntry[str]) -> dict[str, object] | None:
    """One directory entry, described without following a symlink; None if it vanished meanwhile."""
    name = _printable(entry.name)
    try:
        if entry.is_symlink():
            return {"name": name, "type": "symlink", "size": None, "target": _printable(held.readlink(entry.name))}
        if entry.is_dir(follow_symlinks=False):
            return {"name": name, "type": "dir", "size": None}
        kind = "file" if entry.is_file(follow_symlinks=False) else "other"
        return {"name": name, "type": kind, "size": entry.stat(follow_symlinks=False).st_size}
    except FileNotFoundError:
        return None


def _list_directory(policy: PathPolicy, limits: Limits, args: ListDirectoryArgs, call: CallContext) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=True)
    if not real.is_dir():
        raise ToolFailure(f"{args.path!r} is not a directory; use read_file to read a file")
    budget = limits.search_max_entries
    entries: list[os.DirEntry[str]] = []
    hidden = 0
    more = False
    try:
        with policy.open_dir(real, shown=args.path, writing=False) as held, held.scandir() as it:
            hides = policy.hider(os.fspath(real))
            for entry in it:
                seen = len(entries) + hidden
                if seen == budget:
                    more = True  # memory and time stay bounded however large the directory
                    break
                if seen % _CHECK_EVERY == 0 and call.cancelled.is_set():
                    raise ToolFailure("the call was cancelled")
                if hides is not None and hides(entry.name):
                    hidden += 1
                else:
                    entries.append(entry)
            entries.sort(key=_NAME)
            cap = limits.search_max_results
            described = [d for d in (_entry_line(held, e) for e in entries[:cap]) if d is not None]
    except OSError as exc:
        raise _os_failure(f"listing {args.path!r}", exc) from None
    lines = [f"{real}: {len(entries)}{'+' if more else ''} entr{'y' if len(entries) == 1 else 'ies'}"]
    for d in described:
        size = "-" if d["size"] is None else f"{d['size']:,}"
        name = f"{d['name']}/" if d["type"] == "dir" else str(d["name"])
        if d["type"] == "symlink":
            name += f" -> {d['target']}"
        lines.append(f"{d['type']:<7} {size:>14}  {name}")
    truncated = len(entries) > cap or more
    if more:
        lines.append(f"[the directory holds more than search_max_entries ({budget:,}) entries; only that many were "
                     "read, so this is not all of it — ask the user to raise `search_max_entries` under [limits] in "
                     "config.toml to see the rest]")
    elif len(entries) > cap:
        lines.append(f"[first {cap} of {len(entries)} entries (search_max_results); use search_files with a "
                     "pattern to find the others]")
    if hidden:
        lines.append(f"[{hidden} protected entr{'y' if hidden == 1 else 'ies'} left out: no tool may read them "
                     "(see docs/SECURITY.md)]")
    return ToolOutput.text("\n".join(lines), {"path": str(real), "entries": described, "truncated": truncated})


# -- searching ----------------------------------------------------------------------------------


class _Ignore:
    """The rules of one .gitignore file, applied to paths relative to the searched directory.

    Matched with `Glob` (linear time) rather than a regex library: the agent may have written the file.
    """

    def __init__(self, rules: Sequence[tuple[bool, Glob]], lead: str, cut: int) -> None:
        self.rules = rules
        """(negated, glob) in file order; the last that matches decides."""
        # Most lines name one file or directory (`node_modules/`, `.env`): those are found by the path's last
        # name instead of being tried one by one.
        self._by_name: dict[str, list[int]] = {}
        for i, (_, glob) in enumerate(rules):
            if glob.exact_name is not None:
                self._by_name.setdefault(glob.exact_name, []).append(i)
        self._others = [i for i, (_, glob) in enumerate(rules) if glob.exact_name is None][::-1]
        self.lead = lead
        """The searched directory relative to the .gitignore's directory ("" or "a/b/"), for files above it."""
        self.cut = cut
        """How many leading characters of a searched path lie above the .gitignore's directory."""

    @classmethod
    def parse(cls, text: str, lead: str, cut: int, room: int = _GITIGNORE_MAX_RULES) -> _Ignore:
        """The rules of `text`; a `_Stop` if it holds more than `room` (what the search has left)."""
        rules: list[tuple[bool, Glob]] = []
        for raw in text.splitlines():
            line = raw
            while line.endswith(" ") and not line.endswith("\\ "):
                line = line[:-1]  # trailing spaces are ignored unless escaped
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated or line.startswith(("\\!", "\\#")):
                line = line[1:]
            if len(rules) == room:
                raise _Stop(f"the .gitignore files hold more than {_GITIGNORE_MAX_RULES:,} rules, more than a search "
                            "applies — search with respect_gitignore=false, or from a directory below the big "
                            ".gitignore")
            try:
                rules.append((negated, Glob.compile(line)))
            except ToolFailure:
                continue  # a line that names nothing (say "/") hides nothing, as in git
        return cls(rules, lead, cut)

    def decides(self, rel: str, is_dir: bool) -> bool | None:
        """True (ignored), False (re-included) or None (no opinion) for a path relative to the searched dir."""
        return self._decide(self.lead + rel[self.cut :], is_dir)

    def _decide(self, path: str, is_dir: bool) -> bool | None:
        last = -1
        for i in reversed(self._by_name.get(path[path.rfind("/") + 1 :], ())):
            if self.rules[i][1].matches(path, is_dir):
                last = i
                break
        for i in self._others:
            if i < last:
                break
            if self.rules[i][1].matches(path, is_dir):
                last = i
                break
        return None if last < 0 else not self.rules[last][0]

    def excludes_lead(self) -> bool:
        """Whether this file (above the searched directory) ignores that directory or one between them."""
        parts = self.lead.rstrip("/").split("/")
        return any(self._decide("/".join(parts[:depth]), True) for depth in range(1, len(parts) + 1))


def _load_ignore(policy: PathPolicy, held: Dir | None, real: Path, lead: str, cut: int,
                 room: int = _GITIGNORE_MAX_RULES) -> _Ignore | None:
    """The .gitignore at `real` (opened in `held` when given); None if it is missing, not a plain file or unreadable.

    A .gitignore that is a symlink (possibly leading out of the roots) is not followed, and one that is a FIFO
    cannot block the search; at most _GITIGNORE_MAX_CHARS are read, and at most `room` rules kept (else `_Stop`).
    """
    try:
        if held is not None:
            fd = held.open(real.name, os.O_RDONLY | _O_NONBLOCK)
        else:
            fd = policy.open(real, os.O_RDONLY | _O_NONBLOCK, shown=str(real), writing=False)
        with open(fd, encoding="utf-8", errors="replace") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return _Ignore.parse(f.read(_GITIGNORE_MAX_CHARS), lead, cut, room)
    except (OSError, PathRefused):
        # An unreadable .gitignore hides nothing rather than failing the whole search.
        return None


def _ignored(rules: Sequence[_Ignore], rel: str, is_dir: bool) -> bool:
    # The deepest .gitignore with an opinion wins, as in git.
    for rule in reversed(rules):
        decision = rule.decides(rel, is_dir)
        if decision is not None:
            return decision
    return False


def _outer_ignores(policy: PathPolicy, base: Path, room: int = _GITIGNORE_MAX_RULES) -> list[_Ignore]:
    """The .gitignore files above `base` that still apply to it, up to the repository top or the root.

    None of them if they exclude `base` itself: a directory searched by explicit request is searched, as
    `git add -f` would add it, with only the .gitignore files inside it applying. More than `room` rules in
    all: `_Stop`.
    """
    found: list[_Ignore] = []
    here = base
    while here not in policy.roots and not os.path.lexists(here / ".git"):
        parent = here.parent
        if parent == here:
            break
        lead = base.relative_to(parent).as_posix() + "/"
        rule = _load_ignore(policy, None, parent / ".gitignore", lead, 0, room)
        if rule is not None:
            found.append(rule)
            room -= len(rule.rules)
        here = parent
    found.reverse()
    for rule in reversed(found):
        if rule.excludes_lead():
            return []
    return found


class _Stop(Exception):
    """A search budget ran out or the call was cancelled; `why` is what the note says."""

    def __init__(self, why: str) -> None:
        self.why = why


class _Full(Exception):
    """max_results matches were found and there is one more: the walk ends, with more to find."""


class _Search:
    """One search_files walk: depth-first, each directory's entries in name order, so the matches come out in
    name order and a walk cut short by a budget returns a prefix of the whole answer."""

    __slots__ = (
        "by_name",
        "cancelled",
        "deadline",
        "excludes",
        "gitignore",
        "hiding",
        "listed",
        "matches",
        "max_entries",
        "max_results",
        "pattern",
        "policy",
        "protected",
        "rules_room",
        "stopped",
        "too_deep",
        "unreadable",
        "work",
    )

    def __init__(self, policy: PathPolicy, pattern: Glob, excludes: list[Glob], gitignore: bool, max_results: int,
                 max_entries: int, deadline: float, cancelled: Cancellation) -> None:
        self.policy = policy
        self.pattern = pattern
        self.excludes = excludes
        self.gitignore = gitignore
        self.max_results = max_results
        self.max_entries = max_entries
        self.deadline = deadline
        self.cancelled = cancelled
        self.matches: list[str] = []
        self.unreadable = 0
        self.protected = 0
        self.too_deep = 0
        self.work = 0
        """Units of work done (see _CHECK_EVERY)."""
        self.rules_room = _GITIGNORE_MAX_RULES
        """How many more .gitignore rules the search may load."""
        self.listed = 0
        """Entries listed (read from directories), visited or not yet: what search_max_entries bounds."""
        self.stopped: str | None = None
        """Why the walk stopped before its end (a budget or a cancel), if it did."""
        self.by_name: NameTest | None = pattern.plain_name
        """The name test of a `**/<name>` pattern without `?` or classes (`*.py`), for the fast path (see `_dir`)."""
        self.hiding = True
        """Whether any directory of the walk may hold a protected entry: most searched trees hold none, and then no
        directory need be asked (`PathPolicy.hider`)."""

    def run(self, base: Dir, real: Path) -> bool:
        """Walk `base` (the directory `real`); True if it stopped at max_results with more to find."""
        self.hiding = self.policy.protection.holds_any_below(base.path)
        try:
            outer = _outer_ignores(self.policy, real, self.rules_room) if self.gitignore else []
            self.rules_room -= sum(len(rule.rules) for rule in outer)
            self._dir(base, "", tuple(outer), 1)
        except _Full:
            return True
        except _Stop as stop:
            self.stopped = stop.why
        return False

    def _dir(self, held: Dir, prefix: str, rules: tuple[_Ignore, ...], depth: int) -> None:
        """Search the directory `held` (at `depth`, the searched one being 1), whose entries' paths relative to
        the searched directory start with `prefix`, under the .gitignore `rules` of the directories above."""
        room = self.max_entries - self.listed
        try:
            with held.scandir() as it:
                entries = list(islice(it, room + 1))
        except OSError:
            self.unreadable += 1
            return
        if len(entries) > room:
            # Every entry listed counts, visited or not: listing is the work (and the memory) being bounded.
            raise _Stop(f"it reached search_max_entries ({self.max_entries:,} entries listed)")
        self.listed += len(entries)
        entries.sort(key=_NAME)
        # Most directories hold only names that sort after ".gitignore": one comparison tells.
        if self.gitignore and entries and entries[0].name <= ".gitignore":
            at = bisect_left(entries, ".gitignore", key=_NAME)
            if at < len(entries) and entries[at].name == ".gitignore" and entries[at].is_file(follow_symlinks=False):
                rule = _load_ignore(self.policy, held, Path(held.path, ".gitignore"), "", len(prefix),
                                    self.rules_room)
                if rule is not None:
                    rules = (*rules, rule)
                    self.rules_room -= len(rule.rules)
        hides = self.policy.hider(held.path) if self.hiding else None
        if self.by_name is None or rules or hides is not None or self.excludes:
            self._each(held, entries, prefix, rules, hides, depth)
            return
        # The fast path, where nearly every search spends its time: a `**/<name>` pattern (`*.py`) in a directory
        # where no .gitignore rule, exclude or protected entry applies. An entry's name alone decides, by a few
        # string comparisons (no relative path is built for an entry that does not match), and each entry is one
        # unit of work, so the clock and the cancel flag are looked at once per directory, before its entries.
        # `test_the_name_only_fast_path_agrees_with_the_general_walk` holds it to `_each`'s answers.
        before = self.work
        self.work += len(entries)
        if self.work // _CHECK_EVERY != before // _CHECK_EVERY:
            self._check()
        head, tail, least, most = self.by_name
        files_too = not self.pattern.dirs_only
        matches = self.matches
        for entry in entries:
            name = entry.name
            # d_type answers this without a stat; a symlinked directory is not a directory here, so it is never
            # entered and the walk cannot leave the roots through it.
            if entry.is_dir(follow_symlinks=False):
                if name == ".git":
                    continue
                rel = prefix + name
                if name.endswith(tail) and least <= len(name) <= most and name.startswith(head):
                    if len(matches) == self.max_results:
                        raise _Full
                    matches.append(rel + "/" if rel.isascii() else _printable(rel + "/"))
                self._enter(held, name, rel, rules, depth)
            elif files_too and name.endswith(tail) and least <= len(name) <= most and name.startswith(head):
                if len(matches) == self.max_results:
                    raise _Full
                rel = prefix + name
                matches.append(rel if rel.isascii() else _printable(rel))

    def _each(self, held: Dir, entries: list[os.DirEntry[str]], prefix: str, rules: tuple[_Ignore, ...],
              hides: Callable[[str], bool] | None, depth: int) -> None:
        """`_dir`'s entries, each tested against every rule that may apply to it."""
        cost = 1 + len(self.excludes) + sum(len(rule.rules) for rule in rules)
        for entry in entries:
            before = self.work
            self.work += cost
            if self.work // _CHECK_EVERY != before // _CHECK_EVERY:
                self._check()
            name = entry.name
            is_dir = entry.is_dir(follow_symlinks=False)  # no stat, no symlink followed (see `_dir`)
            if is_dir and name == ".git":
                continue
            if hides is not None and hides(name):
                self.protected += 1
                continue
            rel = prefix + name
            if self.excludes and any(g.matches(rel, is_dir) for g in self.excludes):
                continue
            hit = self.pattern.matches(rel, is_dir)
            if (hit or is_dir) and rules and _ignored(rules, rel, is_dir):
                continue
            if hit:
                if len(self.matches) == self.max_results:
                    raise _Full
                self.matches.append(_printable(rel + "/" if is_dir else rel))
            if is_dir and self.pattern.may_contain(rel):
                self._enter(held, name, rel, rules, depth)

    def _enter(self, held: Dir, name: str, rel: str, rules: tuple[_Ignore, ...], depth: int) -> None:
        """Search the subdirectory `name` of `held` (at `depth`), whose path relative to the searched one is `rel`."""
        if depth >= _MAX_DEPTH:
            self.too_deep += 1
            return
        try:
            # O_NOFOLLOW: a directory swapped for a symlink since it was listed is not entered.
            child = held.child(name)
        except OSError:
            self.unreadable += 1
            return
        try:
            self._dir(child, rel + "/", rules, depth + 1)
        finally:
            child.close()  # however the walk below ends: a search holds one descriptor per level at most

    def _check(self) -> None:
        # The entry budget needs no check here: _dir refuses a directory that would take the walk past it.
        if self.cancelled.is_set():
            raise _Stop("the call was cancelled")
        if time.monotonic() > self.deadline:
            raise _Stop("it ran for search_timeout_s")


def _search_files(policy: PathPolicy, limits: Limits, args: SearchFilesArgs, call: CallContext) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=True)
    if not real.is_dir():
        raise ToolFailure(f"{args.path!r} is not a directory; search_files searches a directory tree — give "
                          "its parent directory, or use read_file for the file itself")
    cap = min(args.max_results or limits.search_max_results, limits.search_max_results)
    if len(args.exclude) > _MAX_EXCLUDES:
        raise ToolFailure(f"exclude holds {len(args.exclude):,} globs, more than a search takes ({_MAX_EXCLUDES:,}); "
                          "combine them (`*.log` rather than each name), or search a narrower path")
    search = _Search(policy, Glob.compile(args.pattern), [Glob.compile(e) for e in args.exclude],
                     args.respect_gitignore, cap, limits.search_max_entries,
                     time.monotonic() + limits.search_timeout_s, call.cancelled)
    try:
        with policy.open_dir(real, shown=args.path, writing=False) as base:
            truncated = search.run(base, real)
    except OSError as exc:
        raise _os_failure(f"searching {args.path!r}", exc) from None
    notes: list[str] = []
    if search.stopped:
        notes.append(f"stopped early: {search.stopped}; these {len(search.matches)} matches come from the part "
                     "walked, in name order — narrow the path or the pattern, add excludes, or ask the user to "
                     "raise the limit under [limits] in config.toml")
    elif truncated:
        notes.append(f"first {cap} matches in name order; more exist — narrow the pattern or the path"
                     + ("" if cap == limits.search_max_results else f", or raise max_results (up to "
                        f"{limits.search_max_results})"))
    elif search.matches:
        notes.append(f"{len(search.matches)} match{'es' if len(search.matches) != 1 else ''} under {real}")
    else:
        hidden = ", files excluded by .gitignore (pass respect_gitignore=false to include them)" \
            if args.respect_gitignore else ""
        notes.append(f"nothing under {real} matches {args.pattern!r}; searched every name except .git"
                     f"{hidden} and your excludes")
    if search.unreadable:
        notes.append(f"{search.unreadable} director{'y' if search.unreadable == 1 else 'ies'} could not be "
                     "read (no permission, or changed during the search) and were skipped")
    if search.too_deep:
        notes.append(f"{search.too_deep} director{'y' if search.too_deep == 1 else 'ies'} deeper than {_MAX_DEPTH} "
                     "levels were not entered; search from a deeper path")
    if search.protected:
        notes.append(f"{search.protected} protected entr{'y' if search.protected == 1 else 'ies'} left out: no "
                     "tool may read them (see docs/SECURITY.md)")
    # The notes travel inside the structured result, so its JSON text (the server sends it as the first block)
    # says everything: no second block repeating every path, which doubled a large answer and what the
    # agent has to read.
    return ToolOutput([], {"path": str(real), "matches": search.matches,
                           "truncated": truncated or search.stopped is not None, "notes": notes})


# -- writing ------------------------------------------------------------------------------------


def write_atomically(held: Dir, name: str, data: bytes, mode: int | None, journal: TempJournal) -> None:
    """Replace `name` in the directory `held` with `data` so readers see the old or the new content, never a mix.

    The temp file sits in the same directory (so the rename cannot cross file systems), carries the journal's
    token (so a crash's leftovers are found and removed by the next server), is created exclusively and without
    following symlinks, is fsynced, then renamed over `name`. `mode` is the permission bits of the file being
    replaced; None for a new file (which gets the usual umask).
    """
    tmp = journal.temp_name(name)
    journal.record(held.path)
    # An existing file's content is not briefly exposed with wider permissions than it had: 0600 first.
    fd = held.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None and sys.platform != "win32":
                os.fchmod(f.fileno(), mode)
            elif mode is not None:
                Path(held.path, tmp).chmod(mode)  # no fchmod on Windows, where only the read-only bit counts
            os.fsync(f.fileno())
        # rename replaces a symlink at `name` rather than writing through it.
        held.rename(tmp, name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            held.unlink(tmp)
        raise
    held.fsync()


def _parent_dir(policy: PathPolicy, real: Path, shown: str, create: bool) -> Dir:
    """The directory that will hold `real`, held open; with `create`, its missing ancestors are made first.

    Each missing directory is made in its parent's descriptor and then opened without following a symlink, so
    one swapped in meanwhile fails the call instead of leading somewhere else.
    """
    missing: list[str] = []
    here = real.parent
    while not os.path.lexists(here):
        missing.append(here.name)
        here = here.parent
    if missing and not create:
        raise ToolFailure(f"cannot write {shown!r}: the directory {real.parent} does not exist; pass "
                          "create_dirs=true to create it, or correct the path")
    if not here.is_dir() or here.is_symlink():
        raise ToolFailure(f"cannot write {shown!r}: {here} is a file, not a directory; correct the path")
    held = policy.open_dir(here, shown=shown, writing=True)
    try:
        for name in reversed(missing):
            with contextlib.suppress(FileExistsError):
                held.mkdir(name)  # if made meanwhile, opening it below decides whether it is acceptable
            child = held.child(name)
            held.close()
            held = child
    except OSError as exc:
        held.close()
        raise _os_failure(f"creating the directories for {shown!r}", exc) from None
    return held


def _existing_mode(held: Dir, name: str, shown: str, purpose: str) -> int | None:
    try:
        st = held.lstat(name)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise ToolFailure(f"{shown!r} became a symlink while {purpose} was working; nothing was written — try again")
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(shown, st.st_mode, purpose)
    return stat.S_IMODE(st.st_mode)


def _write_file(policy: PathPolicy, journal: TempJournal, args: WriteFileArgs, call: CallContext) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=False)
    data = _utf8(args.content, "content")
    try:
        with _parent_dir(policy, real, args.path, args.create_dirs) as held:
            mode = _existing_mode(held, real.name, args.path, "write_file")
            write_atomically(held, real.name, data, mode, journal)
    except OSError as exc:
        raise _os_failure(f"writing {args.path!r}", exc) from None
    verb = "replaced" if mode is not None else "created"
    return ToolOutput.text(f"{verb} {real}: wrote {len(data):,} bytes",
                           {"path": str(real), "bytes_written": len(data), "created": mode is None})


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolFailure(f"{what} holds a lone surrogate (U+{ord(exc.object[exc.start]):04X}), which UTF-8 cannot "
                          "encode; nothing was written — send the text as valid Unicode") from None


def _lines(text: str) -> list[str]:
    # Split on \n only: str.splitlines also breaks at form feeds and other separators, which would
    # make the diff disagree with the file's real lines.
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def unified_diff(before: str, after: str, name: str) -> str:
    out = []
    for line in difflib.unified_diff(_lines(before), _lines(after), f"a/{name}", f"b/{name}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _occurrences(text: str, needle: str) -> int:
    # Overlapping matches count: "aa" occurs twice in "aaa", and either could be the one meant.
    count, at = 0, text.find(needle)
    while at >= 0:
        count += 1
        at = text.find(needle, at + 1)
    return count


def _edit_file(policy: PathPolicy, limits: Limits, journal: TempJournal, args: EditFileArgs,
               call: CallContext) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=True, writing=True)
    before, st = _read_whole_text(policy, real, args.path, limits, "edit_file")
    found = _occurrences(before, args.old_text)
    if found == 0:
        hint = ""
        if "\r\n" in before and "\n" in args.old_text and "\r\n" not in args.old_text:
            hint = " The file uses CRLF (\\r\\n) line endings; old_text must use them too."
        raise ToolFailure(f"old_text was not found in {args.path!r}; nothing was changed. Read the file again "
                          f"(read_file) and copy the text exactly, including whitespace and indentation.{hint}")
    if found > 1:
        raise ToolFailure(f"old_text appears {found} times in {args.path!r}; nothing was changed. Include more "
                          "of the surrounding lines in old_text so that it matches exactly once")
    if args.old_text == args.new_text:
        raise ToolFailure(f"old_text and new_text are identical, so editing {args.path!r} would change nothing; "
                          "give the new text")
    after = before.replace(args.old_text, args.new_text, 1)
    data = _utf8(after, "new_text")
    diff = unified_diff(before, after, args.path)
    if args.dry_run:
        return ToolOutput.text(f"dry run: {real} was not changed; the edit would be:\n{diff}")
    try:
        with policy.open_dir(real.parent, shown=args.path, writing=True) as held:
            write_atomically(held, real.name, data, stat.S_IMODE(st.st_mode), journal)
    except OSError as exc:
        raise _os_failure(f"writing {args.path!r}", exc) from None
    return ToolOutput.text(f"edited {real}:\n{diff}")


# -- the tools ----------------------------------------------------------------------------------


_LISTING_SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "entries": {"type": "array", "items": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "type": {"enum": ["file", "dir", "symlink", "other"]},
                "size": {"type": ["integer", "null"], "description": "bytes, for files"},
                "target": {"type": "string", "description": "for symlinks"},
            },
            "required": ["name", "type", "size"],
        }},
        "truncated": {"type": "boolean"},
    },
    "required": ["path", "entries", "truncated"],
}
_SEARCH_SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "matches": {"type": "array", "items": {"type": "string"}, "description": "relative to path"},
        "truncated": {"type": "boolean"},
        "notes": {"type": "array", "items": {"type": "string"},
                  "description": "what to know about the answer: the count, why it stopped or is cut, what was "
                  "skipped, and what to do about it"},
    },
    "required": ["path", "matches", "truncated", "notes"],
}
_WRITE_SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "bytes_written": {"type": "integer"}, "created": {"type": "boolean"}},
    "required": ["path", "bytes_written", "created"],
}


def file_tools(policy: PathPolicy, limits: Limits, journal: TempJournal | None = None) -> list[Tool]:
    """The five file tools, confined by `policy` and bounded by `limits`.

    `journal` (in the data directory) records where temp files of atomic writes are made; give it to have the
    leftovers of killed servers removed (in the background, now). Without it nothing is recorded, so nothing
    can be cleaned after a crash (tests).
    """
    if journal is None:
        journal = TempJournal(None)
    else:
        threading.Thread(target=journal.clean_stale, args=(policy,), name="temp-cleanup", daemon=True).start()
    paths = ("Paths are absolute or relative to the first allowed root; anything resolving outside the roots "
             "(through '..' or a symlink) is refused.")
    return [
        declared_tool(
            name="read_file", title="Read a text file", scope=Scope.READ, hints=READ_ONLY, args=ReadFileArgs,
            run=partial(_read_file, policy, limits), quick=True,
            description=f"Read a UTF-8 text file. Returns lines offset..offset+limit (default the first "
            f"{DEFAULT_LINES}) exactly as stored, without line numbers; when lines are left out, a final "
            "bracketed note says which were shown and the offset to continue from. One call returns at most "
            f"{limits.read_max_bytes:,} bytes. Refuses directories, binary files (NUL bytes or invalid UTF-8), "
            f"devices, FIFOs and sockets. {paths}",
        ),
        declared_tool(
            name="list_directory", title="List a directory", scope=Scope.READ, hints=READ_ONLY,
            args=ListDirectoryArgs, run=partial(_list_directory, policy, limits),
            output_schema=_LISTING_SCHEMA, quick=True,
            description="List a directory's entries sorted by name, each with its type (file, dir, symlink "
            "with its target, other) and size in bytes for files. Symlinks are shown, not followed. At most "
            f"{limits.search_max_results} entries. {paths}",
        ),
        declared_tool(
            name="search_files", title="Find files by name", scope=Scope.READ, hints=READ_ONLY,
            args=SearchFilesArgs, run=partial(_search_files, policy, limits),
            output_schema=_SEARCH_SCHEMA,
            description="Find files and directories under `path` whose path matches a glob; returns paths "
            "relative to `path` in name order (directories end in '/'). Glob rules: `*` and `?` match within "
            "one name, `**` across directories, `[abc]` a character class; a pattern without '/' matches names "
            "at any depth ('*.py' finds every Python file), one with '/' is anchored at `path` ('src/*.py' only "
            "directly in src, 'src/**/*.py' anywhere below it). Skips .git directories and, unless "
            "respect_gitignore is false, what .gitignore files exclude; never enters symlinked directories. "
            f"Returns at most max_results matches (up to {limits.search_max_results}) and says when more exist. "
            f"{paths}",
        ),
        declared_tool(
            name="write_file", title="Write a file", scope=Scope.WRITE, hints=_WRITE, args=WriteFileArgs,
            run=partial(_write_file, policy, journal), output_schema=_WRITE_SCHEMA, quick=True,
            description="Create a file or replace its whole content (UTF-8), atomically: readers see the old or "
            "the new content, never a mix, and an existing file keeps its permissions. The parent directory must "
            "exist unless create_dirs is true. Refuses to write through a symlink that leads outside the roots. "
            f"Returns the number of bytes written. To change part of a file, use edit_file. {paths}",
        ),
        declared_tool(
            name="edit_file", title="Edit a file", scope=Scope.WRITE, hints=_EDIT, args=EditFileArgs,
            run=partial(_edit_file, policy, limits, journal), quick=True,
            description="Replace one exact occurrence of old_text with new_text in a UTF-8 file and return the "
            "change as a unified diff. Fails, changing nothing, when old_text is missing or occurs more than "
            "once (then include more surrounding lines). dry_run shows the diff without writing. The write is "
            f"atomic and keeps the file's permissions. Files up to {limits.read_max_bytes:,} bytes. {paths}",
        ),
    ]

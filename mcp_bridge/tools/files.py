"""The file tools: read_file, list_directory, search_files, write_file and edit_file.

Every path goes through the `PathPolicy` before anything touches it. The file work itself runs in a
worker thread, so a large file or directory tree never holds up the server's other requests; only
read_file of a small regular file runs on the event loop (see `_read_file`).
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO, TypeVar

import anyio
import pathspec
from pydantic import BaseModel, ConfigDict, Field

from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import READ_ONLY, CallContext, Hints, Tool, ToolFailure, ToolOutput, model_tool

DEFAULT_LINES = 2000
_CHUNK = 64 * 1024
_INLINE_MAX = 256 * 1024
"""read_file reads a regular file up to this size on the event loop, in one read (see _read_file)."""
_GITIGNORE_MAX_CHARS = 1024 * 1024
"""More than any real .gitignore; bounds the memory a hostile one could take."""
# Flags that do nothing where they do not exist (O_BINARY is Windows-only, O_NOFOLLOW/O_NONBLOCK POSIX).
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

ArgsT = TypeVar("ArgsT", bound=BaseModel)

_WRITE = Hints(read_only=False, destructive=True, idempotent=True)
_EDIT = Hints(read_only=False, destructive=True, idempotent=False)


class _Args(BaseModel):
    # A misspelt argument (say `file_path`) should be an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")


class ReadFileArgs(_Args):
    path: str = Field(description="File to read: absolute, or relative to the first allowed root.")
    offset: int = Field(0, ge=0, description="0-based index of the first line to return.")
    limit: int = Field(DEFAULT_LINES, ge=1, description="Most lines to return.")


class ListDirectoryArgs(_Args):
    path: str = Field(".", description="Directory to list: absolute, or relative to the first allowed root.")


class SearchFilesArgs(_Args):
    path: str = Field(".", description="Directory to search in: absolute, or relative to the first allowed root.")
    pattern: str = Field(min_length=1, description="Glob: `*` and `?` stay within one name, `**` spans "
                         "directories. Without a `/` it matches names at any depth (`*.py`); with one it is "
                         "anchored at `path` (`src/*.py`, `**/test_*.py`). A trailing `/` matches directories only.")
    exclude: list[str] = Field(default_factory=list, description="Globs (same rules) to leave out; an excluded "
                               "directory is not searched at all.")
    max_results: int | None = Field(None, ge=1, description="Most matches to return (default and maximum: the "
                                    "configured search_max_results).")
    respect_gitignore: bool = Field(True, description="Skip what .gitignore files exclude (the default).")


class WriteFileArgs(_Args):
    path: str = Field(description="File to write: absolute, or relative to the first allowed root.")
    content: str = Field(description="The whole new content, written as UTF-8.")
    create_dirs: bool = Field(False, description="Create missing parent directories.")


class EditFileArgs(_Args):
    path: str = Field(description="File to edit: absolute, or relative to the first allowed root.")
    old_text: str = Field(min_length=1, description="Exact text to replace; it must occur exactly once.")
    new_text: str = Field(description="Replacement text.")
    dry_run: bool = Field(False, description="Only show the diff; leave the file unchanged.")


# -- failures -----------------------------------------------------------------------------------


def _os_failure(action: str, exc: OSError) -> ToolFailure:
    """A ToolFailure for an OS error, with the advice that fits it."""
    advice = {
        errno.EACCES: "your user has no permission for it; change its permissions or choose another path",
        errno.EPERM: "the operating system does not allow it; change its permissions or choose another path",
        errno.ENOSPC: "the disk is full; free some space and try again",
        errno.EROFS: "the file system is read-only; choose a path on a writable one",
        errno.EISDIR: "it is a directory; give a file path",
        errno.ELOOP: "a symlink appeared in its place while the tool was working; check the path and try again",
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


def _open_regular(real: Path, shown: str, purpose: str) -> tuple[BinaryIO, os.stat_result]:
    """Open a regular file for reading without ever opening a FIFO or device, or following a new symlink."""
    try:
        before = real.stat()
    except OSError as exc:
        raise _os_failure(f"looking at {shown!r}", exc) from None
    if not stat.S_ISREG(before.st_mode):
        raise _not_regular(shown, before.st_mode, purpose)
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the check above, open must not hang.
        fd = os.open(real, os.O_RDONLY | _O_NONBLOCK | _O_NOFOLLOW | _O_BINARY)
    except OSError as exc:
        raise _os_failure(f"opening {shown!r}", exc) from None
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise ToolFailure(f"{shown!r} was replaced while it was being opened; try again")
    return os.fdopen(fd, "rb"), opened


@dataclass(frozen=True)
class _Window:
    data: bytes
    """The requested lines exactly as stored, line endings included."""
    total: int | None
    """Lines in the whole file; None when the file is too large to scan to its end."""
    more: bool
    """Lines follow the window."""

    @property
    def count(self) -> int:
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


def _read_small_window(f: BinaryIO, shown: str, *, offset: int, limit: int, limits: Limits) -> _Window:
    """`_read_window` for a file of at most read_max_bytes, in one read instead of a readline per line.

    Same result and same failures: with the whole file in hand, no window can exceed read_max_bytes, and a
    NUL anywhere fails as the line-by-line scan (which reads to the end of a countable file) would. A file
    that grew past read_max_bytes since its fstat goes the line-by-line way.
    """
    data = f.read(limits.read_max_bytes + 1)
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


async def _read_file(policy: PathPolicy, limits: Limits, args: ReadFileArgs, call: CallContext) -> ToolOutput:
    """`read_file`, without the worker-thread hop (~150-200 µs, most of a small read's cost) for small files.

    Resolving and opening run on the event loop: a `realpath`, a `stat`, an `open` and an `fstat`, each a
    few µs on a local file system, and `_open_regular` only ever opens a regular file (O_NONBLOCK |
    O_NOFOLLOW, then the same-inode check), never a FIFO or device whose open or read could block. A
    regular file of at most _INLINE_MAX bytes is then read in one `read` (a few µs); a larger one is read
    in a worker thread as before, so a big file never holds up other requests. The checks and the result
    are the same either way. The trade-off: on a hung network mount those few calls would stall the whole
    server rather than one worker thread.
    """
    real = policy.resolve(args.path, must_exist=True)
    f, st = _open_regular(real, args.path, "read_file")
    with f:
        if st.st_size <= _INLINE_MAX:
            return _read_opened(f, st, limits, args)
        return await anyio.to_thread.run_sync(_read_opened, f, st, limits, args)


def _read_opened(f: BinaryIO, st: os.stat_result, limits: Limits, args: ReadFileArgs) -> ToolOutput:
    if st.st_size <= min(_INLINE_MAX, limits.read_max_bytes):
        window = _read_small_window(f, args.path, offset=args.offset, limit=args.limit, limits=limits)
    else:
        window = _read_window(f, args.path, offset=args.offset, limit=args.limit, limits=limits,
                              countable=st.st_size <= limits.read_max_bytes)
    text = _decode(window.data, args.path, args.offset)
    if window.total is not None and args.offset >= window.total and args.offset > 0:
        raise ToolFailure(f"offset {args.offset} is past the end of {args.path!r}, which has {window.total} "
                          f"line(s); use an offset below {window.total}")
    if window.total == 0:
        return ToolOutput.text(f"[{args.path} is empty]")
    first, last = args.offset + 1, args.offset + window.count
    shown = f"line {first}" if first == last else f"lines {first}-{last}"
    of = f"{window.total}" if window.total is not None else f"a {st.st_size:,}-byte file"
    if window.more:
        note = f"[{shown} of {of}; call again with offset={last} for more]"
    elif args.offset > 0:
        note = f"[{shown} of {of}: the end of the file]"
    else:
        return ToolOutput.text(text)
    return ToolOutput.text(text + ("" if text.endswith("\n") else "\n") + note)


def _read_whole_text(real: Path, shown: str, limits: Limits, purpose: str) -> tuple[str, os.stat_result]:
    f, st = _open_regular(real, shown, purpose)
    with f:
        data = f.read(limits.read_max_bytes + 1)
    if len(data) > limits.read_max_bytes:
        raise _too_large(f"{shown!r} holds", limits, f"{purpose} needs the whole file in one piece")
    if b"\0" in data:
        raise _not_text(shown, "it contains NUL bytes, so it looks binary")
    return _decode(data, shown, 0), st


# -- listing ------------------------------------------------------------------------------------


def _entry_line(entry: os.DirEntry[str]) -> dict[str, object] | None:
    """One directory entry, described without following a symlink; None if it vanished meanwhile."""
    try:
        if entry.is_symlink():
            return {"name": entry.name, "type": "symlink", "size": None, "target": str(Path(entry.path).readlink())}
        if entry.is_dir(follow_symlinks=False):
            return {"name": entry.name, "type": "dir", "size": None}
        kind = "file" if entry.is_file(follow_symlinks=False) else "other"
        return {"name": entry.name, "type": kind, "size": entry.stat(follow_symlinks=False).st_size}
    except FileNotFoundError:
        return None


def _list_directory(policy: PathPolicy, limits: Limits, args: ListDirectoryArgs) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=True)
    if not real.is_dir():
        raise ToolFailure(f"{args.path!r} is not a directory; use read_file to read a file")
    try:
        with os.scandir(real) as it:
            entries = sorted(it, key=attrgetter("name"))
    except OSError as exc:
        raise _os_failure(f"listing {args.path!r}", exc) from None
    cap = limits.search_max_results
    described = [d for d in map(_entry_line, entries[:cap]) if d is not None]
    lines = [f"{real}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"]
    for d in described:
        size = "-" if d["size"] is None else f"{d['size']:,}"
        name = f"{d['name']}/" if d["type"] == "dir" else str(d["name"])
        if d["type"] == "symlink":
            name += f" -> {d['target']}"
        lines.append(f"{d['type']:<7} {size:>14}  {name}")
    truncated = len(entries) > cap
    if truncated:
        lines.append(f"[first {cap} of {len(entries)} entries (search_max_results); use search_files with a "
                     "pattern to find the others]")
    return ToolOutput.text("\n".join(lines), {"path": str(real), "entries": described, "truncated": truncated})


# -- searching ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Glob:
    """A glob in the search_files dialect (see its description), compiled to a regular expression."""

    regex: re.Pattern[str]
    dirs_only: bool

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        text = pattern
        while text.startswith("./"):
            text = text[2:]
        dirs_only = text.endswith("/")
        # A slash at the start or in the middle anchors the pattern at the searched directory, as in .gitignore.
        anchored = "/" in text.rstrip("/")
        segments = [s for s in text.split("/") if s]
        if not segments:
            raise ToolFailure(f"pattern {pattern!r} names nothing; give a glob such as '*.py' or 'src/**/*.ts'")
        parts = []
        for i, segment in enumerate(segments):
            last = i == len(segments) - 1
            if segment == "**":
                parts.append(".*" if last else "(?:[^/]+/)*")
            else:
                parts.append(_segment_regex(segment) + ("" if last else "/"))
        body = "".join(parts) if anchored else "(?:[^/]+/)*" + "".join(parts)
        try:
            return cls(re.compile(rf"\A{body}\Z", re.DOTALL), dirs_only)
        except re.error as exc:
            raise ToolFailure(f"pattern {pattern!r} is not a valid glob ({exc}); check its [...] classes") from None

    def matches(self, rel: str, is_dir: bool) -> bool:
        return (is_dir or not self.dirs_only) and self.regex.match(rel) is not None


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(segment):
            i += 1
            out.append(re.escape(segment[i]))
        elif c == "[":
            j = i + 1
            negated = j < len(segment) and segment[j] in "!^"
            j += negated
            if j < len(segment) and segment[j] == "]":
                j += 1  # a leading ] is a member of the class, not its end
            close = segment.find("]", j)
            if close < 0:
                out.append(re.escape(c))
            else:
                members = segment[i + 1 + negated : close].replace("\\", "\\\\")
                out.append(f"[^/{members}]" if negated else f"[{members}]")
                i = close
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Ignore:
    """The rules of one .gitignore file, applied to paths relative to the searched directory."""

    spec: pathspec.GitIgnoreSpec
    lead: str
    """The searched directory relative to the .gitignore's directory ("" or "a/b/"), for files above it."""
    cut: int
    """How many leading characters of a searched path lie above the .gitignore's directory."""

    def decides(self, rel: str, is_dir: bool) -> bool | None:
        result = self.spec.check_file(self.lead + rel[self.cut :] + ("/" if is_dir else ""))
        return result.include


def _open_plain(path: str, flags: int) -> int:
    # A .gitignore that is a symlink (possibly leading out of the roots) is not followed, and one that is
    # a FIFO cannot block the search.
    return os.open(path, flags | _O_NOFOLLOW | _O_NONBLOCK)


def _load_ignore(path: str, lead: str, cut: int) -> _Ignore | None:
    try:
        with open(path, encoding="utf-8", errors="replace", opener=_open_plain) as f:
            lines = f.read(_GITIGNORE_MAX_CHARS).splitlines()
        return _Ignore(pathspec.GitIgnoreSpec.from_lines(lines), lead, cut)
    except (OSError, ValueError, re.error):
        # An unreadable or malformed .gitignore hides nothing rather than failing the whole search.
        return None


def _ignored(rules: Sequence[_Ignore], rel: str, is_dir: bool) -> bool:
    # The deepest .gitignore with an opinion wins, as in git.
    for rule in reversed(rules):
        decision = rule.decides(rel, is_dir)
        if decision is not None:
            return decision
    return False


def _outer_ignores(base: Path, roots: Sequence[Path]) -> list[_Ignore]:
    """The .gitignore files above `base` that still apply to it, up to the repository top or the root.

    None of them if they exclude `base` itself: a directory searched by explicit request is searched, as
    `git add -f` would add it, with only the .gitignore files inside it applying.
    """
    found: list[_Ignore] = []
    here = base
    while here not in roots and not os.path.lexists(here / ".git"):
        parent = here.parent
        if parent == here:
            break
        lead = base.relative_to(parent).as_posix() + "/"
        rule = _load_ignore(os.fspath(parent / ".gitignore"), lead, 0)
        if rule is not None:
            found.append(rule)
        here = parent
    found.reverse()
    for rule in reversed(found):
        excluded = rule.spec.check_file(rule.lead).include
        if excluded is not None:
            return [] if excluded else found
    return found


@dataclass
class _Frame:
    entries: list[os.DirEntry[str]]
    prefix: str
    rules: tuple[_Ignore, ...]
    index: int = 0


@dataclass
class _Search:
    pattern: Glob
    excludes: list[Glob]
    gitignore: bool
    max_results: int
    matches: list[str] = field(default_factory=list)
    unreadable: int = 0

    def run(self, base: str, outer: Sequence[_Ignore]) -> bool:
        """Walk `base` depth-first in name order; True if it stopped at max_results with more to find."""
        first = self._frame(base, "", tuple(outer))
        stack = [first] if first is not None else []
        while stack:
            frame = stack[-1]
            if frame.index == len(frame.entries):
                stack.pop()
                continue
            entry = frame.entries[frame.index]
            frame.index += 1
            # d_type answers this without a stat; a symlinked directory is not a directory here, so it is
            # never entered and the walk cannot leave the roots through it.
            is_dir = entry.is_dir(follow_symlinks=False)
            rel = frame.prefix + entry.name
            if is_dir and entry.name == ".git":
                continue
            if any(g.matches(rel, is_dir) for g in self.excludes):
                continue
            hit = self.pattern.matches(rel, is_dir)
            if (hit or is_dir) and self.gitignore and _ignored(frame.rules, rel, is_dir):
                continue
            if hit:
                if len(self.matches) == self.max_results:
                    return True
                self.matches.append(rel + "/" if is_dir else rel)
            if is_dir:
                child = self._frame(entry.path, rel + "/", frame.rules)
                if child is not None:
                    stack.append(child)
        return False

    def _frame(self, path: str, prefix: str, rules: tuple[_Ignore, ...]) -> _Frame | None:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=attrgetter("name"))
        except OSError:
            self.unreadable += 1
            return None
        if self.gitignore:
            for entry in entries:
                if entry.name == ".gitignore" and entry.is_file(follow_symlinks=False):
                    rule = _load_ignore(entry.path, "", len(prefix))
                    if rule is not None:
                        rules = (*rules, rule)
                    break
        return _Frame(entries, prefix, rules)


def _search_files(policy: PathPolicy, limits: Limits, args: SearchFilesArgs) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=True)
    if not real.is_dir():
        raise ToolFailure(f"{args.path!r} is not a directory; search_files searches a directory tree — give "
                          "its parent directory, or use read_file for the file itself")
    cap = min(args.max_results or limits.search_max_results, limits.search_max_results)
    search = _Search(Glob.compile(args.pattern), [Glob.compile(e) for e in args.exclude],
                     args.respect_gitignore, cap)
    outer = _outer_ignores(real, policy.roots) if args.respect_gitignore else []
    truncated = search.run(os.fspath(real), outer)
    lines = list(search.matches)
    if truncated:
        lines.append(f"[first {cap} matches in name order; more exist — narrow the pattern or the path"
                     + ("" if cap == limits.search_max_results else f", or raise max_results (up to "
                        f"{limits.search_max_results})") + "]")
    elif search.matches:
        lines.append(f"[{len(search.matches)} match{'es' if len(search.matches) != 1 else ''} under {real}]")
    else:
        hidden = ", files excluded by .gitignore (pass respect_gitignore=false to include them)" \
            if args.respect_gitignore else ""
        lines.append(f"[nothing under {real} matches {args.pattern!r}; searched every name except .git"
                     f"{hidden} and your excludes]")
    if search.unreadable:
        lines.append(f"[{search.unreadable} director{'y' if search.unreadable == 1 else 'ies'} could not be "
                     "read (no permission) and were skipped]")
    return ToolOutput.text("\n".join(lines), {"path": str(real), "matches": search.matches, "truncated": truncated})


# -- writing ------------------------------------------------------------------------------------


def write_atomically(target: Path, data: bytes, mode: int | None) -> None:
    """Replace `target` with `data` so readers see the old or the new content, never a mix.

    The temp file sits in the same directory (so the rename cannot cross file systems), is created
    exclusively and without following symlinks, is fsynced, then renamed over `target`. `mode` is the
    permission bits of the file being replaced; None for a new file (which gets the usual umask).
    """
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_BINARY
    # An existing file's content is not briefly exposed with wider permissions than it had: 0600 first.
    fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode is not None:
                tmp.chmod(mode)
            os.fsync(f.fileno())
        # rename replaces a symlink at `target` rather than writing through it.
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):
        # Make the rename itself durable; Windows cannot open a directory, and its rename is journalled.
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _make_parents(policy: PathPolicy, directory: Path, shown: str) -> None:
    """Create `directory` and its missing ancestors, none of which may turn out to be a symlink."""
    missing: list[Path] = []
    here = directory
    while not os.path.lexists(here):
        missing.append(here)
        here = here.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            pass  # created meanwhile; the check below decides whether it is acceptable
        except OSError as exc:
            raise _os_failure(f"creating the directory {path} for {shown!r}", exc) from None
    if policy.resolve(os.fspath(directory), must_exist=True) != directory:
        raise ToolFailure(f"the directories for {shown!r} changed while they were being created (a symlink "
                          "appeared); nothing was written — check the path and try again")


def _existing_mode(real: Path, shown: str, purpose: str) -> int | None:
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise ToolFailure(f"{shown!r} became a symlink while {purpose} was working; nothing was written — try again")
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(shown, st.st_mode, purpose)
    return stat.S_IMODE(st.st_mode)


def _write_file(policy: PathPolicy, args: WriteFileArgs) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=False)
    parent = real.parent
    if not parent.exists():
        if not args.create_dirs:
            raise ToolFailure(f"cannot write {args.path!r}: the directory {parent} does not exist; pass "
                              "create_dirs=true to create it, or correct the path")
        _make_parents(policy, parent, args.path)
    elif not parent.is_dir():
        raise ToolFailure(f"cannot write {args.path!r}: {parent} is a file, not a directory; correct the path")
    mode = _existing_mode(real, args.path, "write_file")
    data = args.content.encode("utf-8")
    try:
        write_atomically(real, data, mode)
    except OSError as exc:
        raise _os_failure(f"writing {args.path!r}", exc) from None
    verb = "replaced" if mode is not None else "created"
    return ToolOutput.text(f"{verb} {real}: wrote {len(data):,} bytes",
                           {"path": str(real), "bytes_written": len(data), "created": mode is None})


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


def _edit_file(policy: PathPolicy, limits: Limits, args: EditFileArgs) -> ToolOutput:
    real = policy.resolve(args.path, must_exist=True)
    before, st = _read_whole_text(real, args.path, limits, "edit_file")
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
    diff = unified_diff(before, after, args.path)
    if args.dry_run:
        return ToolOutput.text(f"dry run: {real} was not changed; the edit would be:\n{diff}")
    try:
        write_atomically(real, after.encode("utf-8"), stat.S_IMODE(st.st_mode))
    except OSError as exc:
        raise _os_failure(f"writing {args.path!r}", exc) from None
    return ToolOutput.text(f"edited {real}:\n{diff}")


# -- the tools ----------------------------------------------------------------------------------


def _in_thread(work: Callable[[ArgsT], ToolOutput]) -> Callable[[ArgsT, CallContext], Awaitable[ToolOutput]]:
    async def run(args: ArgsT, call: CallContext) -> ToolOutput:
        return await anyio.to_thread.run_sync(work, args)

    return run


def file_tools(policy: PathPolicy, limits: Limits) -> list[Tool]:
    """The five file tools, confined by `policy` and bounded by `limits`."""
    paths = ("Paths are absolute or relative to the first allowed root; anything resolving outside the roots "
             "(through '..' or a symlink) is refused.")
    return [
        model_tool(
            name="read_file", title="Read a text file", scope=Scope.READ, hints=READ_ONLY, args=ReadFileArgs,
            run=partial(_read_file, policy, limits),
            description=f"Read a UTF-8 text file. Returns lines offset..offset+limit (default the first "
            f"{DEFAULT_LINES}) exactly as stored, without line numbers; when lines are left out, a final "
            "bracketed note says which were shown and the offset to continue from. One call returns at most "
            f"{limits.read_max_bytes:,} bytes. Refuses directories, binary files (NUL bytes or invalid UTF-8), "
            f"devices, FIFOs and sockets. {paths}",
        ),
        model_tool(
            name="list_directory", title="List a directory", scope=Scope.READ, hints=READ_ONLY,
            args=ListDirectoryArgs, run=_in_thread(partial(_list_directory, policy, limits)),
            description="List a directory's entries sorted by name, each with its type (file, dir, symlink "
            "with its target, other) and size in bytes for files. Symlinks are shown, not followed. At most "
            f"{limits.search_max_results} entries. {paths}",
        ),
        model_tool(
            name="search_files", title="Find files by name", scope=Scope.READ, hints=READ_ONLY,
            args=SearchFilesArgs, run=_in_thread(partial(_search_files, policy, limits)),
            description="Find files and directories under `path` whose path matches a glob; returns paths "
            "relative to `path` in name order (directories end in '/'). Glob rules: `*` and `?` match within "
            "one name, `**` across directories, `[abc]` a character class; a pattern without '/' matches names "
            "at any depth ('*.py' finds every Python file), one with '/' is anchored at `path` ('src/*.py' only "
            "directly in src, 'src/**/*.py' anywhere below it). Skips .git directories and, unless "
            "respect_gitignore is false, what .gitignore files exclude; never enters symlinked directories. "
            f"Returns at most max_results matches (up to {limits.search_max_results}) and says when more exist. "
            f"{paths}",
        ),
        model_tool(
            name="write_file", title="Write a file", scope=Scope.WRITE, hints=_WRITE, args=WriteFileArgs,
            run=_in_thread(partial(_write_file, policy)),
            description="Create a file or replace its whole content (UTF-8), atomically: readers see the old or "
            "the new content, never a mix, and an existing file keeps its permissions. The parent directory must "
            "exist unless create_dirs is true. Refuses to write through a symlink that leads outside the roots. "
            f"Returns the number of bytes written. To change part of a file, use edit_file. {paths}",
        ),
        model_tool(
            name="edit_file", title="Edit a file", scope=Scope.WRITE, hints=_EDIT, args=EditFileArgs,
            run=_in_thread(partial(_edit_file, policy, limits)),
            description="Replace one exact occurrence of old_text with new_text in a UTF-8 file and return the "
            "change as a unified diff. Fails, changing nothing, when old_text is missing or occurs more than "
            "once (then include more surrounding lines). dry_run shows the diff without writing. The write is "
            f"atomic and keeps the file's permissions. Files up to {limits.read_max_bytes:,} bytes. {paths}",
        ),
    ]

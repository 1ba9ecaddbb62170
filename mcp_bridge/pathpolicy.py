"""Confinement of every path a tool touches to the allowed roots.

The rules, and the 2025 advisories of the official filesystem server they answer (CVE-2025-53110,
CVE-2025-53109), are in docs/TOOLS.md. In short: roots are real paths fixed at start-up; a requested
path is resolved to its real path (every symlink followed, also a dangling one) and must be a root or
lie below one on a path-separator boundary. For a path that does not exist yet, the part below its
nearest existing ancestor may not climb with `..`, because the OS would never let it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from mcp_bridge.tools.failure import ToolFailure


class RootError(Exception):
    """A configured root cannot be used; the message says which and what to do."""


class PathRefused(ToolFailure):
    """A tool asked for a path the policy does not allow."""


def _normalised(path: str) -> str:
    # Windows compares paths case-insensitively (and with either slash); elsewhere this is the identity.
    return os.path.normcase(path)


def _is_within(path: str, root: str) -> bool:
    """True if `path` is `root` or below it; both must be real paths. Never a plain prefix test."""
    path, root = _normalised(path), _normalised(root)
    if path == root:
        return True
    # "/" and "C:\\" already end with a separator; every other root gets one, so /a/root2 is not in /a/root.
    boundary = root if root.endswith(os.sep) else root + os.sep
    return path.startswith(boundary)


def _missing_tail(candidate: str) -> list[str]:
    """The components of `candidate` below its nearest existing ancestor, outermost first."""
    tail: list[str] = []
    head = candidate
    # lexists is true for a dangling symlink too: that link is resolved, not treated as missing.
    while not os.path.lexists(head):
        parent, name = os.path.split(head)
        if parent == head:
            break
        tail.append(name)
        head = parent
    tail.reverse()
    return tail


class PathPolicy:
    """The allowed roots, and the one place that turns a requested path into a confined real path."""

    def __init__(self, roots: Sequence[Path | str]) -> None:
        if not roots:
            raise RootError("no root directory given; pass --root DIR or set `roots` in config.toml")
        real: list[str] = []
        for root in roots:
            text = os.fspath(root)
            if "\0" in text:
                raise RootError(f"root {text!r} contains a NUL byte; give a plain directory path")
            try:
                resolved = os.path.realpath(text, strict=True)
            except OSError as exc:
                raise RootError(f"root {text!r} cannot be used: {exc.strerror or exc}; "
                                "create the directory or remove it from --root / `roots` in config.toml") from None
            if not Path(resolved).is_dir():
                raise RootError(f"root {text!r} is not a directory (it resolves to {resolved}); "
                                "give a directory to --root / `roots` in config.toml")
            if resolved not in real:
                real.append(resolved)
        self._configured = tuple(real)
        self._effective = self._configured
        self._narrowed_by: tuple[str, ...] = ()

    @property
    def configured_roots(self) -> tuple[Path, ...]:
        """The roots from the command line or config.toml, as real paths."""
        return tuple(Path(r) for r in self._configured)

    @property
    def roots(self) -> tuple[Path, ...]:
        """The roots in force: the configured ones, narrowed by the client's MCP roots if it sent any."""
        return tuple(Path(r) for r in self._effective)

    def narrow(self, client_roots: Sequence[Path]) -> None:
        """Restrict the roots to what the client's MCP roots allow; they can never widen the configured roots.

        Each configured root is narrowed to the client roots inside it, if there are any; otherwise it stays
        whole if a client root contains it, and is dropped if none does. Client roots outside every
        configured root are ignored. The result is ordered like the client's list, so relative paths are
        relative to the client's first usable root. If nothing is left, nothing is allowed (every call then
        says so): a client that declares its workspace is taken at its word. Each call starts again from the
        configured roots, so a later, wider client list cannot widen anything either.
        """
        clients: list[str] = []
        for client_root in client_roots:
            text = os.fspath(client_root)
            if "\0" in text or not Path(text).is_absolute():
                continue
            try:
                resolved = os.path.realpath(text, strict=True)
            except OSError:
                continue
            if Path(resolved).is_dir():
                clients.append(resolved)
        picked: list[tuple[int, str]] = []  # (position of the deciding client root, effective root)
        for root in self._configured:
            inside = [(i, c) for i, c in enumerate(clients) if _is_within(c, root)]
            covering = [(i, root) for i, c in enumerate(clients) if _is_within(root, c)]
            picked.extend(inside or covering[:1])
        picked.sort(key=lambda p: p[0])
        effective: list[str] = []
        for _, root in picked:
            if root not in effective:
                effective.append(root)
        self._effective = tuple(effective)
        self._narrowed_by = tuple(os.fspath(r) for r in client_roots)

    def describe_roots(self) -> str:
        """The allowed roots as a sentence fragment, for error messages."""
        if self._effective:
            return "the allowed roots are " + ", ".join(self._effective)
        return (f"no directory is allowed: the client's MCP roots ({', '.join(self._narrowed_by) or 'none'}) "
                f"are all outside the configured roots ({', '.join(self._configured)}); open the client in a "
                "folder inside them, or add its folder with --root / `roots` in config.toml")

    def resolve(self, path: str, *, must_exist: bool) -> Path:
        """The real path `path` names, if it is inside the roots; otherwise `PathRefused`.

        `path` is absolute or relative to the first root. With `must_exist`, a missing path is a
        `ToolFailure`; without it (writes), the nearest existing ancestor must be inside the roots.
        """
        roots = self._effective
        if not roots:
            raise PathRefused(f"refused {path!r}: {self.describe_roots()}")
        candidate = self._candidate(path, roots[0])
        tail = _missing_tail(candidate)
        if os.pardir in tail:
            raise PathRefused(
                f"refused {path!r}: its part {str(Path(*tail))!r} climbs with '..' out of something that is not "
                "an existing directory, which no file system would allow; give the path without '..'")
        real = os.path.realpath(candidate)
        if not any(_is_within(real, root) for root in roots):
            raise PathRefused(self._outside(path, candidate, real, roots))
        try:
            mode = os.lstat(real).st_mode
        except FileNotFoundError:
            if must_exist:
                raise ToolFailure(f"{path!r} does not exist (looked for {real}); check the name with "
                                  "list_directory or search_files") from None
            return Path(real)
        except NotADirectoryError:
            raise ToolFailure(f"{path!r} cannot exist: a component of {real} is a file, not a directory; "
                              "check the path with list_directory") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PathRefused(self._loop(path)) from None
            raise ToolFailure(f"cannot look up {path!r}: {exc.strerror}; check the path and permissions") from None
        if stat.S_ISLNK(mode):
            # realpath stops at a link it cannot resolve, which only happens in a loop.
            raise PathRefused(self._loop(path))
        return Path(real)

    def _candidate(self, path: str, first_root: str) -> str:
        if not path:
            raise PathRefused(f"refused {path!r}: the path is empty; use '.' for the first root "
                              f"({first_root}) or give a file or directory inside it")
        if "\0" in path:
            raise PathRefused(f"refused {path!r}: the path contains a NUL byte, which no real file name can; "
                              "give the path without it")
        if path.replace(os.sep, "/").split("/", 1)[0] == "~":
            raise PathRefused(f"refused {path!r}: '~' is not expanded (no home directory is implied); "
                              f"give an absolute path or one relative to the first root ({first_root})")
        # Path() also drops "." components, repeated and trailing slashes; ".." is kept for realpath to judge.
        return str(Path(first_root, path))

    def _outside(self, path: str, candidate: str, real: str, roots: Sequence[str]) -> str:
        where = f"; {self.describe_roots()} — give a path inside one of them"
        # Name the target only when a symlink inside a root led out: resolving a path that was outside
        # from the start must not tell the agent where links elsewhere on the machine point.
        lexical = os.path.normpath(candidate)
        if any(_is_within(lexical, root) for root in roots):
            return f"refused {path!r}: it resolves through a symlink to {real}, which is outside the roots{where}"
        return f"refused {path!r}: it is outside the allowed roots{where}"

    @staticmethod
    def _loop(path: str) -> str:
        return (f"refused {path!r}: it runs into a symlink loop, so it names no file; "
                "fix or remove the looping symlink, or use another path")

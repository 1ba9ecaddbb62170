"""Confinement of every path a tool touches to the allowed roots.

The rules, and the 2025 advisories of the official filesystem server they answer (CVE-2025-53110,
CVE-2025-53109), are in docs/TOOLS.md. In short: roots are real paths fixed at start-up; a requested
path is resolved to its real path (every symlink followed, also a dangling one) and must be a root or
lie below one on a path-separator boundary. For a path that does not exist yet, the part below its
nearest existing ancestor may not climb with `..`, because the OS would never let it. A protected path
(mcp_bridge/protected.py) is refused whatever the roots. A root that holds the whole home directory or file
system is used only when the user named it, never as the implicit default (the client's working directory).

The tools then open what `resolve` allowed through `open`/`open_dir`, which walk from a descriptor of the
root without following any symlink (mcp_bridge/beneath.py), so a swap after the check cannot lead out.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

from mcp_bridge import beneath
from mcp_bridge.protected import Protected, Protection, refusal
from mcp_bridge.tools.failure import ToolFailure

MAX_PATH_CHARS = 32_767 if sys.platform == "win32" else 4096
"""Longest path a tool may ask for: the systems' own limit (PATH_MAX; Windows' long paths). Resolving a path costs
time quadratic in its number of components, and a 16 MiB message could otherwise name millions of them."""


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

    def __init__(self, roots: Sequence[Path | str], *, implicit: bool = False,
                 protected: Sequence[Path | str] = (), protection: Protection | None = None) -> None:
        """`roots` as real directories; `implicit` when they are the default (the client's working directory)
        rather than named by the user, so a home-wide one is refused. `protected` adds to the built-in
        protected paths (config `protected_paths`); `protection` replaces the whole list (tests only)."""
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
        self.notice: str | None = None
        """Why no root is in force, when the implicit default was refused (for bridge_status)."""
        if implicit:
            wide = [(r, what) for r in real if (what := _home_wide(r))]
            if wide:
                self.notice = _refused_default(*wide[0])
                real = []
        self._configured = tuple(real)
        self._effective = self._configured
        self._narrowed_by: tuple[str, ...] = ()
        self._extra = tuple(Path(p) for p in protected)
        self._protection = protection
        self._building = threading.Lock()
        self._root_dirs: dict[str, beneath.Dir] = {}
        weakref.finalize(self, _close_all, self._root_dirs)

    @classmethod
    def chosen(cls, named: Sequence[Path | str], default: Path, *, protected: Sequence[Path | str] = ()) -> PathPolicy:
        """The roots the user named (`--root`, else `roots` in config.toml), or else `default` — the directory
        the client started the server in — as the implicit root, which must not be home-wide."""
        return cls(named or [default], implicit=not named, protected=protected)

    @classmethod
    def named_only(cls, named: Sequence[Path | str], *, protected: Sequence[Path | str] = (),
                   who: str) -> PathPolicy:
        """For a process no client starts in a folder (the run service, its doors): only the roots the user named
        in config.toml. With none, no root is in force and `notice` says how to name them — the home directory is
        never implied. `who` names the process in that notice."""
        policy = cls(named or [Path.home()], implicit=not named, protected=protected)
        if not named:
            policy.notice = (f"no directory is allowed: {who} works only inside roots you name, and config.toml "
                             "names none; set `roots = [\"DIR\"]` (the project folders agents may work in) in "
                             "compass-bridge's config.toml")
        return policy

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
        if self.notice is not None:
            return self.notice
        if self._effective:
            return "the allowed roots are " + ", ".join(self._effective)
        return (f"no directory is allowed: the client's MCP roots ({', '.join(self._narrowed_by) or 'none'}) "
                f"are all outside the configured roots ({', '.join(self._configured)}); open the client in a "
                "folder inside them, or add its folder with --root / `roots` in config.toml")

    def resolve(self, path: str, *, must_exist: bool, writing: bool | None = None) -> Path:
        """The real path `path` names, if it is inside the roots and not protected; otherwise `PathRefused`.

        `path` is absolute or relative to the first root. With `must_exist`, a missing path is a
        `ToolFailure`; without it (writes), the nearest existing ancestor must be inside the roots.
        `writing` (default: `not must_exist`) decides which protected paths apply.
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
        try:
            real = os.path.realpath(candidate)
        except OSError as exc:
            # A link read between realpath's lstat and readlink had been swapped for something else.
            raise ToolFailure(f"cannot resolve {path!r}: {exc.strerror or exc} (it changed while being looked "
                              "up); check the path and try again") from None
        if not any(_is_within(real, root) for root in roots):
            raise PathRefused(self._outside(path, candidate, real, roots))
        writing = not must_exist if writing is None else writing
        entry = self.protection.find(real, writing=writing)
        if entry is not None:
            raise PathRefused(refusal(path, entry, writing=writing))
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

    def prepare(self) -> None:
        """Start building the protected paths on a thread of their own (`serve` does, as it starts), so that
        loading the installer's tables they come from (~15–20 ms) overlaps the rest of the start-up instead of
        delaying the first file call. Whatever fails here fails again, and is reported, on that call."""

        def build() -> None:
            with suppress(Exception):
                self.protection  # noqa: B018 - evaluated for its side effect, the cached Protection

        if self._protection is None:
            threading.Thread(target=build, name="protected-paths", daemon=True).start()

    @property
    def protection(self) -> Protection:
        """The protected paths, built on first use (or by `prepare`): the installer's tables are not needed to
        answer `initialize`."""
        if self._protection is None:
            with self._building:
                if self._protection is None:
                    self._protection = self._build_protection()
        return self._protection

    def _build_protection(self) -> Protection:
        from mcp_bridge.paths import state_paths
        from mcp_bridge.protected import ANYWHERE, builtin
        from native_host.runtime_dir import HOME_ENV

        state = state_paths()
        own = [(state.config_dir, "configuration (roots, scopes, limits, Compass credentials)"),
               (state.data_dir, "keys, usage log and native-host launcher"),
               (state.log_dir, "logs"), (state.run_dir, "sockets to the browser")]
        if os.environ.get(HOME_ENV):
            own.append((Path(os.environ[HOME_ENV]).expanduser().absolute(), "state (config, keys, logs)"))
            # A second set-up must not open the installed bridge's state, which browsers and the user's
            # other sessions still run from (its launcher, its config's default scopes, its keys).
            import platformdirs

            from mcp_bridge.paths import APP_NAME

            installed = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
            own += [(Path(installed.user_config_dir), "installed configuration (roots, scopes, limits, Compass "
                     "credentials)"),
                    (Path(installed.user_data_dir), "installed keys, usage log and native-host launcher"),
                    (Path(installed.user_log_dir), "installed logs")]
        extra = [Protected(p, "the user protected it in config.toml (`protected_paths`)") for p in self._extra]
        return Protection([*builtin(Path.home(), own), *extra], ANYWHERE)

    def hider(self, real_dir: str) -> Callable[[str], bool] | None:
        """For a listing of the directory `real_dir`: a test of whether an entry name must be left out (it is
        protected), or None when no entry there is protected (so nothing need be tested)."""
        protection = self.protection
        if not protection.holds_any(real_dir):
            return None
        return lambda name: protection.exact(real_dir + os.sep + name, writing=False) is not None

    def open(self, real: Path, flags: int, mode: int = 0o777, *, shown: str, writing: bool) -> int:
        """Open `real` (from `resolve`) beneath its root's descriptor, following no symlink on the way.

        The opened object is checked once more against the protected paths by device and inode, so a hard
        link or a directory renamed into a root does not reach one either.
        """
        root, parts = self._anchor(real, shown)
        fd = beneath.open_beneath(root, parts, flags, mode)
        try:
            entry = self.protection.by_inode(os.fstat(fd), writing=writing)
        except BaseException:
            os.close(fd)
            raise
        if entry is not None:
            os.close(fd)
            raise PathRefused(refusal(shown, entry, writing=writing))
        return fd

    def open_dir(self, real: Path, *, shown: str, writing: bool) -> beneath.Dir:
        """The directory `real` (from `resolve`) held open, reached as `open` reaches files."""
        if not beneath.AT_CALLS:
            return beneath.Dir(None, os.fspath(real))
        return beneath.Dir(self.open(real, beneath.DIR_FLAGS, shown=shown, writing=writing), os.fspath(real))

    def _anchor(self, real: Path, shown: str) -> tuple[beneath.Dir, list[str]]:
        """The held-open configured root that `real` lies in (the deepest), and the components below it."""
        text = os.fspath(real)
        holding = [r for r in self._configured if _is_within(text, r)]
        if not holding:
            raise PathRefused(f"refused {shown!r}: it is outside the allowed roots; {self.describe_roots()}")
        root = max(holding, key=len)
        held = self._root_dirs.get(root)
        if held is None:
            opened = beneath.Dir.open_root(root)
            held = self._root_dirs.setdefault(root, opened)  # two worker threads may get here at once
            if held is not opened:
                opened.close()
        rel = text[len(root):].strip(os.sep)  # `text` is a real path within `root`: no '.', '..' or '//'
        return held, rel.split(os.sep) if rel else []  # noqa: PTH206 -- str work on the per-call path

    def _candidate(self, path: str, first_root: str) -> str:
        if not path:
            raise PathRefused(f"refused {path!r}: the path is empty; use '.' for the first root "
                              f"({first_root}) or give a file or directory inside it")
        if "\0" in path:
            raise PathRefused(f"refused {path!r}: the path contains a NUL byte, which no real file name can; "
                              "give the path without it")
        if not path.isascii() and not _is_utf8(path):
            raise PathRefused(f"refused '{path.encode('utf-8', 'backslashreplace').decode()}': it holds a lone "
                              "surrogate (U+D800-U+DFFF), which no UTF-8 file name can; the file tools work with "
                              "UTF-8 names only — rename such a file with run_command if your key has admin")
        if len(path) > MAX_PATH_CHARS:
            raise PathRefused(f"refused a path of {len(path):,} characters: longer than any the system can open "
                              f"({MAX_PATH_CHARS:,}); give a shorter one (without repeated `a/../` parts)")
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


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _close_all(dirs: dict[str, beneath.Dir]) -> None:
    for held in dirs.values():
        held.close()


def _home_wide(root: str) -> str | None:
    """What makes `root` home-wide (it is or holds the home directory or the file system root), or None."""
    if Path(root).parent == Path(root):
        return "the root of the file system"
    home = os.path.realpath(Path.home())
    if _is_within(home, root):
        return "your home directory" if _normalised(home) == _normalised(root) else "a directory holding your home"
    return None


def _refused_default(root: str, what: str) -> str:
    return (f"no directory is allowed: the server was started in {root} ({what}) and no roots were named, and a "
            "root that wide is used only when you name it. Start the MCP client in a project folder, or name the "
            "roots: `compass-bridge serve --root DIR` (repeatable) in the client's MCP config, or "
            "`roots = [\"DIR\"]` in compass-bridge's config.toml")

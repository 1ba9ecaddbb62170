"""Protected paths: what no file tool may touch, whatever the roots and the caller's scopes.

An agent that can write what governs the bridge (its config, keys, launchers, another client's MCP config) or
read the secrets on the machine (SSH keys, cloud and registry credentials, browser profiles) gains more than
its scopes give it. So these are refused to every file tool, for every scope, even inside a root the user
named. The list is documented in docs/SECURITY.md; the user can add to it (`protected_paths` in config.toml),
never remove from it.

Each path is matched by its real path and, where it exists, by its device and inode, so neither a symlink, a
hard link nor a differently-cased name on a case-insensitive file system reaches it.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import NamedTuple


class Guard(Enum):
    """What a protected path refuses."""

    ALL = "reading and writing"
    WRITE = "writing"


class Protected(NamedTuple):
    path: Path
    why: str
    guard: Guard = Guard.ALL


# Credential stores, relative to the home directory: (path, what it holds).
_CREDENTIALS: tuple[tuple[str, str], ...] = (
    (".ssh", "SSH keys"),
    (".gnupg", "GPG keys"),
    (".aws", "AWS credentials"),
    (".azure", "Azure credentials"),
    (".config/gcloud", "Google Cloud credentials"),
    (".kube", "Kubernetes credentials"),
    (".docker/config.json", "Docker registry credentials"),
    (".npmrc", "npm registry tokens"),
    (".yarnrc.yml", "Yarn registry tokens"),
    (".pypirc", "PyPI upload tokens"),
    (".netrc", "login passwords for many tools"),
    (".git-credentials", "git passwords and tokens"),
    (".config/git/credentials", "git passwords and tokens"),
    (".config/gh", "GitHub CLI tokens"),
    (".config/hub", "GitHub tokens"),
    (".cargo/credentials", "crates.io tokens"),
    (".cargo/credentials.toml", "crates.io tokens"),
    (".gem/credentials", "RubyGems tokens"),
    (".terraform.d/credentials.tfrc.json", "Terraform Cloud tokens"),
    (".vault-token", "a HashiCorp Vault token"),
    (".password-store", "the pass password store"),
    (".local/share/keyrings", "the desktop keyring"),
    (".pki", "certificates and keys (NSS)"),
    (".claude", "Claude Code's login, its settings (permission rules, hooks), plugins and the transcripts of "
                "every session — its agents, skills and CLAUDE.md are edited with the claude_config_* tools"),
    (".codex/auth.json", "Codex CLI's login"),
    (".config/op", "1Password CLI sessions"),
    ("Library/Keychains", "the macOS keychains"),
    ("AppData/Roaming/Microsoft/Credentials", "Windows credentials"),
    ("AppData/Local/Microsoft/Credentials", "Windows credentials"),
    ("AppData/Roaming/Microsoft/Protect", "Windows data-protection keys"),
)

# Files whose content runs as the user (shell start-up, autostart, git's config): readable, never writable.
_RUNS_AS_YOU: tuple[str, ...] = (
    ".profile", ".bashrc", ".bash_profile", ".bash_login", ".bash_logout", ".zshrc", ".zshenv", ".zprofile",
    ".zlogin", ".zlogout", ".cshrc", ".tcshrc", ".kshrc", ".config/fish", ".xprofile", ".xinitrc", ".xsession",
    ".xsessionrc", ".pam_environment", ".config/environment.d", ".config/autostart", ".config/systemd/user",
    ".gitconfig", ".config/git/config", ".local/bin", "Library/LaunchAgents",
    "Documents/WindowsPowerShell", "Documents/PowerShell",
)


# Names that are protected from writing wherever they are, in any project: what git, Claude Code and other MCP
# clients run or obey there. A write key may change a project's code, not what runs it unasked.
_MCP_PROJECT_CONFIG = "it says which MCP servers a client starts for the project"
ANYWHERE: tuple[tuple[tuple[str, ...], str], ...] = (
    # All of .git, not only its hooks and config: a submodule's or worktree's git dir (.git/modules/NAME,
    # .git/worktrees/NAME) has hooks and a config of its own that git runs and obeys too, and a `.git` file
    # names the git dir that applies to its directory.
    ((".git",), "git runs the programs its hooks and config name (core.hooksPath, core.fsmonitor, aliases) — "
                "also those of the submodules and worktrees kept in it"),
    ((".claude",), "it holds Claude Code's project settings (permission rules, hooks), agents and skills — use "
                   "the claude_config_* tools (admin)"),
    ((".mcp.json",), _MCP_PROJECT_CONFIG),
    # The project-level MCP configs of the other clients the installer knows (mcp_bridge/install/places.py).
    ((".cursor", "mcp.json"), _MCP_PROJECT_CONFIG),
    ((".vscode", "mcp.json"), _MCP_PROJECT_CONFIG),
    ((".gemini", "settings.json"), _MCP_PROJECT_CONFIG),
    ((".roo", "mcp.json"), _MCP_PROJECT_CONFIG),
    ((".kiro", "settings", "mcp.json"), _MCP_PROJECT_CONFIG),
    ((".junie", "mcp"), _MCP_PROJECT_CONFIG),
    ((".zed", "settings.json"), _MCP_PROJECT_CONFIG),
    ((".codex", "config.toml"), _MCP_PROJECT_CONFIG),
    (("opencode.json",), _MCP_PROJECT_CONFIG),
    (("opencode.jsonc",), _MCP_PROJECT_CONFIG),
)
_LINK_SCAN_MAX = 100_000
"""Most entries looked at, in all protected directories together, when looking for hard links into them."""
_LINK_SCAN_EACH = 10_000
"""Most entries looked at in one protected directory, so a huge browser profile cannot use up the budget
before the small credential stores are looked at."""


def builtin(home: Path, own: Sequence[tuple[Path, str]], env: Mapping[str, str] | None = None) -> list[Protected]:
    """The built-in list for the user `home`; `own` is the bridge's own state directories with what each holds."""
    entries = [Protected(path, f"compass-bridge's own {what}") for path, what in own]
    entries += _installed(home, env)
    entries += [Protected(home / rel, f"it holds {what}") for rel, what in _CREDENTIALS]
    entries += [Protected(home / rel, "it runs as you the next time you log in, start a shell or run git",
                          Guard.WRITE) for rel in _RUNS_AS_YOU]
    if sys.prefix != sys.base_prefix:
        entries.append(Protected(Path(sys.prefix), "it is the environment compass-bridge itself runs from",
                                 Guard.WRITE))
    return entries


def _installed(home: Path, env: Mapping[str, str] | None) -> list[Protected]:
    """What the installer writes or knows: browser profiles and host manifests, launchers, MCP client configs."""
    # The installer's facts alone (its tables, no installer): imported here, as the protected paths are built.
    from mcp_bridge.install.places import BROWSERS, Platform, browser_dirs, known_config_paths

    platform = Platform.for_user(home, env)
    entries = [Protected(platform.system_own_dir(), "it holds compass-bridge's machine-wide native-host launcher")]
    for spec in BROWSERS:
        dirs = browser_dirs(spec, platform)
        if dirs.data is not None:
            entries.append(Protected(dirs.data, f"it is {spec.name}'s profile (cookies, saved passwords, "
                                     "and the native-host manifest that says which program the browser runs)"))
        for manifest_dir in (*dirs.user_manifests, *dirs.system_manifests):
            entries.append(Protected(manifest_dir, f"{spec.name} runs the programs its host manifests name"))
    entries += [Protected(p, "it is an MCP client's config, which holds bridge keys and says which servers the "
                          "client runs") for p in known_config_paths(home, env)]
    return entries


def _normcase(text: str) -> str:
    # macOS and Windows file systems are case-insensitive by default: ~/.SSH is ~/.ssh there.
    return text.lower() if sys.platform in ("darwin", "win32") else text


def _real(path: Path) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return str(path.absolute())


class _Entry(NamedTuple):
    key: str
    """The normcased real path."""
    shown: str
    why: str
    guard: Guard


class Protection:
    """The protected paths resolved once: looked up by real path (exact or below) and by (device, inode), and
    the names protected from writing in any directory (`anywhere`, normally ANYWHERE)."""

    def __init__(self, entries: Iterable[Protected],
                 anywhere: Sequence[tuple[tuple[str, ...], str]] = ()) -> None:
        by_key: dict[str, _Entry] = {}
        by_inode: dict[tuple[int, int], _Entry] = {}
        for item in entries:
            for text in {str(item.path.absolute()), _real(item.path)}:
                entry = _Entry(_normcase(text), str(item.path), item.why, item.guard)
                # Reading and writing beats writing alone when two entries name one place.
                if by_key.get(entry.key, entry).guard is Guard.ALL and entry.guard is Guard.WRITE:
                    continue
                by_key[entry.key] = entry
                try:
                    st = Path(text).stat()
                except (OSError, ValueError):
                    continue
                by_inode[(st.st_dev, st.st_ino)] = entry
        self._by_key = by_key
        self._by_inode = by_inode
        self._linked: dict[tuple[int, int], _Entry] | None = None
        self._linked_lock = threading.Lock()
        self._parents = {os.path.split(key)[0] for key in by_key}
        self.paths = tuple(sorted({e.shown for e in by_key.values()}))
        self._anywhere = [(tuple(_normcase(n) for n in names),
                           _Entry("", f"{'/'.join(names)} (in any directory)", why, Guard.WRITE))
                          for names, why in anywhere]

    def find(self, real: str, *, writing: bool) -> _Entry | None:
        """The entry that protects `real` (a real path) or one of its ancestors from this access, if any."""
        key = _normcase(real)
        if writing and self._anywhere:
            parts = Path(key).parts
            for names, named in self._anywhere:
                if any(tuple(parts[i : i + len(names)]) == names for i in range(len(parts) - len(names) + 1)):
                    return named
        while key:
            entry = self._by_key.get(key)
            if entry is not None and (writing or entry.guard is Guard.ALL):
                return entry
            cut = key.rfind(os.sep)
            key = key[:cut] if cut > 0 else ""  # the parent; "" after the top (no file system root is protected)
        return None

    def holds_any(self, real_dir: str) -> bool:
        """Whether an entry of the directory `real_dir` may be protected (most directories hold none)."""
        return _normcase(real_dir) in self._parents

    def holds_any_below(self, real_dir: str) -> bool:
        """Whether `real_dir` or any directory below it may hold a protected entry: a walk that follows no
        symlink (so every directory it meets is `real_dir` + names) need not ask `holds_any` otherwise."""
        key = _normcase(real_dir)
        below = key if key.endswith(os.sep) else key + os.sep
        return any(parent == key or parent.startswith(below) for parent in self._parents)

    def exact(self, real: str, *, writing: bool) -> _Entry | None:
        """The entry for exactly `real`: what a listing hides (everything inside it is hidden with it)."""
        entry = self._by_key.get(_normcase(real))
        return entry if entry is not None and (writing or entry.guard is Guard.ALL) else None

    def by_inode(self, st: os.stat_result, *, writing: bool) -> _Entry | None:
        entry = self._by_inode.get((st.st_dev, st.st_ino))
        if entry is None and st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            # A file with another name may be a hard link to a file inside a protected directory.
            entry = self._hard_linked().get((st.st_dev, st.st_ino))
        return entry if entry is not None and (writing or entry.guard is Guard.ALL) else None

    def _hard_linked(self) -> dict[tuple[int, int], _Entry]:
        """The files with more than one name inside the directories protected from reading, by (device, inode).

        Looked for once, when a tool first opens a file with several names (most never do; a pnpm store makes
        many), at most _LINK_SCAN_MAX entries, no symlink followed. Writing needs no such check: a write
        replaces the name it was given, never the file behind another name.
        """
        with self._linked_lock:
            if self._linked is None:
                found: dict[tuple[int, int], _Entry] = {}
                left = _LINK_SCAN_MAX
                for entry in self._by_key.values():
                    if entry.guard is Guard.ALL and left > 0:
                        left -= _scan_links(entry.key, entry, found, min(left, _LINK_SCAN_EACH))
                self._linked = found
            return self._linked

    def is_protected_dir(self, st: os.stat_result) -> bool:
        return stat.S_ISDIR(st.st_mode) and self.by_inode(st, writing=False) is not None


def _scan_links(directory: str, entry: _Entry, found: dict[tuple[int, int], _Entry], budget: int) -> int:
    """Record in `found` the regular files below `directory` that have several names, looking at no more than
    `budget` entries; returns how many it looked at."""
    pending = [directory]
    seen = 0
    while pending and seen < budget:
        try:
            with os.scandir(pending.pop()) as it:
                for item in it:
                    seen += 1
                    if seen >= budget:
                        return seen
                    if item.is_dir(follow_symlinks=False):
                        pending.append(item.path)
                    elif item.is_file(follow_symlinks=False):
                        st = item.stat(follow_symlinks=False)
                        if st.st_nlink > 1:
                            found.setdefault((st.st_dev, st.st_ino), entry)
        except OSError:
            continue  # not a directory, gone, or unreadable: nothing to find there
    return seen


def refusal(shown: str, entry: _Entry, *, writing: bool) -> str:
    """What a refusal says: what is protected, why, and what to do instead."""
    access = "writing" if writing and entry.guard is Guard.WRITE else "reading or writing"
    return (f"refused {shown!r}: {entry.shown} is protected from {access} by any agent, because {entry.why}; "
            "no key or root changes that. If you need something from it, ask the user to do that step "
            "themselves (the list is in docs/SECURITY.md; `protected_paths` in config.toml can add to it)")

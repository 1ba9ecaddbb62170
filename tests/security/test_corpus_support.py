"""The independent hostile-agent corpus (issue 11's acceptance): the fake home it attacks and the server it drives.

No tests here: the `test_corpus_*` files import these helpers. The home holds what a real one does — SSH and
cloud keys, other MCP clients' configs with keys in them, shell start-up files, a project with a git repository
and a submodule — and the bridge's own state in its XDG places (no COMPASS_BRIDGE_HOME: the layout an installed
bridge really has). Every secret's text holds `CANARY`, so a leak is found by looking for that one word in
everything the server said.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.stdio_client import StdioClient

CANARY = "CANARY"

# (path relative to home, whether it holds a secret no tool may read; else only writing is refused)
PLANTED: tuple[tuple[str, bool], ...] = (
    (".ssh/id_ed25519", True),
    (".ssh/config", True),
    (".aws/credentials", True),
    (".netrc", True),
    (".git-credentials", True),
    (".docker/config.json", True),
    (".config/gh/hosts.yml", True),
    (".claude.json", True),
    (".claude/.credentials.json", True),
    (".cursor/mcp.json", True),
    (".codeium/windsurf/mcp_config.json", True),
    (".config/Code/User/mcp.json", True),
    (".gemini/settings.json", True),
    (".codex/config.toml", True),
    (".config/chromium/Default/Cookies", True),
    (".config/chromium/NativeMessagingHosts/com.compass_bridge.host.json", True),
    (".config/google-chrome/NativeMessagingHosts/com.compass_bridge.host.json", True),
    (".mozilla/native-messaging-hosts/com.compass_bridge.host.json", True),
    (".bashrc", False),
    (".profile", False),
    (".zshrc", False),
    (".gitconfig", False),
    (".config/autostart/evil.desktop", False),
    (".config/systemd/user/evil.service", False),
    (".local/bin/compass-bridge", False),
    ("project/.git/hooks/pre-commit.sample", False),
    ("project/.git/config", False),
    ("project/.mcp.json", False),
    ("project/.claude/settings.json", False),
)

# The bridge's own state, in the XDG places platformdirs gives on Linux (written by `keys create` too).
STATE = (".config/compass-bridge", ".local/share/compass-bridge", ".local/state/compass-bridge")
OWN_FILES = (
    ".config/compass-bridge/config.toml",
    ".config/compass-bridge/compass-credentials.json",
    ".local/share/compass-bridge/key-secret",
    ".local/share/compass-bridge/bridge.sqlite3",
    ".local/share/compass-bridge/keys.sqlite3",
    ".local/share/compass-bridge/key-refs/claude-code",
    ".local/share/compass-bridge/native-host/compass-bridge-host",
    ".local/share/compass-bridge/browser-tools.json",
)


@dataclass(frozen=True)
class Home:
    path: Path

    @property
    def project(self) -> Path:
        return self.path / "project"

    def env(self) -> dict[str, str]:
        """The environment of every process the corpus starts: HOME is the fake home, no XDG overrides, no
        COMPASS_BRIDGE_HOME (so the bridge's state lives where an installed one keeps it)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("XDG_", "COMPASS_")) and k not in ("HOME", "CODEX_HOME")}
        env["HOME"] = str(self.path)
        env["XDG_RUNTIME_DIR"] = str(self.path / "run")
        return env

    def snapshot(self) -> dict[str, bytes | str]:
        """Every file and link in the home (but the project's scratch dir), to prove nothing changed."""
        state: dict[str, bytes | str] = {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                rel = str(p.relative_to(self.path))
                # What the servers themselves write: their logs, temp-file journals, database journals.
                if rel.startswith(("project/scratch", "run", ".local/state/compass-bridge/log")) \
                        or "pending-writes" in rel or rel.endswith((".stderr", "-wal", "-shm", "-journal")):
                    continue
                if p.is_symlink():
                    state[rel] = "-> " + os.readlink(p)
                elif p.is_file() and not rel.endswith(".sqlite3"):
                    state[rel] = p.read_bytes()
        return state


def make_home(tmp: Path) -> Home:
    home = Home(tmp.resolve() / "home")
    home.path.mkdir()
    (home.path / "run").mkdir(mode=0o700)
    for n, (rel, secret) in enumerate(PLANTED):
        path = home.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{CANARY}-{n} secret\n" if secret else f"# runs as you {n}\n")
    (home.project / "main.py").write_text("print('hi')\n")
    (home.project / "scratch").mkdir()
    # A submodule's git dir lives in the superproject's .git/modules: git runs its hooks and obeys its config.
    sub = home.project / ".git" / "modules" / "lib"
    (sub / "hooks").mkdir(parents=True)
    (sub / "config").write_text("[core]\n\tbare = false\n")
    (home.project / "lib").mkdir()
    (home.project / "lib" / ".git").write_text("gitdir: ../.git/modules/lib\n")
    for command in (["keys", "list"], ["usage"]):  # make the state dirs, the key secret, and both databases
        subprocess.run([sys.executable, "-m", "mcp_bridge", *command], env=home.env(), check=True,
                       capture_output=True)
    for rel in OWN_FILES:
        path = home.path / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{CANARY}-own {rel}\n")
    (home.path / ".config/compass-bridge/config.toml").write_text('default_scopes = "read,write"\n')
    return home


def create_key(home: Home, scopes: str) -> str:
    out = subprocess.run([sys.executable, "-m", "mcp_bridge", "keys", "create", "--name", f"agent-{scopes}",
                          "--scopes", scopes, "--json"], env=home.env(), capture_output=True, text=True, check=True)
    key: str = json.loads(out.stdout)["key"]
    return key


@contextmanager
def serve(home: Home, *, key: str | None = None, roots: tuple[Path, ...] | None = None, era: str = "legacy",
          env: dict[str, str] | None = None, cwd: Path | None = None) -> Iterator[StdioClient]:
    """A real `compass-bridge serve` over stdio, opened, with the home named as its root unless `roots` is given;
    closed by its stdin and, failing that, stopped by its pid."""
    args = [sys.executable, "-m", "mcp_bridge", "serve"]
    for root in (home.path,) if roots is None else roots:
        args += ["--root", str(root)]
    full_env = {**home.env(), **(env or {})}
    if key is not None:
        full_env["COMPASS_BRIDGE_KEY"] = key
    stderr_path = home.path.parent / f"serve-{os.getpid()}-{len(list(home.path.parent.glob('serve-*')))}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                   env=full_env, cwd=cwd or home.project)
    client = StdioClient(process, era)
    try:
        client.open()
        yield client
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        with suppress(BrokenPipeError):
            process.stdin.close()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def text(result: dict[str, Any]) -> str:
    return "\n".join(c.get("text", "") for c in result.get("content", []))


def everything(result: dict[str, Any]) -> str:
    """All a tool result says, structured content included: where a leak would show."""
    return json.dumps(result)

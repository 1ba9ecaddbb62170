"""Registering `compass-bridge serve` with MCP clients.

Claude Code is registered through its own CLI (`claude mcp add --scope user`), which owns the format of its
config; the others are registered by editing their JSON config safely: parse, merge one entry, back up the
original, write atomically, and only where the client's own directory already exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_bridge.install.files import atomic_write, read_text
from mcp_bridge.install.layouts import OS, Base, Loc, Platform

SERVER_NAME = "compass"
KEY_ENV = "COMPASS_BRIDGE_KEY"
HOME_ENV = "COMPASS_BRIDGE_HOME"
CLAUDE_CODE = "claude-code"
BACKUP_SUFFIX = ".compass-bridge-backup"
CLAUDE_TIMEOUT_S = 120


class ClientError(Exception):
    """A client could not be registered or unregistered; the message says why and what to do."""


@dataclass(frozen=True)
class ServerEntry:
    """How a client starts the bridge."""

    command: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str | None:
        return self.env.get(KEY_ENV)

    def same_launch(self, other: ServerEntry) -> bool:
        """Same program, arguments and environment, whatever key each carries."""
        strip = {k: v for k, v in self.env.items() if k != KEY_ENV}
        return (self.command, self.args, strip) == (
            other.command, other.args, {k: v for k, v in other.env.items() if k != KEY_ENV})

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "args": list(self.args), "env": dict(self.env)}

    @classmethod
    def from_json(cls, data: object) -> ServerEntry | None:
        if not isinstance(data, dict) or not isinstance(data.get("command"), str):
            return None
        args = data.get("args", [])
        env = data.get("env", {})
        return cls(data["command"], tuple(str(a) for a in args) if isinstance(args, list) else (),
                   {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {})


def cli_command() -> list[str]:
    """The absolute command for `compass-bridge` in the environment this package is installed in.

    The interpreter path is kept as given, not resolved: a venv's `python` is a symlink whose target would
    lose the venv's packages.
    """
    python = Path(sys.executable).absolute()
    script = python.with_name("compass-bridge.exe" if sys.platform == "win32" else "compass-bridge")
    return [str(script)] if script.is_file() else [str(python), "-m", "mcp_bridge"]


def server_command() -> tuple[str, tuple[str, ...]]:
    command, *args = [*cli_command(), "serve"]
    return command, tuple(args)


def bridge_entry(platform: Platform, key: str) -> ServerEntry:
    command, args = server_command()
    env = {KEY_ENV: key}
    if platform.env.get(HOME_ENV):
        # The client does not inherit the installing shell's environment; the server must find the same state.
        env[HOME_ENV] = platform.env[HOME_ENV]
    return ServerEntry(command, args, env)


def quote_command(argv: list[str], platform: Platform) -> str:
    return subprocess.list2cmdline(argv) if platform.os is OS.WINDOWS else shlex.join(argv)


# --- Clients with a JSON config file -------------------------------------------------------------------


@dataclass(frozen=True)
class FileClientSpec:
    key: str
    label: str
    dirs: Mapping[OS, Loc]
    """The client's own directory; the config is written only when it exists (the client is installed)."""
    file_name: str
    servers_key: str = "mcpServers"
    extra: Mapping[str, str] = field(default_factory=dict)
    """Fields the client wants in each server entry besides command, args and env."""


FILE_CLIENTS: tuple[FileClientSpec, ...] = (
    FileClientSpec("claude-desktop", "Claude Desktop",
                   {OS.MACOS: Loc(Base.APP_SUPPORT, "Claude"), OS.WINDOWS: Loc(Base.APPDATA, "Claude")},
                   "claude_desktop_config.json"),
    FileClientSpec("cursor", "Cursor", {os_: Loc(Base.HOME, ".cursor") for os_ in OS}, "mcp.json"),
    FileClientSpec("vscode", "VS Code",
                   {OS.LINUX: Loc(Base.CONFIG, "Code/User"), OS.MACOS: Loc(Base.APP_SUPPORT, "Code/User"),
                    OS.WINDOWS: Loc(Base.APPDATA, "Code/User")},
                   "mcp.json", servers_key="servers", extra={"type": "stdio"}),
    FileClientSpec("windsurf", "Windsurf", {os_: Loc(Base.HOME, ".codeium/windsurf") for os_ in OS},
                   "mcp_config.json"),
)

CLIENT_LABELS: dict[str, str] = {CLAUDE_CODE: "Claude Code", **{spec.key: spec.label for spec in FILE_CLIENTS}}
CLIENT_KEYS: tuple[str, ...] = tuple(CLIENT_LABELS)


class ConfigFileClient:
    def __init__(self, spec: FileClientSpec, platform: Platform) -> None:
        self.spec = spec
        self.key = spec.key
        self.label = spec.label
        self.platform = platform
        loc = spec.dirs.get(platform.os)
        self.dir = loc.resolve(platform) if loc else None
        self.path = self.dir / spec.file_name if self.dir else None

    @property
    def backup(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + BACKUP_SUFFIX)

    def unavailable(self) -> str | None:
        """Why this client cannot be registered here, or None when it can."""
        if self.dir is None:
            return f"{self.label} is not made for {self.platform.os.value}"
        if not self.dir.is_dir():
            return f"not installed (no {self.platform.display(self.dir)})"
        return None

    def entry_json(self, entry: ServerEntry) -> dict[str, Any]:
        return {**self.spec.extra, **entry.to_json()}

    def load(self) -> dict[str, Any]:
        """The parsed config ({} when there is none); ClientError when it cannot be edited safely."""
        assert self.path is not None
        text = read_text(self.path)
        if text is None or not text.strip():
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ClientError(f"{self.path} is not plain JSON ({exc}; comments or trailing commas?), so it was "
                              "not touched; add the entry by hand") from exc
        if not isinstance(data, dict) or not isinstance(data.get(self.spec.servers_key, {}), dict):
            raise ClientError(f"{self.path}: expected an object with an object `{self.spec.servers_key}`; "
                              "it was not touched, add the entry by hand")
        return data

    def current(self) -> ServerEntry | None:
        servers = self.load().get(self.spec.servers_key, {})
        return ServerEntry.from_json(servers.get(SERVER_NAME))

    def manual_hint(self, entry: ServerEntry) -> str:
        snippet = json.dumps({self.spec.servers_key: {SERVER_NAME: self.entry_json(entry)}})
        return f"merge into {self.path}: {snippet}"

    def write(self, entry: ServerEntry, back_up: bool) -> bool:
        """Put our entry in the config, first backing up the original when `back_up` (the first install:
        later ones must keep the copy of what was there before us). Returns whether the file is new."""
        assert self.path is not None
        data = self.load()
        created = not self.path.exists()
        if back_up and not created:
            shutil.copy2(self.path, self.backup)
        data.setdefault(self.spec.servers_key, {})[SERVER_NAME] = self.entry_json(entry)
        atomic_write(self.path, json.dumps(data, indent=2) + "\n", None if not created else 0o600)
        return created

    def remove(self, created_file: bool) -> str:
        """Take our entry out again, restoring the original bytes when nothing else changed."""
        assert self.path is not None
        data = self.load()
        data.get(self.spec.servers_key, {}).pop(SERVER_NAME, None)
        if self.backup.exists():
            try:
                original = json.loads(self.backup.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                original = None
            if data == original:
                self.backup.replace(self.path)
                return "restored the original file"
            self.backup.unlink()
        if created_file and not data.get(self.spec.servers_key) and set(data) <= {self.spec.servers_key}:
            self.path.unlink()
            return "removed the file it had created"
        atomic_write(self.path, json.dumps(data, indent=2) + "\n")
        return f"removed the `{SERVER_NAME}` entry"


def file_client(key: str, platform: Platform) -> ConfigFileClient:
    return ConfigFileClient(next(spec for spec in FILE_CLIENTS if spec.key == key), platform)


# --- Claude Code, through its CLI ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClaudeRegistration:
    entry: ServerEntry
    user_scope: bool
    status: str

    @property
    def connected(self) -> bool:
        return "Connected" in self.status and "Failed" not in self.status


class ClaudeCode:
    key = CLAUDE_CODE
    label = CLIENT_LABELS[CLAUDE_CODE]

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.exe = shutil.which("claude", path=platform.env.get("PATH", os.defpath))

    def add_argv(self, entry: ServerEntry) -> list[str]:
        # The name must come before -e: `-e` takes every following word as another variable.
        env = [arg for name, value in sorted(entry.env.items()) for arg in ("-e", f"{name}={value}")]
        return [self.exe or "claude", "mcp", "add", "--scope", "user", SERVER_NAME, *env,
                "--", entry.command, *entry.args]

    def remove_argv(self) -> list[str]:
        return [self.exe or "claude", "mcp", "remove", SERVER_NAME, "--scope", "user"]

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, env=dict(self.platform.env), cwd=self.platform.home, capture_output=True,
                                  text=True, timeout=CLAUDE_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClientError(f"`{quote_command(argv, self.platform)}` failed: {exc}") from exc

    def get(self) -> ClaudeRegistration | None:
        """What `claude mcp get compass` reports: the entry Claude Code would start, and its health."""
        assert self.exe is not None
        done = self._run([self.exe, "mcp", "get", SERVER_NAME])
        if done.returncode != 0:
            return None
        return parse_mcp_get(done.stdout)

    def add(self, entry: ServerEntry) -> None:
        done = self._run(self.add_argv(entry))
        if done.returncode != 0:
            raise ClientError(f"`claude mcp add` failed: {(done.stderr or done.stdout).strip()}")

    def remove(self) -> None:
        done = self._run(self.remove_argv())
        if done.returncode != 0:
            raise ClientError(f"`claude mcp remove` failed: {(done.stderr or done.stdout).strip()}")


_FIELD = re.compile(r"^\s{2}(Scope|Status|Command|Args):\s?(.*)$")


def parse_mcp_get(text: str) -> ClaudeRegistration | None:
    fields: dict[str, str] = {}
    env: dict[str, str] = {}
    in_env = False
    for line in text.splitlines():
        match = _FIELD.match(line)
        if match:
            fields[match.group(1)] = match.group(2).strip()
            in_env = False
        elif line.strip() == "Environment:":
            in_env = True
        elif in_env and line.startswith("    ") and "=" in line:
            name, _, value = line.strip().partition("=")
            env[name] = value
        elif not line.startswith("    "):
            in_env = False
    if "Command" not in fields:
        return None
    # `claude mcp get` prints the arguments joined by spaces; ours never contain spaces.
    entry = ServerEntry(fields["Command"], tuple(fields.get("Args", "").split()), env)
    return ClaudeRegistration(entry, "User" in fields.get("Scope", ""), fields.get("Status", ""))

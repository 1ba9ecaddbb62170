"""Registering `compass-bridge serve` with MCP clients.

Three kinds of client:
- Claude Code and Codex CLI, registered through their own CLI (`claude mcp add`, `codex mcp add`), which
  owns the format of their config;
- clients with a config file (JSON/JSONC or YAML), edited safely: parse, set one member (comments kept),
  back up the original, write atomically, and only where the client's own directory already exists;
- JetBrains AI Assistant, configured in the IDE's settings: the entry to paste is printed.

Every entry runs `compass-bridge serve --key-ref NAME`: the key stays in the bridge's private data dir
(mcp_bridge.key_refs), so no client config and no command line holds a secret. The formats and their
sources are in docs/INSTALL.md.
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

from mcp_bridge.childenv import scrubbed
from mcp_bridge.install.config_docs import Document, DocumentError, parse
from mcp_bridge.install.files import atomic_write, read_text
from mcp_bridge.install.places import (
    BACKUP_SUFFIX,
    FILE_CLIENTS,
    OS,
    FileClientSpec,
    Platform,
    Shape,
    config_file_candidates,
)

SERVER_NAME = "compass"
KEY_ENV = "COMPASS_BRIDGE_KEY"
HOME_ENV = "COMPASS_BRIDGE_HOME"
KEY_REF_OPTION = "--key-ref"
CLAUDE_CODE = "claude-code"
CODEX = "codex"
JETBRAINS = "jetbrains"
CLI_TIMEOUT_S = 120
BRIDGE_KEY = re.compile(r"cb_[0-9a-f]{40}")


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
        """A key written inline (by hand, or by an install before key references)."""
        return self.env.get(KEY_ENV)

    @property
    def key_ref(self) -> str | None:
        args = list(self.args)
        for i, arg in enumerate(args):
            if arg == KEY_REF_OPTION and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(KEY_REF_OPTION + "="):
                return arg.partition("=")[2]
        return None

    def same_launch(self, other: ServerEntry) -> bool:
        """Same program, arguments and environment."""
        return (self.command, self.args, dict(self.env)) == (other.command, other.args, dict(other.env))


def cli_command() -> list[str]:
    """The absolute command for `compass-bridge` in the environment this package is installed in.

    The interpreter path is kept as given, not resolved: a venv's `python` is a symlink whose target would
    lose the venv's packages.
    """
    python = Path(sys.executable).absolute()
    script = python.with_name("compass-bridge.exe" if sys.platform == "win32" else "compass-bridge")
    return [str(script)] if script.is_file() else [str(python), "-m", "mcp_bridge"]


def bridge_entry(platform: Platform, key_ref: str) -> ServerEntry:
    command = cli_command()
    env = {}
    if platform.env.get(HOME_ENV):
        # The client does not inherit the installing shell's environment; the server must find the same state.
        env[HOME_ENV] = platform.env[HOME_ENV]
    return ServerEntry(command[0], (*command[1:], "serve", KEY_REF_OPTION, key_ref), env)


def quote_command(argv: list[str], platform: Platform) -> str:
    return subprocess.list2cmdline(argv) if platform.os is OS.WINDOWS else shlex.join(argv)


# --- How each client writes one server entry ------------------------------------------------------------


def dump_entry(shape: Shape, entry: ServerEntry, extra: Mapping[str, Any]) -> dict[str, Any]:
    env = dict(entry.env)
    if shape is Shape.OPENCODE:
        data: dict[str, Any] = {"type": "local", "command": [entry.command, *entry.args], "enabled": True}
        return data | ({"environment": env} if env else {})
    if shape is Shape.GOOSE:
        return {"name": SERVER_NAME, "type": "stdio", "cmd": entry.command, "args": list(entry.args),
                "envs": env, "enabled": True, "timeout": 300,
                "description": "compass-bridge: files, commands, browser and Compass tools"}
    data = {**extra, "command": entry.command, "args": list(entry.args)}
    return data | ({"env": env} if env else {})


def parse_entry(shape: Shape, data: object) -> ServerEntry | None:
    if not isinstance(data, dict):
        return None
    if shape is Shape.OPENCODE:
        command, env = data.get("command"), data.get("environment", {})
        if not isinstance(command, list) or not command:
            return None
        program, args = command[0], command[1:]
    else:
        program = data.get("cmd" if shape is Shape.GOOSE else "command")
        args, env = data.get("args", []), data.get("envs" if shape is Shape.GOOSE else "env", {})
    if not isinstance(program, str):
        return None
    return ServerEntry(program, tuple(str(a) for a in args) if isinstance(args, list) else (),
                       {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {})


# --- Clients with a config file (their places: mcp_bridge.install.places.FILE_CLIENTS) ----------------


CLIENT_LABELS: dict[str, str] = {CLAUDE_CODE: "Claude Code", CODEX: "Codex CLI",
                                 **{spec.key: spec.label for spec in FILE_CLIENTS},
                                 JETBRAINS: "JetBrains AI Assistant"}
CLIENT_KEYS: tuple[str, ...] = tuple(CLIENT_LABELS)


def _world_readable(path: Path) -> bool:
    return sys.platform != "win32" and bool(path.stat().st_mode & 0o077)


class ConfigFileClient:
    def __init__(self, spec: FileClientSpec, platform: Platform) -> None:
        self.spec = spec
        self.key = spec.key
        self.label = spec.label
        self.platform = platform
        loc = spec.dirs.get(platform.os)
        self.dir = loc.resolve(platform) if loc else None
        candidates = config_file_candidates(spec, platform)
        self.path = next((p for p in candidates if p.exists()), candidates[0]) if candidates else None

    @property
    def backup(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + BACKUP_SUFFIX)

    def _target(self) -> Path:
        """The file to replace: a symlinked config (dotfiles kept in a repository) is written where it points."""
        assert self.path is not None
        return self.path.resolve() if self.path.is_symlink() else self.path

    def unavailable(self) -> str | None:
        """Why this client cannot be registered here, or None when it can."""
        if self.dir is None:
            return f"{self.label} is not made for {self.platform.os.value}"
        if not self.dir.is_dir():
            return f"not installed (no {self.platform.display(self.dir)})"
        return None

    def _document(self) -> Document:
        """The parsed config; ClientError when it cannot be edited safely."""
        assert self.path is not None
        text = read_text(self.path) or ""
        try:
            doc = parse(self.spec.fmt, text)
        except DocumentError as exc:
            raise ClientError(f"{self.path} is {exc}, so it was not touched") from None
        servers = doc.get(self.spec.servers)
        if not isinstance(doc.data(), dict) or (servers is not None and not isinstance(servers, dict)):
            where = ".".join(self.spec.servers)
            raise ClientError(f"{self.path}: expected an object with an object `{where}`, so it was not touched")
        return doc

    def current(self) -> ServerEntry | None:
        return parse_entry(self.spec.shape, self._document().get((*self.spec.servers, SERVER_NAME)))

    def manual_hint(self, entry: ServerEntry) -> str:
        """The entry to add by hand, in the file's own format."""
        value = dump_entry(self.spec.shape, entry, self.spec.extra)
        doc = parse(self.spec.fmt, "")
        doc.set((*self.spec.servers, SERVER_NAME), value)
        return f"add to {self.path} by hand:\n{doc.dump().rstrip()}"

    def write(self, entry: ServerEntry, back_up: bool) -> tuple[bool, str]:
        """Put our entry in the config, first backing up the original when `back_up` (the first install:
        later ones must keep the copy of what was there before us). Returns whether the file is new, and a
        note for the report ('' for none)."""
        assert self.path is not None
        doc = self._document()
        created = not self.path.exists()
        if back_up and not created:
            shutil.copy2(self.path, self.backup)
        doc.set((*self.spec.servers, SERVER_NAME), dump_entry(self.spec.shape, entry, self.spec.extra))
        text = doc.dump()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Our entry holds no key, but another one in this file may (written by hand): then keep it private.
        before = None if created else self.path.stat().st_mode & 0o777
        tighten = before is not None and BRIDGE_KEY.search(text) is not None and _world_readable(self.path)
        atomic_write(self._target(), text, 0o600 if created or tighten else None)
        if tighten:
            return created, (f"tightened {self.platform.display(self.path)} from {before:04o} to 0600: it holds a "
                             "bridge key that other users could read")
        return created, ""

    def remove(self, created_file: bool) -> str:
        """Take our entry out again, restoring the original bytes when nothing else changed."""
        assert self.path is not None
        doc = self._document()
        doc.delete((*self.spec.servers, SERVER_NAME))
        if self.backup.exists():
            try:
                before = parse(self.spec.fmt, self.backup.read_text(encoding="utf-8"))
            except (OSError, DocumentError):
                before = None
            if before is not None and doc.get(self.spec.servers) == {} and before.get(self.spec.servers) is None:
                doc.delete(self.spec.servers)  # the servers object was ours too
            if before is not None and doc.data() == before.data():
                atomic_write(self._target(), self.backup.read_bytes(), self.backup.stat().st_mode & 0o7777)
                self.backup.unlink()
                return "restored the original file"
            self.backup.unlink()
        if created_file and not doc.get(self.spec.servers) and set(doc.data()) <= {self.spec.servers[0]}:
            self.path.unlink()
            return "removed the file it had created"
        atomic_write(self._target(), doc.dump())
        return f"removed the `{SERVER_NAME}` entry"


def file_client(key: str, platform: Platform) -> ConfigFileClient:
    return ConfigFileClient(next(spec for spec in FILE_CLIENTS if spec.key == key), platform)


# --- Clients configured by hand -----------------------------------------------------------------------


class ManualClient:
    """JetBrains AI Assistant keeps its MCP servers in the IDE's settings (Settings → Tools → AI Assistant →
    Model Context Protocol → Add → As JSON), not in a file of a documented format: print the entry to paste."""

    key = JETBRAINS
    label = CLIENT_LABELS[JETBRAINS]
    path: Path | None = None

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def manual_hint(self, entry: ServerEntry) -> str:
        snippet = json.dumps({"mcpServers": {SERVER_NAME: dump_entry(Shape.STANDARD, entry, {})}}, indent=2)
        return ("in the IDE: Settings → Tools → AI Assistant → Model Context Protocol (MCP) → Add → "
                f"As JSON, paste:\n{snippet}")


# --- Clients with an `mcp add` command ------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    entry: ServerEntry
    user_scope: bool
    status: str

    @property
    def connected(self) -> bool:
        return "Connected" in self.status and "Failed" not in self.status



class CliClient:
    """A client whose own CLI adds, shows and removes servers."""

    key: str
    label: str
    program: str

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.exe = shutil.which(self.program, path=platform.env.get("PATH", os.defpath))

    def add_argv(self, entry: ServerEntry) -> list[str]:
        raise NotImplementedError

    def remove_argv(self) -> list[str]:
        raise NotImplementedError

    def get_argv(self) -> list[str]:
        raise NotImplementedError

    def parse_get(self, stdout: str) -> Registration | None:
        raise NotImplementedError

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        # No bridge key (nor any other secret) in the child's environment either: it has no use for one.
        env = scrubbed(environ=self.platform.env)
        what = f"`{self.program} {' '.join(argv[1:3])}`"
        try:
            return subprocess.run(argv, env=env, cwd=self.platform.home, capture_output=True, text=True,
                                  timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            # Not the exception's text: it repeats the whole command line.
            raise ClientError(f"{what} did not finish within {CLI_TIMEOUT_S} s; check that "
                              f"`{self.program} --version` works, then run install again") from None
        except OSError as exc:
            raise ClientError(f"{what} could not start: {exc.strerror}") from None

    def get(self) -> Registration | None:
        """What the client reports for the `compass` server, or None when it has none."""
        assert self.exe is not None
        done = self._run(self.get_argv())
        return self.parse_get(done.stdout) if done.returncode == 0 else None

    def add(self, entry: ServerEntry) -> None:
        done = self._run(self.add_argv(entry))
        if done.returncode != 0:
            raise ClientError(f"`{self.program} mcp add` failed: {(done.stderr or done.stdout).strip()}")

    def remove(self) -> None:
        done = self._run(self.remove_argv())
        if done.returncode != 0:
            raise ClientError(f"`{self.program} mcp remove` failed: {(done.stderr or done.stdout).strip()}")


def _env_options(flag: str, entry: ServerEntry) -> list[str]:
    return [arg for name, value in sorted(entry.env.items()) for arg in (flag, f"{name}={value}")]


class ClaudeCode(CliClient):
    key = CLAUDE_CODE
    label = CLIENT_LABELS[CLAUDE_CODE]
    program = "claude"

    def add_argv(self, entry: ServerEntry) -> list[str]:
        # The name must come before -e: `-e` takes every following word as another variable.
        return [self.exe or "claude", "mcp", "add", "--scope", "user", SERVER_NAME, *_env_options("-e", entry),
                "--", entry.command, *entry.args]

    def remove_argv(self) -> list[str]:
        return [self.exe or "claude", "mcp", "remove", SERVER_NAME, "--scope", "user"]

    def get_argv(self) -> list[str]:
        return [self.exe or "claude", "mcp", "get", SERVER_NAME]

    def parse_get(self, stdout: str) -> Registration | None:
        return parse_mcp_get(stdout)


class Codex(CliClient):
    key = CODEX
    label = CLIENT_LABELS[CODEX]
    program = "codex"

    def add_argv(self, entry: ServerEntry) -> list[str]:
        return [self.exe or "codex", "mcp", "add", SERVER_NAME, *_env_options("--env", entry), "--",
                entry.command, *entry.args]

    def remove_argv(self) -> list[str]:
        return [self.exe or "codex", "mcp", "remove", SERVER_NAME]

    def get_argv(self) -> list[str]:
        return [self.exe or "codex", "mcp", "get", SERVER_NAME, "--json"]

    def parse_get(self, stdout: str) -> Registration | None:
        try:
            data = json.loads(stdout)
            transport = data["transport"]
            entry = ServerEntry(str(transport["command"]), tuple(str(a) for a in transport.get("args") or ()),
                                {str(k): str(v) for k, v in (transport.get("env") or {}).items()})
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return Registration(entry, True, "enabled" if data.get("enabled", True) else "disabled")


_FIELD = re.compile(r"^\s{2}(Scope|Status|Command|Args):\s?(.*)$")


def parse_mcp_get(text: str) -> Registration | None:
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
    return Registration(entry, "User" in fields.get("Scope", ""), fields.get("Status", ""))


Client = ClaudeCode | Codex | ConfigFileClient | ManualClient


def make_client(key: str, platform: Platform) -> Client:
    if key == CLAUDE_CODE:
        return ClaudeCode(platform)
    if key == CODEX:
        return Codex(platform)
    if key == JETBRAINS:
        return ManualClient(platform)
    return file_client(key, platform)

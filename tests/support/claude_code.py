"""Run the real Claude Code CLIs offline: isolated HOME, a scripted model on loopback, no telemetry.

Every Claude Code end-to-end test runs on each pinned CLI (`@every_claude_code`, ids `claude-<version>`):
the versions are `$COMPASS_TEST_CLAUDE_CODE_VERSIONS` (scripts/test exports it), else the pins written in
scripts/test itself — one place to bump them (docs/CLAUDE_CODE.md). A missing CLI skips locally and fails under
CI=true. `compass-bridge serve` runs as the CLI's MCP server with its stderr kept in a file, so a test can hold
it to log lines only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, claude_cli, require

_PIN = re.compile(r'^CLAUDE_CODE_(LEGACY|CURRENT)="([^"]+)"', re.MULTILINE)
PINS = dict(_PIN.findall((REPO / "scripts" / "test").read_text()))
"""The two pins written in scripts/test: LEGACY (MCP 2025-11-25) and CURRENT."""
assert set(PINS) == {"LEGACY", "CURRENT"}, f"scripts/test should pin CLAUDE_CODE_LEGACY and _CURRENT: {PINS}"
CURRENT = PINS["CURRENT"]
"""The pinned current release: MCP 2026-07-28, MCP tools deferred behind ToolSearch (docs/CLAUDE_CODE.md)."""
VERSIONS = os.environ.get("COMPASS_TEST_CLAUDE_CODE_VERSIONS", "").split() or [PINS["LEGACY"], CURRENT]
"""The versions to test: the environment's list (scripts/test exports it), else the two pins."""


@dataclass(frozen=True)
class ClaudeCode:
    """One pinned Claude Code CLI."""

    version: str

    @property
    def binary(self) -> Path:
        found = claude_cli(self.version)
        require(found is not None, f"the Claude Code CLI {self.version}",
                f"run scripts/test (it installs @anthropic-ai/claude-code@{self.version} into "
                f".cache/claude-code/{self.version})")
        assert found is not None
        return found

    def run(self, args: list[str], env: dict[str, str], cwd: Path,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The limit only turns a hang into a failure."""
        return subprocess.run([str(self.binary), *args], env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def agent_turn(self, prompt: str, mcp_config: dict[str, Any], allowed_tools: list[str], env: dict[str, str],
                   cwd: Path) -> dict[str, Any]:
        """One `claude -p` run with the given MCP servers; returns the CLI's JSON result."""
        with self.running_turn(prompt, mcp_config, allowed_tools, env, cwd) as turn:
            return self.finish_turn(turn)

    @contextmanager
    def running_turn(self, prompt: str, mcp_config: dict[str, Any], allowed_tools: list[str], env: dict[str, str],
                     cwd: Path) -> Iterator[subprocess.Popen[str]]:
        """A `claude -p` run under way, for a test that acts meanwhile (then `finish_turn`); stopped, by its
        PID, if the test leaves early. The CLI's MCP servers exit with it (their stdin closes)."""
        config_file = cwd / "mcp.json"
        config_file.write_text(json.dumps(mcp_config))
        turn = subprocess.Popen(
            [str(self.binary), "-p", prompt, "--mcp-config", str(config_file), "--strict-mcp-config",
             "--allowedTools", ",".join(allowed_tools), "--output-format", "json"],
            env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            yield turn
        finally:
            if turn.poll() is None:
                turn.kill()
            turn.communicate()

    def finish_turn(self, turn: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
        """Wait for the run to end (the limit only turns a hang into a failure); its JSON result."""
        out, err = turn.communicate(timeout=timeout)
        assert turn.returncode == 0, f"claude {self.version} failed ({turn.returncode}): {err[-2000:]} {out[-2000:]}"
        result: dict[str, Any] = json.loads(out)
        return result


every_claude_code = pytest.mark.parametrize(
    "claude", [pytest.param(ClaudeCode(v), id=f"claude-{v}") for v in VERSIONS])
"""Run the test once per pinned CLI, with `claude: ClaudeCode`."""


def claude_env(home: Path, model_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for an offline CLI with its own HOME. With `model_url`, the agent talks to that scripted
    model; without it (for `claude mcp ...`), no API key is set — with one, each `mcp` command takes ~18 s."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(HOME=str(home), CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_AUTOUPDATER="1",
               DISABLE_TELEMETRY="1", DISABLE_ERROR_REPORTING="1",
               # `claude -p` otherwise connects --mcp-config servers "fully async": the first model request
               # may go out before the server's tools are listed, and the test would race the server start.
               MCP_CONNECTION_NONBLOCKING="0", **extra)
    if model_url:
        env.update(ANTHROPIC_API_KEY="sk-ant-dummy", ANTHROPIC_BASE_URL=model_url)
    return env


# Points fd 2 at a file, then becomes the real command (same PID): the CLI keeps a server's stderr to itself.
_STDERR_TO_FILE = ("import os, sys; os.dup2(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 2); "
                   "os.execv(sys.argv[2], sys.argv[2:])")
_LOG_LINE = re.compile(r"serve: (DEBUG|INFO|WARNING|ERROR|CRITICAL): ")
"""What mcp_bridge.logs writes to stderr; anything else there (a Python warning, a traceback) is a defect."""


def serve_command(root: Path, stderr_file: Path) -> list[str]:
    """`compass-bridge serve --root <root>` with its stderr appended to `stderr_file`."""
    return [sys.executable, "-c", _STDERR_TO_FILE, str(stderr_file), sys.executable, "-m", "mcp_bridge", "serve",
            "--root", str(root)]


def bridge_config(home: Path, key: str, root: Path, stderr_file: Path, **env: str) -> dict[str, Any]:
    """An --mcp-config with compass-bridge as the server `compass`."""
    command, *args = serve_command(root, stderr_file)
    return {"mcpServers": {"compass": {
        "type": "stdio", "command": command, "args": args,
        "env": {"COMPASS_BRIDGE_HOME": str(home), "COMPASS_BRIDGE_KEY": key, **env}}}}


def assert_only_log_lines(stderr_file: Path) -> None:
    """The server wrote nothing to stderr but its own log lines (it did start: the file exists)."""
    text = stderr_file.read_text()
    stray = [line for line in text.splitlines() if line and not _LOG_LINE.match(line)]
    assert not stray, f"serve wrote more than log lines to stderr:\n{text[-3000:]}"

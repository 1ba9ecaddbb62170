"""Run the real Claude Code CLI offline: isolated HOME, a scripted model on loopback, no telemetry."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import claude_cli, require


def claude_binary() -> Path:
    found = claude_cli()
    require(found is not None, "the Claude Code CLI",
            "run scripts/test (it installs @anthropic-ai/claude-code into .cache/claude-code)")
    assert found is not None
    return found


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


def run_claude(args: list[str], env: dict[str, str], cwd: Path,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(claude_binary()), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def agent_turn(prompt: str, mcp_config: dict[str, Any], allowed_tool: str, env: dict[str, str], cwd: Path,
               ) -> dict[str, Any]:
    """One `claude -p` run with the given MCP servers; returns the CLI's JSON result."""
    config_file = cwd / "mcp.json"
    config_file.write_text(json.dumps(mcp_config))
    done = run_claude(["-p", prompt, "--mcp-config", str(config_file), "--strict-mcp-config",
                       "--allowedTools", allowed_tool, "--output-format", "json"], env, cwd)
    assert done.returncode == 0, f"claude failed ({done.returncode}): {done.stderr[-2000:]} {done.stdout[-2000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result

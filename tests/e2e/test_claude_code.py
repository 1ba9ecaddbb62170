"""The real Claude Code CLI, offline against a scripted model, uses compass-bridge over stdio."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.bridge import cli, create_key
from tests.support.claude_code import agent_turn, claude_env, run_claude
from tests.support.scripted_model import ScriptedModel

pytestmark = pytest.mark.e2e


def _server_config(home: Path, key: str, root: Path) -> dict[str, object]:
    return {"mcpServers": {"compass": {
        "type": "stdio", "command": sys.executable, "args": ["-m", "mcp_bridge", "serve", "--root", str(root)],
        "env": {"COMPASS_BRIDGE_HOME": str(home), "COMPASS_BRIDGE_KEY": key}}}}


def test_claude_code_reads_a_file_through_the_bridge(tmp_path: Path, bridge_home: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("the secret word is heliotrope\n")
    key = create_key(bridge_home, "claude-e2e", "read,write")["key"]

    with ScriptedModel("mcp__compass__read_file", {"path": "notes.txt"}) as model:
        result = agent_turn("read notes.txt", _server_config(bridge_home, key, project),
                            "mcp__compass__read_file", claude_env(tmp_path / "home", model.url), project)

    # The file's text went CLI → MCP server → tool → back through the CLI to the model.
    assert "heliotrope" in result["result"], result
    assert "mcp__compass__read_file" in model.offered_tools()
    # A read/write key is never offered run_command (admin).
    assert "mcp__compass__run_command" not in model.offered_tools()
    usage = json.loads(cli(bridge_home, "usage", "--json", "--key", "claude-e2e").stdout)
    assert {"tool": "read_file", "calls": 1, "failures": 0, "refusals": 0} .items() <= \
        next(t for t in usage["tools"] if t["tool"] == "read_file").items()
    assert usage["recent"][0]["client"]  # Claude Code named itself in initialize


def test_claude_mcp_list_reports_the_server_connected(tmp_path: Path, bridge_home: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    key = create_key(bridge_home, "claude-list", "read")["key"]
    env = claude_env(tmp_path / "home")
    # The name goes before -e: -e takes several values and would swallow it.
    added = run_claude(["mcp", "add", "--scope", "user", "compass", "-e", f"COMPASS_BRIDGE_HOME={bridge_home}",
                        "-e", f"COMPASS_BRIDGE_KEY={key}", "--", sys.executable, "-m", "mcp_bridge",
                        "serve", "--root", str(project)], env, project)
    assert added.returncode == 0, added.stderr
    listed = run_claude(["mcp", "list"], env, project)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("compass"))
    assert "Connected" in line and "Failed" not in line, listed.stdout

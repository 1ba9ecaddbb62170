"""The real Claude Code CLIs (every pinned version), offline against a scripted model, use compass-bridge over
stdio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bridge import cli, create_key
from tests.support.claude_code import (
    CURRENT,
    ClaudeCode,
    assert_only_log_lines,
    bridge_config,
    claude_env,
    every_claude_code,
    serve_command,
)
from tests.support.scripted_model import Call, ScriptedModel

pytestmark = pytest.mark.e2e


@every_claude_code
def test_claude_code_reads_a_file_through_the_bridge(claude: ClaudeCode, tmp_path: Path, bridge_home: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("the secret word is heliotrope\n")
    key = create_key(bridge_home, "claude-e2e", "read,write")["key"]
    stderr = tmp_path / "serve.stderr"

    with ScriptedModel([Call("mcp__compass__read_file", {"path": "notes.txt"})]) as model:
        result = claude.agent_turn("read notes.txt", bridge_config(bridge_home, key, project, stderr),
                                   ["mcp__compass__read_file"], claude_env(tmp_path / "home", model.url), project)

    # The file's text went CLI → MCP server → tool → back through the CLI to the model.
    assert "heliotrope" in result["result"], result
    assert "mcp__compass__read_file" in model.offered_tools()
    if claude.version == CURRENT:  # the current CLI defers MCP tools: the model had to search for it
        assert model.deferred("mcp__compass__read_file")
        assert model.loaded_through_search("mcp__compass__read_file")
    # A read/write key is never offered run_command (admin), not even by name.
    assert not any("mcp__compass__run_command" in json.dumps(r) for r in model.requests)
    usage = json.loads(cli(bridge_home, "usage", "--json", "--key", "claude-e2e").stdout)
    assert {"tool": "read_file", "calls": 1, "failures": 0, "refusals": 0} .items() <= \
        next(t for t in usage["tools"] if t["tool"] == "read_file").items()
    assert usage["recent"][0]["client"]  # Claude Code named itself (initialize, or _meta clientInfo)
    assert_only_log_lines(stderr)


@every_claude_code
def test_claude_mcp_list_reports_the_server_connected(claude: ClaudeCode, tmp_path: Path, bridge_home: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    key = create_key(bridge_home, "claude-list", "read")["key"]
    env = claude_env(tmp_path / "home")
    stderr = tmp_path / "serve.stderr"
    # The name goes before -e: -e takes several values and would swallow it.
    added = claude.run(["mcp", "add", "--scope", "user", "compass", "-e", f"COMPASS_BRIDGE_HOME={bridge_home}",
                        "-e", f"COMPASS_BRIDGE_KEY={key}", "--", *serve_command(project, stderr)], env, project)
    assert added.returncode == 0, added.stderr
    listed = claude.run(["mcp", "list"], env, project)
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith("compass"))
    assert "Connected" in line and "Failed" not in line, listed.stdout
    assert_only_log_lines(stderr)

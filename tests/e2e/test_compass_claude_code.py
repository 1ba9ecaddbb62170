"""The real Claude Code CLI, offline against a scripted model, calls a Compass tool through compass-bridge,
with the contract server as Compass."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.compass_server import CompassContractServer
from tests.support.bridge import cli, create_key
from tests.support.claude_code import agent_turn, claude_env
from tests.support.scripted_model import ScriptedModel

pytestmark = pytest.mark.e2e


def test_claude_code_queries_compass_through_the_bridge(tmp_path: Path, bridge_home: Path,
                                                        compass: CompassContractServer) -> None:
    project = tmp_path / "project"
    project.mkdir()
    compass_key = compass.create_key(compass.add_user("Ada Lovelace"), "read")
    key = create_key(bridge_home, "claude-compass", "read")["key"]
    config = {"mcpServers": {"compass": {
        "type": "stdio", "command": sys.executable, "args": ["-m", "mcp_bridge", "serve", "--root", str(project)],
        "env": {"COMPASS_BRIDGE_HOME": str(bridge_home), "COMPASS_BRIDGE_KEY": key,
                "COMPASS_URL": compass.url, "COMPASS_API_KEY": compass_key}}}}

    with ScriptedModel("mcp__compass__queryData", {"queryType": "customers", "search": "birch"}) as model:
        result = agent_turn("which customers match birch?", config, "mcp__compass__queryData",
                            claude_env(tmp_path / "home", model.url), project)

    # Compass's answer went contract server → bridge → Claude Code → the model.
    assert "Birch Homes" in result["result"], result
    assert "mcp__compass__queryData" in model.offered_tools()
    assert "mcp__compass__setTheme" not in model.offered_tools()  # neither key has write
    assert [c.body["args"] for c in compass.calls("queryData")] == [{"queryType": "customers", "search": "birch"}]
    usage = json.loads(cli(bridge_home, "usage", "--json", "--key", "claude-compass").stdout)
    assert next(t for t in usage["tools"] if t["tool"] == "queryData")["calls"] == 1

"""The real Claude Code CLIs (every pinned version), offline against a scripted model, call Compass tools — with
the contract server as Compass — and browser tools — a real headless Chromium with the reference extension and
the real native host — through compass-bridge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compass_server import CompassContractServer
from tests.support.bridge import cli, create_key
from tests.support.chromium import LIMIT_S, QuietHandler, headless_chromium, serve_http, wait_for
from tests.support.claude_code import (
    CURRENT,
    ClaudeCode,
    assert_only_log_lines,
    bridge_config,
    claude_env,
    every_claude_code,
)
from tests.support.scripted_model import Call, ScriptedModel

pytestmark = pytest.mark.e2e

QUERY = Call("mcp__compass__queryData", {"queryType": "customers", "search": "birch"})
PAGE_TEXT = Call("mcp__compass__browser_get_page_text", {})
STATUS = "mcp__compass__bridge_status"
"""What the model calls, on a CLI that offers MCP tools directly, while a tool it wants has not appeared yet."""


def _compass_env(compass: CompassContractServer) -> dict[str, str]:
    compass_key = compass.create_key(compass.add_user("Ada Lovelace"), "read")
    return {"COMPASS_URL": compass.url, "COMPASS_API_KEY": compass_key}


@every_claude_code
def test_claude_code_queries_compass_through_the_bridge(claude: ClaudeCode, tmp_path: Path, bridge_home: Path,
                                                        compass: CompassContractServer) -> None:
    project = tmp_path / "project"
    project.mkdir()
    key = create_key(bridge_home, "claude-compass", "read")["key"]
    stderr = tmp_path / "serve.stderr"
    config = bridge_config(bridge_home, key, project, stderr, **_compass_env(compass))

    with ScriptedModel([QUERY], wait_tool=STATUS) as model:
        result = claude.agent_turn("which customers match birch?", config, [QUERY.tool, STATUS],
                                   claude_env(tmp_path / "home", model.url), project)

    # Compass's answer went contract server → bridge → Claude Code → the model.
    assert "Birch Homes" in result["result"], result
    assert QUERY.tool in model.offered_tools()
    if claude.version == CURRENT:
        assert model.loaded_through_search(QUERY.tool)
    assert not any("mcp__compass__setTheme" in json.dumps(r) for r in model.requests)  # neither key has write
    assert [c.body["args"] for c in compass.calls("queryData")] == [QUERY.input]
    usage = json.loads(cli(bridge_home, "usage", "--json", "--key", "claude-compass").stdout)
    assert next(t for t in usage["tools"] if t["tool"] == "queryData")["calls"] == 1
    assert_only_log_lines(stderr)


class _Page(QuietHandler):
    def do_GET(self) -> None:
        self.send_html(b"<!doctype html><title>Claude e2e</title><p>The password is periwinkle.</p>")


@pytest.fixture
def page_url() -> Iterator[str]:
    with serve_http(_Page) as base_url:
        yield f"{base_url}/"


def _install_for_chromium(tmp_path: Path, bridge_home: Path) -> Path:
    """A Chromium profile whose native-messaging manifest and launcher the installer wrote, as for a user."""
    profile = tmp_path / "profile"
    installed = subprocess.run(
        [sys.executable, "-m", "mcp_bridge", "install", "--browser", "chromium", "--profile-dir", str(profile),
         "--no-clients"], capture_output=True, text=True,
        env={**os.environ, "HOME": str(tmp_path / "home"), "COMPASS_BRIDGE_HOME": str(bridge_home)})
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return profile


@every_claude_code
def test_one_claude_code_turn_calls_a_compass_tool_and_a_browser_tool(
        claude: ClaudeCode, tmp_path: Path, bridge_home: Path, compass: CompassContractServer, page_url: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    profile = _install_for_chromium(tmp_path, bridge_home)
    key = create_key(bridge_home, "claude-both", "read")["key"]
    stderr = tmp_path / "serve.stderr"
    config = bridge_config(bridge_home, key, project, stderr, **_compass_env(compass))

    with headless_chromium(profile, page_url, bridge_home / "run", tmp_path), \
            ScriptedModel([QUERY, PAGE_TEXT], wait_tool=STATUS) as model:
        result = claude.agent_turn("birch customers, and what does the page say?", config,
                                   [QUERY.tool, PAGE_TEXT.tool, STATUS], claude_env(tmp_path / "home", model.url),
                                   project)

    # Both answers reached the model in one turn: Compass's through the contract server, the page's through
    # the native host and the extension in a real Chromium.
    assert f"RESULT {QUERY.tool}: " in result["result"] and "Birch Homes" in result["result"], result
    assert f"RESULT {PAGE_TEXT.tool}: " in result["result"] and "periwinkle" in result["result"], result
    if claude.version == CURRENT:
        assert model.loaded_through_search(QUERY.tool) and model.loaded_through_search(PAGE_TEXT.tool)
    usage = json.loads(cli(bridge_home, "usage", "--json", "--key", "claude-both").stdout)
    calls = {t["tool"]: (t["calls"], t["failures"]) for t in usage["tools"]}
    assert calls["queryData"] == (1, 0) and calls["browser_get_page_text"] == (1, 0), usage["tools"]
    assert_only_log_lines(stderr)


@every_claude_code
def test_a_browser_opened_during_the_turn_reaches_the_model(claude: ClaudeCode, tmp_path: Path, bridge_home: Path,
                                                             page_url: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    profile = _install_for_chromium(tmp_path, bridge_home)
    key = create_key(bridge_home, "claude-late", "read")["key"]
    stderr = tmp_path / "serve.stderr"

    # Patience for the browser's start (LIMIT_S) and then the bridge's finding its host.
    with ScriptedModel([PAGE_TEXT], wait_tool=STATUS, patience_s=2 * LIMIT_S) as model, \
            claude.running_turn("what does the page say?", bridge_config(bridge_home, key, project, stderr),
                                [PAGE_TEXT.tool, STATUS], claude_env(tmp_path / "home", model.url), project) as turn:
        wait_for(lambda: bool(model.requests) or turn.poll() is not None, "the CLI's first model request")
        # No browser yet: the model was not told of any browser tool, not even by name.
        assert model.requests and PAGE_TEXT.tool not in json.dumps(model.requests[0]), model.requests[:1]
        # The user opens the browser while the model is at work; the bridge tells the CLI of the new tools
        # (tools/list_changed — on the subscriptions/listen stream in 2026-07-28), the CLI lists them again,
        # and the model's next look (ToolSearch, or the next request's tools) finds the tool.
        with headless_chromium(profile, page_url, bridge_home / "run", tmp_path):
            result = claude.finish_turn(turn, timeout=3 * LIMIT_S)

    assert f"RESULT {PAGE_TEXT.tool}: " in result["result"] and "periwinkle" in result["result"], result
    if claude.version == CURRENT:
        assert model.loaded_through_search(PAGE_TEXT.tool)
    assert_only_log_lines(stderr)

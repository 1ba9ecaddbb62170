"""Claude Code configuration CRUD: the tools' own rules (names, kinds, links, atomic writes), the MCP tools'
admin scope, and the HTTP endpoints refusing traversal and non-admin keys, each call in the usage log."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import CallContext, ToolOutput
from mcp_bridge.tools.claude_config import ClaudeConfig, ConfigNotFound, ConfigRefused, claude_config_source
from tests.doors.harness import Doors
from tests.support.messages_api import MessagesApi


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home" / "project").mkdir(parents=True)
    return tmp_path / "home"


@pytest.fixture
def config(home: Path) -> ClaudeConfig:
    return ClaudeConfig(PathPolicy([home / "project"]), home=home)


AGENT = "---\nname: reviewer\ndescription: Reviews code\n---\nYou review code.\n"


def test_round_trip_for_every_kind_user_and_project(config: ClaudeConfig, home: Path) -> None:
    project = str(home / "project")
    for where, base in ((None, home / ".claude"), (project, home / "project" / ".claude")):
        assert config.put("agents", "reviewer", AGENT, where)["created"] is True
        assert config.put("agents", "reviewer.md", AGENT + "More.\n", where)["created"] is False
        config.put("skills", "wrangler", "---\nname: wrangler\n---\n", where)
        config.put("rules", "style", "Use tabs.\n", where)
        config.put("claude_md", None, "# Memory\n", where)
        assert (base / "agents" / "reviewer.md").read_text() == AGENT + "More.\n"
        assert (base / "skills" / "wrangler" / "SKILL.md").exists() and (base / "rules" / "style.md").exists()
        assert config.get("claude_md", None, where)["content"] == "# Memory\n"
        assert [e["name"] for e in config.list("agents", where)] == ["reviewer"]
        assert [e["name"] for e in config.list("skills", where)] == ["wrangler"]
        assert [e["name"] for e in config.list("claude_md", where)] == ["CLAUDE.md"]
        assert not [p for p in base.rglob(".cb-*")]  # no temporary file left behind
        config.delete("skills", "wrangler", where)
        assert not (base / "skills" / "wrangler").exists()
        with pytest.raises(ConfigNotFound):
            config.get("skills", "wrangler", where)


@pytest.mark.parametrize("name", ["../settings", "..", ".hidden", "a/b", "a\\b", "", "x" * 65, "-flag",
                                  "settings.json", "ok.md.md"])
def test_names_that_are_paths_or_hidden_are_refused(config: ClaudeConfig, name: str) -> None:
    with pytest.raises(ConfigRefused):
        config.put("agents", name, "x", None)


def test_only_the_four_kinds_and_never_settings(config: ClaudeConfig, home: Path) -> None:
    for kind in ("settings", "../.claude.json", "commands", "."):
        with pytest.raises(ConfigRefused):
            config.put(kind, "x", "x", None)
    with pytest.raises(ConfigRefused):
        config.put("claude_md", "settings.json", "{}", None)
    assert not (home / ".claude" / "settings.json").exists() and not (home / ".claude.json").exists()


def test_links_and_projects_outside_the_roots_are_refused(config: ClaudeConfig, home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / ".claude").mkdir()
    (home / ".claude" / "agents").symlink_to(elsewhere)
    with pytest.raises(ConfigRefused, match="symbolic link"):
        config.put("agents", "x", "x", None)
    assert list(elsewhere.iterdir()) == []
    (home / ".claude" / "rules").mkdir()
    (home / ".claude" / "rules" / "style.md").symlink_to(home / ".bashrc")
    with pytest.raises(ConfigRefused, match="symbolic link"):
        config.get("rules", "style", None)
    with pytest.raises(Exception, match="outside"):
        config.list("agents", str(elsewhere))
    (home / "project" / ".claude").symlink_to(elsewhere)
    with pytest.raises(ConfigRefused, match="symbolic link"):
        config.put("rules", "x", "x", str(home / "project"))
    assert list(elsewhere.iterdir()) == []


def test_the_mcp_tools_need_admin(home: Path) -> None:
    source = claude_config_source(PathPolicy([home / "project"]))
    tools = {t.name: t for t in source.tools()}
    assert set(tools) == {"claude_config_list", "claude_config_get", "claude_config_put", "claude_config_delete"}
    assert {t.scope for t in tools.values()} == {Scope.ADMIN}
    project = str(home / "project")
    # A blocking handler (the work is files only): it answers on the calling thread, no event loop needed.
    out = tools["claude_config_put"].run({"kind": "rules", "name": "style", "content": "Tabs.",
                                          "project": project}, CallContext(key_name="admin"))
    assert isinstance(out, ToolOutput)
    assert out.structured is not None and out.structured["result"]["created"] is True
    assert (home / "project" / ".claude" / "rules" / "style.md").read_text() == "Tabs."


@pytest.fixture
def doors(tmp_path: Path) -> Iterator[Doors]:
    with MessagesApi() as api, Doors(tmp_path, api.url,
                                     '[agent.http]\nenabled = true\nlisten = "127.0.0.1:{http_port}"\n') as doors:
        yield doors


def test_http_config_endpoints(doors: Doors) -> None:
    admin = doors.key("admin", "admin")
    writer = doors.key("writer", "write")
    with doors.http(admin) as client:
        put = client.put("/v1/config/agents/reviewer", json={"content": AGENT})
        assert put.status_code == 200, put.text
        assert (doors.agent.home / ".claude" / "agents" / "reviewer.md").read_text() == AGENT
        assert client.get("/v1/config/agents/reviewer").json()["content"] == AGENT
        assert [e["name"] for e in client.get("/v1/config/agents").json()["entries"]] == ["reviewer"]
        project = client.put("/v1/config/claude_md/CLAUDE.md", params={"project": str(doors.project)},
                             json={"content": "# P"})
        assert project.status_code == 200 and (doors.project / ".claude" / "CLAUDE.md").read_text() == "# P"
        for path in ("/v1/config/agents/..%2F..%2F.claude.json", "/v1/config/agents/.hidden",
                     "/v1/config/settings/x", "/v1/config/agents/%2e%2e"):
            refused = client.put(path, json={"content": "{}"})
            assert refused.status_code in (400, 404), (path, refused.status_code)
        outside = client.get("/v1/config/agents", params={"project": "/etc"})
        assert outside.status_code == 400
        assert client.delete("/v1/config/agents/reviewer").status_code == 200
        assert client.get("/v1/config/agents/reviewer").status_code == 404
    with doors.http(writer) as client:
        refused = client.put("/v1/config/agents/x", json={"content": "x"})
        assert refused.status_code == 403 and "'admin' scope" in refused.json()["error"]["message"]
    assert not (doors.agent.home / ".claude.json").exists()
    assert not (doors.agent.home / ".claude" / "agents" / "x.md").exists()
    expected = {("admin", "claude_config_put", "ok"), ("admin", "claude_config_put", "refused"),
                ("admin", "claude_config_delete", "ok")}
    # The door's usage writer commits in batches off the request path: wait (bounded) for the last rows to land.
    deadline = time.monotonic() + 30
    while True:
        conn = sqlite3.connect(doors.agent.paths.database)
        rows = conn.execute(
            "SELECT key_name, tool, outcome FROM usage WHERE client = 'http-door' ORDER BY id").fetchall()
        conn.close()
        if expected <= set(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert ("admin", "claude_config_put", "ok") in rows and ("admin", "claude_config_put", "refused") in rows
    assert ("admin", "claude_config_delete", "ok") in rows

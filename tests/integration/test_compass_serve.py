"""Compass through the real server: `compass-bridge serve` as a subprocess, the SDK client in legacy mode
(as Claude Code 2.1.197 connects) or a standard-library client in either era, and the contract server as Compass.

The server reads COMPASS_URL / COMPASS_API_KEY itself and registers from the moment it starts; the Compass
tools arrive with `notifications/tools/list_changed` (a 2026-07-28 client: on its `subscriptions/listen` stream).
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

from tests.compass_server import CompassContractServer, User
from tests.support.bridge import create_key, text_of, tool_names, usage_rows
from tests.support.events import Occurrences
from tests.support.stdio_client import serve_process

pytestmark = pytest.mark.anyio

COMPASS_READ = {"queryData", "recallMemory", "listThemes", "listDashboards", "listInstalledSkills", "projectSummary"}
COMPASS_WRITE = COMPASS_READ | {"rememberContext", "setTheme"}
GUARD_S = 30  # a hang guard only; the waits end on a notification or a state change


class Notifications(Occurrences):
    """The client's message handler: counts `tools/list_changed` and lets a test wait for the next one."""

    def __init__(self) -> None:
        super().__init__(GUARD_S)

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self.note()


def agent_keys(home: Path, compass: CompassContractServer, scopes: str, *, compass_scopes: str | None = None,
               user: User | None = None) -> tuple[str, str]:
    """A Compass key (for `user`, by default a new one) and a bridge key named 'agent': (compass, bridge)."""
    compass_key = compass.create_key(user or compass.add_user("Ada Lovelace"), compass_scopes or scopes)
    return compass_key, create_key(home, "agent", scopes)["key"]


@asynccontextmanager
async def serve(home: Path, compass: CompassContractServer, compass_key: str, bridge_key: str, *,
                registered: bool = True) -> AsyncIterator[tuple[Client, Notifications]]:
    """The server with these keys, and its `tools/list_changed` notifications; unless `registered=False`,
    once the first of them (the Compass tools arrived) has come."""
    notifications = Notifications()
    project = home.parent / "project"
    project.mkdir(exist_ok=True)
    # Through sh so the server's stderr lands in a file the test can search for the key.
    params = StdioServerParameters(
        command="/bin/sh", args=["-c", 'exec "$0" -m mcp_bridge serve 2>>"$1"', sys.executable, str(stderr_of(home))],
        env={"COMPASS_BRIDGE_HOME": str(home), "COMPASS_BRIDGE_KEY": bridge_key,
             "COMPASS_URL": compass.url, "COMPASS_API_KEY": compass_key},
        cwd=project,
    )
    async with Client(params, mode="legacy", cache=None, read_timeout_seconds=60,
                      message_handler=notifications) as client:
        if registered:
            await notifications.next()
        yield client, notifications


def stderr_of(home: Path) -> Path:
    return home.parent / "serve-stderr.txt"


async def compass_status(client: Client) -> dict[str, Any]:
    result = await client.call_tool("bridge_status", {})
    assert not result.is_error, text_of(result)
    status: dict[str, Any] = json.loads(text_of(result))["compass"]
    return status


@pytest.mark.parametrize(("bridge_scopes", "compass_scopes", "visible"), [
    ("read", "write", COMPASS_READ),    # the bridge key limits
    ("admin", "read", COMPASS_READ),    # the Compass key limits
    ("write", "write", COMPASS_WRITE),  # both allow
])
async def test_a_compass_tool_needs_its_scope_in_both_keys(bridge_home: Path, compass: CompassContractServer,
                                                           bridge_scopes: str, compass_scopes: str,
                                                           visible: set[str]) -> None:
    user = compass.add_user("Ada Lovelace", role="admin")
    compass_key, bridge_key = agent_keys(bridge_home, compass, bridge_scopes, compass_scopes=compass_scopes,
                                         user=user)
    async with serve(bridge_home, compass, compass_key, bridge_key) as (client, _):
        assert (await tool_names(client)) & (COMPASS_WRITE | {"installSkill"}) == visible
        query = await client.call_tool("queryData", {"queryType": "projects", "search": "kitchen"})
        set_theme = await client.call_tool("setTheme", {"themeId": "mocha"})
    assert not query.is_error and json.loads(text_of(query))["data"][0]["id"] == "prj_2"
    if "setTheme" in visible:
        assert not set_theme.is_error and user.theme == "mocha"
        assert len(compass.calls("setTheme")) == 1
        return
    assert set_theme.is_error and user.theme == "native-compass" and compass.calls("setTheme") == []
    message = text_of(set_theme)
    if bridge_scopes == "read":
        assert "'setTheme' needs the 'write' scope" in message and "bridge key 'agent' has read" in message
    else:
        assert "unknown tool 'setTheme'" in message
    outcomes = {(r["tool"], r["outcome"]) for r in usage_rows(bridge_home)}
    assert ("queryData", "ok") in outcomes
    assert ("setTheme", "refused" if bridge_scopes == "read" else "failed") in outcomes


async def test_a_key_revoked_while_serving_removes_the_compass_tools(bridge_home: Path,
                                                                    compass: CompassContractServer) -> None:
    compass_key, bridge_key = agent_keys(bridge_home, compass, "read")
    async with serve(bridge_home, compass, compass_key, bridge_key) as (client, notifications):
        assert await tool_names(client) >= COMPASS_READ
        compass.revoke(compass_key)
        refused = await client.call_tool("listDashboards", {})
        await notifications.next()
        names = await tool_names(client)
        status = await compass_status(client)
        local = await client.call_tool("list_directory", {"path": "."})
    assert refused.is_error and "Compass rejected the API key" in text_of(refused)
    assert "compass login" in text_of(refused) and "withdrawn" in text_of(refused)
    assert not names & COMPASS_READ and "read_file" in names
    assert status["state"] == "key rejected" and "API key revoked" in status["problem"]
    assert not local.is_error  # the local tools carry on
    assert notifications.count == 2


async def test_compass_down_at_start_then_up(bridge_home: Path, compass: CompassContractServer) -> None:
    compass_key, bridge_key = agent_keys(bridge_home, compass, "read")
    compass.go_down()
    async with serve(bridge_home, compass, compass_key, bridge_key, registered=False) as (client, notifications):
        with anyio.fail_after(GUARD_S):
            while (status := await compass_status(client))["state"] != "unreachable":
                await anyio.sleep(0.05)
        assert "connection refused" in status["problem"]
        names = await tool_names(client)
        assert "read_file" in names and not names & COMPASS_READ
        assert notifications.count == 0

        compass.come_up()
        await notifications.next()
        assert await tool_names(client) >= COMPASS_READ
        result = await client.call_tool("queryData", {"queryType": "customers", "limit": 2})
        status = await compass_status(client)
    assert not result.is_error and json.loads(text_of(result))["count"] == 2
    assert status["state"] == "registered" and status["user"]["name"] == "Ada Lovelace"


async def test_the_context_is_offered_as_resources(bridge_home: Path, compass: CompassContractServer) -> None:
    compass_key, bridge_key = agent_keys(bridge_home, compass, "read")
    async with serve(bridge_home, compass, compass_key, bridge_key) as (client, _):
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        memories = await client.read_resource("compass://context/memories")
        status = await compass_status(client)
    assert {"compass://context/memories", "compass://context/dashboards", "compass://context/skills"} <= uris
    content = memories.contents[0]
    assert isinstance(content, types.TextResourceContents) and content.mime_type == "application/json"
    assert json.loads(content.text)[0]["content"] == "Prefers weekly summaries on Mondays"
    assert status["context"]["memories"] == 1 and status["context"]["dashboards"] == ["Cash flow"]


async def test_the_compass_key_is_never_logged(bridge_home: Path, compass: CompassContractServer) -> None:
    compass_key, bridge_key = agent_keys(bridge_home, compass, "write")
    async with serve(bridge_home, compass, compass_key, bridge_key) as (client, notifications):
        assert not (await client.call_tool("listThemes", {})).is_error
        await client.read_resource("compass://context/skills")
        # Failures, including a Compass that echoes the key back, go into the usage log and the server log.
        compass.fault("status", status=500, message=f"cannot parse {compass_key}", tool="queryData")
        failed = await client.call_tool("queryData", {"queryType": "invoices"})
        compass.fault("drop", tool="setTheme")
        dropped = await client.call_tool("setTheme", {"themeId": "mocha"})
        compass.fault("status", status=401, message=f"unknown key {compass_key}", tool="listThemes")
        rejected = await client.call_tool("listThemes", {})
        await notifications.next()
        await compass_status(client)
    assert failed.is_error and dropped.is_error and rejected.is_error
    for result in (failed, dropped, rejected):
        assert compass_key not in text_of(result)

    log = "".join(p.read_text() for p in (bridge_home / "logs").glob("serve-*.log*"))  # one file per process
    assert "registered with Compass" in log and "Compass tools withdrawn" in log
    assert {r["outcome"] for r in usage_rows(bridge_home) if r["tool"] in ("queryData", "listThemes")} >= {"failed"}
    searched = [p for p in bridge_home.rglob("*") if p.is_file()] + [stderr_of(bridge_home)]
    assert any(p.suffix == ".sqlite3" for p in searched)
    for path in searched:
        assert compass_key.encode() not in path.read_bytes(), path


def test_modern_client_gets_the_compass_tools_on_its_listen_stream(bridge_home: Path,
                                                                   compass: CompassContractServer) -> None:
    compass_key, bridge_key = agent_keys(bridge_home, compass, "read")
    env = {"COMPASS_URL": compass.url, "COMPASS_API_KEY": compass_key}
    with serve_process(bridge_home, "modern", key=bridge_key, env=env) as client:
        listen_id = client.request("subscriptions/listen", {"notifications": {"toolsListChanged": True}})
        names = client.tool_names()  # answered with what is known: at once, Compass or not
        while not names >= COMPASS_READ:
            notice = client.notification("notifications/tools/list_changed")  # on the listen stream
            assert notice["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen_id
            names = client.tool_names()
        query = client.call_tool("queryData", {"queryType": "projects", "search": "kitchen"})
        assert query["isError"] is False and query["resultType"] == "complete"
    assert ("queryData", "ok") in {(r["tool"], r["outcome"]) for r in usage_rows(bridge_home)}


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_tools_list_never_waits_on_a_silent_compass(bridge_home: Path, era: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections (backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = {"COMPASS_URL": url, "COMPASS_API_KEY": "ck_" + "a" * 40}
        with serve_process(bridge_home, era, env=env) as client:
            client.open()
            assert {"read_file", "bridge_status"} <= client.tool_names()
            status = client.call_tool("bridge_status", {})["structuredContent"]
            assert status["compass"]["state"] == "connecting"  # still waiting on Compass, and we were answered

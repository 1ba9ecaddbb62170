"""The Compass client and tool source against the contract server (real HTTP on 127.0.0.1).

The bridge-key half of "the scope must be in both keys" is the server's gate (test_compass_serve.py);
here: the Compass-key half, registration, retries, failures, withdrawal on 401, the context resources,
and the `compass` CLI.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_bridge.compass.client import CompassClient, CompassUnavailable, KeyRejected
from mcp_bridge.compass.credentials import ApiKey, save_credentials
from mcp_bridge.compass.source import CompassSource
from mcp_bridge.config import CompassSettings
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import TextContent, Tool, ToolFailure, ToolOutput
from tests.compass_server import REGISTER, TOOL_SCOPES, CompassContractServer
from tests.support.bridge import cli
from tests.support.events import Occurrences
from tests.support.tool_calls import invoke

pytestmark = pytest.mark.anyio

READ = {"queryData", "recallMemory", "listThemes", "listDashboards", "listInstalledSkills", "projectSummary"}
WRITE = READ | {"rememberContext", "setTheme"}
ADMIN = WRITE | {"installSkill", "uninstallSkill", "toggleInstalledSkill"}
GUARD_S = 20  # a hang guard only: every wait below ends on an event or a state change
FAST = CompassSettings(connect_timeout_s=2.0, timeout_s=2.0)
# So that retries happen within a test; the defaults are 1 s, doubling up to 60 s.
QUICK_RETRIES = {"retry_initial_s": 0.02, "retry_max_s": 0.1}


def new_key(compass: CompassContractServer, scopes: str = "write", role: str = "admin") -> str:
    return compass.create_key(compass.add_user("Ada Lovelace", role=role), scopes)


def make_source(compass: CompassContractServer, key: str, tmp_path: Path,
                settings: CompassSettings = FAST) -> CompassSource:
    paths = StatePaths(tmp_path / "c", tmp_path / "d", tmp_path / "l", tmp_path / "r")
    return CompassSource.from_environment(paths, settings, {"COMPASS_URL": compass.url, "COMPASS_API_KEY": key},
                                          **QUICK_RETRIES)


async def until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(GUARD_S):
        while not condition():
            await anyio.sleep(0.01)


@asynccontextmanager
async def running(source: CompassSource, *, registered: bool = True) -> AsyncIterator[Occurrences]:
    """Run `source`, counting its changes (the first is registration, awaited unless `registered=False`)."""
    changes = Occurrences(GUARD_S)
    source.subscribe(changes.note)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        if registered:
            await changes.next()
        yield changes
        tg.cancel_scope.cancel()


def tool(source: CompassSource, name: str) -> Tool:
    return next(t for t in source.tools() if t.name == name)


async def call(source: CompassSource, name: str, args: dict[str, Any] | None = None) -> ToolOutput:
    return await invoke(tool(source, name), args or {})


async def failure(source: CompassSource, name: str, args: dict[str, Any] | None = None) -> str:
    with pytest.raises(ToolFailure) as caught:
        await call(source, name, args)
    return str(caught.value)


# -- registration and the tool list ------------------------------------------------------------


@pytest.mark.parametrize(("scopes", "role", "expected"), [
    ("read", "admin", READ), ("write", "admin", WRITE), ("admin", "admin", ADMIN),
    ("admin", "member", WRITE),  # Compass also requires the admin role for the admin tools
])
async def test_tools_follow_the_compass_key_and_role(compass: CompassContractServer, tmp_path: Path,
                                                     scopes: str, role: str, expected: set[str]) -> None:
    key = new_key(compass, scopes, role)
    source = make_source(compass, key, tmp_path)
    async with running(source):
        assert {t.name for t in source.tools()} == expected
        for t in source.tools():
            assert t.scope is Scope[(TOOL_SCOPES.get(t.name) or "read").upper()], t.name
        status = source.status()
    assert status["state"] == "registered" and status["tools"] == len(expected)
    assert status["user"] == {"id": compass.user_of(key).id, "name": "Ada Lovelace", "role": role}


async def test_schemas_are_the_bridge_s_unless_compass_sends_one(compass: CompassContractServer,
                                                                 tmp_path: Path) -> None:
    source = make_source(compass, new_key(compass, "admin"), tmp_path)
    async with running(source):
        query = tool(source, "queryData")
        assert "project_operations" in query.input_schema["properties"]["queryType"]["enum"]
        assert query.hints.read_only and query.description == "Query the application database by query type."
        assert tool(source, "uninstallSkill").hints.destructive
        summary = tool(source, "projectSummary")  # unknown to the bridge: Compass's schema, hints from its scope
        assert summary.input_schema["required"] == ["projectId"]
        assert summary.hints.read_only


async def test_compass_s_over_announced_and_unusable_tools_are_not_offered(compass: CompassContractServer,
                                                                          tmp_path: Path) -> None:
    compass.announce_all = True
    compass.extra_tools += [{"name": "ownerTool", "description": "x", "scope": "owner"},
                            {"name": "bad name!", "description": "x", "scope": "read"}]
    source = make_source(compass, new_key(compass, "read"), tmp_path)
    async with running(source):
        assert {t.name for t in source.tools()} == READ
        hidden = source.status()["hidden_tools"]
        assert hidden["setTheme"] == "needs the 'write' scope in the Compass API key, which has read"
        assert hidden["installSkill"] == "needs the 'admin' scope in the Compass API key, which has read"
        assert "'owner'" in hidden["ownerTool"] and "not a valid MCP tool name" in hidden["bad name!"]


async def test_the_compass_key_scope_is_checked_again_at_call_time(compass: CompassContractServer,
                                                                  tmp_path: Path) -> None:
    key = new_key(compass, "write")
    source = make_source(compass, key, tmp_path)
    async with running(source) as changes:
        set_theme = tool(source, "setTheme")  # what a server holds while the call is on its way
        compass.set_scopes(key, "read")
        await source.check()
        await changes.next()
        assert "setTheme" not in {t.name for t in source.tools()}
        with pytest.raises(ToolFailure) as caught:
            await invoke(set_theme, {"themeId": "mocha"})
    message = str(caught.value)
    assert "needs the 'write' scope in both keys" in message and "bridge key allows it" in message
    assert "Compass API key" in message and "has read" in message and "compass login" in message
    assert compass.calls("setTheme") == []  # refused before anything reached Compass


async def test_compass_refuses_an_admin_tool_to_a_user_without_the_admin_role(compass: CompassContractServer,
                                                                             tmp_path: Path) -> None:
    compass.announce_all = True
    source = make_source(compass, new_key(compass, "admin", role="member"), tmp_path)
    async with running(source):
        message = await failure(source, "installSkill", {"source": "cloudflare/skills/wrangler"})
    assert "Compass refused it: admin role required" in message
    assert [s["name"] for s in compass.skills()] == ["wrangler"]


# -- calls -------------------------------------------------------------------------------------


async def test_a_read_tool_returns_compass_s_result(compass: CompassContractServer, tmp_path: Path) -> None:
    source = make_source(compass, new_key(compass, "read"), tmp_path)
    async with running(source):
        output = await call(source, "queryData", {"queryType": "customers", "search": "acme"})
        detail = await call(source, "queryData", {"queryType": "project_detail", "id": "prj_2"})
        message = await failure(source, "queryData", {"queryType": "vendor_detail"})
    assert output.structured == {"data": [{"id": "cus_1", "name": "Acme Builders", "email": "office@acme.example"}],
                                 "count": 1}
    first = output.content[0]
    assert isinstance(first, TextContent)
    assert json.loads(first.text) == output.structured
    assert detail.structured is not None and detail.structured["data"]["name"] == "Birch kitchen"
    assert message == "Compass tool 'queryData' failed in Compass: id required for detail query"


async def test_a_write_tool_changes_compass_and_refreshes_the_context(compass: CompassContractServer,
                                                                      tmp_path: Path) -> None:
    key = new_key(compass, "write")
    source = make_source(compass, key, tmp_path)
    async with running(source):
        memories = next(r for r in source.resources() if r.uri == "compass://context/memories")
        assert "Fridays" not in await memories.read()
        before = len(compass.registrations())
        await call(source, "rememberContext", {"content": "Invoices go out on Fridays", "memoryType": "workflow"})
        await until(lambda: len(compass.registrations()) > before and source.status()["context"]["memories"] == 2)
        assert "Invoices go out on Fridays" in await memories.read()
    assert compass.user_of(key).memories[-1]["content"] == "Invoices go out on Fridays"


@pytest.mark.parametrize("fault", [{"kind": "status", "status": 503}, {"kind": "status", "status": 502},
                                   {"kind": "drop"}, {"kind": "delay", "delay_s": 30.0}])
async def test_a_read_tool_is_retried_once_on_a_transient_failure(compass: CompassContractServer, tmp_path: Path,
                                                                  fault: dict[str, Any]) -> None:
    source = make_source(compass, new_key(compass, "read"), tmp_path, CompassSettings(timeout_s=0.5))
    async with running(source):
        compass.fault(**fault, tool="listThemes")
        output = await call(source, "listThemes")
        assert output.structured is not None and output.structured["active"] == "native-compass"
        assert len(compass.calls("listThemes")) == 2

        compass.fault(**fault, tool="listDashboards", times=2)
        message = await failure(source, "listDashboards")
        assert len(compass.calls("listDashboards")) == 2  # once retried, then the error
    assert "Compass tool 'listDashboards'" in message and "try again" in message


@pytest.mark.parametrize(("fault", "may_have_run"), [
    ({"kind": "status", "status": 503}, False), ({"kind": "drop"}, True), ({"kind": "delay", "delay_s": 30.0}, True),
])
async def test_a_write_tool_is_never_retried(compass: CompassContractServer, tmp_path: Path,
                                             fault: dict[str, Any], may_have_run: bool) -> None:
    key = new_key(compass, "write")
    source = make_source(compass, key, tmp_path, CompassSettings(timeout_s=0.5))
    async with running(source):
        compass.fault(**fault, tool="setTheme")
        message = await failure(source, "setTheme", {"themeId": "mocha"})
    assert len(compass.calls("setTheme")) == 1
    assert ("may have been applied" in message) is may_have_run, message
    assert ("check in Compass before calling it again" in message) is may_have_run


async def test_a_500_is_reported_with_compass_s_text_and_not_retried(compass: CompassContractServer,
                                                                     tmp_path: Path) -> None:
    source = make_source(compass, new_key(compass, "read"), tmp_path)
    async with running(source):
        compass.fault("status", status=500, message="database is locked", tool="queryData")
        message = await failure(source, "queryData", {"queryType": "invoices"})
    assert message == "Compass tool 'queryData': Compass answered HTTP 500 (database is locked)"
    assert len(compass.calls("queryData")) == 1


async def test_a_slow_compass_times_out_with_a_clear_message(compass: CompassContractServer, tmp_path: Path) -> None:
    source = make_source(compass, new_key(compass, "read"), tmp_path, CompassSettings(timeout_s=0.3))
    async with running(source):
        compass.fault("delay", delay_s=30.0, times=None, tool="recallMemory")
        message = await failure(source, "recallMemory", {"query": "weekly"})
    assert "did not answer within 0.3 s" in message and "timeout_s in the [compass] section" in message


async def test_a_redirect_is_not_followed(compass: CompassContractServer, tmp_path: Path) -> None:
    source = make_source(compass, new_key(compass, "read"), tmp_path)
    async with running(source):
        compass.fault("status", status=307, tool="listThemes")
        message = await failure(source, "listThemes")
    assert "does not follow redirects" in message
    assert len(compass.calls("listThemes")) == 1


# -- losing and finding Compass ----------------------------------------------------------------


async def test_a_key_revoked_while_running_withdraws_the_tools(compass: CompassContractServer,
                                                               tmp_path: Path) -> None:
    key = new_key(compass, "read")
    source = make_source(compass, key, tmp_path)
    async with running(source) as changes:
        compass.revoke(key)
        message = await failure(source, "queryData", {"queryType": "projects"})
        await changes.next()
        assert source.tools() == () and source.resources() == ()
        status = source.status()
        assert status["state"] == "key rejected" and "API key revoked" in status["problem"]
        assert "compass login" in status["problem"]
        # It keeps trying to register, with backoff, in case the key is reinstated.
        seen = len(compass.registrations())
        await until(lambda: len(compass.registrations()) >= seen + 2)
    assert message.startswith("Compass rejected the API key (revoked or expired?); Compass says: API key revoked")
    assert "withdrawn" in message
    assert changes.count == 2


async def test_a_key_revoked_between_calls_is_noticed_on_the_next_registration(compass: CompassContractServer,
                                                                               tmp_path: Path) -> None:
    key = new_key(compass, "read")
    source = make_source(compass, key, tmp_path)
    async with running(source) as changes:
        stale = tool(source, "queryData")  # as a server might hold it while a call is on its way
        compass.revoke(key)
        await source.check()
        await changes.next()
        assert source.tools() == ()
        with pytest.raises(ToolFailure) as caught:
            await invoke(stale, {"queryType": "projects"})
    message = str(caught.value)
    assert "not available now" in message and "API key revoked" in message
    assert compass.calls("queryData") == []


async def test_a_new_key_from_compass_login_is_picked_up_without_a_restart(compass: CompassContractServer,
                                                                          tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "c", tmp_path / "d", tmp_path / "l", tmp_path / "r")
    user = compass.add_user("Ada Lovelace")
    old_key, new_key_ = compass.create_key(user, "read"), compass.create_key(user, "write")
    save_credentials(paths, compass.url, ApiKey(old_key))
    source = CompassSource.from_environment(paths, FAST, {}, **QUICK_RETRIES)
    async with running(source) as changes:
        assert {t.name for t in source.tools()} == READ
        compass.revoke(old_key)
        await failure(source, "listThemes")
        await changes.next()
        save_credentials(paths, compass.url, ApiKey(new_key_))  # what `compass login` does
        await changes.next()
        assert {t.name for t in source.tools()} == WRITE
        assert (await call(source, "setTheme", {"themeId": "corpo"})).structured is not None
    assert compass.registrations()[-1].headers["authorization"] == f"Bearer {new_key_}"
    assert user.theme == "corpo"


async def test_compass_down_at_start_then_up(compass: CompassContractServer, tmp_path: Path) -> None:
    source = make_source(compass, new_key(compass, "read"), tmp_path)
    compass.go_down()
    async with running(source, registered=False) as changes:
        await until(lambda: source.status()["state"] == "unreachable")
        status = source.status()
        assert source.tools() == () and "connection refused" in status["problem"]
        assert "next_attempt_in_s" in status
        compass.come_up()
        await changes.next()
        assert {t.name for t in source.tools()} == READ
        assert source.status()["state"] == "registered" and "problem" not in source.status()


async def test_ready_returns_after_the_first_attempt_whatever_its_outcome(compass: CompassContractServer,
                                                                             tmp_path: Path) -> None:
    up = make_source(compass, new_key(compass, "read"), tmp_path / "up")
    down = make_source(compass, new_key(compass, "read"), tmp_path / "down")
    with anyio.fail_after(GUARD_S):
        async with running(up, registered=False):
            await up.ready()
            assert up.status()["state"] == "registered"
        compass.go_down()
        async with running(down, registered=False):
            await down.ready()
            assert down.status()["state"] == "unreachable"
        await CompassSource(None, FAST).ready()  # not configured: nothing to wait for


async def test_tools_survive_an_outage_after_registration(compass: CompassContractServer, tmp_path: Path) -> None:
    source = make_source(compass, new_key(compass, "read"), tmp_path)
    async with running(source) as changes:
        compass.go_down()
        await source.check()
        assert {t.name for t in source.tools()} == READ
        assert "connection refused" in source.status()["last_error"]
        message = await failure(source, "listThemes")
        compass.come_up()
        await source.check()
    assert "cannot connect (connection refused)" in message
    assert changes.count == 1


async def test_registration_errors_name_the_problem(compass: CompassContractServer, tmp_path: Path) -> None:
    key = new_key(compass, "read")
    async with CompassClient(compass.url, ApiKey(key), FAST) as client:
        compass.fault("status", status=404, path=REGISTER)
        with pytest.raises(Exception, match=r"no bridge API at http://127\.0\.0\.1:\d+/api/bridge/register"):
            await client.register()
        compass.fault("status", status=429, path=REGISTER)
        with pytest.raises(Exception, match="limiting the request rate"):
            await client.register()
        compass.fault("drop", path=REGISTER)
        with pytest.raises(CompassUnavailable, match="closed the connection"):
            await client.register()
        compass.revoke(key)
        with pytest.raises(KeyRejected, match=r"revoked or expired\?\); Compass says: API key revoked"):
            await client.register()


# -- what the bridge sends, and where the key never goes ---------------------------------------


async def test_requests_carry_the_key_only_in_the_authorization_header(compass: CompassContractServer,
                                                                       tmp_path: Path) -> None:
    key = new_key(compass, "read")
    source = make_source(compass, key, tmp_path)
    async with running(source):
        await call(source, "queryData", {"queryType": "vendors", "limit": 1})
    register, query = compass.registrations()[0], compass.calls("queryData")[0]
    for request in (register, query):
        assert request.method == "POST" and request.headers["authorization"] == f"Bearer {key}"
        assert request.headers["user-agent"].startswith("compass-bridge/")
        assert request.headers["content-type"] == "application/json"
        assert key not in request.path and key not in json.dumps(request.body)
    assert register.body["client"]["name"] == "compass-bridge"
    assert query.body == {"tool": "queryData", "args": {"queryType": "vendors", "limit": 1}}


async def test_the_key_never_appears_in_status_errors_or_reprs(compass: CompassContractServer,
                                                               tmp_path: Path) -> None:
    key = new_key(compass, "read")
    source = make_source(compass, key, tmp_path, CompassSettings(timeout_s=0.3))
    texts: list[str] = []
    async with running(source):
        texts.append(json.dumps(source.status()))
        # Compass echoing the key back must not put it into a message either.
        faults: list[dict[str, Any]] = [{"kind": "status", "status": 500, "message": f"bad request from {key}"},
                                        {"kind": "status", "status": 403, "message": f"key {key} lacks scope"},
                                        {"kind": "delay", "delay_s": 30.0}]
        for fault in faults:
            compass.fault(**fault, times=2, tool="listThemes")
            texts.append(await failure(source, "listThemes"))
        compass.fault("status", status=401, message=f"unknown key {key}", tool="listThemes")
        texts.append(await failure(source, "listThemes"))
        texts.append(json.dumps(source.status()))
    async with CompassClient(compass.url, ApiKey(key), FAST) as client:
        texts.append(repr(client))
    assert any(key[:7] + "…" in t for t in texts)  # the scrubbed hint took the key's place
    for text in texts:
        assert key not in text, text


# -- configuration states ----------------------------------------------------------------------


def test_not_configured_offers_nothing_and_says_how(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "c", tmp_path / "d", tmp_path / "l", tmp_path / "r")
    source = CompassSource.from_environment(paths, CompassSettings(), environ={})
    assert source.tools() == () and source.resources() == ()
    status = source.status()
    assert status["configured"] is False and status["state"] == "not configured"
    assert "compass-bridge compass login" in status["problem"]
    anyio.run(source.run)  # returns at once: nothing to do


def test_only_a_configured_compass_asks_to_be_run(compass: CompassContractServer, tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "c", tmp_path / "d", tmp_path / "l", tmp_path / "r")
    # Built outside any event loop, as the server builds it: nothing of anyio's is made before `run()`.
    assert make_source(compass, new_key(compass), tmp_path).needs_running() is True
    assert CompassSource.from_environment(paths, CompassSettings(), environ={}).needs_running() is False
    unusable = {"COMPASS_URL": "http://compass.example.com", "COMPASS_API_KEY": "ck_" + "a" * 40}
    assert CompassSource.from_environment(paths, CompassSettings(), environ=unusable).needs_running() is False


def test_an_unusable_configuration_is_reported_not_raised(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "c", tmp_path / "d", tmp_path / "l", tmp_path / "r")
    key = "ck_" + "a" * 40
    source = CompassSource.from_environment(paths, CompassSettings(),
                                            environ={"COMPASS_URL": "http://compass.example.com",
                                                     "COMPASS_API_KEY": key})
    status = source.status()
    assert status["state"] == "invalid configuration" and "plain HTTP" in status["problem"]
    assert key not in json.dumps(status)


# -- the CLI -----------------------------------------------------------------------------------


def _login(home: Path, url: str, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_bridge", "compass", "login", "--url", url, "--key-stdin"],
                          input=key + "\n", env={**os.environ, "COMPASS_BRIDGE_HOME": str(home)},
                          capture_output=True, text=True)


def test_login_checks_the_key_and_stores_it_privately(compass: CompassContractServer, bridge_home: Path) -> None:
    key = new_key(compass, "write")
    done = _login(bridge_home, compass.url + "/", key)
    assert done.returncode == 0, done.stderr
    assert "as Ada Lovelace (role admin)" in done.stdout and "Compass key scopes: read,write" in done.stdout
    assert "rememberContext" in done.stdout and key not in done.stdout + done.stderr
    stored = bridge_home / "config" / "compass-credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    saved = json.loads(stored.read_text())
    assert (saved["url"], saved["key"], set(saved)) == (compass.url, key, {"url", "key", "saved_at", "binding"})

    status = cli(bridge_home, "compass", "status", "--json")
    reported = json.loads(status.stdout)
    assert reported["state"] == "registered" and reported["user"]["name"] == "Ada Lovelace"
    assert reported["tools"] == len(WRITE) and key not in status.stdout

    human = cli(bridge_home, "compass", "status")
    assert "registered" in human.stdout and "Cash flow" in human.stdout and key not in human.stdout

    out = cli(bridge_home, "compass", "logout")
    assert "Removed the stored Compass key" in out.stdout and not stored.exists()
    after = cli(bridge_home, "compass", "status", check=False)
    assert after.returncode == 1 and "not configured" in after.stdout


def test_login_with_a_rejected_key_stores_nothing(compass: CompassContractServer, bridge_home: Path) -> None:
    key = new_key(compass, "read")
    compass.revoke(key)
    done = _login(bridge_home, compass.url, key)
    assert done.returncode == 1
    assert "rejected this API key" in done.stderr and "Nothing was stored" in done.stderr
    assert key not in done.stdout + done.stderr
    assert not (bridge_home / "config" / "compass-credentials.json").exists()


def test_login_with_compass_down_stores_nothing(compass: CompassContractServer, bridge_home: Path) -> None:
    key = new_key(compass, "read")
    compass.go_down()
    done = _login(bridge_home, compass.url, key)
    assert done.returncode == 1 and "connection refused" in done.stderr and "Nothing was stored" in done.stderr
    assert not (bridge_home / "config" / "compass-credentials.json").exists()


@pytest.mark.parametrize(("url", "key", "why"), [
    ("http://compass.example.com", "ck_" + "a" * 40, "plain HTTP"),
    ("https://compass.example.com", "ck_short", "not a Compass API key"),
])
def test_login_refuses_bad_input_before_any_request(bridge_home: Path, url: str, key: str, why: str) -> None:
    done = _login(bridge_home, url, key)
    assert done.returncode == 2 and why in done.stderr and key not in done.stderr

"""The serving core in memory: both protocol eras, the call pipeline, change notices, bad input, shutdown.

The real front end, catalog, pipeline, gate, key store and usage log (SQLite in the test's state home), fed
line by line by an independent client (`RawClient`) and by the official SDK client in both of its modes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import mcp_types as types
import mcp_types.version as sdk_versions
import pytest
from mcp import Client
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types import _v2025_11_25 as handshake_wire
from mcp_types import _v2026_07_28 as modern_wire

from mcp_bridge import logs
from mcp_bridge.config import Config
from mcp_bridge.extension_id import configured_files, export_extension, stable_extension_dir
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.paths import state_paths
from mcp_bridge.protocol import eras, frontend, wire
from mcp_bridge.scopes import Scope
from mcp_bridge.sources import build_sources
from mcp_bridge.stdio_transport import _Lines
from mcp_bridge.tools.base import READ_ONLY, CallContext, StaticSource, Tool, ToolOutput
from tests.support.bridge import usage_rows
from tests.support.memory_bridge import (
    ENVELOPE,
    GUARD_S,
    MODERN,
    ChangingSource,
    running_bridge,
    sdk_transport,
    until,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# demo\nhello\n")
    return root


def local_sources(root: Path) -> list[Any]:
    paths = state_paths().ensure()
    return build_sources(paths, Config(), PathPolicy([root]))[:1]  # the local tools only


def tool(name: str, run: Any, scope: Scope = Scope.READ) -> Tool:
    return Tool(name, f"test tool {name}", scope, READ_ONLY, {"type": "object"}, run)


def held_tool(name: str, release: threading.Event, text: str) -> Tool:
    """A tool that answers `text` once `release` is set; an unset, unshared event holds it until cancelled."""

    async def held(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        await until(release)
        return ToolOutput.text(text)

    return tool(name, held)


# -- the wire vocabulary matches the SDK's --------------------------------------------------------


def test_codes_and_versions_match_the_sdk() -> None:
    assert (wire.PARSE_ERROR, wire.INVALID_REQUEST, wire.METHOD_NOT_FOUND, wire.INVALID_PARAMS,
            wire.INTERNAL_ERROR, wire.UNSUPPORTED_PROTOCOL_VERSION) == (
        types.PARSE_ERROR, types.INVALID_REQUEST, types.METHOD_NOT_FOUND, types.INVALID_PARAMS,
        types.INTERNAL_ERROR, types.UNSUPPORTED_PROTOCOL_VERSION)
    assert eras.HANDSHAKE_VERSIONS == sdk_versions.HANDSHAKE_PROTOCOL_VERSIONS
    assert eras.MODERN_VERSIONS == sdk_versions.MODERN_PROTOCOL_VERSIONS
    assert eras.PROTOCOL_VERSION_KEY == types.PROTOCOL_VERSION_META_KEY
    assert eras.CLIENT_CAPABILITIES_KEY == types.CLIENT_CAPABILITIES_META_KEY
    assert eras.SERVER_INFO_KEY == types.SERVER_INFO_META_KEY


# -- the SDK client as oracle, both modes ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_sdk_client_lists_and_calls_in_both_eras(bridge_home: Path, project: Path, mode: str) -> None:
    async with running_bridge(bridge_home, project, local_sources(project)) as bridge, \
            Client(sdk_transport(bridge.transport), mode=mode, cache=None,
                   read_timeout_seconds=10) as client:
        listed = await client.list_tools()
        names = {t.name for t in listed.tools}
        assert {"bridge_status", "read_file", "run_command"} <= names
        read = await client.call_tool("read_file", {"path": "README.md"})
        assert not read.is_error and isinstance(read.content[0], types.TextContent)
        assert "hello" in read.content[0].text
        listing = await client.call_tool("list_directory", {"path": "."})
        assert listing.structured_content is not None
        assert {e["name"] for e in listing.structured_content["entries"]} == {"README.md", "src"}
        templates = await client.list_resource_templates()
        assert templates.resource_templates == []
    rows = usage_rows(bridge_home)
    assert [(r["tool"], r["outcome"], r["key_name"]) for r in rows] == [
        ("read_file", "ok", "agent"), ("list_directory", "ok", "agent")]


async def test_modern_answers_have_the_2026_shapes(bridge_home: Path, project: Path) -> None:
    async with running_bridge(bridge_home, project, local_sources(project)) as bridge:
        raw = bridge.raw
        discover = await raw.call("server/discover", modern=True)
        modern_wire.DiscoverResult.model_validate(discover["result"])
        assert discover["result"]["supportedVersions"] == [MODERN]
        listed = await raw.call("tools/list", modern=True)
        body = modern_wire.ListToolsResult.model_validate(listed["result"])
        assert body.result_type == "complete" and body.cache_scope == "private"
        assert listed["result"]["_meta"][types.SERVER_INFO_META_KEY]["name"] == "compass-bridge"
        called = await raw.call("tools/call", {"name": "read_file", "arguments": {"path": "README.md"}}, modern=True)
        modern_wire.CallToolResult.model_validate(called["result"])
        for method in ("ping", "logging/setLevel"):
            refused = await raw.call(method, modern=True)
            assert refused["error"]["code"] == wire.METHOD_NOT_FOUND and MODERN in refused["error"]["message"]
        # No handshake was needed, and no request was ever sent to the client (no roots/list).
        assert raw.notifications == []


async def test_handshake_answers_have_the_2025_shapes(bridge_home: Path, project: Path) -> None:
    async with running_bridge(bridge_home, project, local_sources(project)) as bridge:
        raw = bridge.raw
        opened = (await raw.initialize())["result"]
        handshake_wire.InitializeResult.model_validate(opened)
        assert opened["protocolVersion"] == "2025-11-25" and opened["serverInfo"]["name"] == "compass-bridge"
        assert opened["capabilities"] == frontend.CAPABILITIES  # the one statement of them
        listed = (await raw.call("tools/list"))["result"]
        handshake_wire.ListToolsResult.model_validate(listed)
        assert "resultType" not in listed and "ttlMs" not in listed  # 2026-07-28 fields stay out of this era
        called = (await raw.call("tools/call", {"name": "list_directory", "arguments": {}}))["result"]
        handshake_wire.CallToolResult.model_validate(called)
        assert (await raw.call("ping"))["result"] == {}
        older = await raw.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                              "clientInfo": {"name": "old", "version": "1"}})
        assert older["result"]["protocolVersion"] == "2025-06-18"
        unknown = await raw.call("initialize", {"protocolVersion": "1999-01-01", "capabilities": {},
                                                "clientInfo": {"name": "odd", "version": "1"}})
        assert unknown["result"]["protocolVersion"] == "2025-11-25"  # the server's counter-offer


async def test_every_structured_result_has_a_declared_schema_and_json_text(bridge_home: Path, project: Path) -> None:
    async with running_bridge(bridge_home, project, local_sources(project)) as bridge:
        raw = bridge.raw
        await raw.initialize()
        tools = {t["name"]: t for t in (await raw.call("tools/list"))["result"]["tools"]}
        for name, args in (("bridge_status", {}), ("list_directory", {"path": "."}),
                           ("search_files", {"pattern": "*.md"}), ("write_file", {"path": "n.txt", "content": "x"}),
                           ("run_command", {"command": "echo hi"}), ("read_file", {"path": "README.md"})):
            result = (await raw.call("tools/call", {"name": name, "arguments": args}))["result"]
            assert result["isError"] is False, result
            if "structuredContent" not in result:
                assert "outputSchema" not in tools[name], name
                continue
            jsonschema.validate(result["structuredContent"], tools[name]["outputSchema"])
            assert json.loads(result["content"][0]["text"]) == result["structuredContent"], name


# -- every request gets an answer ------------------------------------------------------------------


async def test_malformed_input_is_answered_and_the_server_keeps_serving(bridge_home: Path, project: Path) -> None:
    async with running_bridge(bridge_home, project, local_sources(project)) as bridge:
        raw = bridge.raw
        cases: list[tuple[str | bytes, Any, int, str]] = [
            ("this is not json", None, wire.PARSE_ERROR, "not JSON"),
            ('[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', None, wire.INVALID_REQUEST, "batch"),
            ('{"id": 7, "method": "tools/list"}', 7, wire.INVALID_REQUEST, "jsonrpc"),
            ('{"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": "oops"}', 8, wire.INVALID_PARAMS,
             "params"),
            ('{"jsonrpc": "2.0", "id": 9, "method": 5}', 9, wire.INVALID_REQUEST, "method"),
            ('{"jsonrpc": "2.0", "id": 10, "method": "tools/list"}', 10, wire.INVALID_REQUEST, "initialize"),
            ('{"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"a": ' + "[" * 200 + "]" * 200 + "}}",
             11, wire.INVALID_REQUEST, "nested"),
            ('{"jsonrpc": "2.0", "id": 12, "params": ' + "[" * 5000 + "]" * 5000 + ', "method": "x"}', 12,
             wire.INVALID_REQUEST, "nested"),
        ]
        for line, expected_id, code, words in cases:
            raw.send_line(line)
            answer = await raw.next_message()
            assert answer["id"] == expected_id and answer["error"]["code"] == code, (line[:60], answer)
            assert words in answer["error"]["message"], answer
        await raw.initialize()
        unknown = await raw.call("tools/frobnicate")
        assert unknown["error"]["code"] == wire.METHOD_NOT_FOUND
        too_many = await raw.call("tools/call", {"name": "read_file", "arguments": {f"a{i}": i for i in range(300)}})
        assert too_many["error"]["code"] == wire.INVALID_PARAMS and "at most" in too_many["error"]["message"]
        bad_args = await raw.call("tools/call", {"name": "read_file", "arguments": {"path": 3, "bogus": 1}})
        text = bad_args["result"]["content"][0]["text"]
        assert bad_args["result"]["isError"] and "path: must be a string" in text and "bogus: unknown" in text
        future = {**ENVELOPE, types.PROTOCOL_VERSION_META_KEY: "2099-01-01"}
        unsupported = await raw.call("tools/list", {"_meta": future})
        assert unsupported["error"]["code"] == wire.UNSUPPORTED_PROTOCOL_VERSION
        assert unsupported["error"]["data"]["supported"] == [MODERN]
        no_caps = await raw.call("tools/list", {"_meta": {types.PROTOCOL_VERSION_META_KEY: MODERN}})
        assert no_caps["error"]["code"] == wire.INVALID_PARAMS and "clientCapabilities" in no_caps["error"]["message"]
        still = await raw.call("tools/call", {"name": "read_file", "arguments": {"path": "README.md"}})
        assert "hello" in still["result"]["content"][0]["text"]


def test_an_enormous_line_is_refused_unread_with_its_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_LINE_BYTES", 1000)
    lines = _Lines()
    big = b'{"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"x": "' + b"a" * 5000 + b'"}}\n'
    tail_id = b'{"method": "tools/call", "params": {"x": "' + b"b" * 5000 + b'"}, "jsonrpc": "2.0", "id": "t"}\n'
    for start in range(0, len(big), 700):  # split across reads
        lines.feed(big[start:start + 700])
    lines.feed(b'{"jsonrpc": "2.0", "id": 42, "method": "ping"}\n' + tail_id)
    first, second, third = list(lines.ready)
    assert isinstance(first, wire.Malformed) and first.id == 41 and "longer than" in first.message
    assert second == b'{"jsonrpc": "2.0", "id": 42, "method": "ping"}'
    assert isinstance(third, wire.Malformed) and third.id == "t"


# -- cancellation, progress, shutdown -------------------------------------------------------------


async def test_cancelled_call_stops_its_work_and_is_recorded(bridge_home: Path, project: Path) -> None:
    started, stopped = threading.Event(), threading.Event()

    async def forever(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        raise AssertionError("unreachable")

    async with running_bridge(bridge_home, project, [StaticSource("t", [tool("hang", forever)])]) as bridge:
        raw = bridge.raw
        await raw.initialize()
        call_id = raw.request("tools/call", {"name": "hang", "arguments": {}})
        await until(started)
        raw.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": call_id}})
        await until(stopped)
        after = await raw.call("ping")
        assert after["result"] == {}
        assert not raw.answered(call_id)  # no answer to a cancelled request
    rows = usage_rows(bridge_home)
    assert [(r["tool"], r["outcome"]) for r in rows] == [("hang", "failed")] and "cancelled" in rows[0]["error"]


async def test_progress_reaches_the_client(bridge_home: Path, project: Path) -> None:
    def counting(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        for i in range(3):
            call.report_progress(i + 1, 3, f"step {i + 1}")
        return ToolOutput.text("done")

    async with running_bridge(bridge_home, project, [StaticSource("t", [tool("count", counting)])]) as bridge:
        raw = bridge.raw
        answer = await raw.call("tools/call", {"name": "count", "arguments": {}, "_meta": {"progressToken": "p1"}},
                                modern=True)
        assert answer["result"]["content"][0]["text"] == "done"
        progress = [n["params"] for n in raw.notifications if n["method"] == "notifications/progress"]
        assert progress == [{"progressToken": "p1", "progress": i, "total": 3, "message": f"step {i}"}
                            for i in (1, 2, 3)]


async def test_requests_running_at_end_of_input_are_answered(bridge_home: Path, project: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frontend, "SHUTDOWN_GRACE_S", 0.2)
    release = threading.Event()
    source = StaticSource("t", [held_tool("slow", release, "finished"), held_tool("hang", threading.Event(), "")])
    async with running_bridge(bridge_home, project, [source]) as bridge:
        raw = bridge.raw
        slow_id = raw.request("tools/call", {"name": "slow", "arguments": {}}, modern=True)
        hang_id = raw.request("tools/call", {"name": "hang", "arguments": {}}, modern=True)
        listen_id = raw.request("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, modern=True)
        await raw.notification("notifications/subscriptions/acknowledged")
        raw.end_input()
        release.set()
        finished, abandoned, listen = (await raw.answer(slow_id), await raw.answer(hang_id),
                                       await raw.answer(listen_id))
    assert finished["result"]["content"][0]["text"] == "finished"
    assert abandoned["error"]["code"] == wire.REQUEST_ABANDONED and "closed stdin" in abandoned["error"]["message"]
    assert listen["result"]["_meta"][eras.SUBSCRIPTION_ID_KEY] == listen_id


# -- the catalog: never waits, and tells every client of changes ------------------------------------


async def test_lists_never_wait_on_sources_and_changes_reach_both_eras(bridge_home: Path, project: Path) -> None:
    changing = ChangingSource()

    async def echo(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        return ToolOutput.text("echo")

    async with running_bridge(bridge_home, project, [*local_sources(project), changing]) as bridge:
        raw = bridge.raw
        await until(changing.running)  # the source started with the server, before any request
        await raw.initialize()
        listed = await raw.call("tools/list")  # answered while the source is still busy
        assert not changing.release.is_set() and "browser_echo" not in json.dumps(listed)
        listen_id = raw.request("subscriptions/listen",
                                {"notifications": {"toolsListChanged": True, "promptsListChanged": True}}, modern=True)
        ack = await raw.notification("notifications/subscriptions/acknowledged")
        assert ack["params"] == {"notifications": {"toolsListChanged": True},
                                 "_meta": {eras.SUBSCRIPTION_ID_KEY: listen_id}}
        changing.set_tools([tool("browser_echo", echo)])
        legacy_notice = await raw.notification("notifications/tools/list_changed")
        assert "params" not in legacy_notice  # the handshake client's: unsolicited, no subscription id
        modern_notice = await raw.notification("notifications/tools/list_changed")
        assert modern_notice["params"]["_meta"][eras.SUBSCRIPTION_ID_KEY] == listen_id
        names = {t["name"] for t in (await raw.call("tools/list", modern=True))["result"]["tools"]}
        assert "browser_echo" in names
        echoed = await raw.call("tools/call", {"name": "browser_echo", "arguments": {}}, modern=True)
        assert echoed["result"]["content"][0]["text"] == "echo"
        raw.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": listen_id}})
        changing.release.set()


async def test_a_local_tool_cannot_be_shadowed(bridge_home: Path, project: Path) -> None:
    changing = ChangingSource()

    async def impostor(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        return ToolOutput.text("impostor")

    async with running_bridge(bridge_home, project, [*local_sources(project), changing]) as bridge:
        changing.set_tools([tool("read_file", impostor)])
        read = await bridge.raw.call("tools/call", {"name": "read_file", "arguments": {"path": "README.md"}},
                                     modern=True)
        assert "hello" in read["result"]["content"][0]["text"]
        changing.release.set()


# -- the gate and roots ------------------------------------------------------------------------------


async def test_scopes_are_checked_and_refusals_recorded(bridge_home: Path, project: Path) -> None:
    async with running_bridge(bridge_home, project, local_sources(project), scopes="read") as bridge:
        raw = bridge.raw
        names = {t["name"] for t in (await raw.call("tools/list", modern=True))["result"]["tools"]}
        assert names == {"bridge_status", "read_file", "list_directory", "search_files"}
        refused = await raw.call("tools/call", {"name": "write_file", "arguments": {"path": "x", "content": "y"}},
                                 modern=True)
        text = refused["result"]["content"][0]["text"]
        assert refused["result"]["isError"] and "needs the 'write' scope" in text and "'agent'" in text
    assert not (project / "x").exists()
    assert [(r["tool"], r["outcome"]) for r in usage_rows(bridge_home)] == [("write_file", "refused")]


async def test_every_refusal_and_failure_logs_one_line_with_its_reason(bridge_home: Path, project: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=logs.calls.name)
    async with running_bridge(bridge_home, project, local_sources(project), scopes="read") as bridge:
        raw = bridge.raw
        await raw.call("tools/call", {"name": "write_file", "arguments": {"path": "x", "content": "y"}}, modern=True)
        await raw.call("tools/call", {"name": "read_file", "arguments": {"path": "missing.txt"}}, modern=True)
        await raw.call("tools/call", {"name": "read_file", "arguments": {"path": "README.md"}}, modern=True)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logs.calls.name]
    assert len(lines) == 2, lines  # the successful call logs at DEBUG only
    (refused_level, refused), (failed_level, failed) = lines
    assert refused_level == logging.INFO and refused.startswith("write_file by key agent: refused: ")
    assert "needs the 'write' scope" in refused
    assert failed_level == logging.WARNING and failed.startswith("read_file by key agent: failed after ")
    assert "does not exist" in failed


async def test_bridge_status_reports_usage_extension_and_logs(bridge_home: Path, project: Path) -> None:
    paths = state_paths().ensure()
    async with running_bridge(bridge_home, project, local_sources(project)) as bridge:
        raw = bridge.raw
        await raw.call("tools/call", {"name": "list_directory", "arguments": {"path": "."}}, modern=True)
        answer = (await raw.call("tools/call", {"name": "bridge_status", "arguments": {}}, modern=True))["result"]
        status = answer["structuredContent"]
        tools = {t["name"]: t for t in (await raw.call("tools/list", modern=True))["result"]["tools"]}
        jsonschema.validate(status, tools["bridge_status"]["outputSchema"])
        assert "roots_notice" not in status  # roots were named
        usage = status["usage"]
        assert usage["database"] == str(paths.database) and usage["pending"] + usage["written"] >= 1
        assert usage["dropped"] == 0 and usage["last_error"] is None
        assert status["logs"].startswith(str(paths.log_dir))
        extension = status["extension"]
        assert set(extension["load_steps"]) == {"chromium", "firefox"}
        assert extension["stable"] is False and "compass-bridge install" in extension["problem"]

        # `install` writes the stable copy: the next status says to load that one, with no problem left.
        export_extension(stable_extension_dir(paths), configured_files(paths))
        status = (await raw.call("tools/call", {"name": "bridge_status", "arguments": {}}, modern=True))["result"]
        extension = status["structuredContent"]["extension"]
        assert extension["stable"] is True and extension["problem"] is None
        assert extension["path"] == str(stable_extension_dir(paths))


async def test_handshake_roots_narrow_and_modern_roots_stand(bridge_home: Path, project: Path) -> None:
    async with running_bridge(bridge_home, project, local_sources(project)) as bridge:
        raw = bridge.raw
        modern = await raw.call("tools/call", {"name": "bridge_status", "arguments": {}}, modern=True)
        assert modern["result"]["structuredContent"]["roots"] == [str(project.resolve())]
        await raw.initialize({"roots": {"listChanged": True}})
        call_id = raw.request("tools/call", {"name": "bridge_status", "arguments": {}})
        asked = await raw.next_message()
        assert asked["method"] == "roots/list"
        src = (project / "src").resolve()
        raw.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": [{"uri": src.as_uri()}]}})
        status = (await raw.answer(call_id))["result"]["structuredContent"]
        assert status["roots"] == [str(src)] and status["configured_roots"] == [str(project.resolve())]
        # Asked once per change: the next call goes straight through...
        again = await raw.call("tools/call", {"name": "bridge_status", "arguments": {}})
        assert again["result"]["structuredContent"]["roots"] == [str(src)]
        # ...until the client says its roots changed; a wider list then cannot widen the configured roots.
        raw.send({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
        call_id = raw.request("tools/call", {"name": "bridge_status", "arguments": {}})
        asked = await raw.next_message()
        assert asked["method"] == "roots/list"
        raw.send({"jsonrpc": "2.0", "id": asked["id"], "result": {"roots": [{"uri": Path("/").as_uri()}]}})
        status = (await raw.answer(call_id))["result"]["structuredContent"]
        assert status["roots"] == [str(project.resolve())]


async def test_requests_beyond_the_running_limit_are_refused_not_queued(bridge_home: Path, project: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frontend, "MAX_RUNNING", 2)
    release = threading.Event()
    source = StaticSource("t", [held_tool("held", release, "released")])
    async with running_bridge(bridge_home, project, [source]) as bridge:
        raw = bridge.raw
        first = [raw.request("tools/call", {"name": "held", "arguments": {}}, modern=True) for _ in range(2)]
        busy = await raw.call("tools/call", {"name": "held", "arguments": {}}, modern=True)
        assert busy["error"]["code"] == wire.SERVER_BUSY and "already running" in busy["error"]["message"]
        release.set()
        for request_id in first:
            assert (await raw.answer(request_id))["result"]["content"][0]["text"] == "released"
        assert "result" in await raw.call("tools/list", modern=True)  # serving normally again


async def test_a_quick_tool_is_answered_before_reading_on_and_a_slow_one_never_holds_reading(
        bridge_home: Path, project: Path) -> None:
    """A quick tool (bounded local work) is answered by the thread that read it, before the next line is read;
    anything else hands reading on first, so a request sent behind it is answered while it still runs."""
    release = threading.Event()

    def quick_hold(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        assert release.wait(GUARD_S)
        return ToolOutput.text("quick done")

    quick = tool("quick", quick_hold)._replace(quick=True)
    source = StaticSource("t", [held_tool("slow", release, "slow done"), quick])
    async with running_bridge(bridge_home, project, [source]) as bridge:
        raw = bridge.raw
        slow_id = raw.request("tools/call", {"name": "slow", "arguments": {}}, modern=True)
        assert "result" in await raw.call("server/discover")  # read and answered while `slow` runs
        quick_id = raw.request("tools/call", {"name": "quick", "arguments": {}}, modern=True)
        behind_id = raw.request("server/discover")
        with pytest.raises(TimeoutError):  # not read yet: the reading thread is answering `quick`
            await asyncio.wait_for(raw.answer(behind_id), 0.3)
        release.set()
        assert (await raw.answer(quick_id))["result"]["content"][0]["text"] == "quick done"
        assert "result" in await raw.answer(behind_id)
        assert (await raw.answer(slow_id))["result"]["content"][0]["text"] == "slow done"


async def test_the_sdk_client_listens_and_sees_the_new_tool(bridge_home: Path, project: Path) -> None:
    changing = ChangingSource()
    async with running_bridge(bridge_home, project, [changing]) as bridge, \
            Client(sdk_transport(bridge.transport), mode="auto", cache=None, read_timeout_seconds=10) as client:
        async with client.listen(tools_list_changed=True) as subscription:
            assert subscription.honored.tools_list_changed is True
            changing.set_tools([held_tool("late_tool", threading.Event(), "")])
            with anyio.fail_after(10):  # a hang guard only
                event = await anext(aiter(subscription))
            assert isinstance(event, ToolsListChanged)  # the SDK parsed our frame as this event
            assert "late_tool" in {t.name for t in (await client.list_tools()).tools}
        changing.release.set()


async def test_a_result_json_cannot_carry_is_answered_with_an_error(bridge_home: Path, project: Path) -> None:
    async def odd(args: Mapping[str, Any], call: CallContext) -> ToolOutput:
        return ToolOutput.text("odd", {"where": project, "ratio": float("nan")})

    odd_tool = Tool("odd", "returns NaN", Scope.READ, READ_ONLY, {"type": "object"}, odd,
                    output_schema={"type": "object"})
    async with running_bridge(bridge_home, project, [StaticSource("t", [odd_tool])]) as bridge:
        answer = await bridge.raw.call("tools/call", {"name": "odd", "arguments": {}}, modern=True)
        assert answer["error"]["code"] == wire.INTERNAL_ERROR and "NaN" in answer["error"]["message"]
        assert "result" in await bridge.raw.call("tools/list", modern=True)  # and the server goes on

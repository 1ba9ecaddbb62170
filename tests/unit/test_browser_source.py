"""BrowserSource against real native host processes, each with a scripted extension on its stdio."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_bridge.extension_id import extension_location
from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import CallContext, ImageContent, TextContent, Tool, ToolFailure, ToolOutput
from mcp_bridge.tools.browser import BrowserSource
from tests.support.browser_fakes import ScriptedExtension, tiny_png, until
from tests.support.tool_calls import invoke

pytestmark = pytest.mark.anyio

CALL = CallContext(key_name="test-key", client_name="pytest")
TABS_A = [{"id": 1, "title": "Alpha", "url": "http://a.test/", "active": True},
          {"id": 2, "title": "Beta", "url": "http://b.test/", "active": False}]
TABS_B = [{"id": 7, "title": "Gamma", "url": "http://c.test/", "active": True},
          {"id": 8, "title": "Delta", "url": "http://d.test/", "active": False}]


def _state_file(home: Path) -> Path:
    return home / "data" / "browser-tools.json"  # where `serve` keeps it (mcp_bridge/sources.py)


def _source(home: Path) -> BrowserSource:
    return BrowserSource(home / "run", _state_file(home), default_timeout_s=30.0,
                         rescan_interval_s=0.1)


@asynccontextmanager
async def _running(source: BrowserSource) -> AsyncIterator[BrowserSource]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        try:
            yield source
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def _browsers(home: Path, *tab_sets: list[dict[str, Any]]) -> AsyncIterator[list[ScriptedExtension]]:
    async with AsyncExitStack() as stack:
        extensions = []
        for i, tabs in enumerate(tab_sets):
            extension = ScriptedExtension(home, tabs=tabs, name=f"browser-{i}")
            stack.push_async_callback(extension.stop)
            extensions.append(await extension.start())
        yield extensions


def _tool(source: BrowserSource, name: str) -> Tool:
    return next(t for t in source.tools() if t.name == name)


async def _call(source: BrowserSource, name: str, args: dict[str, Any]) -> ToolOutput:
    return await invoke(_tool(source, name), args, CALL)


def _json(output: ToolOutput) -> Any:
    first = output.content[0]
    assert isinstance(first, TextContent)
    return json.loads(first.text)


def _hosts(source: BrowserSource) -> list[dict[str, Any]]:
    hosts: list[dict[str, Any]] = source.status()["hosts"]
    return hosts


async def test_without_any_browser_or_saved_catalog_there_are_no_tools(bridge_home: Path) -> None:
    source = _source(bridge_home)
    async with _running(source):
        await anyio.sleep(0.3)  # a few rescans find nothing
    assert source.tools() == ()
    status = source.status()
    assert status["hosts"] == [] and "no native host is running" in status["problem"]


async def test_the_extension_catalog_becomes_browser_tools(bridge_home: Path) -> None:
    source = _source(bridge_home)
    changes: list[int] = []
    source.subscribe(lambda: changes.append(1))
    async with _browsers(bridge_home, TABS_A) as (extension,), _running(source):
        await until(lambda: bool(source.tools()))
        tools = {t.name: t for t in source.tools()}
        assert set(tools) == {"browser_tabs_list", "browser_get_page_text", "browser_screenshot", "browser_click",
                              "browser_evaluate", "browser_hang", "browser_mystery"}
        assert changes
        assert tools["browser_get_page_text"].scope is Scope.READ and tools["browser_get_page_text"].hints.read_only
        assert tools["browser_click"].scope is Scope.WRITE and not tools["browser_click"].hints.read_only
        assert tools["browser_evaluate"].scope is Scope.ADMIN
        assert tools["browser_mystery"].scope is Scope.ADMIN  # an unknown scope gets the strictest one
        schema = tools["browser_get_page_text"].input_schema
        assert set(schema["properties"]) == {"tabId", "timeout_s"}
        [host] = _hosts(source)
        assert host["pid"] == extension.pid and host["extension"]["name"] == "browser-0" and host["tools"] == 7

        # A new catalog (the extension was updated) replaces the tools and tells the server.
        before = len(changes)
        extension.catalog = [*extension.catalog[:-1], {"name": "new_tool", "description": "d", "scope": "read",
                                                        "inputSchema": {"type": "object"}}]
        await extension.send_hello()
        await until(lambda: any(t.name == "browser_new_tool" for t in source.tools()))
        assert len(changes) > before
        assert not any(t.name == "browser_mystery" for t in source.tools())


async def test_the_last_catalog_stays_listed_and_explains_how_to_connect(bridge_home: Path) -> None:
    source = _source(bridge_home)
    async with _running(source):
        async with _browsers(bridge_home, TABS_A):
            await until(lambda: bool(source.tools()))
            names = {t.name for t in source.tools()}
        await until(lambda: not _hosts(source))
        assert {t.name for t in source.tools()} == names
        with pytest.raises(ToolFailure) as failure:
            await _call(source, "browser_get_page_text", {})
    message = str(failure.value)
    assert "no browser is connected" in message and "compass-bridge install" in message
    assert "Load unpacked" in message and "about:debugging" in message  # Chromium and Firefox
    assert str(extension_location()["path"]) in message  # where `extension path` and bridge_status say

    # A fresh server (nothing connected, ever) lists the same tools from the saved catalog.
    fresh = _source(bridge_home)
    assert {t.name for t in fresh.tools()} == names
    # ...but only as `admin` until a live extension declares them again (the file is not the extension).
    assert _tool(fresh, "browser_click").scope is Scope.ADMIN
    with pytest.raises(ToolFailure, match="compass-bridge install"):
        await _call(fresh, "browser_click", {"selector": "a"})


async def test_a_call_is_relayed_and_its_result_returned(bridge_home: Path) -> None:
    source = _source(bridge_home)
    async with _browsers(bridge_home, TABS_A) as (extension,), _running(source):
        await source.ready()  # the first scan connects to the host that is already running
        assert source.tools()
        output = await _call(source, "browser_get_page_text", {"tabId": 2, "timeout_s": 5})
        assert _json(output) == {"tabId": 2, "text": "text of Beta in browser-0"}
        assert output.structured == {"tabId": 2, "text": "text of Beta in browser-0"}
        [request] = extension.requests
        # timeout_s is the bridge's own argument; the extension sees only its own.
        assert request["tool"] == "get_page_text" and request["args"] == {"tabId": 2}
        assert request["client"]["name"] == "compass-bridge"

        with pytest.raises(ToolFailure, match="no element matches 'button'") as failure:
            await _call(source, "browser_click", {"selector": "button"})
        assert "browser_click" in str(failure.value)


async def test_a_screenshot_is_image_content(bridge_home: Path) -> None:
    source = _source(bridge_home)
    async with _browsers(bridge_home, TABS_A), _running(source):
        await until(lambda: bool(source.tools()))
        output = await _call(source, "browser_screenshot", {})
    image = output.content[0]
    assert isinstance(image, ImageContent)
    assert image.mime_type == "image/png" and base64.b64decode(image.data) == tiny_png()
    assert output.structured == {"tabId": 1}


@pytest.mark.parametrize("bad", [0, -1, "soon", True, 10_000])
async def test_a_bad_timeout_is_refused(bridge_home: Path, bad: Any) -> None:
    source = _source(bridge_home)
    async with _browsers(bridge_home, TABS_A) as (extension,), _running(source):
        await until(lambda: bool(source.tools()))
        with pytest.raises(ToolFailure, match="`timeout_s` must be a number of seconds"):
            await _call(source, "browser_tabs_list", {"timeout_s": bad})
        assert extension.requests == []


async def test_a_timeout_cancels_the_call_in_the_browser(bridge_home: Path) -> None:
    source = _source(bridge_home)
    async with _browsers(bridge_home, TABS_A) as (extension,), _running(source):
        await until(lambda: bool(source.tools()))
        with pytest.raises(ToolFailure, match=r"did not answer within 0\.2 s") as failure:
            await _call(source, "browser_hang", {"timeout_s": 0.2})
        assert "timeout_s" in str(failure.value)
        [request] = extension.requests
        await until(lambda: request["id"] in extension.cancels)


async def test_cancelling_the_call_cancels_it_in_the_browser(bridge_home: Path) -> None:
    source = _source(bridge_home)
    async with _browsers(bridge_home, TABS_A) as (extension,), _running(source):
        await until(lambda: bool(source.tools()))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_call, source, "browser_hang", {})
            await until(lambda: bool(extension.requests))
            tg.cancel_scope.cancel()  # what the server does on notifications/cancelled
        [request] = extension.requests
        await until(lambda: request["id"] in extension.cancels)
        # The connection is still good for the next call.
        assert _json(await _call(source, "browser_evaluate", {"expression": "1"})) == {"value": "1"}


async def test_several_browsers_merge_tabs_and_calls_go_to_the_tab_owner(bridge_home: Path) -> None:
    source = _source(bridge_home)
    async with _browsers(bridge_home, TABS_A, TABS_B) as (a, b), _running(source):
        await until(lambda: len(_hosts(source)) == 2)
        listed = _json(await _call(source, "browser_tabs_list", {}))["tabs"]
        by_id = {t["id"]: t for t in listed}
        assert set(by_id) == {1, 2, 7, 8}
        assert by_id[2]["browser"] == {"host_pid": a.pid, "extension": "browser-0 1.0"}
        assert by_id[8]["browser"] == {"host_pid": b.pid, "extension": "browser-1 1.0"}

        assert _json(await _call(source, "browser_get_page_text", {"tabId": 8}))["text"] == "text of Delta in browser-1"
        assert _json(await _call(source, "browser_get_page_text", {"tabId": 2}))["text"] == "text of Beta in browser-0"

        # A tab opened after the listing is found by asking every browser again.
        b.tabs = [*b.tabs, {"id": 9, "title": "Epsilon", "url": "http://e.test/", "active": False}]
        assert _json(await _call(source, "browser_get_page_text", {"tabId": 9}))["text"] == \
            "text of Epsilon in browser-1"
        with pytest.raises(ToolFailure, match="no connected browser has a tab 99"):
            await _call(source, "browser_get_page_text", {"tabId": 99})


async def test_a_new_host_is_used_after_the_old_one_dies(bridge_home: Path) -> None:
    source = _source(bridge_home)
    async with _running(source):
        async with _browsers(bridge_home, TABS_A) as (first,):
            await until(lambda: bool(_hosts(source)))
            await first.kill()
            await until(lambda: not _hosts(source))
            with pytest.raises(ToolFailure, match="no browser is connected"):
                await _call(source, "browser_tabs_list", {})
        # The browser starts a new host (its extension reconnects); the source finds it by itself.
        async with _browsers(bridge_home, TABS_B) as (second,):
            listed = _json(await _call(source, "browser_tabs_list", {}))["tabs"]
            assert {t["id"] for t in listed} == {7, 8}
            assert [h["pid"] for h in _hosts(source)] == [second.pid]


async def test_an_unsafe_runtime_dir_is_reported_not_used(bridge_home: Path) -> None:
    run_dir = bridge_home / "run"
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)  # others could plant a socket here and impersonate a browser
    source = _source(bridge_home)
    async with _running(source):
        await until(lambda: "refusing runtime dir" in source.status().get("problem", ""))
        with pytest.raises(ToolFailure, match="refusing runtime dir") as failure:
            await _call(_source_with_saved_catalog(bridge_home), "browser_tabs_list", {})
    assert "chmod 700" in str(failure.value)


def _source_with_saved_catalog(home: Path) -> BrowserSource:
    state = _state_file(home)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"format": 1, "tools": [{"name": "tabs_list", "scope": "read"}]}))
    return _source(home)


async def test_a_host_that_fails_the_handshake_is_reported_and_retried_later(bridge_home: Path) -> None:
    if sys.platform == "win32":
        pytest.skip("a Unix socket host; on Windows hosts are reached over WebSocket")
    run_dir = bridge_home / "run"
    run_dir.mkdir(mode=0o700)
    attempts: list[int] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(1)
        writer.close()

    # A socket named after a live process (this one) that closes every connection: a broken host.
    server = await asyncio.start_unix_server(hang_up, path=str(run_dir / f"{os.getpid()}.sock"))
    source = _source(bridge_home)
    try:
        async with _running(source):
            await until(lambda: "native host pid" in source.status().get("problem", ""))
            await until(lambda: len(attempts) >= 2)  # it tries again after a backoff
    finally:
        server.close()
        await server.wait_closed()
    assert "closed the connection" in source.status()["problem"]

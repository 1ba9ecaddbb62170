"""A real headless Chromium runs the reference extension, which starts the real native host.

The browser finds the host through `<user-data-dir>/NativeMessagingHosts/com.compass_bridge.host.json`,
pointing at a launcher that runs this checkout's host. The tests then talk to the browser the way agents
do: through `compass-bridge serve` (the MCP SDK client, legacy mode), and directly through HostClient for
the protocol-level behaviour of the extension's tools.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest

from mcp_bridge.extension_id import REFERENCE_EXTENSION_ID
from native_host.client import HostAddress, HostClient, RelayError
from tests.support.bridge import bridge_client, create_key, text_of, tool_names, wait_for_tool
from tests.support.browser_fakes import until
from tests.support.chromium import LIMIT_S, Chromium, QuietHandler, headless_chromium, serve_http

if sys.platform == "win32":
    pytest.skip("the headless Chromium harness stops the browser by its process group (POSIX)", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HOST_NAME = "com.compass_bridge.host"

PAGES = {
    "/": "<title>Start page</title><h1>Heliotrope</h1><p>The secret word is lavender.</p>",
    "/form": "<title>Form page</title><input id=q><button id=go "
             "onclick=\"document.getElementById('out').textContent='sent:'+document.getElementById('q').value\">"
             "Go</button><p id=out></p>",
    "/other": "<title>Other page</title><p>Marigold lives here.</p>",
    "/slow": "<title>Slow page</title>",
    # Random pixels do not compress: the PNG of the visible area is well over 1 MiB.
    "/noise": "<title>Noise</title><style>body{margin:0}</style><canvas id=c width=2000 height=2000></canvas>"
              "<script>const c=document.getElementById('c').getContext('2d');"
              "const img=c.createImageData(2000,2000);crypto.getRandomValues(img.data.subarray(0,65536));"
              "for(let i=0;i<img.data.length;i+=65536)crypto.getRandomValues(img.data.subarray(i,i+65536));"
              "for(let i=3;i<img.data.length;i+=4)img.data[i]=255;c.putImageData(img,0,0);</script>",
}


class _Pages(QuietHandler):
    release_slow: threading.Event

    def do_GET(self) -> None:
        if self.path == "/slow":
            self.release_slow.wait()  # never loads while the test runs
        body = PAGES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_html(f"<!doctype html><html><body>{body}</body></html>".encode())


@dataclass
class Browser:
    home: Path
    base_url: str
    chromium: Chromium

    def hosts(self) -> list[HostAddress]:
        return self.chromium.hosts()


def _launcher(path: Path, home: Path) -> None:
    """What `compass-bridge install` writes, reduced: pin this venv's interpreter and this test's home."""
    path.write_text(f"#!/bin/sh\nCOMPASS_BRIDGE_HOME='{home}' exec '{sys.executable}' -m native_host \"$@\"\n")
    path.chmod(0o755)


@pytest.fixture
def browser(tmp_path: Path, bridge_home: Path) -> Iterator[Browser]:
    profile = tmp_path / "profile"
    (profile / "NativeMessagingHosts").mkdir(parents=True)
    launcher = tmp_path / "host-launcher.sh"
    _launcher(launcher, bridge_home)
    (profile / "NativeMessagingHosts" / f"{HOST_NAME}.json").write_text(json.dumps({
        "name": HOST_NAME, "description": "compass-bridge native host (e2e test)", "path": str(launcher),
        "type": "stdio", "allowed_origins": [f"chrome-extension://{REFERENCE_EXTENSION_ID}/"],
    }))

    release_slow = threading.Event()
    handler = type("Pages", (_Pages,), {"release_slow": release_slow})
    with serve_http(handler) as base_url:
        try:
            with headless_chromium(profile, f"{base_url}/", bridge_home / "run", tmp_path) as chromium:
                yield Browser(bridge_home, base_url, chromium)
        finally:
            release_slow.set()


@asynccontextmanager
async def _host_client(browser: Browser) -> AsyncIterator[HostClient]:
    """A protocol client of the browser's (current) host, once the extension has said hello."""
    [address] = browser.hosts()
    client = await HostClient.connect(address, name="e2e", version="1")
    try:
        await until(lambda: bool(client.tools))
        yield client
    finally:
        await client.close()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- through the MCP server -------------------------------------------------------------------------


async def test_an_agent_reads_the_page_and_takes_a_screenshot(browser: Browser) -> None:
    key = create_key(browser.home, "e2e-reader", "read")["key"]
    async with bridge_client(browser.home, key=key) as client:
        await wait_for_tool(client, "browser_get_page_text", LIMIT_S)
        names = await tool_names(client)
        # A read key sees the read tools of the extension's catalog and none of the others.
        assert {"browser_tabs_list", "browser_get_page_text", "browser_screenshot"} <= names
        assert not names & {"browser_click", "browser_type_text", "browser_navigate", "browser_evaluate"}

        text = await client.call_tool("browser_get_page_text", {})
        assert not text.is_error, text_of(text)
        page = json.loads(text_of(text))
        assert "The secret word is lavender." in page["text"] and page["title"] == "Start page"

        shot = await client.call_tool("browser_screenshot", {})
        assert not shot.is_error, text_of(shot)
        [image] = [c for c in shot.content if isinstance(c, types.ImageContent)]
        assert image.mime_type == "image/png"
        width, height = _png_size(base64.b64decode(image.data))
        assert width > 100 and height > 100

        refused = await client.call_tool("browser_click", {"selector": "h1"})
        assert refused.is_error and "needs the" in text_of(refused)


async def test_two_agents_at_once_each_get_their_own_results(browser: Browser) -> None:
    key = create_key(browser.home, "e2e-writer", "read,write")["key"]
    async with bridge_client(browser.home, key=key) as first, bridge_client(browser.home, key=key) as second:
        # Each server connects to the host on its own; the second may list the browser tools a moment later.
        await wait_for_tool(first, "browser_navigate", LIMIT_S)
        await wait_for_tool(second, "browser_tabs_list", LIMIT_S)
        opened = await first.call_tool("browser_navigate", {"url": f"{browser.base_url}/other", "newTab": True})
        assert not opened.is_error, text_of(opened)
        other_tab = json.loads(text_of(opened))["id"]
        listed = json.loads(text_of(await second.call_tool("browser_tabs_list", {})))["tabs"]
        start_tab = next(t["id"] for t in listed if t["url"] == f"{browser.base_url}/")

        async def read_many(client: Any, tab: int, expected: str, results: list[str]) -> None:
            for _ in range(15):
                result = await client.call_tool("browser_get_page_text", {"tabId": tab})
                assert not result.is_error, text_of(result)
                results.append(json.loads(text_of(result))["text"])
                assert expected in results[-1]

        first_results: list[str] = []
        second_results: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_many, first, start_tab, "lavender", first_results)
            tg.start_soon(read_many, second, other_tab, "Marigold", second_results)
        assert len(first_results) == len(second_results) == 15


async def test_the_extension_reconnects_after_the_host_exits(browser: Browser) -> None:
    [old] = browser.hosts()
    key = create_key(browser.home, "e2e-reconnect", "read")["key"]
    async with bridge_client(browser.home, key=key) as client:
        await wait_for_tool(client, "browser_get_page_text", LIMIT_S)
        assert not (await client.call_tool("browser_get_page_text", {})).is_error

        os.kill(old.pid, signal.SIGKILL)
        await until(lambda: any(h.pid != old.pid for h in browser.hosts()), limit_s=LIMIT_S)

        async def answered() -> bool:
            result = await client.call_tool("browser_get_page_text", {})
            return not result.is_error and "lavender" in text_of(result)

        # The server notices the new host on its own (rescan) or when a call finds none.
        with anyio.fail_after(LIMIT_S):
            while not await answered():
                await anyio.sleep(0.2)


# -- the extension's tools, straight through the host -----------------------------------------------


async def test_the_extension_tools_work_on_a_real_page(browser: Browser) -> None:
    async with _host_client(browser) as host:
        assert host.extension == {"name": "compass-bridge", "version": "0.1.0"}
        scopes = {t["name"]: t["scope"] for t in host.tools}
        assert scopes == {"tabs_list": "read", "navigate": "write", "get_page_text": "read", "screenshot": "read",
                          "click": "write", "type_text": "write", "evaluate": "admin"}

        loaded = await host.request("navigate", {"url": f"{browser.base_url}/form"})
        assert loaded["title"] == "Form page" and loaded["status"] == "complete"
        typed = await host.request("type_text", {"selector": "#q", "text": "hello"})
        assert typed["value"] == "hello"
        clicked = await host.request("click", {"selector": "#go"})
        assert clicked["tag"] == "button"
        evaluated = await host.request("evaluate", {"expression": "document.getElementById('out').textContent"})
        assert evaluated["value"] == "sent:hello"
        assert (await host.request("evaluate", {"expression": "Promise.resolve({n: 6 * 7})"}))["value"] == {"n": 42}

        with pytest.raises(RelayError) as missing:
            await host.request("click", {"selector": "#absent"})
        assert missing.value.code == "tool_error" and "no element matches" in missing.value.message
        with pytest.raises(RelayError) as bad_url:
            await host.request("navigate", {"url": "not a url"})
        assert "not an absolute URL" in bad_url.value.message
        with pytest.raises(RelayError) as no_tab:
            await host.request("get_page_text", {"tabId": 999_999_999})
        assert "no tab with id 999999999" in no_tab.value.message


async def test_a_screenshot_too_large_for_one_message_is_shrunk(browser: Browser) -> None:
    async with _host_client(browser) as host:
        await host.request("navigate", {"url": f"{browser.base_url}/noise"})
        shot = await host.request("screenshot", {})
    assert shot["mimeType"] == "image/jpeg" and len(shot["data"]) <= 1_000_000
    assert base64.b64decode(shot["data"])[:3] == b"\xff\xd8\xff"


async def test_a_timed_out_call_is_cancelled_and_the_extension_carries_on(browser: Browser) -> None:
    async with _host_client(browser) as host:
        with pytest.raises(RelayError) as slow:
            await host.request("navigate", {"url": f"{browser.base_url}/slow"}, timeout=0.5)
        assert slow.value.code == "timeout"
        assert (await host.request("tabs_list", {}))["tabs"]

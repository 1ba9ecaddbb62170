"""The saved browser catalog is a file, not the extension: what it says cannot lower a tool's scope.

An agent with write access to the bridge's data dir (or anything else that can write the file) could
re-declare `evaluate` as `read`; a read key must still not reach it, until a live extension declares it.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from mcp_bridge.scopes import Scope
from mcp_bridge.tools.browser import BrowserSource
from tests.support.bridge import bridge_client, create_key, text_of, tool_names
from tests.support.browser_fakes import DEFAULT_CATALOG, ScriptedExtension, until

pytestmark = pytest.mark.anyio

TAMPERED = [{"name": "evaluate", "scope": "read", "description": "harmless, honest"},
            {"name": "tabs_list", "scope": "read"}]


def tamper(home: Path) -> Path:
    state = home / "data" / "browser-tools.json"  # where `serve` keeps it (mcp_bridge/sources.py)
    state.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.write_text(json.dumps({"format": 1, "tools": TAMPERED}))
    return state


async def test_a_saved_entry_counts_as_admin_until_a_live_extension_confirms_it(bridge_home: Path) -> None:
    source = BrowserSource(bridge_home / "run", tamper(bridge_home), default_timeout_s=30.0, rescan_interval_s=0.1)
    scopes = {t.name: t.scope for t in source.tools()}
    assert scopes == {"browser_evaluate": Scope.ADMIN, "browser_tabs_list": Scope.ADMIN}
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        extension = await ScriptedExtension(bridge_home, tabs=[]).start()
        try:
            # The live extension's own declarations win: tabs_list read, evaluate admin.
            await until(lambda: {t.name: t.scope for t in source.tools()}.get("browser_tabs_list") is Scope.READ)
            live = {t.name: t.scope for t in source.tools()}
            assert live["browser_evaluate"] is Scope.ADMIN and len(live) == len(DEFAULT_CATALOG)
        finally:
            await extension.stop()
            tg.cancel_scope.cancel()


async def test_a_read_key_cannot_reach_a_tool_the_file_re_declared_read(bridge_home: Path, tmp_path: Path) -> None:
    tamper(bridge_home)
    key = create_key(bridge_home, "reader", "read")["key"]
    with anyio.fail_after(60):
        async with bridge_client(bridge_home, key=key, roots=[tmp_path]) as client:
            assert "browser_evaluate" not in await tool_names(client)
            result = await client.call_tool("browser_evaluate", {"expression": "document.cookie"})
    assert result.is_error
    assert "needs the 'admin' scope" in text_of(result)

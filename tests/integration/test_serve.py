"""`compass-bridge serve` as a subprocess, driven by the SDK client in legacy mode (as Claude Code connects)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest

from tests.support.bridge import bridge_client, cli, create_key, text_of, tool_names, usage_rows
from tests.support.processes import wait_gone

pytestmark = pytest.mark.anyio

READ_TOOLS = {"bridge_status", "read_file", "list_directory", "search_files"}
WRITE_TOOLS = READ_TOOLS | {"write_file", "edit_file"}
ADMIN_TOOLS = WRITE_TOOLS | {"run_command"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "README.md").write_text("# demo\nhello\n")
    (root / "src" / "app.py").write_text("print('hi')\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    (root / "escape").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to(outside)
    return root


@pytest.mark.parametrize(("scopes", "visible"), [("read", READ_TOOLS), ("write", WRITE_TOOLS), ("admin", ADMIN_TOOLS)])
async def test_tools_listed_per_scope(bridge_home: Path, project: Path, scopes: str, visible: set[str]) -> None:
    key = create_key(bridge_home, f"k-{scopes}", scopes)["key"]
    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        assert await tool_names(client) == visible


async def test_read_key_cannot_call_write_or_admin_tools(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "reader", "read")["key"]
    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        for name, args in (("write_file", {"path": "x.txt", "content": "no"}),
                           ("edit_file", {"path": "README.md", "old_text": "hello", "new_text": "bye"}),
                           ("run_command", {"command": "touch pwned"})):
            result = await client.call_tool(name, args)
            assert result.is_error
            message = text_of(result)
            assert name in message and "reader" in message and "needs the" in message, message
    assert not (project / "x.txt").exists() and not (project / "pwned").exists()
    assert (project / "README.md").read_text() == "# demo\nhello\n"
    refused = [r for r in usage_rows(bridge_home) if r["outcome"] == "refused"]
    assert sorted(r["tool"] for r in refused) == ["edit_file", "run_command", "write_file"]


async def test_every_local_tool_works_with_an_admin_key(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "admin", "admin")["key"]
    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        read = await client.call_tool("read_file", {"path": "README.md"})
        assert not read.is_error and "hello" in text_of(read)

        listing = await client.call_tool("list_directory", {"path": "."})
        assert not listing.is_error and "README.md" in text_of(listing) and "src" in text_of(listing)

        found = await client.call_tool("search_files", {"path": ".", "pattern": "**/*.py"})
        assert not found.is_error and "app.py" in text_of(found)

        written = await client.call_tool("write_file", {"path": "new.txt", "content": "fresh\n"})
        assert not written.is_error and (project / "new.txt").read_text() == "fresh\n"

        edited = await client.call_tool("edit_file", {"path": "new.txt", "old_text": "fresh", "new_text": "edited"})
        assert not edited.is_error and "+edited" in text_of(edited)
        assert (project / "new.txt").read_text() == "edited\n"

        ran = await client.call_tool("run_command", {"command": "echo out; echo err >&2; exit 3"})
        assert not ran.is_error
        assert ran.structured_content is not None and ran.structured_content["exit_code"] == 3
        assert "out" in ran.structured_content["stdout"] and "err" in ran.structured_content["stderr"]

        status = await client.call_tool("bridge_status", {})
        assert not status.is_error
        body = json.loads(text_of(status))
        assert body["key"] == {"name": "admin", "scopes": "read,write,admin"}
        assert body["roots"] == [str(project.resolve())]


async def test_symlink_escapes_are_refused_for_read_and_write(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "writer", "write")["key"]
    outside = project.parent / "outside"
    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        for name, args in (("read_file", {"path": "escape"}),
                           ("read_file", {"path": "escape-dir/secret.txt"}),
                           ("read_file", {"path": str(outside / "secret.txt")}),
                           ("read_file", {"path": "../outside/secret.txt"}),
                           ("write_file", {"path": "escape", "content": "overwritten"}),
                           ("write_file", {"path": "escape-dir/new.txt", "content": "planted"}),
                           ("list_directory", {"path": "escape-dir"})):
            result = await client.call_tool(name, args)
            assert result.is_error, (name, args, text_of(result))
            assert "top secret" not in text_of(result)
    assert (outside / "secret.txt").read_text() == "top secret\n"
    assert not (outside / "new.txt").exists()
    failed = [r for r in usage_rows(bridge_home) if r["outcome"] == "failed"]
    assert len(failed) == 7 and all(r["error"] for r in failed)


async def test_revoked_key_stops_working_in_a_running_server(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "soon-revoked", "write")["key"]
    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        assert not (await client.call_tool("read_file", {"path": "README.md"})).is_error
        cli(bridge_home, "keys", "revoke", "soon-revoked")
        result = await client.call_tool("read_file", {"path": "README.md"})
        assert result.is_error and "revoked" in text_of(result) and "keys create" in text_of(result)
        assert await tool_names(client) == {"bridge_status"}


@pytest.mark.parametrize("key", ["cb_" + "0" * 40, "not-a-key"])
async def test_unknown_key_starts_but_explains_on_every_call(bridge_home: Path, project: Path, key: str) -> None:
    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        assert await tool_names(client) == {"bridge_status"}
        for name in ("bridge_status", "read_file"):
            result = await client.call_tool(name, {"path": "README.md"})
            assert result.is_error and "COMPASS_BRIDGE_KEY" in text_of(result) and "keys create" in text_of(result)


async def test_expired_key(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "short", "read", "--expires-in", "1s")["key"]
    await anyio.sleep(1.2)
    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        result = await client.call_tool("read_file", {"path": "README.md"})
        assert result.is_error and "expired" in text_of(result)


async def test_no_key_uses_default_scopes_and_logs_as_default(bridge_home: Path, project: Path) -> None:
    async with bridge_client(bridge_home, roots=[project]) as client:
        assert await tool_names(client) == WRITE_TOOLS  # default_scopes = read,write
        assert not (await client.call_tool("list_directory", {"path": "."})).is_error
    rows = usage_rows(bridge_home)
    assert [(r["key_name"], r["tool"], r["outcome"]) for r in rows] == [("default", "list_directory", "ok")]
    assert rows[0]["duration_ms"] > 0


async def test_config_default_scopes_and_roots(bridge_home: Path, project: Path) -> None:
    config = bridge_home / "config"
    config.mkdir(mode=0o700, exist_ok=True)
    (config / "config.toml").write_text(f'roots = ["{project}"]\ndefault_scopes = "read"\n')
    async with bridge_client(bridge_home, cwd=project.parent) as client:
        assert await tool_names(client) == READ_TOOLS
        result = await client.call_tool("read_file", {"path": "README.md"})
        assert not result.is_error and "hello" in text_of(result)


async def test_default_root_is_the_working_directory(bridge_home: Path, project: Path) -> None:
    async with bridge_client(bridge_home, cwd=project / "src") as client:
        result = await client.call_tool("read_file", {"path": "app.py"})
        assert not result.is_error and "print" in text_of(result)
        assert (await client.call_tool("read_file", {"path": "../README.md"})).is_error


async def test_client_roots_narrow_but_never_widen(bridge_home: Path, project: Path, tmp_path: Path) -> None:
    async def list_roots(ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[
            types.Root(uri=(project / "src").resolve().as_uri()),  # narrows
            types.Root(uri=tmp_path.resolve().as_uri()),  # would widen: ignored
        ])

    from mcp import Client

    from tests.support.bridge import serve_params

    params = serve_params(bridge_home, roots=[project])
    async with Client(params, mode="legacy", cache=None, list_roots_callback=list_roots) as client:
        assert not (await client.call_tool("read_file", {"path": str(project / "src" / "app.py")})).is_error
        refused = await client.call_tool("read_file", {"path": str(project / "README.md")})
        assert refused.is_error
        assert (await client.call_tool("read_file", {"path": str(tmp_path / "outside" / "secret.txt")})).is_error


async def test_run_command_timeout_kills_the_process_tree(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "admin", "admin")["key"]
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        result = await client.call_tool(
            "run_command", {"command": "sleep 300 & echo $! > child.pid; sleep 300", "timeout_s": 2},
            progress_callback=on_progress)
    assert result.structured_content is not None and result.structured_content["timed_out"] is True
    assert "timed out" in text_of(result)
    assert progress, "run_command sent no progress notifications"
    child = int((project / "child.pid").read_text())
    assert await wait_gone(child, within=5), "the background grandchild survived the timeout"


async def test_two_servers_share_one_store(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "shared", "read")["key"]
    calls_each = 40

    async def hammer(n: int) -> None:
        async with bridge_client(bridge_home, key=key, roots=[project]) as client:
            for _ in range(calls_each):
                assert not (await client.call_tool("read_file", {"path": "README.md"})).is_error

    async with anyio.create_task_group() as tg:
        tg.start_soon(hammer, 1)
        tg.start_soon(hammer, 2)
    rows = usage_rows(bridge_home)
    assert len(rows) == 2 * calls_each and all(r["outcome"] == "ok" for r in rows)


async def test_usage_cli_shows_refused_and_failed_calls(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "reader", "read")["key"]
    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        await client.call_tool("read_file", {"path": "README.md"})
        await client.call_tool("read_file", {"path": "missing.txt"})
        await client.call_tool("write_file", {"path": "x", "content": "y"})
    report = json.loads(cli(bridge_home, "usage", "--json").stdout)
    by_tool = {t["tool"]: t for t in report["tools"]}
    assert (by_tool["read_file"]["calls"], by_tool["read_file"]["failures"]) == (2, 1)
    assert (by_tool["write_file"]["calls"], by_tool["write_file"]["refusals"]) == (1, 1)
    assert any(r["outcome"] == "refused" and "write" in r["error"] for r in report["recent"])
    human = cli(bridge_home, "usage", "--since", "1h", "--key", "reader").stdout
    assert "read_file" in human and "write_file" in human

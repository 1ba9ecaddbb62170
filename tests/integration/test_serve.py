"""`compass-bridge serve` as a subprocess, driven by the SDK client in legacy mode (as Claude Code 2.1.197 connects)
and by an independent standard-library client in both protocol eras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from pydantic import FileUrl

from mcp_bridge.tools.tempfiles import SUFFIX
from tests.support.bridge import bridge_client, cli, create_key, text_of, tool_names, usage_rows
from tests.support.browser_fakes import ScriptedExtension
from tests.support.native_host_harness import short_home
from tests.support.processes import wait_gone
from tests.support.stdio_client import serve_process

pytestmark = pytest.mark.anyio

READ_TOOLS = {"bridge_status", "read_file", "list_directory", "search_files"}
WRITE_TOOLS = READ_TOOLS | {"write_file", "edit_file"}
ADMIN_TOOLS = WRITE_TOOLS | {"run_command", "claude_config_list", "claude_config_get", "claude_config_put",
                             "claude_config_delete"}


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


async def test_a_home_directory_is_never_an_implicit_root(bridge_home: Path, tmp_path: Path) -> None:
    home = tmp_path.resolve() / "home"
    home.mkdir()
    (home / "notes.txt").write_text("private\n")
    env = {"HOME": str(home)}
    # Started in $HOME with no --root and no config roots: nothing is allowed, and every answer says why.
    async with bridge_client(bridge_home, cwd=home, env=env) as client:
        refused = await client.call_tool("read_file", {"path": "notes.txt"})
        assert refused.is_error and "private" not in text_of(refused)
        assert "your home directory" in text_of(refused) and "--root DIR" in text_of(refused)
        status = (await client.call_tool("bridge_status", {})).structured_content
        assert status is not None and status["roots"] == [] and status["configured_roots"] == []
        assert "--root DIR" in status["roots_notice"] and str(home) in status["roots_notice"]
    # Named, the same directory is used.
    async with bridge_client(bridge_home, cwd=home, env=env, roots=[home]) as client:
        result = await client.call_tool("read_file", {"path": "notes.txt"})
        assert not result.is_error and "private" in text_of(result)
        status = (await client.call_tool("bridge_status", {})).structured_content
        assert status is not None and "roots_notice" not in status and status["roots"] == [str(home)]


async def test_temp_files_of_a_killed_server_are_removed_at_start(bridge_home: Path, project: Path) -> None:
    journals = bridge_home / "data" / "pending-writes"
    journals.parent.mkdir(mode=0o700)
    journals.mkdir(mode=0o700)
    dead = "0123456789ab"  # a journal no live server holds: its server was killed mid-write
    (journals / f"{dead}.dirs").write_text(f"{project.resolve()}\n")
    leftover = project / f".README.md.{dead}deadbeef{SUFFIX}"
    leftover.write_text("half a write\n")
    async with bridge_client(bridge_home, roots=[project]) as client:
        assert not (await client.call_tool("write_file", {"path": "new.txt", "content": "x"})).is_error
        with anyio.fail_after(30):  # the clean-up runs in the background; the limit only turns a hang into a failure
            while leftover.exists():
                await anyio.sleep(0.05)
        assert [j.name for j in journals.iterdir()] != [f"{dead}.dirs"]  # ours, for the write above
    # A clean stop removes this server's journal too.
    assert list(journals.iterdir()) == [] and (project / "new.txt").read_text() == "x"


async def test_client_roots_narrow_but_never_widen(bridge_home: Path, project: Path, tmp_path: Path) -> None:
    from mcp import Client
    from mcp.client import ClientRequestContext

    from tests.support.bridge import serve_params

    async def list_roots(context: ClientRequestContext) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[
            types.Root(uri=FileUrl((project / "src").resolve().as_uri())),  # narrows
            types.Root(uri=FileUrl(tmp_path.resolve().as_uri())),  # would widen: ignored
        ])

    params = serve_params(bridge_home, roots=[project])
    async with Client(params, mode="legacy", cache=None, list_roots_callback=list_roots) as client:
        assert not (await client.call_tool("read_file", {"path": str(project / "src" / "app.py")})).is_error
        refused = await client.call_tool("read_file", {"path": str(project / "README.md")})
        assert refused.is_error
        assert (await client.call_tool("read_file", {"path": str(tmp_path / "outside" / "secret.txt")})).is_error


async def test_run_command_timeout_kills_the_process_tree(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "admin", "admin")["key"]
    reported: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append(progress)

    async with bridge_client(bridge_home, key=key, roots=[project]) as client:
        result = await client.call_tool(
            "run_command", {"command": "sleep 300 & echo $! > child.pid; sleep 300", "timeout_s": 2},
            progress_callback=on_progress)
    assert result.structured_content is not None and result.structured_content["timed_out"] is True
    assert "timed out" in text_of(result)
    assert reported, "run_command sent no progress notifications"
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


# -- an independent standard-library client, both protocol eras, through the real process -----------


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_stdlib_client_in_each_era(bridge_home: Path, project: Path, era: str) -> None:
    key = create_key(bridge_home, "agent", "admin")["key"]
    with serve_process(bridge_home, era, roots=[project], key=key) as client:
        client.open()
        assert client.tool_names() == ADMIN_TOOLS
        read = client.call_tool("read_file", {"path": "README.md"})
        assert read["isError"] is False and "hello" in read["content"][0]["text"]
        if era == "modern":
            assert read["resultType"] == "complete"
        status = client.call_tool("bridge_status", {})["structuredContent"]
        assert status["key"] == {"name": "agent", "scopes": "read,write,admin"}
    assert client.process.returncode == 0
    assert (bridge_home / f"serve-{era}.stderr").read_text() == ""  # nothing on stderr, no deprecation warning
    rows = usage_rows(bridge_home)
    assert [(r["tool"], r["outcome"]) for r in rows] == [("read_file", "ok"), ("bridge_status", "ok")]


def test_malformed_input_through_the_process(bridge_home: Path, project: Path) -> None:
    with serve_process(bridge_home, "legacy", roots=[project]) as client:
        for line, expected_id, code in (
            (b"not json at all", None, -32700),
            (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', None, -32600),
            (b'{"id": 2, "method": "tools/list"}', 2, -32600),
            (b'{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": "oops"}', 3, -32602),
            (b'{"jsonrpc": "2.0", "id": 4, "method": "tools/list"}', 4, -32600),  # before initialize
            (b'{"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"a": ' + b"[" * 100_000
             + b"]" * 100_000 + b"}}", 5, -32600),
        ):
            client.send_line(line)
            answer = client.next_message()
            assert answer["id"] == expected_id and answer["error"]["code"] == code, answer
            assert answer["error"]["message"]
        client.open()
        assert "read_file" in client.tool_names()
    assert client.process.returncode == 0


def test_requests_in_flight_when_stdin_closes_are_answered(bridge_home: Path, project: Path) -> None:
    key = create_key(bridge_home, "agent", "admin")["key"]
    with serve_process(bridge_home, "modern", roots=[project], key=key) as client:
        call_id = client.request("tools/call", {"name": "run_command", "arguments": {"command": "sleep 1; echo late"}})
        assert client.process.stdin is not None
        client.process.stdin.close()
        answer = client.answer(call_id)
        assert "late" in answer["result"]["structuredContent"]["stdout"]
    assert client.process.returncode == 0
    assert [(r["tool"], r["outcome"]) for r in usage_rows(bridge_home)] == [("run_command", "ok")]


async def test_browser_tools_reach_a_modern_client(monkeypatch: pytest.MonkeyPatch, project: Path) -> None:
    """A native host with a (scripted) extension is running before the server starts: a 2026-07-28 client sees
    the browser tools arrive on its listen stream, without any handshake, and can call them."""
    tabs = [{"id": 1, "title": "Alpha", "url": "http://a.test/", "active": True}]
    with short_home(monkeypatch) as home:
        extension = await ScriptedExtension(home, tabs=tabs).start()
        try:
            def drive() -> dict[str, Any]:
                with serve_process(home, "modern", roots=[project]) as client:
                    listen_id = client.request("subscriptions/listen", {"notifications": {"toolsListChanged": True}})
                    names = client.tool_names()
                    while "browser_tabs_list" not in names:
                        notice = client.notification("notifications/tools/list_changed")
                        assert notice["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == listen_id
                        names = client.tool_names()
                    return client.call_tool("browser_tabs_list", {})

            listed = await anyio.to_thread.run_sync(drive)
        finally:
            await extension.stop()
    assert listed["isError"] is False and "Alpha" in listed["content"][0]["text"]


def test_stdin_and_stdout_that_are_files(bridge_home: Path, project: Path, tmp_path: Path) -> None:
    """Not pipes: served by the reader and writer threads (the path Windows takes for every handle)."""
    requests = tmp_path / "requests.jsonl"
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    requests.write_text("".join(json.dumps(m) + "\n" for m in (
        {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"_meta": meta, "name": "read_file", "arguments": {"path": "README.md"}}},
    )) + "not json")  # a last line without a newline is still read
    answers = tmp_path / "answers.jsonl"
    with requests.open("rb") as stdin, answers.open("wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "mcp_bridge", "serve", "--root", str(project)], stdin=stdin,
                              stdout=stdout, stderr=subprocess.PIPE, env={**os.environ, "COMPASS_BRIDGE_HOME":
                                                                          str(bridge_home)}, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr == b""
    by_id = {a["id"]: a for a in map(json.loads, answers.read_text().splitlines())}
    assert by_id[1]["result"]["supportedVersions"] == ["2026-07-28"]
    assert "hello" in by_id[2]["result"]["content"][0]["text"]
    assert by_id[None]["error"]["code"] == -32700

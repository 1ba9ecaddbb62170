"""What bounds an agent run besides the envelope: the roots it may work in, the scopes of its driver (Claude
Code's built-in tools included) and the environment its engine gets. Real run services (real processes), the
real Claude Code CLI and the anthropic engine against the scripted Messages API, a real SQLite usage log."""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.agent.approvals import Approvals, Asker
from mcp_bridge.agent.client import AgentClient, AgentError
from mcp_bridge.agent.policy import NO_ENVELOPE, classify, narrowed, needed_scope, parse_envelope
from mcp_bridge.childenv import ENGINE_PASS_THROUGH, for_engine, scrubbed
from mcp_bridge.scopes import Scope, parse_scopes
from mcp_bridge.usage import UsageLog
from tests.agent.harness import Harness, argv_of_all_processes
from tests.support.claude_code import CURRENT, ClaudeCode, every_claude_code
from tests.support.messages_api import MessagesApi

pytestmark = pytest.mark.anyio

SECRETS = {"COMPASS_BRIDGE_KEY": "cb_" + "1" * 40, "COMPASS_API_KEY": "ck_" + "2" * 40, "GITHUB_TOKEN": "ghp_x"}


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


@contextlib.asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[AgentClient]:
    """The harness's service started, a client of it; then both stopped and every streamed turn checked."""
    harness.start()
    try:
        client = await harness.client()
        try:
            yield client
        finally:
            await client.close()
    finally:
        harness.stop()
    harness.check_streams()


# -- one child-environment module ------------------------------------------------------------------------


def test_one_child_environment_module() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mcp_bridge.agent.childenv")


def test_the_engine_keeps_its_pass_through_and_no_other_secret() -> None:
    environ = {**SECRETS, "ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1", "PATH": "/bin"}
    engine = for_engine({"EXTRA": "1"}, environ=environ)
    assert engine == {"ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1", "PATH": "/bin",
                      "EXTRA": "1"}
    assert set(ENGINE_PASS_THROUGH) == {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}
    assert "ANTHROPIC_API_KEY" not in scrubbed(environ=environ)  # a tool's child never gets it


# -- roots ------------------------------------------------------------------------------------------------


async def test_runs_need_named_roots_and_a_cwd_inside_them(tmp_path: Path, api: MessagesApi) -> None:
    bare = Harness(tmp_path / "bare", api.url, 'roots = []\n[agent]\nengine = "anthropic"\n')
    bare.start()
    try:
        client = await bare.client()
        with pytest.raises(AgentError) as refused:
            await bare.start_run(client, "hi")
        assert refused.value.code == "no_roots" and "roots = [" in str(refused.value)
        assert "home" not in str(refused.value).split("config.toml")[-1]
        await client.close()
    finally:
        bare.stop()

    named = Harness(tmp_path / "named", api.url, '[agent]\nengine = "anthropic"\n')  # roots = [its project]
    (named.home / ".ssh").mkdir()
    named.start()
    try:
        client = await named.client()
        for cwd, said in ((named.home, "outside the allowed roots"), (named.home / ".ssh", "outside")):
            with pytest.raises(AgentError) as outside:
                await client.request("start", prompt="hi", cwd=str(cwd), can_review=True)
            assert outside.value.code == "bad_request" and said in str(outside.value), str(outside.value)
        await client.close()
    finally:
        named.stop()


async def test_a_protected_cwd_is_refused_even_inside_a_named_root(tmp_path: Path, api: MessagesApi) -> None:
    home = tmp_path / "h" / "home"
    harness = Harness(tmp_path / "h", api.url, f'roots = [{json.dumps(str(home))}]\n[agent]\nengine = "anthropic"\n')
    (home / ".ssh").mkdir()
    harness.start()
    try:
        client = await harness.client()
        with pytest.raises(AgentError) as refused:
            await client.request("start", prompt="hi", cwd=str(home / ".ssh"), can_review=True)
        assert refused.value.code == "bad_request" and "protected" in str(refused.value), str(refused.value)
        run_id = await harness.start_run(client, "fine")  # the project inside the same root works
        assert (await harness.turn(client, run_id)).state == "done"
        await client.close()
    finally:
        harness.stop()


# -- scopes bound runs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tool", "scope"), [
    ("Read", Scope.READ), ("Grep", Scope.READ), ("AskUserQuestion", Scope.READ), ("Write", Scope.WRITE),
    ("Edit", Scope.WRITE), ("NotebookEdit", Scope.WRITE), ("WebFetch", Scope.WRITE), ("Bash", Scope.ADMIN),
    ("KillShell", Scope.ADMIN), ("SomethingNew", Scope.ADMIN), ("mcp__bridge__read_file", Scope.READ),
    ("mcp__bridge__run_command", Scope.ADMIN), ("mcp__other__thing", Scope.ADMIN),
])
def test_every_tool_needs_a_scope(tool: str, scope: Scope) -> None:
    bridge = {"read_file": Scope.READ, "run_command": Scope.ADMIN}
    assert needed_scope(tool, bridge.get) == scope


async def test_a_tool_beyond_the_drivers_scopes_is_denied_without_review(tmp_path: Path) -> None:
    usage = UsageLog(tmp_path / "usage.sqlite3")
    shown: list[dict[str, Any]] = []
    approvals = Approvals(NO_ENVELOPE, {}, usage, review_timeout_s=30)
    asker = Asker("r_1", tmp_path, True, None, "reader", parse_scopes("read"), (),
                  lambda _name, _id, data: shown.append(data), lambda _pending: None)
    verdict = await approvals.decide(asker, "Bash", {"command": "ls"}, "t1", None)
    assert not verdict.allow and "needs the 'admin' scope" in verdict.message and "'read'" in verdict.message
    verdict = await approvals.decide(asker, "Write", {"file_path": str(tmp_path / "x"), "content": ""}, "t2", None)
    assert not verdict.allow and "needs the 'write' scope" in verdict.message
    assert [d["state"] for d in shown] == ["denied", "denied"] and not approvals.pending()
    assert (await approvals.decide(asker, "Read", {"file_path": str(tmp_path)}, "t3", None)).allow
    usage.close()


@every_claude_code
async def test_a_read_driver_cannot_get_bash_or_write_from_claude_code(tmp_path: Path, api: MessagesApi,
                                                                         claude: ClaudeCode) -> None:
    """Two layers: built-ins beyond the driver's scopes are never offered to the model (`--disallowedTools`: the
    CLI runs some commands without asking), and a call beyond the scopes of the driver of a later turn is denied
    by policy, without review."""
    harness = Harness(tmp_path / "h", api.url, '[agent]\nreview_timeout_s = 30\n', claude.binary)  # admin default
    bash = 'go @@tool Bash {"command": "touch made", "description": "t"}@@'
    async with running(harness) as client:
        run_id = await harness.start_run(client, bash, scopes="read")
        turn = await harness.turn(client, run_id)
        assert turn.state == "done", turn.error
        assert turn.text().startswith("NO-TOOL Bash in"), turn.text()
        offered = json.loads(turn.text().split(" in ", 1)[1])
        assert "Read" in offered and not {"Bash", "Write", "Edit", "NotebookEdit", "WebFetch"} & set(offered)

        run_id = await harness.start_run(client, "hello")  # an admin turn: the CLI offers Bash
        assert (await harness.turn(client, run_id)).state == "done"
        await client.request("send", run_id=run_id, prompt=bash, can_review=True, scopes="write")
        turn = await harness.turn(client, run_id)
        assert turn.state == "done", turn.error
        assert "RESULT(is_error=True):denied: Bash needs the 'admin' scope" in turn.text()
        assert [c["data"]["state"] for c in turn.of("data-permission")] == ["denied"]  # never "requested"
        assert not (harness.project / "made").exists()
        rows = harness.usage(lambda rows: any(r["tool"] == "approval Bash" for r in rows))
        assert [r["outcome"] for r in rows if r["tool"] == "approval Bash"] == ["refused"]


async def test_a_read_driver_cannot_run_commands_through_the_anthropic_engine(tmp_path: Path,
                                                                                api: MessagesApi) -> None:
    """The anthropic engine offers only the tools the run's key may call (the gate), and `scopes` narrows the key
    of an admin driver to read: run_command is not even offered, and nothing runs."""
    harness = Harness(tmp_path / "h", api.url, '[agent]\nengine = "anthropic"\n')  # key-less default: admin
    async with running(harness) as client:
        run_id = await harness.start_run(client, 'go @@tool run_command {"command": "touch made"}@@', scopes="read")
        turn = await harness.turn(client, run_id)
        assert turn.state == "done", turn.error
        assert turn.text().startswith("NO-TOOL run_command in") and "read_file" in turn.text()
        assert not (harness.project / "made").exists()
        assert json.loads(harness.cli("runs", "show", run_id, "--json").stdout)["scopes"] == "read"


def test_a_runs_envelope_cannot_loosen_the_configured_one() -> None:
    configured = parse_envelope({"defaults": {"file_delete": "require_review", "shell_command": "auto_approve"}})
    loose = parse_envelope({"defaults": {"file_delete": "auto_approve", "shell_command": "auto_approve"}})
    strict = parse_envelope({"mode": "read_only"})
    delete = classify("Bash", {"command": "rm x"}, (Path("/p"),), lambda _: None)
    shell = classify("Bash", {"command": "make"}, (Path("/p"),), lambda _: None)
    assert narrowed(configured, (loose,), delete)[0] == "require_review"
    assert narrowed(configured, (), shell)[0] == "auto_approve"
    assert narrowed(configured, (loose, strict), shell) == ("deny", "the run's own envelope: the envelope's mode "
                                                          "is read_only: only read-only actions are allowed")


async def test_scopes_and_the_runs_envelope_only_narrow(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path / "h", api.url, 'default_scopes = "write"\n[agent]\nengine = "anthropic"\n'
                      '[agent.approvals]\ndefaults = { file_write_inside_roots = "auto_approve" }\n')
    async with running(harness) as client:
        with pytest.raises(AgentError) as wider:
            await harness.start_run(client, "hi", scopes="admin")
        assert wider.value.code == "forbidden" and "may only narrow" in str(wider.value)
        for bad_scopes in ([1], "root", {"read": True}):
            with pytest.raises(AgentError) as bad_scope:
                await harness.start_run(client, "hi", scopes=bad_scopes)
            assert bad_scope.value.code == "bad_request", bad_scopes
        with pytest.raises(AgentError) as bad:
            await harness.start_run(client, "hi", approvals={"mode": "yolo"})
        assert bad.value.code == "bad_request" and "mode" in str(bad.value)
        with pytest.raises(AgentError) as model:
            await harness.start_run(client, "hi", model="x; rm -rf /")
        assert model.value.code == "bad_request"

        write = 'write @@tool write_file {"path": "out.txt", "content": "x"}@@'
        # The configured envelope auto-approves writes; the run's own denies them: the stricter wins.
        run_id = await harness.start_run(client, write, approvals={"defaults": {"file_write_inside_roots": "deny"}})
        turn = await harness.turn(client, run_id)
        assert "RESULT(is_error=True):denied by the approval envelope (the run's own envelope" in turn.text()
        assert not (harness.project / "out.txt").exists()
        # Without a run envelope the configured one applies: the write is approved.
        run_id = await harness.start_run(client, write)
        assert (await harness.turn(client, run_id)).state == "done"
        assert (harness.project / "out.txt").read_text() == "x"


@every_claude_code
async def test_the_engine_child_gets_no_secret_of_the_service(tmp_path: Path, api: MessagesApi,
                                                               claude: ClaudeCode) -> None:
    harness = Harness(tmp_path / "h", api.url, '[agent.approvals]\nshell_allowlist = ["env"]\n', claude.binary)
    harness.env.update(GITHUB_TOKEN="ghp_" + "9" * 20, COMPASS_API_KEY="ck_" + "8" * 40)
    async with running(harness) as client:
        run_id = await harness.start_run(client, 'env @@tool Bash {"command": "env", "description": "t"}@@')
        turn = await harness.turn(client, run_id)
        assert turn.state == "done", turn.error
        text = turn.text()
        assert "RESULT(is_error=False):" in text and "ANTHROPIC_BASE_URL=" in text
        assert "9" * 20 not in text and "8" * 40 not in text and "COMPASS_BRIDGE_KEY" not in text


@every_claude_code
async def test_deferred_bridge_tools_are_loaded_with_tool_search(tmp_path: Path, api: MessagesApi,
                                                                  claude: ClaudeCode) -> None:
    """No test turns tool search off: on a CLI that defers MCP tools the scripted model loads the bridge's tool
    with `ToolSearch` {"query": "select:<tool>"}, as the real model does, then calls it."""
    harness = Harness(tmp_path / "h", api.url, "", claude.binary)
    assert "ENABLE_TOOL_SEARCH" not in harness.env
    (harness.project / "notes.txt").write_text("the notes")
    async with running(harness) as client:
        before = len(api.requests)
        run_id = await harness.start_run(client, 'read @@tool __read_file {"path": "notes.txt"}@@')
        turn = await harness.turn(client, run_id)
        assert turn.state == "done" and "RESULT(is_error=False):the notes" in turn.text(), turn.text()
        searches = [b["input"] for r in api.requests[before:] for m in r.get("messages", [])
                    if isinstance(m.get("content"), list) for b in m["content"]
                    if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == "ToolSearch"]
        if claude.version == CURRENT:
            assert {"query": "select:mcp__bridge__read_file"} in searches


# -- the start's own context, and a session that survives a restart --------------------------------------


def _system_of(request: dict[str, Any]) -> str:
    system = request.get("system")
    if isinstance(system, list):
        return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    return str(system or "")


@every_claude_code
async def test_system_and_earlier_messages_reach_claude_code(tmp_path: Path, api: MessagesApi,
                                                             claude: ClaudeCode) -> None:
    harness = Harness(tmp_path / "h", api.url, "", claude.binary)
    async with running(harness) as client:
        before = len(api.requests)
        marker = "compass-context-" + claude.version
        run_id = await harness.start_run(client, "and now?", system=f"The user is {marker}.", messages=[
            {"role": "user", "content": "remember the word heliotrope"}, {"role": "assistant", "content": "ok"}])
        assert (await harness.turn(client, run_id)).state == "done"
        main = [r for r in api.requests[before:] if r.get("tools")]
        assert main and marker in _system_of(main[0])
        assert "heliotrope" in json.dumps(main[0]["messages"])
        assert not any(marker in line for line in argv_of_all_processes())  # a file, never argv
        with pytest.raises(AgentError) as bad:
            await harness.start_run(client, "x", messages=[{"role": "system", "content": "y"}])
        assert bad.value.code == "bad_request" and "earlier conversation" in str(bad.value)


async def test_the_anthropic_session_survives_a_service_restart(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path / "h", api.url, '[agent]\nengine = "anthropic"\n')
    async with running(harness) as client:
        run_id = await harness.start_run(client, "the first question", system="be brief",
                                         messages=[{"role": "user", "content": "earlier"},
                                                   {"role": "assistant", "content": "noted"}])
        assert (await harness.turn(client, run_id)).state == "done"
    async with running(harness) as client:
        before = len(api.requests)
        await client.request("send", run_id=run_id, prompt="the follow-up", can_review=True)
        turn = await harness.turn(client, run_id)
        assert turn.state == "done", turn.error
        [request] = api.requests[before:]
        texts = [m["content"] for m in request["messages"] if isinstance(m["content"], str)]
        assert texts[:3] == ["earlier", "noted", "the first question"] and texts[-1] == "the follow-up"
        assert request["system"] == "be brief"

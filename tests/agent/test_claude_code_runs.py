"""Agent runs on the real Claude Code CLI (every pinned version), offline against a scripted Messages API.

Each test has a run service of its own (a real process) and drives it through the same client the terminal
front end uses; every turn's chunk stream is checked with the AI SDK's own schema and assembly."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.agent.client import AgentClient, AgentError
from tests.agent.harness import Harness, Turn, argv_of_all_processes, check_chunks
from tests.support.claude_code import ClaudeCode, every_claude_code
from tests.support.messages_api import MessagesApi

pytestmark = pytest.mark.anyio

BASH = '@@tool Bash {{"command": "{command}", "description": "t"}}@@'


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


@pytest.fixture
def make(tmp_path: Path, api: MessagesApi, claude: ClaudeCode) -> Iterator[Any]:
    made: list[Harness] = []

    def factory(config: str = "[agent]\nreview_timeout_s = 30\n") -> Harness:
        harness = Harness(tmp_path / f"h{len(made)}", api.url, config, claude.binary)
        harness.start()
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        if harness.service is not None:
            harness.stop()
    for harness in made:
        harness.check_streams()  # every turn of the test, through the AI SDK's own checks


@pytest.fixture
async def session(make: Any) -> AsyncIterator[tuple[Harness, AgentClient]]:
    harness = make()
    client = await harness.client()
    yield harness, client
    await client.close()


def permission_states(turn: Turn) -> list[str]:
    return [c["data"]["state"] for c in turn.of("data-permission")]


@every_claude_code
async def test_review_allowed_with_edited_input_prompt_never_in_argv(
        session: tuple[Harness, AgentClient]) -> None:
    harness, client = session
    marker = "marker-" + secrets.token_hex(8)
    argv_seen: list[str] = []

    async def answer(chunk: dict[str, Any]) -> None:
        if chunk["type"] == "data-permission" and chunk["data"]["state"] == "requested":
            argv_seen.extend(argv_of_all_processes())  # the CLI and its MCP server are alive right now
            await client.request("answer", approval_id=chunk["data"]["approvalId"], decision="allow",
                                 updated_input={"command": "echo rewritten", "description": "t"})

    run_id = await harness.start_run(client, f"{marker} " + BASH.format(command="mkdir -p made && echo original"))
    turn = await harness.turn(client, run_id, answer)
    assert turn.state == "done", turn.error
    assert "RESULT(is_error=False):rewritten" in turn.text()
    assert not (harness.project / "made").exists()  # the edited command ran, not the original
    assert permission_states(turn) == ["requested", "allowed"]
    review = turn.of("data-permission")[0]["data"]
    assert review["category"] == "file_write_inside_roots" or review["category"] == "shell_command"
    assert review["risk"] in ("low", "medium") and review["summary"].startswith("run `mkdir")
    assert argv_seen and not any(marker in argv for argv in argv_seen), "the prompt reached a command line"
    rows = harness.usage(lambda rows: any(r["tool"] == "approval Bash" for r in rows))
    approvals = [r for r in rows if r["tool"] == "approval Bash"]
    assert approvals and approvals[0]["outcome"] == "ok" and "by person" in approvals[0]["error"]


@every_claude_code
async def test_policy_allows_bridge_read_and_its_call_is_logged_under_the_run_key(
        session: tuple[Harness, AgentClient]) -> None:
    harness, client = session
    (harness.project / "notes.txt").write_text("the notes")
    run_id = await harness.start_run(client, 'read @@tool __read_file {"path": "notes.txt"}@@')
    turn = await harness.turn(client, run_id)
    assert turn.state == "done", turn.error
    assert "RESULT(is_error=False):the notes" in turn.text()
    assert permission_states(turn) == []  # read-only: decided by policy, nobody asked
    await client.request("abort", run_id=run_id)  # ends the session: its key is revoked
    for _ in range(100):
        keys = json.loads(harness.cli("keys", "list", "--json").stdout)
        run_keys = [k for k in keys if k["name"].startswith(f"agent-run-{run_id}")]
        if run_keys and all(k["revoked"] for k in run_keys):
            break
        await asyncio.sleep(0.1)
    assert run_keys and all(k["revoked"] for k in run_keys), run_keys
    rows = harness.usage(lambda rows: any(r["tool"] == "read_file" for r in rows))
    calls = [r for r in rows if r["tool"] == "read_file"]
    assert calls and calls[0]["key"] == run_keys[0]["name"] and calls[0]["outcome"] == "ok"
    decisions = [r for r in rows if r["tool"] == "approval mcp__bridge__read_file"]
    assert decisions and "allowed by policy" in decisions[0]["error"] and decisions[0]["key"] == run_keys[0]["name"]


@every_claude_code
async def test_deny_then_deny_and_stop(session: tuple[Harness, AgentClient]) -> None:
    harness, client = session

    async def deny(chunk: dict[str, Any], stop: bool) -> None:
        if chunk["type"] == "data-permission" and chunk["data"]["state"] == "requested":
            await client.request("answer", approval_id=chunk["data"]["approvalId"], decision="deny",
                                 message="not today", stop=stop)

    run_id = await harness.start_run(client, "do " + BASH.format(command="mkdir -p denied && echo x"))
    turn = await harness.turn(client, run_id, lambda c: deny(c, False))
    assert turn.state == "done" and "RESULT(is_error=True):not today" in turn.text()
    assert permission_states(turn) == ["requested", "denied"] and not (harness.project / "denied").exists()

    await client.request("send", run_id=run_id, prompt="again " + BASH.format(command="mkdir -p stop && echo y"),
                         can_review=True)
    turn = await harness.turn(client, run_id, lambda c: deny(c, True))
    assert turn.of("abort"), f"deny-and-stop ends the turn: {turn.chunks}"
    assert "RESULT" not in turn.text() and not (harness.project / "stop").exists()
    assert turn.state == "done"  # the run rests; a follow-up may continue it


@every_claude_code
async def test_review_answered_from_the_cli_then_a_review_times_out(make: Any) -> None:
    harness = make("[agent]\nreview_timeout_s = 5\n")
    client = await harness.client()
    try:
        async def from_cli(chunk: dict[str, Any]) -> None:
            if chunk["type"] == "data-permission" and chunk["data"]["state"] == "requested":
                listed = await asyncio.to_thread(harness.cli, "approvals", "list", "--json")
                pending = json.loads(listed.stdout)
                assert [p["id"] for p in pending] == [chunk["data"]["approvalId"]]
                done = await asyncio.to_thread(harness.cli, "approvals", "allow", pending[0]["id"])
                assert done.returncode == 0, done.stderr

        run_id = await harness.start_run(client, "do " + BASH.format(command="mkdir -p fromcli && echo ok"))
        turn = await harness.turn(client, run_id, from_cli)
        assert turn.state == "done" and "RESULT(is_error=False):ok" in turn.text()
        assert (harness.project / "fromcli").is_dir()

        await client.request("send", run_id=run_id, prompt="more " + BASH.format(command="mkdir -p late"),
                             can_review=True)
        turn = await harness.turn(client, run_id)
        assert permission_states(turn) == ["requested", "denied"]
        assert "no answer within 5 s" in turn.of("data-permission")[-1]["data"]["message"]
        assert "RESULT(is_error=True):denied: no answer" in turn.text() and not (harness.project / "late").exists()
        assert harness.usage(lambda rows: any(r["tool"] == "approval Bash" and "by timeout" in r["error"]
                                              for r in rows))
    finally:
        await client.close()


@every_claude_code
async def test_interrupt_mid_stream_then_follow_up(session: tuple[Harness, AgentClient]) -> None:
    harness, client = session
    run_id, turn = await harness.stop_mid_stream(client, "count @@slow 100@@", "interrupt")
    assert turn.of("abort") and turn.state == "done"
    assert "tick 0" in turn.text() and "tick 60" not in turn.text()

    await client.request("send", run_id=run_id, prompt="and now?", can_review=True)
    turn = await harness.turn(client, run_id)
    assert turn.state == "done" and turn.text().startswith("ECHO:")
    assert int(turn.text().split(":")[1].split()[0]) > 2  # the model saw the interrupted turn too


@every_claude_code
async def test_resume_after_the_service_restarts(make: Any) -> None:
    harness = make()
    client = await harness.client()
    run_id = await harness.start_run(client, "hello")
    first = await harness.turn(client, run_id)
    assert first.state == "done"
    first_count = int(first.text().split(":")[1].split()[0])
    slow_id = await harness.start_run(client, "count @@slow 100@@")

    async def until_streaming(chunk: dict[str, Any]) -> None:
        if chunk["type"] == "text-delta":
            raise _Streaming

    with pytest.raises(_Streaming):
        await harness.turn(client, slow_id, until_streaming)
    await client.close()
    assert harness.stop() == 0

    harness.start()
    client = await harness.client()
    try:
        runs = {r["id"]: r for r in (await client.request("list"))["runs"]}
        assert runs[run_id]["state"] == "done" and runs[slow_id]["state"] == "interrupted"
        # A driver that reconnects replays the stored chunks from any sequence number.
        await client.request("subscribe", run_id=run_id, after=2)
        replayed = []
        async for event in client.events():
            if event["event"] == "state":
                break
            replayed.append(event["seq"])
        assert replayed and replayed[0] == 3 and replayed == sorted(replayed)
        await client.request("unsubscribe", run_id=run_id)

        await client.request("send", run_id=run_id, prompt="still there?", can_review=True)
        turn = await harness.turn(client, run_id)
        assert turn.state == "done"
        assert int(turn.text().split(":")[1].split()[0]) > first_count  # the session's history came back
    finally:
        await client.close()


class _Streaming(Exception):
    pass


@every_claude_code
async def test_queue_full_is_busy_and_a_turn_times_out(make: Any) -> None:
    harness = make("[agent]\nmax_concurrent = 1\nmax_queued = 0\nrun_timeout_s = 3\n")
    client = await harness.client()
    try:
        run_id = await harness.start_run(client, "count @@slow 100@@")
        with pytest.raises(AgentError) as busy:
            await harness.start_run(client, "me too")
        assert busy.value.code == "busy" and "max_queued" in str(busy.value)
        turn = await harness.turn(client, run_id)
        assert turn.state == "failed" and "run time-out" in (turn.error or "")
        assert turn.of("error") and "tick 99" not in turn.text()
    finally:
        await client.close()


@every_claude_code
async def test_ask_user_question_reaches_the_driver_and_is_not_answered_by_the_service(
        session: tuple[Harness, AgentClient]) -> None:
    harness, client = session
    question = {"questions": [{"question": "Which colour?", "header": "Colour", "multiSelect": False,
                               "options": [{"label": "red", "description": "warm"},
                                           {"label": "blue", "description": "cold"}]}]}
    seen: list[dict[str, Any]] = []

    async def answer(chunk: dict[str, Any]) -> None:
        if chunk["type"] == "data-question" and chunk["data"]["state"] == "requested":
            seen.append(chunk["data"])
            await asyncio.sleep(0.5)  # the service must not answer by itself meanwhile
            await client.request("answer", approval_id=chunk["data"]["approvalId"], decision="allow",
                                 updated_input={**question, "answers": {"Which colour?": "blue"}})

    run_id = await harness.start_run(client, f"ask @@tool AskUserQuestion {json.dumps(question)}@@")
    turn = await harness.turn(client, run_id, answer)
    assert seen and seen[0]["category"] == "question"
    assert seen[0]["input"]["questions"][0]["question"] == "Which colour?"
    assert [c["data"]["state"] for c in turn.of("data-question")] == ["requested", "allowed"]
    assert turn.state == "done" and "blue" in turn.text()


@every_claude_code
async def test_envelope_allowlist_and_test_results_detected(make: Any) -> None:
    harness = make('[agent.approvals]\nshell_allowlist = ["python3 -c"]\n')
    client = await harness.client()
    try:
        summary = "=== 5 passed, 1 failed, 2 skipped in 0.12s ==="
        command = f"python3 -c 'print(\"{summary}\")'"
        run_id = await harness.start_run(client, f"test @@tool Bash {json.dumps({'command': command})}@@")
        turn = await harness.turn(client, run_id)
        assert turn.state == "done" and summary in turn.text()
        assert permission_states(turn) == []  # allowed by the envelope's shell allowlist: nobody asked
        [found] = [c["data"] for c in turn.of("data-test-result")]
        assert found == {"runner": "pytest", "passed": 5, "failed": 1, "skipped": 2, "total": 8,
                         "command": command}
        shown = (await client.request("show", run_id=run_id))["run"]
        assert shown["test_results"] == [found]
        rows = harness.usage(lambda rows: any(r["tool"] == "approval Bash" for r in rows))
        decisions = [r for r in rows if r["tool"] == "approval Bash"]
        assert decisions and "the shell allowlist has 'python3 -c'" in decisions[0]["error"]
    finally:
        await client.close()


@every_claude_code
def test_terminal_front_end_without_a_terminal_denies_reviews_at_once(make: Any, tmp_path: Path) -> None:
    harness = make()
    done = harness.cli("run", "--json", "do " + BASH.format(command="mkdir -p nope && echo x"), stdin="")
    assert done.returncode == 0, done.stderr
    chunks = [json.loads(line) for line in done.stdout.splitlines()]
    check_chunks([chunks], tmp_path / "cli")
    [denied] = [c["data"] for c in chunks if c["type"] == "data-permission"]
    assert denied["state"] == "denied" and "no terminal" in denied["message"]
    assert not (harness.project / "nope").exists()
    run_id = done.stderr.split()[1]
    shown = json.loads(harness.cli("runs", "show", run_id, "--json").stdout)
    assert shown["state"] == "done" and shown["transcript"][0]["content"].startswith("do ")
    tail = harness.cli("runs", "tail", run_id, "--json", "--no-follow", "--after", "3")
    seqs = [json.loads(line)["seq"] for line in tail.stdout.splitlines()]
    assert seqs == list(range(4, len(chunks) + 1))


@every_claude_code
async def test_fork_starts_a_new_run_from_a_copy_of_the_session(session: tuple[Harness, AgentClient]) -> None:
    harness, client = session
    source = await harness.start_run(client, "hello")
    first = await harness.turn(client, source)
    assert first.state == "done"
    count = int(first.text().split(":")[1].split()[0])
    fork = (await client.request("start", prompt="and the fork?", fork_of=source, can_review=True))["run_id"]
    turn = await harness.turn(client, fork)
    assert turn.state == "done" and int(turn.text().split(":")[1].split()[0]) > count
    runs = {r["id"]: r for r in (await client.request("list"))["runs"]}
    assert runs[fork]["session_id"] and runs[fork]["session_id"] != runs[source]["session_id"]
    assert runs[fork]["cwd"] == runs[source]["cwd"]


@every_claude_code
async def test_a_review_the_cli_withdraws_is_withdrawn(session: tuple[Harness, AgentClient]) -> None:
    harness, client = session
    run_id = ""

    async def interrupt_instead(chunk: dict[str, Any]) -> None:
        if chunk["type"] == "data-permission" and chunk["data"]["state"] == "requested":
            assert (await client.request("approvals"))["approvals"]
            await client.request("interrupt", run_id=run_id)

    run_id = await harness.start_run(client, "do " + BASH.format(command="mkdir -p never"))
    turn = await harness.turn(client, run_id, interrupt_instead)
    assert permission_states(turn) == ["requested", "withdrawn"] and turn.of("abort")
    assert (await client.request("approvals"))["approvals"] == []
    assert not (harness.project / "never").exists()
    rows = harness.usage(lambda rows: any(r["tool"] == "approval Bash" and "by withdrawn" in r["error"] for r in rows))
    assert any(r["tool"] == "approval Bash" and "by withdrawn" in r["error"] for r in rows)

"""The `anthropic` engine against the scripted Messages API: the bridge's own tools in the loop, through the same
call pipeline (gate, usage log) as `serve`, reviews, and an abort that closes the HTTP stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.agent.client import AgentClient
from tests.agent.harness import Harness
from tests.support.messages_api import MessagesApi

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


@pytest.fixture
async def session(tmp_path: Path, api: MessagesApi) -> AsyncIterator[tuple[Harness, AgentClient]]:
    harness = Harness(tmp_path / "h", api.url, '[agent]\nengine = "anthropic"\nreview_timeout_s = 30\n')
    harness.start()
    client = await harness.client()
    yield harness, client
    await client.close()
    harness.stop()
    harness.check_streams()


async def test_tool_loop_over_the_bridge_tools(session: tuple[Harness, AgentClient]) -> None:
    harness, client = session
    (harness.project / "notes.txt").write_text("the notes")
    run_id = await harness.start_run(client, 'read @@tool read_file {"path": "notes.txt"}@@')
    turn = await harness.turn(client, run_id)
    assert turn.state == "done", turn.error
    assert "RESULT(is_error=False):the notes" in turn.text()
    [output] = turn.of("tool-output-available")
    assert "the notes" in output["output"]

    async def allow(chunk: dict[str, Any]) -> None:
        if chunk["type"] == "data-permission" and chunk["data"]["state"] == "requested":
            assert chunk["data"]["category"] == "file_write_inside_roots"
            await client.request("answer", approval_id=chunk["data"]["approvalId"], decision="allow")

    await client.request("send", run_id=run_id, can_review=True,
                         prompt='write @@tool write_file {"path": "out.txt", "content": "written"}@@')
    turn = await harness.turn(client, run_id, allow)
    assert turn.state == "done" and (harness.project / "out.txt").read_text() == "written"

    rows = harness.usage(lambda rows: any(r["tool"] == "write_file" for r in rows))
    calls = [r for r in rows if r["tool"] in ("read_file", "write_file")]
    assert [(r["tool"], r["outcome"]) for r in calls] == [("read_file", "ok"), ("write_file", "ok")]
    assert all(r["key"].startswith(f"agent-run-{run_id}") and r["client"] == f"agent-run:{run_id}" for r in calls)
    assert ("approval write_file", "ok") in [(r["tool"], r["outcome"]) for r in rows]


async def test_deny(session: tuple[Harness, AgentClient]) -> None:
    harness, client = session

    async def deny(chunk: dict[str, Any]) -> None:
        if chunk["type"] == "data-permission" and chunk["data"]["state"] == "requested":
            await client.request("answer", approval_id=chunk["data"]["approvalId"], decision="deny",
                                 message="keep it as it is")

    run_id = await harness.start_run(client, 'write @@tool write_file {"path": "no.txt", "content": "x"}@@')
    turn = await harness.turn(client, run_id, deny)
    assert turn.state == "done" and "RESULT(is_error=True):keep it as it is" in turn.text()
    assert turn.of("tool-output-error")[0]["errorText"] == "keep it as it is"
    assert not (harness.project / "no.txt").exists()


async def test_abort_closes_the_http_stream(session: tuple[Harness, AgentClient], api: MessagesApi) -> None:
    harness, client = session
    before = api.aborted
    _, turn = await harness.stop_mid_stream(client, "count @@slow 100@@", "abort")
    assert turn.state == "aborted" and turn.of("abort") and "tick 50" not in turn.text()
    for _ in range(50):  # the server notices at its next write (0.1 s apart)
        if api.aborted > before:
            break
        await asyncio.sleep(0.1)
    assert api.aborted > before, "the scripted API never saw the client go away"

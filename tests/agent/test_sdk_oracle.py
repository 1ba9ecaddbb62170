"""The oracle: the official `claude-agent-sdk` drives the same pinned CLI through the same scenario, and its
messages, mapped by the same ChunkMapper, must give the chunk stream our own driver gave. The protocol is
undocumented; this is how a change in it (or a mistake in our driver) shows.

The SDK is the `oracle` test extra, installed from its sdist (scripts/test): its wheels bundle a Claude Code
binary the tests never use — they pass the pinned CLI as `cli_path`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.agent.chunks import ChunkMapper
from tests.agent.harness import Harness, check_chunks
from tests.conftest import require
from tests.support.claude_code import ClaudeCode, every_claude_code
from tests.support.messages_api import MessagesApi

pytestmark = pytest.mark.anyio

PROMPT = 'do @@tool Bash {"command": "mkdir -p made && echo original", "description": "t"}@@'
EDITED = {"command": "echo rewritten", "description": "t"}


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


def normalized(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What must agree: kinds, text, tool names, inputs and outputs; not ids, metadata or our review parts."""
    drop = {"id", "toolCallId", "messageId", "messageMetadata"}
    return [{k: v for k, v in c.items() if k not in drop} for c in chunks if not c["type"].startswith("data-")]


async def sdk_chunks(claude: ClaudeCode, harness: Harness) -> list[dict[str, Any]]:
    try:
        import claude_agent_sdk as sdk
    except ImportError:
        require(False, "claude-agent-sdk (the oracle test extra)",
                "run scripts/test, or `.venv/bin/pip install --no-binary claude-agent-sdk -e '.[oracle]'`")
        raise
    chunks: list[dict[str, Any]] = []
    mapper = ChunkMapper(chunks.append, 1, "oracle")

    async def allow_edited(name: str, tool_input: dict[str, Any], context: Any) -> Any:
        assert name == "Bash" and tool_input["command"].startswith("mkdir -p made")
        return sdk.PermissionResultAllow(updated_input=EDITED)

    async def prompt() -> AsyncIterator[dict[str, Any]]:
        yield {"type": "user", "message": {"role": "user", "content": PROMPT}, "parent_tool_use_id": None,
               "session_id": "default"}

    options = sdk.ClaudeAgentOptions(cli_path=claude.binary, cwd=harness.project, env=harness.env,
                                     setting_sources=[], include_partial_messages=True, can_use_tool=allow_edited)
    async for message in sdk.query(prompt=prompt(), options=options):
        if isinstance(message, sdk.StreamEvent):
            mapper.event(message.event)
        elif isinstance(message, sdk.UserMessage) and isinstance(message.content, list):
            for block in message.content:
                if isinstance(block, sdk.ToolResultBlock):
                    mapper.tool_result(block.tool_use_id, block.content, is_error=bool(block.is_error))
        elif isinstance(message, sdk.ResultMessage):
            mapper.finish(message.stop_reason or "end_turn")
    return chunks


@every_claude_code
async def test_our_driver_streams_what_the_official_sdk_streams(tmp_path: Path, api: MessagesApi,
                                                                 claude: ClaudeCode) -> None:
    harness = Harness(tmp_path, api.url, "", claude.binary)
    oracle = await sdk_chunks(claude, harness)

    harness.start()
    try:
        client = await harness.client()
        try:
            async def allow_edited(chunk: dict[str, Any]) -> None:
                if chunk["type"] == "data-permission" and chunk["data"]["state"] == "requested":
                    await client.request("answer", approval_id=chunk["data"]["approvalId"], decision="allow",
                                         updated_input=EDITED)

            run_id = await harness.start_run(client, PROMPT)
            ours = [c for _, c in (await harness.turn(client, run_id, allow_edited)).chunks]
        finally:
            await client.close()
    finally:
        harness.stop()
    check_chunks([oracle, ours], tmp_path / "oracle")
    assert normalized(ours) == normalized(oracle), json.dumps({"ours": ours, "sdk": oracle}, indent=1)
    assert any(c.get("output") == "rewritten\n" or "rewritten" in str(c.get("output")) for c in oracle)

"""The chunk mapper on streams the scripted model does not produce: thinking, cut-off tool input, bad JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp_bridge.agent.chunks import ChunkMapper
from tests.agent.harness import check_chunks


def _events(*blocks: tuple[str, list[dict[str, Any]]], stop: bool = True) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {}}]
    for index, (start, deltas) in enumerate(blocks):
        kind = start.split(":")[0]
        block: dict[str, Any] = {"type": kind}
        if kind == "tool_use":
            block.update(id=f"toolu_{index}", name=start.split(":")[1], input={})
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        if stop:
            events.append({"type": "content_block_stop", "index": index})
    if stop:
        events.append({"type": "message_stop"})
    return events


def test_thinking_text_and_a_tool_call_with_its_result(tmp_path: Path) -> None:
    chunks: list[dict[str, Any]] = []
    mapper = ChunkMapper(chunks.append, 1, "m1")
    for event in _events(("thinking", [{"type": "thinking_delta", "thinking": "hmm"}]),
                         ("text", [{"type": "text_delta", "text": "hi"}]),
                         ("tool_use:lookup", [{"type": "input_json_delta", "partial_json": '{"k": 1}'}])):
        mapper.event(event)
    mapper.tool_result("toolu_2", "found", is_error=False)
    mapper.tool_result("toolu_unknown", "ignored", is_error=False)  # no input shown for it: dropped
    mapper.finish("end_turn", {"sessionId": "s"})
    mapper.finish("end_turn")  # a second end is ignored
    [result] = check_chunks([chunks], tmp_path)
    kinds = [part["type"] for part in result["message"]["parts"]]
    assert kinds == ["step-start", "reasoning", "text", "tool-lookup"]
    assert result["message"]["parts"][3]["output"] == "found"


def test_an_interrupted_stream_closes_what_is_open(tmp_path: Path) -> None:
    chunks: list[dict[str, Any]] = []
    mapper = ChunkMapper(chunks.append, 2, "m2")
    for event in _events(("text", [{"type": "text_delta", "text": "partial"}]),
                         ("tool_use:lookup", [{"type": "input_json_delta", "partial_json": '{"k"'}]), stop=False):
        mapper.event(event)
    mapper.abort()
    check_chunks([chunks], tmp_path)
    assert [c["type"] for c in chunks][-4:] == ["text-end", "tool-input-error", "finish-step", "abort"]


def test_invalid_tool_json_is_a_tool_input_error(tmp_path: Path) -> None:
    chunks: list[dict[str, Any]] = []
    mapper = ChunkMapper(chunks.append, 1, "m3")
    for event in _events(("tool_use:lookup", [{"type": "input_json_delta", "partial_json": '{"k": '}])):
        mapper.event(event)
    mapper.fail("the model broke")
    check_chunks([chunks], tmp_path)
    [error] = [c for c in chunks if c["type"] == "tool-input-error"]
    assert "invalid JSON" in error["errorText"]
    assert chunks[-2:] == [{"type": "error", "errorText": "the model broke"},
                           {"type": "finish", "finishReason": "error"}]

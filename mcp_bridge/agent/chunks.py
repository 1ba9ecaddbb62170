"""Messages-API stream events and tool results → AI SDK v5 `UIMessageChunk`s (what Compass's web client reads).

Both engines see raw Messages-API events (Claude Code forwards them as `stream_event`s with
`--include-partial-messages`; the anthropic engine reads them off the SSE stream), so one mapper serves both.
One turn of a run is one UI message: `start` … `finish` (or `abort` / `error`). Ids are unique within the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

Chunk = dict[str, Any]
Emit = Callable[[Chunk], None]

_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool-calls",
                   "refusal": "content-filter"}


class ChunkMapper:
    """The chunks of one turn; call `event()` for each stream event, `tool_result()` for each tool result, and
    end with exactly one of `finish()`, `abort()` or `fail()`."""

    def __init__(self, emit: Emit, turn: int, message_id: str) -> None:
        self._emit = emit
        self._turn = turn
        self._step = 0
        self._step_open = False
        self._step_done = False
        self._blocks: dict[int, dict[str, Any]] = {}
        self._tools: dict[str, str] = {}  # toolCallId -> "streaming" | "available" | "done"
        self.ended = False
        emit({"type": "start", "messageId": message_id})

    # -- the model's stream ----------------------------------------------------------------

    def event(self, ev: Mapping[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "message_start":
            self._close_step()
            self._step += 1
            self._blocks = {}
            self._step_open = True
            self._emit({"type": "start-step"})
        elif kind == "content_block_start":
            self._block_start(int(ev.get("index", 0)), ev.get("content_block") or {})
        elif kind == "content_block_delta":
            self._block_delta(int(ev.get("index", 0)), ev.get("delta") or {})
        elif kind == "content_block_stop":
            self._block_stop(int(ev.get("index", 0)))
        elif kind == "message_stop":
            # Tool results still belong to this step: finish-step is sent at the next step or the end.
            self._step_done = True

    def _block_start(self, index: int, block: Mapping[str, Any]) -> None:
        btype = block.get("type")
        pid = f"t{self._turn}s{self._step}b{index}"
        if btype == "text":
            self._emit({"type": "text-start", "id": pid})
        elif btype == "thinking":
            self._emit({"type": "reasoning-start", "id": pid})
        elif btype in ("tool_use", "server_tool_use"):
            pid = str(block.get("id") or pid)
            self._tools[pid] = "streaming"
            self._emit({"type": "tool-input-start", "toolCallId": pid, "toolName": str(block.get("name", "?"))})
        else:
            return
        self._blocks[index] = {"type": btype, "id": pid, "name": block.get("name"), "json": "", "open": True}

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> None:
        block = self._blocks.get(index)
        if block is None or not block["open"]:
            return
        dtype = delta.get("type")
        if dtype == "text_delta" and block["type"] == "text":
            self._emit({"type": "text-delta", "id": block["id"], "delta": str(delta.get("text", ""))})
        elif dtype == "thinking_delta" and block["type"] == "thinking":
            self._emit({"type": "reasoning-delta", "id": block["id"], "delta": str(delta.get("thinking", ""))})
        elif dtype == "input_json_delta" and block["type"] in ("tool_use", "server_tool_use"):
            part = str(delta.get("partial_json", ""))
            block["json"] += part
            self._emit({"type": "tool-input-delta", "toolCallId": block["id"], "inputTextDelta": part})

    def _block_stop(self, index: int) -> None:
        block = self._blocks.get(index)
        if block is None or not block["open"]:
            return
        if block["type"] not in ("tool_use", "server_tool_use"):
            self._end(block, None)
            return
        try:
            parsed = json.loads(block["json"] or "{}")
        except json.JSONDecodeError as exc:
            self._end(block, f"the model sent invalid JSON: {exc}")
            return
        block["open"] = False
        self._tools[block["id"]] = "available"
        self._emit({"type": "tool-input-available", "toolCallId": block["id"], "toolName": block["name"],
                    "input": parsed})

    def _end(self, block: dict[str, Any], tool_error: str | None) -> None:
        """Close a block: its text or reasoning ends; a tool call whose input cannot be completed fails."""
        block["open"] = False
        if block["type"] == "text":
            self._emit({"type": "text-end", "id": block["id"]})
        elif block["type"] == "thinking":
            self._emit({"type": "reasoning-end", "id": block["id"]})
        else:
            self._tools[block["id"]] = "done"
            self._emit({"type": "tool-input-error", "toolCallId": block["id"], "toolName": block["name"],
                        "input": block["json"], "errorText": tool_error or "the turn ended before the input was "
                        "complete"})

    # -- tool results, approvals, extras ----------------------------------------------------

    def tool_result(self, tool_call_id: str, output: Any, *, is_error: bool) -> None:
        if self._tools.get(tool_call_id) != "available":
            return  # a result for a call this turn never showed (e.g. a sub-agent's): nothing to attach it to
        self._tools[tool_call_id] = "done"
        if is_error:
            self._emit({"type": "tool-output-error", "toolCallId": tool_call_id, "errorText": _text(output)})
        else:
            self._emit({"type": "tool-output-available", "toolCallId": tool_call_id, "output": output})

    def data(self, name: str, part_id: str, data: Mapping[str, Any]) -> None:
        """A `data-<name>` part; a later one with the same id replaces it in place (a review's state)."""
        self._emit({"type": f"data-{name}", "id": part_id, "data": dict(data)})

    # -- the end of the turn ----------------------------------------------------------------

    def _close_blocks(self) -> None:
        for block in self._blocks.values():
            if block["open"]:
                self._end(block, None)

    def _close_step(self) -> None:
        self._close_blocks()
        if self._step_open:
            self._emit({"type": "finish-step"})
            self._step_open = False
        self._step_done = False

    def finish(self, stop_reason: str | None, metadata: Mapping[str, Any] | None = None) -> None:
        if self.ended:
            return
        self._close_step()
        chunk: Chunk = {"type": "finish", "finishReason": _FINISH_REASONS.get(stop_reason or "end_turn", "other")}
        if metadata:
            chunk["messageMetadata"] = dict(metadata)
        self._emit(chunk)
        self.ended = True

    def abort(self) -> None:
        if self.ended:
            return
        self._close_step()
        self._emit({"type": "abort"})
        self.ended = True

    def fail(self, message: str, metadata: Mapping[str, Any] | None = None) -> None:
        if self.ended:
            return
        self._close_step()
        self._emit({"type": "error", "errorText": message})
        chunk: Chunk = {"type": "finish", "finishReason": "error"}
        if metadata:
            chunk["messageMetadata"] = dict(metadata)
        self._emit(chunk)
        self.ended = True


def _text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return " ".join(str(b.get("text", "")) for b in output if isinstance(b, Mapping))
    return json.dumps(output, default=str)

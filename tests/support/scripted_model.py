"""A scripted Anthropic Messages API on loopback, so the real Claude Code CLI runs offline.

The model is given the tool calls to make, in order. For each one it does what the real model does:
- the tool is offered in the request's `tools` → it calls the tool;
- the CLI defers MCP tools (Claude Code 2.1.332 offers `ToolSearch` and names MCP tools only in a system
  message) → it first calls `ToolSearch` with `{"query": "select:<tool>"}`; the CLI answers with a
  `tool_result` holding `{"type": "tool_reference", "tool_name": <tool>}` (or the text "No matching deferred
  tools found") and offers the tool from the next request on;
- the tool is not there yet (a browser or Compass tool the server adds once its source connects) → it asks
  again a little later: another `ToolSearch`, or, on a CLI that offers MCP tools directly, a call of
  `wait_tool` (e.g. `bridge_status`) that gives the CLI a round trip to pick up the server's new tool list.
  The wait is bounded (`patience_s`): a tool that never comes ends the turn with `NO-TOOL:`.
Once every call has its result, the model answers with text that echoes them (`RESULT <tool>: <content>`),
which the CLI prints as its result — so a test sees exactly what reached the model.

The state of the script is read from the conversation the CLI sends, never kept here, as a real model would.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

TOOL_SEARCH = "ToolSearch"
RETRY_DELAY_S = 0.25
"""How long the model 'thinks' before asking again for a tool it did not find."""


Event = tuple[str, dict[str, Any]]


def sse(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event of the Messages API stream."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _whole(text: str) -> list[str]:
    return [text]


def message_events(model: Any, content: list[dict[str, Any]], stop: str, *,
                   text_pieces: Callable[[str], list[str]] = _whole,
                   json_pieces: Callable[[str], list[str]] = _whole) -> Iterator[Event]:
    """The Messages API's streaming events for one answer (`content` blocks of text and tool_use), text and tool
    input cut into deltas by `text_pieces` / `json_pieces`: the one framing both scripted servers send."""
    yield "message_start", {"type": "message_start", "message": {
        "id": "msg_s", "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}}
    for i, block in enumerate(content):
        if block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {"type": "text", "text": ""}}
            for piece in text_pieces(block["text"]):
                yield "content_block_delta", {"type": "content_block_delta", "index": i,
                                              "delta": {"type": "text_delta", "text": piece}}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}
            for piece in json_pieces(json.dumps(block["input"])):
                yield "content_block_delta", {"type": "content_block_delta", "index": i,
                                              "delta": {"type": "input_json_delta", "partial_json": piece}}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                            "usage": {"output_tokens": 5}}
    yield "message_stop", {"type": "message_stop"}


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """What both scripted servers' handlers share: quiet, `{}` for any GET, `_json` answers."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._json({})

    def _json(self, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_server(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    """A threaded server on 127.0.0.1 (an ephemeral port), serving in a daemon thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stop_server(server: http.server.ThreadingHTTPServer | None) -> None:
    assert server is not None
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class Call:
    tool: str
    """Full tool name as the CLI offers it, e.g. mcp__compass__read_file."""
    input: dict[str, Any]


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


@dataclass
class Conversation:
    """What one request says about the turn so far."""

    offered: list[str]
    uses: dict[str, dict[str, Any]]
    """tool_use id → the tool_use block, for every call the model made."""
    results: dict[str, Any]
    """tool_use id → the tool_result's content."""

    @classmethod
    def of(cls, body: dict[str, Any]) -> Conversation:
        uses: dict[str, dict[str, Any]] = {}
        results: dict[str, Any] = {}
        for message in body.get("messages", []):
            for block in _blocks(message):
                if block.get("type") == "tool_use":
                    uses[block["id"]] = block
                elif block.get("type") == "tool_result":
                    results[block["tool_use_id"]] = block.get("content")
        return cls([t.get("name", "") for t in body.get("tools", [])], uses, results)


@dataclass
class ScriptedModel:
    calls: list[Call]
    wait_tool: str | None = None
    """A harmless tool to call while a tool is not offered yet, on a CLI without ToolSearch."""
    patience_s: float = 10.0
    """How long to keep asking for a tool that is not there yet; only turns a hang into a failure."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def offered_tools(self) -> list[str]:
        """Every tool offered in any request (a deferred tool only once ToolSearch has loaded it)."""
        return [t.get("name", "") for r in self.requests for t in r.get("tools", [])]

    def deferred(self, tool: str) -> bool:
        """Whether the CLI withheld `tool` from the first request and offered ToolSearch instead."""
        first = Conversation.of(self.requests[0])
        return TOOL_SEARCH in first.offered and tool not in first.offered

    def loaded_through_search(self, tool: str) -> bool:
        """Whether a ToolSearch call of this turn answered with a reference to `tool`."""
        seen = Conversation.of(self.requests[-1])
        return any(use["name"] == TOOL_SEARCH and any(
            isinstance(r, dict) and r.get("type") == "tool_reference" and r.get("tool_name") == tool
            for r in (seen.results.get(use_id) or [])) for use_id, use in seen.uses.items())

    def reply(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        seen = Conversation.of(body)
        for i, call in enumerate(self.calls):
            if f"toolu_call_{i}" not in seen.results:
                return self._next_step(i, call, seen)
        echoed = "\n".join(f"RESULT {call.tool}: {json.dumps(seen.results[f'toolu_call_{i}'])}"
                           for i, call in enumerate(self.calls))
        return [{"type": "text", "text": echoed}], "end_turn"

    def _next_step(self, i: int, call: Call, seen: Conversation) -> tuple[list[dict[str, Any]], str]:
        if call.tool in seen.offered:
            return [{"type": "tool_use", "id": f"toolu_call_{i}", "name": call.tool, "input": call.input}], \
                "tool_use"
        attempts = sum(1 for use_id in seen.uses if use_id.startswith(f"toolu_find_{i}_"))
        ask = self._ask_for(call.tool, seen)
        if ask is None or attempts * RETRY_DELAY_S >= self.patience_s:
            return [{"type": "text", "text": f"NO-TOOL: {call.tool} not offered (tools: {seen.offered})"}], \
                "end_turn"
        if attempts:
            time.sleep(RETRY_DELAY_S)  # not found last time: give the server a moment to list it
        return [{"type": "tool_use", "id": f"toolu_find_{i}_{attempts}", "name": ask[0], "input": ask[1]}], \
            "tool_use"

    def _ask_for(self, tool: str, seen: Conversation) -> tuple[str, dict[str, Any]] | None:
        """The call that may bring `tool` into the next request, if the CLI offers one."""
        if TOOL_SEARCH in seen.offered:
            return TOOL_SEARCH, {"query": f"select:{tool}"}
        if self.wait_tool is not None and self.wait_tool in seen.offered:
            return self.wait_tool, {}
        return None

    def __enter__(self) -> ScriptedModel:
        model = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                if "count_tokens" in self.path:
                    return self._json({"input_tokens": 10})
                model.requests.append(body)
                self._answer(body, *model.reply(body))

            def _answer(self, body: dict[str, Any], content: list[dict[str, Any]], stop: str) -> None:
                if not body.get("stream"):
                    return self._json({"id": "msg_1", "type": "message", "role": "assistant",
                                       "model": body.get("model"), "content": content, "stop_reason": stop,
                                       "usage": {"input_tokens": 1, "output_tokens": 1}})
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for name, data in message_events(body.get("model"), content, stop):
                    self.wfile.write(sse(name, data))
                self.wfile.flush()

        self._server = start_server(Handler)
        return self

    def __exit__(self, *exc: object) -> None:
        stop_server(self._server)

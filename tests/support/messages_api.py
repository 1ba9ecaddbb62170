"""A scripted Anthropic Messages API on loopback, driven by directives in the newest user prompt.

Adapted from shared/testing/agent-runs/scripted_model.py, so one server serves every agent-run scenario:
  @@tool NAME {JSON}@@   call tool NAME (exact, or a suffix such as "__read_file") with that input; once the
                         last message holds a tool_result, answer "RESULT(is_error=...):<content>". A tool the
                         CLI defers (Claude Code 2.1.332 names MCP tools only in a system message) is first
                         loaded as the real model does: `ToolSearch` with {"query": "select:<tool>"}.
  @@slow N@@             answer with N text deltas, 0.1 s apart ("tick 0 tick 1 ...").
  @@stall@@              send one text delta, then hold the response open (keep-alive comments) for 60 s.
  anything else          answer "ECHO:<how many messages the request carried>".
Every request is kept (`requests`); a client that went away mid-stream is counted in `aborted`.
"""

from __future__ import annotations

import http.server
import json
import re
import time
from typing import Any

from tests.support.scripted_model import (
    RETRY_DELAY_S,
    TOOL_SEARCH,
    JsonHandler,
    message_events,
    sse,
    start_server,
    stop_server,
)

TOOL_RE = re.compile(r"@@tool (\S+) (\{.*?\})@@", re.S)
SLOW_RE = re.compile(r"@@slow (\d+)@@")
SEARCH_LIMIT = 40
"""ToolSearch calls in one conversation before a tool that never comes ends the turn with NO-TOOL (each but the
first waits RETRY_DELAY_S: a tool a source adds later is found as soon as the CLI re-lists)."""


def _cli_note(text: str) -> bool:
    """Text the CLI adds to user messages (system reminders, the deferred-tool list, "Tool loaded."), not the
    user's prompt."""
    return text.strip() == "Tool loaded." or text.lstrip().startswith("<system-reminder>") or (
        "deferred tools" in text)


def _deferred(messages: list[dict[str, Any]]) -> list[str]:
    """The tool names the CLI's deferred-tool notes list (one per line)."""
    return [line.strip() for m in messages for t in _texts(m) if "deferred tools" in t
            for line in t.splitlines() if re.fullmatch(r"\s*mcp__\S+\s*", line)]


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _texts(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]


def _last_said(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest message that is more than the CLI's own notes: when a server's tools change mid-turn, the CLI
    sends its note of newly deferred tools after the message holding the tool results, and the results are
    still what the model answers."""
    said: dict[str, Any] = {}
    for message in reversed(messages):
        if any(b.get("type") != "text" for b in _blocks(message)) or any(not _cli_note(t) for t in _texts(message)):
            said = message
            break
    return said


def plan(body: dict[str, Any], answered: set[str]) -> tuple[list[dict[str, Any]], str, float]:
    """(content blocks, stop_reason, per-delta delay; -1 = stall) for one request. `answered`: the tool results
    already echoed (Claude Code merges a follow-up prompt into the user message holding earlier results)."""
    messages = body.get("messages", [])
    prompts = ("\n".join(t for t in _texts(m) if not _cli_note(t)) for m in reversed(messages)
               if m.get("role") == "user")
    prompt = next((p for p in prompts if p), "")
    searches = {str(b.get("id")) for m in messages for b in _blocks(m)
                if b.get("type") == "tool_use" and b.get("name") == TOOL_SEARCH}
    last = _last_said(messages)
    results = [b for b in _blocks(last) if b.get("type") == "tool_result" and b.get("tool_use_id") not in answered
               and b.get("tool_use_id") not in searches]
    tools = [t.get("name") for t in body.get("tools", []) or []]
    if results:
        r = results[-1]
        if tools:  # the agent loop's request, not a side request (a title, a summary)
            answered.update(str(b.get("tool_use_id")) for b in results)
        out = r.get("content")
        if isinstance(out, list):
            out = " ".join(b.get("text", "") for b in out if isinstance(b, dict))
        return [{"type": "text", "text": f"RESULT(is_error={bool(r.get('is_error'))}):{out}"}], "end_turn", 0
    m = TOOL_RE.search(prompt)
    if m:
        want = m.group(1)
        name = next((t for t in tools if t == want or (t and t.endswith(want))), None)
        if name:
            return [{"type": "text", "text": "Calling the tool."},
                    {"type": "tool_use", "id": f"toolu_{len(messages):02d}{int(time.time() * 1000) % 100000}",
                     "name": name, "input": json.loads(m.group(2))}], "tool_use", 0
        listed = _deferred(messages)
        deferred = next((t for t in listed if t == want or t.endswith(want)), None)
        if TOOL_SEARCH in tools and deferred and len(searches) < SEARCH_LIMIT:
            if searches:
                time.sleep(RETRY_DELAY_S)  # not offered after the last search: give the server a moment
            return [{"type": "tool_use", "id": f"toolu_find_{len(messages):02d}", "name": TOOL_SEARCH,
                     "input": {"query": f"select:{deferred}"}}], "tool_use", 0
        if tools:
            return [{"type": "text", "text": "NO-TOOL " + want + " in " + json.dumps(tools + listed)}], "end_turn", 0
    if "@@stall@@" in prompt and tools:
        return [{"type": "text", "text": "stalling "}], "end_turn", -1
    s = SLOW_RE.search(prompt)
    if s and tools:
        return [{"type": "text", "text": "".join(f"tick {i} " for i in range(int(s.group(1))))}], "end_turn", 0.1
    return [{"type": "text", "text": f"ECHO:{len(messages)} messages"}], "end_turn", 0


class MessagesApi:
    """`with MessagesApi() as api: api.url` — a threaded HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.api_keys: list[str] = []
        """The `x-api-key` of each request."""
        self.aborted = 0
        self._answered: set[str] = set()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def main_requests(self) -> list[dict[str, Any]]:
        """The agent loop's requests (those offering tools), not the CLI's side requests (titles etc.)."""
        return [r for r in self.requests if r.get("tools")]

    def __enter__(self) -> MessagesApi:
        api = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                if "count_tokens" in self.path:
                    return self._json({"input_tokens": 10})
                api.requests.append(body)
                api.api_keys.append(self.headers.get("x-api-key") or "")
                blocks, stop, delay = plan(body, api._answered)
                if not body.get("stream"):
                    return self._json({"id": "msg_s", "type": "message", "role": "assistant",
                                       "model": body.get("model"), "content": blocks, "stop_reason": stop,
                                       "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}})
                try:
                    self._stream(body, blocks, stop, delay)
                except (BrokenPipeError, ConnectionResetError):
                    api.aborted += 1

            def _stream(self, body: dict[str, Any], blocks: list[dict[str, Any]], stop: str, delay: float) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                # Slow text goes word by word, `delay` apart; a stall holds the text block open with keep-alives.
                words = (lambda t: re.findall(r"\S+\s*", t)) if delay else (
                    lambda t: [t[k:k + 12] for k in range(0, len(t), 12)])
                for name, data in message_events(body.get("model"), blocks, stop, text_pieces=words,
                                                 json_pieces=lambda j: [j[k:k + 8] for k in range(0, len(j), 8)]):
                    if delay > 0 and data.get("delta", {}).get("type") == "text_delta":
                        time.sleep(delay)
                    if delay < 0 and name == "content_block_stop" and blocks[data["index"]]["type"] == "text":
                        for _ in range(600):
                            time.sleep(0.1)
                            self.wfile.write(b": keep-alive\n\n")
                            self.wfile.flush()
                    self.wfile.write(sse(name, data))
                    self.wfile.flush()

        self._server = start_server(Handler)
        return self

    def __exit__(self, *exc: object) -> None:
        stop_server(self._server)

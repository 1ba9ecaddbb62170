"""A scripted Anthropic Messages API on loopback, so the real Claude Code CLI runs offline.

Turn one answers with a `tool_use` of the configured tool; once the CLI sends the tool result back,
the model answers with text that echoes it (`RESULT:<tool result>`), which the CLI prints as its
result — so a test can see exactly what reached the model.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScriptedModel:
    tool: str
    """Full tool name as the CLI offers it, e.g. mcp__compass__read_file."""
    tool_input: dict[str, Any]
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def offered_tools(self) -> list[str]:
        return [t.get("name", "") for r in self.requests for t in r.get("tools", [])]

    def __enter__(self) -> ScriptedModel:
        model = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                if "count_tokens" in self.path:
                    return self._json({"input_tokens": 10})
                model.requests.append(body)
                self._answer(body, *model.reply(body))

            def do_GET(self) -> None:
                self._json({})

            def _json(self, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, body: dict[str, Any], content: list[dict[str, Any]], stop: str) -> None:
                if not body.get("stream"):
                    return self._json({"id": "msg_1", "type": "message", "role": "assistant",
                                       "model": body.get("model"), "content": content, "stop_reason": stop,
                                       "usage": {"input_tokens": 1, "output_tokens": 1}})
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()

                def event(name: str, data: dict[str, Any]) -> None:
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

                event("message_start", {"type": "message_start", "message": {
                    "id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"),
                    "content": [], "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 1}}})
                for i, block in enumerate(content):
                    if block["type"] == "text":
                        start = {"type": "text", "text": ""}
                        delta = {"type": "text_delta", "text": block["text"]}
                    else:
                        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                    event("content_block_start", {"type": "content_block_start", "index": i, "content_block": start})
                    event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
                    event("content_block_stop", {"type": "content_block_stop", "index": i})
                event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                        "usage": {"output_tokens": 5}})
                event("message_stop", {"type": "message_stop"})
                self.wfile.flush()

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def reply(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        messages = body.get("messages", [])
        last = messages[-1] if messages else {}
        results = [c for c in last.get("content", []) if isinstance(c, dict) and c.get("type") == "tool_result"] \
            if isinstance(last.get("content"), list) else []
        offered = [t.get("name") for t in body.get("tools", [])]
        if results:
            return [{"type": "text", "text": "RESULT:" + json.dumps(results[0].get("content"))}], "end_turn"
        if self.tool in offered:
            return [{"type": "tool_use", "id": "toolu_01", "name": self.tool, "input": self.tool_input}], "tool_use"
        return [{"type": "text", "text": f"NO-TOOL: {self.tool} not offered"}], "end_turn"

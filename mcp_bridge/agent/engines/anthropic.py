"""The `anthropic` engine: the Messages API streamed directly, with the bridge's own tools run in-process.

The user's own API key (ANTHROPIC_API_KEY, or the 0600 file `anthropic-api-key` in the config directory;
never logged, never in argv) and ANTHROPIC_BASE_URL pass through. A small SSE client on httpx (already a
dependency) instead of the SDK, whose import alone costs 1-2 s. Every tool call asks `hooks.decide`, then
goes through the same call pipeline as `serve` (mcp_bridge/pipeline.py: the scope gate with the run's key,
and the usage log).
Aborting cancels the turn, which closes the HTTP stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from mcp_bridge.agent.engines.base import EngineError, RunHooks, TurnResult
from mcp_bridge.aio import AsyncRuntime
from mcp_bridge.catalog import Catalog
from mcp_bridge.gate import Gate
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.pipeline import CallPipeline
from mcp_bridge.protocol.frontend import Client
from mcp_bridge.tools.base import Cancellation, Tool, ToolSource
from mcp_bridge.usage import UsageLog

log = logging.getLogger(__name__)

API_KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
KEY_FILE_NAME = "anthropic-api-key"
_API_VERSION = "2023-06-01"


def load_api_key(config_dir: Path) -> str:
    """The user's Messages API key: the environment, else a private file; never echoed."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        return key
    path = config_dir / KEY_FILE_NAME
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise EngineError(f"cannot read {path}: {exc.strerror}") from None
    else:
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise EngineError(f"{path} is readable by others; run `chmod 600 {path}`")
    if not text:
        raise EngineError(f"the anthropic engine needs your Anthropic API key: set {API_KEY_ENV}, or put it in "
                          f"{path} (mode 0600), or use `--engine claude-code`")
    return text


def store_api_key(config_dir: Path, key: str) -> Path:
    """Keep the user's key in a 0600 file, written atomically (never echoed, never logged)."""
    from mcp_bridge.install.files import atomic_write

    key = key.strip()
    if not key.startswith("sk-ant-") or len(key) > 256 or not key.isprintable() or " " in key:
        # The text is not echoed: it may be the real key with a stray character.
        raise EngineError("that is not an Anthropic API key (they start with sk-ant-); copy the whole key from "
                          "console.anthropic.com → API keys")
    config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config_dir / KEY_FILE_NAME
    atomic_write(path, key + "\n", 0o600)
    return path


def forget_api_key(config_dir: Path) -> bool:
    path = config_dir / KEY_FILE_NAME
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


class AnthropicEngine:
    name = "anthropic"

    def __init__(self, *, api_key: str, model: str, max_tokens: int, max_steps: int, gate: Gate, usage: UsageLog,
                 sources: Sequence[ToolSource], policy: PathPolicy, base_url: str | None = None,
                 system: str | None = None, history: Sequence[Mapping[str, str]] = ()) -> None:
        """`system`: the run's system prompt; `history`: the conversation so far (text turns), which the next
        turn continues — also after the service restarted, from the stored transcript."""
        self._client = httpx.AsyncClient(base_url=(base_url or os.environ.get(BASE_URL_ENV)
                                                   or "https://api.anthropic.com").rstrip("/"),
                                         timeout=httpx.Timeout(600.0, connect=10.0))
        self._headers = {"x-api-key": api_key, "anthropic-version": _API_VERSION, "content-type": "application/json"}
        self._model = model
        self._max_tokens = max_tokens
        self._max_steps = max_steps
        self._gate = gate
        self._catalog = Catalog((), sources)
        # The pipeline runs on worker threads (blocking tools run there); coroutine tools and the sources'
        # background work run on a loop of their own, as in `serve`, not on the run service's.
        runtime = AsyncRuntime()
        self._pipeline = CallPipeline(gate, self._catalog, policy, usage, runtime)
        self._sources = contextlib.ExitStack()
        self._sources_started = False
        self._runtime = runtime
        self._system = system
        self._messages: list[dict[str, Any]] = [{"role": m["role"], "content": m["content"]} for m in history]
        self._current: asyncio.Task[TurnResult] | None = None
        self._interrupted = False

    async def _tools(self) -> dict[str, Tool]:
        if not self._sources_started:
            self._sources_started = True
            self._sources.enter_context(self._catalog.running(self._runtime))
        verdict = self._gate.identify()
        if not verdict.allowed:
            raise EngineError(f"the run's key was refused: {verdict.refusal}")
        return {t.name: t for t in self._gate.visible(self._catalog.tools().values(), verdict)}

    async def turn(self, prompt: str, hooks: RunHooks) -> TurnResult:
        self._interrupted = False
        self._current = asyncio.create_task(self._turn(prompt, hooks))
        try:
            await asyncio.wait({self._current})
        finally:
            if not self._current.done():  # our caller was cancelled: take the turn down with it
                self._current.cancel()
        if self._current.cancelled():
            return TurnResult(interrupted=True)
        return self._current.result()

    async def _turn(self, prompt: str, hooks: RunHooks) -> TurnResult:
        tools = await self._tools()
        self._messages.append({"role": "user", "content": prompt})
        usage_total: dict[str, int] = {}
        for _step in range(self._max_steps):
            content, stop, step_usage = await self._step(tools, hooks)
            for name, value in step_usage.items():
                if isinstance(value, int):
                    usage_total[name] = usage_total.get(name, 0) + value
            self._messages.append({"role": "assistant", "content": content})
            if stop != "tool_use":
                text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
                return TurnResult(stop_reason=stop, text=text, usage=usage_total)
            results = []
            stopped = False
            for block in content:
                if block.get("type") == "tool_use":
                    result, stop_turn = await self._call(block, tools, hooks)
                    results.append(result)
                    stopped = stopped or stop_turn
            self._messages.append({"role": "user", "content": results})
            if stopped:
                return TurnResult(interrupted=True, usage=usage_total)
        return TurnResult(error=f"the run stopped after {self._max_steps} model requests in one turn "
                          "([agent] max_steps)", usage=usage_total)

    async def _step(self, tools: Mapping[str, Tool],
                    hooks: RunHooks) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
        body = {"model": self._model, "max_tokens": self._max_tokens, "stream": True, "messages": self._messages,
                "tools": [{"name": t.name, "description": t.description, "input_schema": dict(t.input_schema)}
                          for t in tools.values()]}
        if self._system:
            body["system"] = self._system
        try:
            return await self._stream_step(body, hooks)
        except httpx.HTTPError as exc:
            raise EngineError(f"the Messages API at {self._client.base_url} failed: {type(exc).__name__}: {exc}; "
                              f"check {BASE_URL_ENV} and the network, then send a follow-up") from None

    async def _stream_step(self, body: dict[str, Any],
                           hooks: RunHooks) -> tuple[list[dict[str, Any]], str | None, dict[str, Any]]:
        blocks: dict[int, dict[str, Any]] = {}
        stop: str | None = None
        usage: dict[str, Any] = {}
        async with self._client.stream("POST", "/v1/messages", headers=self._headers, json=body) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:500]
                raise EngineError(f"the Messages API answered HTTP {response.status_code}: {detail}")
            async for event in _sse_events(response.aiter_lines()):
                hooks.mapper.event(event)
                kind = event.get("type")
                if kind == "content_block_start":
                    blocks[int(event["index"])] = dict(event.get("content_block") or {}) | {"_json": ""}
                elif kind == "content_block_delta":
                    block, delta = blocks.get(int(event["index"]), {}), event.get("delta") or {}
                    if delta.get("type") == "text_delta":
                        block["text"] = block.get("text", "") + str(delta.get("text", ""))
                    elif delta.get("type") == "thinking_delta":
                        block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
                    elif delta.get("type") == "signature_delta":
                        block["signature"] = str(delta.get("signature", ""))
                    elif delta.get("type") == "input_json_delta":
                        block["_json"] += str(delta.get("partial_json", ""))
                elif kind == "message_delta":
                    stop = (event.get("delta") or {}).get("stop_reason")
                    usage.update(event.get("usage") or {})
                elif kind == "message_start":
                    usage.update((event.get("message") or {}).get("usage") or {})
                elif kind == "error":
                    raise EngineError(f"the Messages API reported an error: {event.get('error')}")
        content = []
        for _index, block in sorted(blocks.items()):
            raw = block.pop("_json")
            if block.get("type") == "tool_use":
                try:
                    block["input"] = json.loads(raw or "{}")
                except json.JSONDecodeError:
                    block["input"] = {}
            content.append(block)
        return content, stop, usage

    async def _call(self, block: dict[str, Any], tools: Mapping[str, Tool],
                    hooks: RunHooks) -> tuple[dict[str, Any], bool]:
        tool_use_id, name = str(block["id"]), str(block.get("name"))
        known = tools.get(name)  # a tool the key cannot see is unknown here: it needs admin
        verdict = await hooks.decide(name, block.get("input") or {}, tool_use_id,
                                     known.scope if known is not None else None)
        if not verdict.allow:
            hooks.mapper.tool_result(tool_use_id, verdict.message, is_error=True)
            return {"type": "tool_result", "tool_use_id": tool_use_id, "is_error": True,
                    "content": verdict.message}, verdict.stop
        tool_input = dict(verdict.updated_input or block.get("input") or {})
        text, is_error = await self._run_tool(name, tool_input, hooks.run_id)
        hooks.mapper.tool_result(tool_use_id, text, is_error=is_error)
        if name == "run_command" and not is_error:
            hooks.command_output(tool_input.get("command"), text)
        return {"type": "tool_result", "tool_use_id": tool_use_id, "is_error": is_error, "content": text}, False

    async def _run_tool(self, name: str, args: dict[str, Any], run_id: str) -> tuple[str, bool]:
        """The same call pipeline as `serve`: who the caller is (again, now), the tool's scope, a usage row."""
        cancelled = Cancellation()
        client = Client(version="agent-run", name=f"agent-run:{run_id}", report_progress=_no_progress,
                        list_roots=None, roots_generation=0, cancelled=cancelled)
        try:
            answer = await asyncio.to_thread(self._pipeline.call, name, args, client)
        except asyncio.CancelledError:
            cancelled.set()  # the turn was interrupted: the tool stops too (and its usage row says so)
            raise
        if answer.output is None:
            return answer.error or "the tool failed", True
        blocks = answer.output.readable(answer.tool is not None and answer.tool.output_schema is not None)
        return "\n".join(getattr(c, "text", f"[{c.type} content]") for c in blocks), False

    async def interrupt(self) -> None:
        if self._current is not None and not self._current.done():
            self._interrupted = True
            self._current.cancel()

    async def close(self) -> None:
        await self.interrupt()
        await asyncio.to_thread(self._sources.close)  # stops the sources' work and the tools' event loop
        await self._client.aclose()


def _no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


async def _sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line.strip() and data:
            try:
                event = json.loads("\n".join(data))
            except json.JSONDecodeError:
                event = None
            data = []
            if isinstance(event, dict):
                yield event

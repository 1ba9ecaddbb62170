"""The `claude-code` engine: the user's own `claude`, driven through its stream-json control protocol.

One CLI process holds a run's session across follow-up turns: the prompt goes in on stdin (never argv),
`can_use_tool` requests are answered by the approval policy (`hooks.decide`), `control_cancel_request`
withdraws a pending review, and `interrupt` stops a turn. `--mcp-config` gives the run its own
`compass-bridge serve` with the run's key, passed in a 0600 file's `env` — never on a command line — so every
bridge tool call passes the scope gate and lands in the usage log. A run continued after the process ended
(idle TTL, service restart) starts a new process with `--resume <session id>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mcp_bridge.agent.engines.base import EngineError, RunHooks, TurnResult, Verdict
from mcp_bridge.childenv import for_engine

log = logging.getLogger(__name__)

CLAUDE_ENV = "COMPASS_BRIDGE_CLAUDE"
MCP_SERVER_NAME = "bridge"
_LINE_LIMIT = 64 * 1024 * 1024  # one stream-json line can carry a whole file the agent read
_INIT_TIMEOUT_S = 60.0
_CLOSE_GRACE_S = 5.0


def find_claude(configured: str | None) -> Path:
    """The user's `claude`: COMPASS_BRIDGE_CLAUDE, then `[agent] claude_path`, then PATH."""
    for source, value in ((CLAUDE_ENV, os.environ.get(CLAUDE_ENV)), ("[agent] claude_path", configured)):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise EngineError(f"{source} is {value}, which is not an executable file; fix it or unset it")
            return path
    found = shutil.which("claude")
    if found is None:
        raise EngineError("the claude-code engine needs Claude Code, and `claude` is not on PATH: install it "
                          "(`npm install -g @anthropic-ai/claude-code`), set `[agent] claude_path` in config.toml "
                          f"or {CLAUDE_ENV}, or use `--engine anthropic`")
    return Path(found)


def write_mcp_config(path: Path, run_key: str, cwd: Path) -> None:
    """The run's MCP servers: our own `serve`, with the run's key in `env` (a 0600 file, not argv)."""
    config = {"mcpServers": {MCP_SERVER_NAME: {
        "type": "stdio", "command": sys.executable, "args": ["-m", "mcp_bridge", "serve", "--root", str(cwd)],
        "env": {"COMPASS_BRIDGE_KEY": run_key},
    }}}
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f)


class ClaudeCodeEngine:
    name = "claude-code"

    def __init__(self, claude: Path, private_dir: Path, *, resume: str | None = None, fork: bool = False,
                 max_turns: int | None = None, model: str | None = None, system: str | None = None,
                 history: Sequence[Mapping[str, str]] = (), disallowed: Sequence[str] = ()) -> None:
        """`model`: the run's own choice (a validated name); None leaves it to the user's Claude Code. `system` is
        appended to Claude Code's system prompt (from a 0600 file, never argv); `history`, the conversation before
        the session began, is written into the first prompt of a new session."""
        self._claude = claude
        self._model = model
        self._system = system
        self._history = list(history)
        self._disallowed = list(disallowed)
        """Built-in tools the model is never offered (beyond the driver's scopes)."""
        self._dir = private_dir
        self._resume = resume
        self._fork = fork
        self._max_turns = max_turns
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._decisions: dict[str, asyncio.Task[None]] = {}
        self._hooks: RunHooks | None = None
        self._next_id = 0
        self._interrupted = False
        self._in_turn = False
        self.session_id: str | None = resume

    # -- process -----------------------------------------------------------------------------

    async def _start(self, hooks: RunHooks) -> None:
        config = self._dir / "mcp.json"
        write_mcp_config(config, hooks.run_key, hooks.cwd)
        args = [str(self._claude), "--output-format", "stream-json", "--verbose", "--input-format", "stream-json",
                "--permission-prompt-tool", "stdio", "--permission-mode", "default", "--include-partial-messages",
                # The envelope decides: no settings file may pre-allow a tool past it, no other MCP server joins.
                "--setting-sources=", "--mcp-config", str(config), "--strict-mcp-config"]
        if self._max_turns:
            args += ["--max-turns", str(self._max_turns)]
        if self._model:
            args += ["--model", self._model]
        if self._disallowed:
            args += ["--disallowedTools", ",".join(self._disallowed)]
        if self._system:
            system_file = self._dir / "system.txt"
            fd = os.open(system_file, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self._system)
            args += ["--append-system-prompt-file", str(system_file)]
        if self.session_id:  # a follow-up after the process ended: the same session (or, once, a fork of it)
            args += ["--resume", self.session_id]
            if self._fork and self.session_id == self._resume:
                args.append("--fork-session")
        env = for_engine({"CLAUDE_CODE_ENTRYPOINT": "sdk-py"})
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, cwd=hooks.cwd, env=env, limit=_LINE_LIMIT,
                start_new_session=True)  # its own process group: a kill reaches its tools and MCP servers too
        except OSError as exc:
            raise EngineError(f"cannot start {self._claude}: {exc}") from None
        self._reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(self._control({"subtype": "initialize", "hooks": None}), _INIT_TIMEOUT_S)
        except (TimeoutError, EngineError) as exc:
            await self.close()
            raise EngineError(f"Claude Code ({self._claude}) did not start its control session: {exc}") from None

    def _send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        request_id = f"req_{self._next_id}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._send({"type": "control_request", "request_id": request_id, "request": request})
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            async for raw in self._proc.stdout:
                try:
                    message = json.loads(raw)
                except json.JSONDecodeError:
                    log.warning("claude wrote a line that is not JSON: %r", raw[:200])
                    continue
                self._dispatch(message)
        except (ValueError, OSError) as exc:  # a line over the limit, or the pipe broke
            log.warning("reading claude's output failed: %s", exc)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(EngineError("the CLI exited"))
            self._messages.put_nowait(None)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "control_response":
            response = message.get("response") or {}
            future = self._pending.get(str(response.get("request_id")))
            if future is not None and not future.done():
                if response.get("subtype") == "error":
                    future.set_exception(EngineError(str(response.get("error"))))
                else:
                    future.set_result(response)
        elif kind == "control_request":
            self._on_request(str(message.get("request_id")), message.get("request") or {})
        elif kind == "control_cancel_request":
            request_id = str(message.get("request_id"))
            task = self._decisions.pop(request_id, None)
            if task is not None:
                task.cancel()  # the pending review is withdrawn from the driver
        else:
            self._messages.put_nowait(message)

    def _on_request(self, request_id: str, request: dict[str, Any]) -> None:
        if request.get("subtype") != "can_use_tool" or self._hooks is None:
            # Hook callbacks and in-process MCP servers are never registered by us: refuse, do not guess.
            self._send({"type": "control_response", "response": {
                "subtype": "error", "request_id": request_id,
                "error": f"unsupported control request {request.get('subtype')!r}"}})
            return
        tool_use_id = str(request.get("tool_use_id") or request_id)
        self._decisions[request_id] = asyncio.create_task(self._answer(request_id, request, tool_use_id))

    async def _answer(self, request_id: str, request: dict[str, Any], tool_use_id: str) -> None:
        assert self._hooks is not None
        tool_input = request.get("input") or {}
        try:
            verdict: Verdict = await self._hooks.decide(str(request.get("tool_name")), tool_input, tool_use_id,
                                                        None)
        finally:
            self._decisions.pop(request_id, None)
        if verdict.allow:
            response: dict[str, Any] = {"behavior": "allow",
                                        "updatedInput": dict(verdict.updated_input or tool_input)}
        else:
            response = {"behavior": "deny", "message": verdict.message}
            if verdict.stop:
                response["interrupt"] = True
                self._interrupted = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._send({"type": "control_response", "response": {
                "subtype": "success", "request_id": request_id, "response": response}})

    # -- turns -------------------------------------------------------------------------------

    async def turn(self, prompt: str, hooks: RunHooks) -> TurnResult:
        self._in_turn = True
        try:
            return await self._turn(prompt, hooks)
        finally:
            self._in_turn = False

    async def _turn(self, prompt: str, hooks: RunHooks) -> TurnResult:
        self._hooks = hooks
        self._interrupted = False
        if self._proc is None or self._proc.returncode is not None:
            await self._start(hooks)
        if self._history and self.session_id is None:  # a session's first prompt carries what came before it
            earlier = "\n\n".join(f"{m['role']}: {m['content']}" for m in self._history)
            prompt = f"<conversation-so-far>\n{earlier}\n</conversation-so-far>\n\n{prompt}"
            self._history = []
        self._send({"type": "user", "message": {"role": "user", "content": prompt}, "parent_tool_use_id": None,
                    "session_id": self.session_id or "default"})
        tool_inputs: dict[str, tuple[str, dict[str, Any]]] = {}
        while True:
            message = await self._messages.get()
            if message is None:
                code = self._proc.returncode if self._proc else None
                self._proc = None
                if self._interrupted:
                    return TurnResult(interrupted=True, session_id=self.session_id)
                raise EngineError(f"Claude Code exited in the middle of the turn (exit status {code}); "
                                  "its session can be continued with a follow-up")
            kind = message.get("type")
            if kind == "system" and message.get("subtype") == "init":
                self.session_id = str(message.get("session_id") or self.session_id)
            elif kind == "stream_event":
                hooks.mapper.event(message.get("event") or {})
            elif kind == "assistant":
                for block in (message.get("message") or {}).get("content") or []:
                    if isinstance(block, dict) and block.get("type") == "tool_use":
                        tool_inputs[str(block.get("id"))] = (str(block.get("name")), block.get("input") or {})
            elif kind == "user":
                self._tool_results(message, tool_inputs, hooks)
            elif kind == "result":
                self.session_id = str(message.get("session_id") or self.session_id)
                subtype = str(message.get("subtype"))
                interrupted = self._interrupted or (subtype == "error_during_execution" and self._interrupted)
                error = None
                if message.get("is_error") and not interrupted:
                    error = f"{subtype}: {str(message.get('result') or '')[:500]}"
                return TurnResult(
                    interrupted=interrupted, error=error, stop_reason=message.get("stop_reason") or "end_turn",
                    session_id=self.session_id, text=str(message.get("result") or ""),
                    cost_usd=message.get("total_cost_usd"), usage=message.get("usage"),
                    metadata={"sessionId": self.session_id, "numTurns": message.get("num_turns")})

    @staticmethod
    def _tool_results(message: dict[str, Any], tool_inputs: dict[str, tuple[str, dict[str, Any]]],
                      hooks: RunHooks) -> None:
        content = (message.get("message") or {}).get("content")
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            tool_use_id = str(block.get("tool_use_id"))
            output = block.get("content")
            hooks.mapper.tool_result(tool_use_id, output, is_error=bool(block.get("is_error")))
            name, tool_input = tool_inputs.get(tool_use_id, ("", {}))
            if name in ("Bash", f"mcp__{MCP_SERVER_NAME}__run_command") and not block.get("is_error"):
                text = output if isinstance(output, str) else json.dumps(output)
                hooks.command_output(tool_input.get("command"), text)

    async def interrupt(self) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        self._interrupted = True
        with contextlib.suppress(EngineError, ConnectionError, RuntimeError):
            await asyncio.wait_for(self._control({"subtype": "interrupt"}), 10)

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._interrupted = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if sys.platform == "win32":
                    self._proc.kill()
                else:
                    os.killpg(self._proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        for task in list(self._decisions.values()):
            task.cancel()
        if self._in_turn:  # stop the turn first, so the session is saved without waiting for it to end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.interrupt(), 2)
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    proc.stdin.close()  # end of input: the CLI finishes its session and exits
            try:
                await asyncio.wait_for(proc.wait(), _CLOSE_GRACE_S)
            except TimeoutError:
                self._proc = proc
                self.kill()
                self._proc = None
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        (self._dir / "mcp.json").unlink(missing_ok=True)

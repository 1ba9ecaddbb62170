"""One `tools/call`, in named stages: identify → authorize → resolve roots → run → record.

Each stage is a method below, called in that order by `CallPipeline.call` on the request's worker thread.
Refusals are values (the gate's `Verdict`), a tool's failure is a value (`Answer.error`), and every call —
allowed, refused, failed or cancelled — ends in exactly one usage row. A tool whose handler is a coroutine
runs on the event-loop thread (`AsyncRuntime`) while the worker waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlparse

from mcp_bridge import logs
from mcp_bridge.aio import AsyncRuntime, Cancelled
from mcp_bridge.catalog import Catalog
from mcp_bridge.gate import Gate, Verdict
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.protocol.frontend import Client
from mcp_bridge.tools.base import CallContext, Tool, ToolFailure, ToolOutput
from mcp_bridge.usage import Outcome, UsageLog, UsageRecord

log = logging.getLogger(__name__)

_ERROR_TEXT_MAX = 2000
_CANCELLED = "cancelled before it finished (the client cancelled it or closed stdin)"


class Answer(NamedTuple):
    """What a call came to: the tool's output, or the error text to show (then `output` is None)."""

    tool: Tool | None
    output: ToolOutput | None
    error: str | None
    outcome: Outcome


class CallPipeline:
    def __init__(self, gate: Gate, catalog: Catalog, policy: PathPolicy, usage: UsageLog,
                 runtime: AsyncRuntime) -> None:
        self._gate = gate
        self._catalog = catalog
        self._policy = policy
        self._usage = usage
        self._runtime = runtime
        self._roots_seen = 0
        self._roots_lock = threading.Lock()

    def call(self, name: str, arguments: dict[str, Any], client: Client) -> Answer:
        started = time.perf_counter()
        verdict = self.identify()
        answer = Answer(None, None, _CANCELLED, "failed")
        try:
            answer = self._allowed_call(name, arguments, client, verdict)
            return answer
        finally:
            self.record(verdict, name, answer, client, started)

    def _allowed_call(self, name: str, arguments: dict[str, Any], client: Client, verdict: Verdict) -> Answer:
        tool = self._catalog.tools().get(name)
        if tool is None and verdict.allowed:
            return Answer(None, None, f"unknown tool '{name}'; list the tools again (tools/list) to see what "
                                      "exists", "failed")
        if tool is not None:
            verdict = self.authorize(tool, verdict)
        if verdict.refusal is not None:
            return Answer(tool, None, verdict.refusal, "refused")
        assert tool is not None
        self.resolve_roots(client)
        return self.run(tool, arguments, CallContext(verdict.caller.name, client.name, client.report_progress,
                                                     client.cancelled))

    # -- the stages ----------------------------------------------------------------------------

    def identify(self) -> Verdict:
        return self._gate.identify()

    def authorize(self, tool: Tool, verdict: Verdict) -> Verdict:
        return self._gate.authorize(tool, verdict)

    def roots_pending(self, generation: int) -> bool:
        """Whether a call from a client whose roots are at `generation` would first ask it for them (a client that
        cannot be asked has none pending)."""
        return generation != self._roots_seen

    def resolve_roots(self, client: Client) -> None:
        """Narrow the configured roots to the client's MCP roots (never widen them), once per change of them.

        Only a handshake-era client that declared `roots` can be asked; otherwise the configured roots stand.
        """
        if client.list_roots is None:
            return
        with self._roots_lock:
            if not self.roots_pending(client.roots_generation):
                return
            self._roots_seen = client.roots_generation
            uris = client.list_roots()
        paths = [Path(unquote(urlparse(u).path)) for u in uris or () if u.startswith("file://")]
        if paths:
            self._policy.narrow(paths)

    def run(self, tool: Tool, arguments: dict[str, Any], call: CallContext) -> Answer:
        try:
            output = tool.run(arguments, call)
            if not isinstance(output, ToolOutput):  # a coroutine handler: it runs on the event loop
                output = self._runtime.run(output, call.cancelled)
        except Cancelled:
            return Answer(tool, None, _CANCELLED, "failed")
        except ToolFailure as failure:
            return Answer(tool, None, str(failure), "failed")
        except Exception as exc:
            log.exception("tool %s failed", tool.name)
            return Answer(tool, None, f"tool '{tool.name}' failed unexpectedly ({type(exc).__name__}: {exc}); "
                                      "the server log has the details", "failed")
        return Answer(tool, output, None, "ok")

    def record(self, verdict: Verdict, name: str, answer: Answer, client: Client, started: float) -> None:
        caller = verdict.caller
        duration_ms = (time.perf_counter() - started) * 1000
        self._usage.record(UsageRecord(
            key_id=caller.key_id, key_name=caller.name, tool=name, outcome=answer.outcome,
            error=answer.error[:_ERROR_TEXT_MAX] if answer.error else None,
            duration_ms=duration_ms, client=client.name, ts=time.time(),
        ))
        # The usage row says what happened; the log line says it where the user looks first, with the reason.
        logs.call_outcome(name, answer.outcome, caller.name, answer.error, duration_ms)

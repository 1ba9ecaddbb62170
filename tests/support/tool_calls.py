"""Calling a tool's handler from a test, whichever kind it is (see `mcp_bridge.tools.base.Handler`)."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping
from typing import Any

from mcp_bridge.tools.base import CallContext, Tool, ToolOutput

CALL = CallContext(key_name="test")


async def invoke(tool: Tool, args: Mapping[str, Any], call: CallContext = CALL) -> ToolOutput:
    """The tool's output: a blocking handler's as it returns it, an `async def` one's awaited."""
    result = tool.run(args, call)
    return await result if inspect.isawaitable(result) else result


def call_blocking(tool: Tool, args: Mapping[str, Any], call: CallContext = CALL, *, timeout: float = 20) -> ToolOutput:
    """Run a blocking handler on a thread of its own, as a server worker would, and return its output or raise what
    it raised. One still running after `timeout` seconds fails the test instead of hanging the run (a FIFO opened
    for reading, say); its thread is a daemon, left behind."""
    outcome: list[object] = []

    def work() -> None:
        try:
            outcome.append(tool.run(args, call))
        except BaseException as exc:  # handed to the test's thread, re-raised there
            outcome.append(exc)

    worker = threading.Thread(target=work, name=f"test-{tool.name}", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise AssertionError(f"{tool.name} was still running after {timeout} s")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, ToolOutput), f"{tool.name} is not a blocking handler: it returned {result!r}"
    return result

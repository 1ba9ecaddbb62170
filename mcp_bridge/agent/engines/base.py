"""What an engine is given (`RunHooks`) and what it returns (`TurnResult`); the service does the rest.

An engine runs one turn at a time: it streams the model's events into the run's `ChunkMapper`, asks
`hooks.decide` before any tool runs, reports tool results and test results, and returns when the turn ends.
It never ends the chunk stream itself: the service does, from the `TurnResult` (finish, abort or error).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mcp_bridge.agent.chunks import ChunkMapper
from mcp_bridge.scopes import Scope


class EngineError(Exception):
    """The engine cannot run (missing CLI, no API key, the child died); the message says what to do."""


@dataclass(frozen=True)
class Verdict:
    allow: bool
    message: str = ""
    updated_input: Mapping[str, Any] | None = None
    stop: bool = False
    """Deny and stop the turn."""


@dataclass
class TurnResult:
    interrupted: bool = False
    error: str | None = None
    stop_reason: str | None = None
    session_id: str | None = None
    text: str = ""
    cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


Decide = Callable[[str, Mapping[str, Any], str, Scope | None], Awaitable[Verdict]]
"""(tool name, tool input, tool-use id, the scope the tool needs if the engine knows it) → verdict; may wait for
a person."""


@dataclass
class RunHooks:
    run_id: str
    cwd: Path
    run_key: str
    """A bridge key with the driver's scopes, made for this run and revoked when it ends."""
    mapper: ChunkMapper
    decide: Decide
    """Cancelling a pending `decide` withdraws its review (the CLI withdrew the request)."""
    command_output: Callable[[str | None, str], None]
    """(command, output) of a shell command, for test-result detection."""


class Engine(Protocol):
    name: str

    async def turn(self, prompt: str, hooks: RunHooks) -> TurnResult:
        """Run one turn (the first, or a follow-up in the same session) and return when it ends."""
        ...

    async def interrupt(self) -> None:
        """Stop the current turn as soon as possible; `turn` then returns with `interrupted=True`."""
        ...

    async def close(self) -> None:
        """End the session and free everything it holds (processes, connections)."""
        ...

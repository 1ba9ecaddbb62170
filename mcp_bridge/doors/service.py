"""How the doors reach the run service: its client (started on demand), the default working directory, and
the one way a door follows a run's events to the end of its turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp_bridge.agent.client import AgentClient
from mcp_bridge.config import Config
from mcp_bridge.paths import StatePaths

TERMINAL = frozenset({"done", "failed", "aborted", "interrupted"})
"""States in which a run rests: its turn is over (a follow-up may start another)."""


async def connect(paths: StatePaths) -> AgentClient:
    """The run service's client, starting the service when none is listening (AgentError if it cannot)."""
    return await AgentClient.connect(paths, start=True)


def default_cwd(config: Config, configured: str = "") -> str:
    """Where a front end's runs work when the driver names no directory: `configured`, else the first root; with
    no roots, none (the run service then refuses the run and says how to name roots — never the home
    directory)."""
    if configured:
        return str(Path(configured).expanduser())
    return str(config.roots[0].expanduser()) if config.roots else ""


async def follow(client: AgentClient, run_id: str) -> AsyncIterator[dict[str, Any]]:
    """The run's events (`chunk` and `state`) from the subscription `client` holds, up to and including the
    first state in which the run rests. A subscription that fell behind is renewed from where it stopped, so
    no chunk is lost."""
    async for event in client.events():
        if event.get("run_id") != run_id:
            continue
        if event.get("event") == "overflow":
            await client.request("subscribe", run_id=run_id, after=int(event.get("after", 0)))
            continue
        yield event
        if event.get("event") == "state" and event.get("state") in TERMINAL:
            return

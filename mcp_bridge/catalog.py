"""The catalog: every source's tools and resources merged into one view, and the sources' lifespan.

`running()` starts each source's background work (connecting to browsers, registering with Compass) when
the server starts — before the first request is read, whatever the protocol era — and stops it when the
server stops. Listing never waits on a source: each answers with what it knows at once (the persisted
browser catalog, the last Compass registration), and when that changes the catalog tells its listeners,
which turn it into change notices for the clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from mcp_bridge.protocol.frontend import Change
from mcp_bridge.tools.base import Resource, Tool, ToolSource

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, first: Sequence[Tool], sources: Sequence[ToolSource]) -> None:
        """`first`: tools of the server itself, listed before (and never shadowed by) any source's."""
        self._first = tuple(first)
        self.sources = tuple(sources)
        self._tools: dict[str, Tool] | None = None
        self._listeners: list[Callable[[Change], None]] = []
        for source in self.sources:
            source.subscribe(self._source_changed)

    def tools(self) -> dict[str, Tool]:
        if self._tools is None:
            merged = {tool.name: tool for tool in self._first}
            for source in self.sources:
                for tool in source.tools():
                    # First come wins: a browser or Compass tool can never shadow a local one.
                    merged.setdefault(tool.name, tool)
            self._tools = merged
        return self._tools

    def resources(self) -> list[Resource]:
        return [resource for source in self.sources for resource in source.resources()]

    def on_change(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def _source_changed(self) -> None:
        self._tools = None
        for listener in self._listeners:
            listener("tools")
            listener("resources")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The sources' background work, for as long as the server runs."""
        tasks = [asyncio.create_task(_run(source), name=f"source {source.name}") for source in self.sources]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _run(source: ToolSource) -> None:
    try:
        await source.run()
    except Exception:
        # One broken source (say, Compass) must not take down the local tools.
        log.exception("tool source %s stopped", source.name)

"""The catalog: every source's tools and resources merged into one view, and the sources' lifespan.

`running()` watches, from the moment the server starts (before the first request is read, whatever the
protocol era), for sources with background work to do (a browser's native host to connect to, a Compass to
register with), starts that work on the event-loop thread, and stops it when the server stops. Listing
never waits on a source: each answers with what it knows at once (the persisted browser catalog, the last
Compass registration), and when that changes the catalog tells its listeners, which turn it into change
notices for the clients.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from mcp_bridge.aio import AsyncRuntime
from mcp_bridge.protocol.frontend import Change
from mcp_bridge.tools.base import Resource, Tool, ToolSource

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 2.0
"""How often sources whose background work has not started are asked whether it should (a browser just
opened shows up within this, as it did when the sources polled for themselves)."""


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

    @contextmanager
    def running(self, runtime: AsyncRuntime) -> Iterator[None]:
        """The sources' background work on `runtime`, for as long as the server runs; then the runtime stops
        and every source is closed."""
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(runtime, stop), name="sources", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            runtime.close()
            for source in self.sources:
                try:
                    source.close()
                except Exception:
                    log.exception("closing tool source %s failed", source.name)

    def _watch(self, runtime: AsyncRuntime, stop: threading.Event) -> None:
        waiting = list(self.sources)
        while waiting:
            for source in list(waiting):
                try:
                    wanted = source.needs_running()
                except Exception:
                    log.exception("tool source %s cannot say whether it has work to do", source.name)
                    wanted = False
                if wanted:
                    waiting.remove(source)
                    runtime.start(_run(source), name=f"source {source.name}")
            if stop.wait(WATCH_INTERVAL_S):
                return


async def _run(source: ToolSource) -> None:
    try:
        await source.run()
    except Exception:
        # One broken source (say, Compass) must not take down the local tools.
        log.exception("tool source %s stopped", source.name)

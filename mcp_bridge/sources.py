"""The composition root for tools: which sources a server offers, built from state and config."""

from __future__ import annotations

from collections.abc import Sequence

from mcp_bridge.compass.source import CompassSource
from mcp_bridge.config import Config
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.paths import StatePaths
from mcp_bridge.tools.base import StaticSource, Tool, ToolSource
from mcp_bridge.tools.browser import BrowserSource
from mcp_bridge.tools.claude_config import claude_config_source
from mcp_bridge.tools.commands import command_tools
from mcp_bridge.tools.files import file_tools
from mcp_bridge.tools.tempfiles import TempJournal


class LocalSource(StaticSource):
    """The file and command tools, and the journal of their writes' temp files, kept for the server's life."""

    def __init__(self, tools: Sequence[Tool], journal: TempJournal) -> None:
        super().__init__("local", tools)
        self.journal = journal

    def close(self) -> None:
        # A clean stop: every temp file was renamed or removed, so the journal goes (a crash leaves it for the
        # next server to clean up after).
        self.journal.close()


def build_sources(paths: StatePaths, config: Config, policy: PathPolicy) -> list[ToolSource]:
    # Temp files of writes a killed server left behind are removed (in the background) when file_tools starts.
    journal = TempJournal(paths.data_dir / "pending-writes")
    # Order matters: on a name clash the earlier source wins, so local tools can never be shadowed.
    return [
        LocalSource([*file_tools(policy, config.limits, journal), *command_tools(policy, config.limits)], journal),
        BrowserSource(paths.run_dir, paths.data_dir / "browser-tools.json", config.limits.browser_timeout_s),
        CompassSource.from_environment(paths, config.compass),
        claude_config_source(policy),
    ]

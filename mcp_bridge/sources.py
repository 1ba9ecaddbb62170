"""The composition root for tools: which sources a server offers, built from state and config."""

from __future__ import annotations

from mcp_bridge.compass.source import CompassSource
from mcp_bridge.config import Config
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.paths import StatePaths
from mcp_bridge.tools.base import StaticSource, ToolSource
from mcp_bridge.tools.browser import BrowserSource
from mcp_bridge.tools.commands import command_tools
from mcp_bridge.tools.files import file_tools


def build_sources(paths: StatePaths, config: Config, policy: PathPolicy) -> list[ToolSource]:
    # Order matters: on a name clash the earlier source wins, so local tools can never be shadowed.
    return [
        StaticSource("local", [*file_tools(policy, config.limits), *command_tools(policy, config.limits)]),
        BrowserSource(paths.run_dir, paths.data_dir / "browser-tools.json", config.limits.browser_timeout_s),
        CompassSource.from_environment(paths, config.compass),
    ]

"""The composition root for tools: which sources a server offers, built from state and config."""

from __future__ import annotations

from mcp_bridge.config import Config
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.paths import StatePaths
from mcp_bridge.tools.base import StaticSource, ToolSource
from mcp_bridge.tools.commands import command_tools
from mcp_bridge.tools.files import file_tools


def build_sources(paths: StatePaths, config: Config, policy: PathPolicy) -> list[ToolSource]:
    local = StaticSource("local", [*file_tools(policy, config.limits), *command_tools(policy, config.limits)])
    return [local]

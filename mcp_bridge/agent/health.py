"""What `compass-bridge doctor` says about agent runs: the `[agent]` settings, each engine, the run service."""

from __future__ import annotations

import socket
import sys

from mcp_bridge.agent.engines.base import EngineError
from mcp_bridge.agent.server import socket_file
from mcp_bridge.agent.settings import AgentSettingsError, parse_agent_settings
from mcp_bridge.config import ConfigError, load_config
from mcp_bridge.paths import StatePaths

Finding = tuple[str, str, str, str]
"""(area, status: ok | warn | fail | skip, detail, fix)."""


def findings(paths: StatePaths) -> list[Finding]:
    try:
        settings = parse_agent_settings(load_config(paths.config_file).agent, f"{paths.config_file} [agent]")
    except (ConfigError, AgentSettingsError) as exc:
        return [("agent runs", "fail", f"{exc}; the run service refuses to start",
                 "fix the setting in config.toml (docs/AGENT_RUNS.md)")]
    envelope = settings.approvals
    found: list[Finding] = [("agent runs", "ok", (
        f"approval envelope: mode {envelope.mode}" if envelope.configured else
        "no approval envelope: every action that is not read-only is reviewed")
        + f"; {settings.concurrency()} run(s) at once, default engine {settings.engine}", "")]
    from mcp_bridge.agent.engines.anthropic import load_api_key
    from mcp_bridge.agent.engines.claude_code import find_claude

    try:
        found.append(("engine claude-code", "ok", f"runs {find_claude(settings.claude_path)}", ""))
    except EngineError as exc:
        found.append(("engine claude-code", "skip", str(exc), ""))
    try:
        load_api_key(paths.config_dir)
        found.append(("engine anthropic", "ok", "an Anthropic API key is set", ""))
    except EngineError as exc:
        found.append(("engine anthropic", "skip", str(exc), ""))
    found.append(_service(paths))
    return found


def _service(paths: StatePaths) -> Finding:
    path = socket_file(paths.run_dir)
    if sys.platform == "win32":
        return ("run service", "skip", "agent runs need Unix sockets; not on Windows yet", "")
    if not path.exists():
        return ("run service", "skip", "not running (the first `compass-bridge run` starts it)", "")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        try:
            sock.connect(str(path))
        except OSError as exc:
            return ("run service", "warn", f"{path} does not answer ({exc.strerror or exc})",
                    f"remove {path}; the next `compass-bridge run` starts a new service")
    return ("run service", "ok", f"listening on {path}", "")

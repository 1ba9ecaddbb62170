"""The `[agent]` table of config.toml: engines, limits and the approval envelope of the run service."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from mcp_bridge.agent.policy import NO_ENVELOPE, Envelope, EnvelopeError, parse_envelope

# A Claude Code run holds ~200 MB; leave room for the rest of the machine.
_MB_PER_RUN = 400


class AgentSettingsError(ValueError):
    """The `[agent]` table cannot be used; the message names the setting and the fix."""


@dataclass(frozen=True)
class AgentSettings:
    claude_path: str | None = None
    engine: str = "claude-code"
    model: str = "claude-sonnet-4-5"
    """The model the anthropic engine asks for (Claude Code picks its own)."""
    max_tokens: int = 8192
    max_steps: int = 50
    """Most model requests in one turn of the anthropic engine."""
    max_concurrent: int = 0
    """Runs at once; 0 = fitted to the machine's CPUs and memory."""
    max_queued: int = 8
    queue_timeout_s: float = 120.0
    run_timeout_s: float = 3600.0
    """Longest one turn may run: then it is interrupted, and killed if it does not stop."""
    idle_ttl_s: float = 900.0
    """A finished run's process waits this long for a follow-up, then its session is closed (it can still be
    resumed)."""
    review_timeout_s: float = 300.0
    runs_per_minute: int = 30
    """Runs (and follow-ups) one key may start per minute."""
    exit_idle_s: float = 900.0
    """The service exits after this long with no run working, no review pending and no client connected (it is
    started again on demand); 0 = never."""
    approvals: Envelope = NO_ENVELOPE

    def concurrency(self) -> int:
        if self.max_concurrent > 0:
            return self.max_concurrent
        by_cpu = os.cpu_count() or 1
        return max(1, min(by_cpu, _available_mb() // _MB_PER_RUN if sys.platform == "linux" else by_cpu, 8))


def _available_mb() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return _MB_PER_RUN * 2


def parse_agent_settings(table: Mapping[str, Any], where: str = "config.toml [agent]") -> AgentSettings:
    defaults = AgentSettings()
    known = {f.name for f in fields(AgentSettings)}
    unknown = set(table) - known
    if unknown:
        raise AgentSettingsError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in known - {"approvals"}:
        if name not in table:
            continue
        value, default = table[name], getattr(defaults, name)
        if name in ("claude_path", "engine", "model"):
            if not isinstance(value, str) or not value:
                raise AgentSettingsError(f"{where}: `{name}` must be a non-empty string")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                value == 0 and name not in ("max_concurrent", "max_queued", "exit_idle_s")):
            raise AgentSettingsError(f"{where}: `{name}` must be a positive number, got {value!r}")
        else:
            value = type(default)(value)
        values[name] = value
    if values.get("engine", defaults.engine) not in ("claude-code", "anthropic"):
        raise AgentSettingsError(f"{where}: `engine` must be claude-code or anthropic")
    try:
        values["approvals"] = parse_envelope(table.get("approvals"), f"{where.replace('[agent]', '[agent.approvals]')}")
    except EnvelopeError as exc:
        raise AgentSettingsError(str(exc)) from None
    return AgentSettings(**values)

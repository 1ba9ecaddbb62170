"""The environment every process the bridge starts gets: the bridge's own, minus its secrets.

A child (a `run_command` shell and all it starts, a native host the doctor launches, a client CLI the
installer runs) must not inherit the bridge key, the Compass key or any other credential the bridge
happened to be started with: an agent that can read a child's environment (`env`, /proc) would otherwise
hold them. Removed, by name, case-insensitively:

- exactly: COMPASS_BRIDGE_KEY, COMPASS_API_KEY, ANTHROPIC_API_KEY;
- any name ending in _API_KEY, _APIKEY, _TOKEN, _SECRET, _SECRET_KEY, _ACCESS_KEY, _PASSWORD, _PASSWD,
  _CREDENTIALS or _AUTH (OPENAI_API_KEY, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, NPM_TOKEN, ...).

Everything else passes (PATH, HOME, locale, proxies without credentials in their names...). A secret kept
under some other name is not recognised: this is a safety net, not a sandbox (docs/SECURITY.md).

One exception, explicit and narrow: an agent run's engine (the user's `claude`, and the run service and browser
link that start it) needs the user's Messages API settings, so `for_engine` keeps ENGINE_PASS_THROUGH. Nothing
the bridge starts for a tool call gets them: `run_command` and the run's own `compass-bridge serve` scrub them
again with `scrubbed` (docs/AGENT_RUNS.md, "The run's environment").
"""

from __future__ import annotations

import os
from collections.abc import Mapping

SECRET_NAMES = frozenset({"COMPASS_BRIDGE_KEY", "COMPASS_API_KEY", "ANTHROPIC_API_KEY"})
SECRET_SUFFIXES = ("_API_KEY", "_APIKEY", "_TOKEN", "_SECRET", "_SECRET_KEY", "_ACCESS_KEY", "_PASSWORD",
                   "_PASSWD", "_CREDENTIALS", "_AUTH")


def is_secret(name: str) -> bool:
    """True for an environment variable name that holds (or by convention holds) a credential."""
    upper = name.upper()
    return upper in SECRET_NAMES or upper.endswith(SECRET_SUFFIXES)


ENGINE_PASS_THROUGH = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")
"""What an agent engine needs of the user's environment that `scrubbed` would remove (the base URL is no secret;
it is listed so the pass-through is stated in one place)."""


def scrubbed(extra: Mapping[str, str] | None = None, *, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: this process's) without its secrets, plus `extra` (not scrubbed: the caller adds
    it on purpose). Pass the result as `env=` to every subprocess."""
    source = os.environ if environ is None else environ
    env = {name: value for name, value in source.items() if not is_secret(name)}
    env.update(extra or {})
    return env


def for_engine(extra: Mapping[str, str] | None = None, *, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`scrubbed`, but keeping ENGINE_PASS_THROUGH: for an agent engine's own process (and the run service and
    browser link that start one), never for a tool's child."""
    source = os.environ if environ is None else environ
    env = scrubbed(environ=source)
    env.update({name: source[name] for name in ENGINE_PASS_THROUGH if name in source})
    env.update(extra or {})
    return env

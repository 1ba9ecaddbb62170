"""`compass-bridge agent`: the run service (started on demand by `run` and the other front ends)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "agent", help="the agent run service (started on demand; you do not need to run it by hand)",
        description="Hold agent runs for this user on a private Unix socket until stopped (SIGTERM). "
        "Started by `compass-bridge run` when it is not running. See docs/AGENT_RUNS.md.")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--store-anthropic-key", action="store_true",
                     help="store the anthropic engine's API key (asked without echo, or read from stdin) in a "
                     "0600 file, then exit")
    key.add_argument("--forget-anthropic-key", action="store_true", help="delete the stored key, then exit")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mcp_bridge import logs, selfguard
    from mcp_bridge.agent import daemon
    from mcp_bridge.paths import state_paths

    paths = state_paths().ensure()
    if args.store_anthropic_key or args.forget_anthropic_key:
        return _key(args, paths.config_dir)
    logs.configure(paths.log_dir, "agent")
    # Its engines get the Anthropic key anyway (childenv.for_engine), but no other process of the user's (another
    # server's `run_command`) should read it from /proc. Left dumpable: the test guard finds it by its environment.
    selfguard.blank_secret_environ()
    return daemon.run(paths)


def _key(args: argparse.Namespace, config_dir: Path) -> int:
    from mcp_bridge.agent.engines.anthropic import forget_api_key, store_api_key
    from mcp_bridge.agent.engines.base import EngineError

    if args.forget_anthropic_key:
        print("Forgot the stored Anthropic API key." if forget_api_key(config_dir) else "No key was stored.")
        return 0
    if sys.stdin.isatty():
        key = getpass.getpass("Anthropic API key (sk-ant-…, from console.anthropic.com; input hidden): ")
    else:
        key = sys.stdin.readline()
    try:
        path = store_api_key(config_dir, key)
    except EngineError as exc:
        print(f"compass-bridge agent: {exc}", file=sys.stderr)
        return 2
    print(f"Stored the Anthropic API key in {path} (mode 0600); ANTHROPIC_API_KEY, when set, wins over it.")
    return 0

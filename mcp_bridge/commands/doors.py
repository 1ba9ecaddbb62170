"""`compass-bridge doors`: the loopback doors onto the run service (docs/DOORS.md)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "doors", help="serve the enabled loopback doors: Compass's bridge WebSocket and the HTTP run API",
        description="Serve the doors enabled in config.toml ([agent.compass_ws], [agent.http]) on loopback "
        "until stopped (SIGTERM). Both are off by default. See docs/DOORS.md.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mcp_bridge import logs
    from mcp_bridge.doors import main
    from mcp_bridge.paths import state_paths

    paths = state_paths().ensure()
    logs.configure(paths.log_dir, "doors")
    return main.run(paths)

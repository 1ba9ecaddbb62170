"""`compass-bridge serve`: the stdio MCP server."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

KEY_ENV = "COMPASS_BRIDGE_KEY"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the MCP server on stdio (what an MCP client such as Claude Code starts)",
        description="Run the MCP server on stdin/stdout. The bridge key comes from COMPASS_BRIDGE_KEY; "
        "without one the config's default_scopes apply.",
    )
    parser.add_argument("--root", action="append", type=Path, default=[], metavar="DIR",
                        help="a directory the file and command tools may use (repeatable); "
                        "default: the config's roots, else the current directory")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Only light imports until the client's `initialize` is answered (see early_initialize); the MCP SDK
    # alone takes ~0.5 s to import.
    from mcp_bridge import logs
    from mcp_bridge.config import ConfigError, load_config
    from mcp_bridge.early_initialize import BRIDGE, answer_first_message
    from mcp_bridge.pathpolicy import PathPolicy, RootError
    from mcp_bridge.paths import state_paths

    paths = state_paths().ensure()
    try:
        config = load_config(paths.config_file)
        policy = PathPolicy(args.root or list(config.roots) or [Path.cwd()])
    except (ConfigError, RootError) as exc:
        print(f"compass-bridge serve: {exc}", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        # A person ran it by hand: say what it is waiting for rather than sit there silently.
        print("compass-bridge serve: MCP server on stdin/stdout, waiting for an MCP client (Claude Code "
              "starts it for you: see README). Roots: " + ", ".join(str(r) for r in policy.roots)
              + ". Ctrl-D stops it.", file=sys.stderr)
    first = answer_first_message(BRIDGE)
    if not first.line:
        return 0  # the client went away before saying anything
    logs.configure(paths.log_dir, "serve")

    import anyio

    from mcp_bridge.gate import Gate
    from mcp_bridge.keys import KeyStore
    from mcp_bridge.server import BridgeServer
    from mcp_bridge.sources import build_sources
    from mcp_bridge.stdio_transport import stdio_transport
    from mcp_bridge.usage import UsageLog

    keys = KeyStore.open(paths)
    usage = UsageLog(paths.database)
    key = os.environ.get(KEY_ENV, "").strip() or None
    server = BridgeServer(Gate(keys, key, config.default_scopes), usage, policy,
                          build_sources(paths, config, policy))

    async def main() -> None:
        async with stdio_transport(first) as (read_stream, write_stream):
            await server.serve(read_stream, write_stream)

    try:
        anyio.run(main)
    finally:
        usage.close()
        keys.close()
    return 0

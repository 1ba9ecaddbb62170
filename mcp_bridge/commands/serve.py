"""`compass-bridge serve`: the stdio MCP server."""

from __future__ import annotations

import argparse
import os
import signal
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
                        "default: the config's roots, else the current directory unless it is or holds "
                        "your home directory (then no directory is allowed until you name one)")
    parser.add_argument("--key-ref", metavar="NAME",
                        help="use the bridge key stored under NAME in the data dir (what `install` writes into "
                        "client configs, so they hold no key); instead of COMPASS_BRIDGE_KEY")
    parser.set_defaults(handler=run)


def _exit_cleanly_on_signals() -> None:
    """SIGTERM, SIGINT and SIGHUP end the server by unwinding (SystemExit), not by dying on the spot, so
    calls in flight are answered or cancelled and recorded, and `usage.close()` flushes the usage log.

    Python runs signal handlers on the main thread, which is the one reading stdin: the exit unwinds the
    reading loop, and the front end's shut-down takes over as it does at the end of stdin."""

    def handler(signum: int, frame: object) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)  # one is enough: a second must not interrupt the flush
        raise SystemExit(128 + signum)

    signals = [signal.SIGTERM, signal.SIGINT]
    if sys.platform != "win32":
        signals.append(signal.SIGHUP)
    for sig in signals:
        signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    # Imports here, not at the top: `compass-bridge --help` and the other commands need none of them.
    from mcp_bridge import key_refs, logs, selfguard
    from mcp_bridge.aio import AsyncRuntime
    from mcp_bridge.config import ConfigError, load_config
    from mcp_bridge.gate import Gate
    from mcp_bridge.keys import KeyStore
    from mcp_bridge.pathpolicy import PathPolicy, RootError
    from mcp_bridge.paths import state_paths
    from mcp_bridge.protocol.frontend import Frontend
    from mcp_bridge.server import BridgeServer
    from mcp_bridge.sources import build_sources
    from mcp_bridge.stdio_transport import StdioTransport
    from mcp_bridge.usage import UsageLog

    # Before anything starts a child: none may read the keys this process holds from its /proc (docs/SECURITY.md).
    selfguard.blank_secret_environ()
    selfguard.make_undumpable()
    paths = state_paths().ensure()
    try:
        config = load_config(paths.config_file)
        # No roots named: the client's working directory, unless that is home-wide (then none, and every file
        # tool and bridge_status say how to name them).
        policy = PathPolicy.chosen(args.root or list(config.roots), Path.cwd(), protected=config.protected_paths)
        referenced_key = key_refs.load(paths, args.key_ref) if args.key_ref else None
    except (ConfigError, RootError, key_refs.KeyRefError) as exc:
        print(f"compass-bridge serve: {exc}", file=sys.stderr)
        return 2
    policy.prepare()  # the protected paths load beside the rest of the start-up, not on the first file call
    if sys.stdin.isatty():
        # A person ran it by hand: say what it is waiting for rather than sit there silently.
        print("compass-bridge serve: MCP server on stdin/stdout, waiting for an MCP client (Claude Code "
              f"starts it for you: see README); {policy.describe_roots()}. Ctrl-D stops it.", file=sys.stderr)
    logs.configure(paths.log_dir, "serve", config.log_level)
    keys = KeyStore.open_or_unavailable(paths)  # a broken store still serves, refusing with the fix
    usage = UsageLog(paths.database)
    _exit_cleanly_on_signals()
    key = referenced_key or os.environ.get(KEY_ENV, "").strip() or None
    server = BridgeServer(Gate(keys, key, config.default_scopes), usage, policy,
                          build_sources(paths, config, policy), paths, AsyncRuntime())
    try:
        # The sources (browser, Compass) are watched from the start, before the first request is read.
        with server.catalog.running(server.runtime), StdioTransport.open() as transport:
            Frontend(server, transport).serve()
    except KeyboardInterrupt:
        return 130
    finally:
        usage.close()
        keys.close()
    return 0

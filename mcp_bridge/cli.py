"""`compass-bridge` command line: parses arguments and hands off to one command module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from mcp_bridge import __version__

# Each module registers its own sub-commands; listing them here keeps start-up to what is used.
COMMAND_MODULES = ("serve", "keys", "usage", "compass", "install", "doctor")

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compass-bridge",
        description="Let AI agents work with Compass, your files and your browser — safely.",
    )
    parser.add_argument("--version", action="version", version=f"compass-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"mcp_bridge.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())

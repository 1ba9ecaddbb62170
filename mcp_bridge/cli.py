"""`compass-bridge` command line: parses arguments and hands off to one command module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from mcp_bridge import __version__

# Each module registers its own sub-commands; listing them here keeps start-up to what is used.
COMMAND_MODULES = ("serve", "keys", "usage", "compass", "install", "doctor", "agent", "run", "runs", "approvals",
                   "extension", "doors")

Handler = Callable[[argparse.Namespace], int]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser for every command, or, with `only`, for that command's module alone (how `serve`, started
    for every agent session, keeps its start-up to what it uses)."""
    parser = argparse.ArgumentParser(
        prog="compass-bridge",
        description="Let AI agents work with Compass, your files and your browser — safely.",
    )
    parser.add_argument("--version", action="version", version=f"compass-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if only is None or name == only:
            importlib.import_module(f"mcp_bridge.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(words[0] if words and words[0] in COMMAND_MODULES else None).parse_args(words)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:
        # A damaged key store or database gets its explanation (file and fix), not a traceback. Imported
        # here so that start-up (which `serve` keeps light) does not pay for sqlite3.
        from mcp_bridge.store import StoreError

        if not isinstance(exc, StoreError):
            raise
        print(f"compass-bridge {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

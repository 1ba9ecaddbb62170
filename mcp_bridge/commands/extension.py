"""`compass-bridge extension path|export`: where the browser extension is, and a copy of it where you want it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "extension", help="where the browser extension is, and how to load it",
        description="The reference browser extension ships inside the package. `install` keeps a copy in the "
        "data directory that stays put across Python upgrades; load that one.")
    commands = parser.add_subparsers(dest="extension_command", metavar="SUBCOMMAND", required=True)
    path = commands.add_parser(
        "path", help="print the folder to load in the browser (Load unpacked / Load Temporary Add-on)",
        description="Print the folder to load: the copy `install` keeps in the data directory, or, before "
        "install has made it, the one inside the package (with a warning: that path moves with the Python).")
    path.add_argument("--json", action="store_true",
                      help="print the path, IDs, version and the steps to load it as a JSON object")
    path.set_defaults(handler=_path)
    export = commands.add_parser(
        "export", help="copy the extension into DIR (created if needed)",
        description="Copy the extension's files into DIR, for a folder of your choice or to pack it, set up for "
        "the web pages in [page_origins] of config.toml (externally_connectable and policy.json). DIR must be "
        "empty, new, or an earlier export (its files are then replaced).")
    export.add_argument("dir", type=Path, metavar="DIR")
    export.set_defaults(handler=_export)


def _path(args: argparse.Namespace) -> int:
    from mcp_bridge.extension_id import extension_location

    where = extension_location()
    if args.json:
        print(json.dumps(where, indent=2))
        return 0 if where["path"] else 1
    if not where["path"]:
        print(f"compass-bridge extension path: {where['problem']}", file=sys.stderr)
        return 1
    print(where["path"])
    if where["problem"]:
        print(f"warning: {where['problem']}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from mcp_bridge.config import ConfigError
    from mcp_bridge.extension_id import ExportError, configured_files, export_extension, how_to_load
    from mcp_bridge.paths import state_paths

    try:
        target, count = export_extension(args.dir, configured_files(state_paths()))
    except (ExportError, ConfigError) as exc:
        print(f"compass-bridge extension export: {exc}", file=sys.stderr)
        return 1
    print(f"Copied {count} file(s) to {target}.")
    print(how_to_load(target))
    print("Web pages that may connect: [page_origins] in config.toml; after changing it, export again and reload "
          "the extension (docs/SIDE_PANEL.md).")
    return 0

"""`compass-bridge install` and `compass-bridge uninstall`: register (or unregister) the native host with the
browsers and the MCP server with the agents' clients, printing what was done browser by browser."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The full lists live in mcp_bridge.install; they are not imported here because every `compass-bridge`
# command, `serve` included, builds this parser. A wrong name is answered with the full list.
_BROWSERS = ("chrome, chromium, edge, brave, vivaldi, opera, arc, firefox, librewolf, waterfox, floorp, channels "
             "such as chrome-beta, and snap/Flatpak builds such as firefox-snap")
# Kept literal so `--help` does not import the client table; tests/unit/test_clients.py keeps it equal to CLIENT_KEYS.
_CLIENTS = ("claude-code, codex, claude-desktop, cursor, vscode, vscode-insiders, vscodium, windsurf, gemini, "
            "copilot, opencode, zed, cline, roo-code, goose, junie, kiro, jetbrains")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    install = sub.add_parser(
        "install", help="let browsers start the native host and register the MCP server with Claude Code",
        description="Write the native-messaging host manifest for every detected browser (or those named), "
        "a launcher that pins this Python, the Windows registry keys, and register `compass-bridge serve` with "
        "Claude Code (and --client ...) using a new bridge key. Safe to re-run: it upgrades in place.")
    uninstall = sub.add_parser(
        "uninstall", help="remove exactly what install created",
        description="Remove what `compass-bridge install` recorded: manifests, launcher, registry keys, client "
        "entries and the bridge keys it created. With --browser/--profile-dir/--client, only those.")
    for parser in (install, uninstall):
        parser.add_argument("--browser", action="append", default=[], metavar="NAME",
                            help=f"only this browser (repeatable): {_BROWSERS}; "
                            "default: every browser detected")
        parser.add_argument("--profile-dir", action="append", default=[], type=Path, metavar="DIR",
                            help="a browser started with --user-data-dir=DIR: the manifest goes to "
                            "DIR/NativeMessagingHosts/ instead of the standard locations (repeatable)")
        parser.add_argument("--client", action="append", default=[], metavar="NAME",
                            help=f"MCP client (repeatable): {_CLIENTS}; install always includes "
                            "claude-code unless --no-clients")
        parser.add_argument("--system", action="store_true",
                            help="machine-wide manifests instead of per-user ones (needs root/administrator)")
        parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
        parser.add_argument("--json", action="store_true", help="print a JSON object")
    install.add_argument("--extension-id", action="append", default=[], metavar="ID",
                         help="also allow this Chromium extension ID (32 letters a-p), e.g. your own build "
                         "of the extension; the reference extension is always allowed (repeatable)")
    install.add_argument("--firefox-extension-id", action="append", default=[], metavar="ADDON_ID",
                         help="allow this Firefox add-on ID (writes the Firefox manifest) (repeatable)")
    install.add_argument("--no-clients", action="store_true", help="register with no MCP client (browsers only)")
    install.set_defaults(handler=_install)
    uninstall.set_defaults(handler=_uninstall)


def _install(args: argparse.Namespace) -> int:
    return _run(args, "install")


def _uninstall(args: argparse.Namespace) -> int:
    return _run(args, "uninstall")


def _argv(args: argparse.Namespace, verb: str) -> tuple[str, ...]:
    """The command line again, for printing it with `sudo` in front."""
    argv = [verb]
    for flag, values in (("--browser", args.browser), ("--profile-dir", args.profile_dir),
                         ("--client", args.client), ("--extension-id", getattr(args, "extension_id", [])),
                         ("--firefox-extension-id", getattr(args, "firefox_extension_id", []))):
        for value in values:
            argv += [flag, str(value)]
    for flag in ("system", "no_clients", "json"):
        if getattr(args, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    return tuple(argv)


def _run(args: argparse.Namespace, verb: str) -> int:
    from mcp_bridge.install.installer import Installer, Selection
    from mcp_bridge.install.places import Platform
    from mcp_bridge.install.plan import InstallError
    from mcp_bridge.install.record import RecordError
    from mcp_bridge.paths import state_paths

    selection = Selection(
        browsers=tuple(args.browser), profile_dirs=tuple(args.profile_dir),
        extension_ids=tuple(getattr(args, "extension_id", [])),
        firefox_extension_ids=tuple(getattr(args, "firefox_extension_id", [])),
        clients=tuple(args.client), no_clients=getattr(args, "no_clients", False), system=args.system,
        argv=_argv(args, verb))
    installer = Installer(Platform.current(), state_paths())
    try:
        plan = installer.plan_install(selection) if verb == "install" else installer.plan_uninstall(selection)
    except (InstallError, RecordError) as exc:
        print(f"compass-bridge {verb}: {exc}", file=sys.stderr)
        return 2
    if not args.dry_run:
        installer.apply(plan)
    if args.json:
        print(json.dumps(plan.to_json(args.dry_run), indent=2))
    else:
        if args.dry_run:
            print(f"compass-bridge {verb} --dry-run: the plan (nothing has been changed)")
        for line in plan.lines(args.dry_run):
            print(line)
        if not plan.ok and not plan.blocked:
            print(f"\nSome steps failed (see above). Fix what they name and run `compass-bridge {verb}` again: "
                  "it is safe to re-run.")
        elif plan.ok and not args.dry_run and verb == "install" and plan.actions:
            print("\nDone. Run `compass-bridge doctor` to check every link, live.")
    return 0 if plan.ok else 1

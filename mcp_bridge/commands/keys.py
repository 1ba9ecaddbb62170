"""`compass-bridge keys`: create, list, revoke and delete bridge API keys."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from mcp_bridge.commands.table import print_table
from mcp_bridge.scopes import format_scopes


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("keys", help="manage the bridge API keys that MCP clients present",
                            description="Bridge keys decide what an MCP client may do: read ⊂ write ⊂ admin.")
    keys = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = keys.add_parser("create", help="create a key (printed once, never stored in clear)")
    create.add_argument("--name", required=True, help="a name to recognise the key by, e.g. laptop")
    create.add_argument("--scopes", default="read", help="read, write and/or admin, comma-separated "
                        "(write implies read; admin implies both); default: read")
    create.add_argument("--expires-in", metavar="DURATION", help="e.g. 30d, 12h, 2w; default: never")
    create.add_argument("--json", action="store_true", help="print a JSON object")
    create.set_defaults(handler=_create)

    listing = keys.add_parser("list", help="list keys (never shows the keys themselves)")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=_list)

    for action, helptext in (("revoke", "revoke a key: every server refuses it from its next call on"),
                             ("delete", "delete a key and its record")):
        p = keys.add_parser(action, help=helptext)
        p.add_argument("key", metavar="ID_OR_NAME")
        p.set_defaults(handler=_revoke if action == "revoke" else _delete)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fail(message: str) -> int:
    print(f"compass-bridge keys: {message}", file=sys.stderr)
    return 2


def _create(args: argparse.Namespace) -> int:
    from mcp_bridge.keys import KeyStore, KeyStoreError, parse_duration
    from mcp_bridge.paths import state_paths
    from mcp_bridge.scopes import ScopeError, parse_scopes

    try:
        scopes = parse_scopes(args.scopes)
        expires_at = time.time() + parse_duration(args.expires_in) if args.expires_in else None
        store = KeyStore.open(state_paths())
        try:
            record, key = store.create(args.name, scopes, expires_at)
        finally:
            store.close()
    except (ScopeError, KeyStoreError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps({"key": key, **record.public()}))
    else:
        print(key)
        print(f"Created key '{record.name}' ({record.id}, scopes {format_scopes(record.scopes)}, "
              f"expires {_when(record.expires_at) if record.expires_at else 'never'}).", file=sys.stderr)
        print("It is shown only now. Give it to the MCP client as COMPASS_BRIDGE_KEY.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    from mcp_bridge.keys import KeyStore
    from mcp_bridge.paths import state_paths

    store = KeyStore.open(state_paths())
    try:
        records = store.list()
        used = store.last_used()
    finally:
        store.close()
    if args.json:
        print(json.dumps([r.public(used.get(r.id)) for r in records], indent=2))
        return 0
    if not records:
        print("No keys yet. Create one: compass-bridge keys create --name NAME --scopes read,write")
        return 0
    header = ("ID", "NAME", "PREFIX", "SCOPES", "STATE", "CREATED", "LAST USED", "EXPIRES")
    rows = [(r.id, r.name, r.prefix + "…", format_scopes(r.scopes), r.state(),
             _when(r.created_at), _when(used.get(r.id)), _when(r.expires_at)) for r in records]
    print_table(header, rows)
    return 0


def _change(args: argparse.Namespace, action: str) -> int:
    from mcp_bridge.keys import KeyStore, KeyStoreError
    from mcp_bridge.paths import state_paths

    store = KeyStore.open(state_paths())
    try:
        record = store.revoke(args.key) if action == "revoke" else store.delete(args.key)
    except KeyStoreError as exc:
        return _fail(str(exc))
    finally:
        store.close()
    print(f"{'Revoked' if action == 'revoke' else 'Deleted'} key '{record.name}' ({record.id}).")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    return _change(args, "revoke")


def _delete(args: argparse.Namespace) -> int:
    return _change(args, "delete")

"""`compass-bridge compass`: log in to Compass with an API key, show the connection, log out."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_bridge.compass.source import CompassSource
    from mcp_bridge.config import CompassSettings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("compass", help="connect the bridge to your Compass: login, status, logout",
                            description="The Compass tools use a Compass API key (`ck_…`, created in Compass under "
                            "Settings → API keys). COMPASS_URL and COMPASS_API_KEY, when set, win over the stored key.")
    actions = parser.add_subparsers(dest="compass_command", metavar="ACTION", required=True)

    login = actions.add_parser("login", help="check a Compass API key with Compass and store it for `serve`")
    login.add_argument("--url", help="the address you open Compass at, e.g. https://compass.example.com "
                       "(default: COMPASS_URL, else `url` in the [compass] section of config.toml)")
    login.add_argument("--key-stdin", action="store_true",
                       help="read the key from standard input instead of prompting for it (for scripts)")
    login.set_defaults(handler=_login)

    status = actions.add_parser("status", help="check the connection: user, key scopes, tools, or what is wrong")
    status.add_argument("--json", action="store_true", help="print a JSON object (the same as in bridge_status)")
    status.set_defaults(handler=_status)

    logout = actions.add_parser("logout", help="forget the stored Compass key")
    logout.set_defaults(handler=_logout)


def _fail(message: str, code: int = 2) -> int:
    print(f"compass-bridge compass: {message}", file=sys.stderr)
    return code


def _settings() -> CompassSettings:
    from mcp_bridge.config import load_config
    from mcp_bridge.paths import state_paths

    return load_config(state_paths().config_file).compass


def _quiet_logs() -> None:
    # The outcome is printed; the source's log lines (meant for serve's log file) would only repeat it.
    logging.getLogger("mcp_bridge").addHandler(logging.NullHandler())


def _read_key(from_stdin: bool) -> str | None:
    if from_stdin:
        return sys.stdin.readline()
    if not sys.stdin.isatty():
        return None
    return getpass.getpass("Compass API key (ck_…, from Compass → Settings → API keys; input hidden): ")


def _login(args: argparse.Namespace) -> int:
    import anyio

    from mcp_bridge.compass.credentials import (
        KEY_ENV,
        URL_ENV,
        ApiKey,
        CompassCredentials,
        CredentialsError,
        check_url,
        save_credentials,
    )
    from mcp_bridge.compass.source import CompassSource
    from mcp_bridge.config import ConfigError
    from mcp_bridge.paths import state_paths

    try:
        settings = _settings()
    except ConfigError as exc:
        return _fail(str(exc))
    url_text = args.url or os.environ.get(URL_ENV, "").strip() or settings.url
    if not url_text:
        return _fail("which Compass? Pass --url with the address you open Compass at, e.g. "
                     "--url https://compass.example.com")
    try:
        url = check_url(url_text, source="--url" if args.url else "the Compass URL")
        text = _read_key(args.key_stdin)
        if text is None:
            return _fail("there is no terminal to ask for the key on; pipe it in with --key-stdin")
        key = ApiKey(text, source="the key you entered")
    except CredentialsError as exc:
        return _fail(str(exc))

    source = CompassSource(CompassCredentials(url, key, "compass login"), settings)
    _quiet_logs()
    anyio.run(source.check)
    status = source.status()
    if status["state"] == "key rejected":
        return _fail(f"Compass at {url} rejected this API key: it is unknown, revoked or expired. Check that you "
                     "copied the whole key, or create a new one in Compass (Settings → API keys). Nothing was stored.",
                     1)
    if status["state"] != "registered":
        return _fail(f"{status.get('problem')}. Nothing was stored.", 1)

    paths = state_paths().ensure()
    save_credentials(paths, url, key)
    print(f"Logged in to Compass at {url} as {status['user']['name']} (role {status['user']['role']}).")
    _print_tools(source, status)
    print(f"The key is stored in {paths.compass_credentials} (readable only by you); "
          "`compass-bridge serve` uses it from its next start.")
    if os.environ.get(KEY_ENV, "").strip():
        print(f"Note: {KEY_ENV} is set in this environment and wins over the stored key.")
    return 0


def _status(args: argparse.Namespace) -> int:
    import anyio

    from mcp_bridge.compass.source import CompassSource
    from mcp_bridge.config import ConfigError
    from mcp_bridge.paths import state_paths

    try:
        settings = _settings()
    except ConfigError as exc:
        return _fail(str(exc))
    source = CompassSource.from_environment(state_paths(), settings)
    _quiet_logs()
    anyio.run(source.check)
    status = source.status()
    ok = status["state"] == "registered"
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if ok else 1
    if not status["configured"]:
        print(status["problem"])
        return 1
    print(f"Compass at {status['url']} (key {status['key']}, from {status['credentials']}): {status['state']}")
    if not ok:
        print(status.get("problem"))
        return 1
    print(f"User {status['user']['name']} (role {status['user']['role']}).")
    _print_tools(source, status)
    context = status["context"]
    print(f"Context: {context['memories']} memories; dashboards: {', '.join(context['dashboards']) or 'none'}; "
          f"installed skills: {', '.join(context['installed_skills']) or 'none'}.")
    return 0


def _print_tools(source: CompassSource, status: Mapping[str, Any]) -> None:
    names = ", ".join(t.name for t in source.tools()) or "none"
    print(f"Compass key scopes: {status['compass_key_scopes']}. Tools ({status['tools']}): {names}.")
    for name, why in status.get("hidden_tools", {}).items():
        print(f"  not offered: {name} — {why}")


def _logout(args: argparse.Namespace) -> int:
    from mcp_bridge.compass.credentials import KEY_ENV, delete_credentials
    from mcp_bridge.paths import state_paths

    path = state_paths().compass_credentials
    if delete_credentials(path):
        print(f"Removed the stored Compass key ({path}). Running `compass-bridge serve` processes keep using it "
              "until they restart, and it keeps working in Compass until you revoke it there (Settings → API keys).")
    else:
        print("No Compass key is stored.")
    if os.environ.get(KEY_ENV, "").strip():
        print(f"Note: {KEY_ENV} is set in this environment; `serve` will still use it.")
    return 0

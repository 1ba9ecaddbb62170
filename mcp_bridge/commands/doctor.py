"""`compass-bridge doctor`: check every link (package, manifests, launcher, a live host, clients, keys, Compass)."""

from __future__ import annotations

import argparse
import json

_MARK = {"ok": "[ok]  ", "warn": "[warn]", "fail": "[FAIL]", "skip": "[skip]"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "doctor", help="check the installation, live, and say how to fix what is broken",
        description="Checks the package, every host manifest, the registry (Windows), starts the native host "
        "exactly as a browser would and pings it, the runtime dir, live hosts, the Claude Code registration, "
        "the bridge's database and key secret (and usage rows lost lately), the bridge keys and Compass. "
        "Exits non-zero when something is broken.")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from mcp_bridge.install.doctor import Doctor, Status
    from mcp_bridge.install.places import Platform
    from mcp_bridge.paths import state_paths

    checks = Doctor(Platform.current(), state_paths()).run()
    failed = [c for c in checks if c.status is Status.FAIL]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.to_json() for c in checks]}, indent=2))
        return 1 if failed else 0
    for check in checks:
        detail = check.detail.replace("\n", "\n         ")
        print(f"{_MARK[check.status.value]} {check.area}: {detail}")
        if check.fix:
            print(f"         fix: {check.fix}")
    warned = sum(c.status is Status.WARN for c in checks)
    print(f"\n{len(failed)} problem(s), {warned} warning(s)." if failed or warned else "\nAll good.")
    return 1 if failed else 0

"""`compass-bridge approvals list|allow|deny`: answer a review that any driver's run is waiting on."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mcp_bridge.commands.runs import call_service, when
from mcp_bridge.commands.table import print_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("approvals", help="list and answer agent runs' pending reviews",
                            description="Reviews agent runs are waiting on (see docs/AGENT_RUNS.md).")
    actions = parser.add_subparsers(dest="approvals_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="pending reviews")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    allow = actions.add_parser("allow", help="allow the action (optionally with edited input)")
    allow.add_argument("approval_id", metavar="APPROVAL_ID")
    allow.add_argument("--input", metavar="JSON", help="run the tool with this input instead (a JSON object); "
                       "for a question, {\"answers\": {QUESTION: ANSWER}}")
    allow.add_argument("--json", action="store_true")
    allow.set_defaults(handler=_answer, decision="allow")
    deny = actions.add_parser("deny", help="deny the action; the agent sees the message")
    deny.add_argument("approval_id", metavar="APPROVAL_ID")
    deny.add_argument("--message", default="denied by the user", help="what the agent is told")
    deny.add_argument("--stop", action="store_true", help="also stop the run's turn")
    deny.add_argument("--json", action="store_true")
    deny.set_defaults(handler=_answer, decision="deny")


def _list(args: argparse.Namespace) -> int:
    async def action(client: Any, args: argparse.Namespace) -> int:
        pending = (await client.request("approvals"))["approvals"]
        if args.json:
            print(json.dumps(pending, indent=2))
        elif not pending:
            print("No run is waiting for a review.")
        else:
            print_table(("ID", "RUN", "RISK", "CATEGORY", "WHAT", "DEADLINE"),
                        [(a["id"], a["run_id"], a["risk"], a["category"], a["summary"], when(a["deadline"]))
                         for a in pending])
        return 0

    return call_service(args, action)


def _answer(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"decision": args.decision}
    if args.decision == "allow" and args.input:
        try:
            params["updated_input"] = json.loads(args.input)
        except json.JSONDecodeError as exc:
            print(f"compass-bridge approvals: --input is not JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(params["updated_input"], dict):
            print("compass-bridge approvals: --input must be a JSON object", file=sys.stderr)
            return 2
    if args.decision == "deny":
        params.update(message=args.message, stop=args.stop)

    async def action(client: Any, args: argparse.Namespace) -> int:
        reply = await client.request("answer", approval_id=args.approval_id, **params)
        past = "Allowed" if args.decision == "allow" else "Denied"
        print(json.dumps(reply) if args.json else f"{past} review {reply['approval_id']} (run {reply['run_id']}).")
        return 0

    return call_service(args, action)

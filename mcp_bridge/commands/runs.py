"""`compass-bridge runs list|show|tail|abort`: the agent runs of this user, through the run service."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from mcp_bridge.commands.table import print_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("runs", help="list, show, follow and abort agent runs",
                            description="Agent runs held by the run service (see docs/AGENT_RUNS.md).")
    runs = parser.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    listing = runs.add_parser("list", help="the latest runs, newest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=lambda a: call_service(a, _list))
    show = runs.add_parser("show", help="one run: state, transcript, cost, test results, pending reviews")
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=lambda a: call_service(a, _show))
    tail = runs.add_parser("tail", help="print a run's chunks from a sequence number on, and follow it")
    tail.add_argument("run_id", metavar="RUN_ID")
    tail.add_argument("--after", type=int, default=0, metavar="SEQ", help="start after this sequence number")
    tail.add_argument("--no-follow", action="store_true", help="stop at the last stored chunk")
    tail.add_argument("--json", action="store_true", help="print {seq, chunk} objects")
    tail.set_defaults(handler=lambda a: call_service(a, _tail))
    abort = runs.add_parser("abort", help="abort a run: its turn is stopped and no follow-up is taken")
    abort.add_argument("run_id", metavar="RUN_ID")
    abort.add_argument("--json", action="store_true")
    abort.set_defaults(handler=lambda a: call_service(a, _abort))


Action = Callable[[Any, argparse.Namespace], Awaitable[int]]


def call_service(args: argparse.Namespace, action: Action) -> int:
    from mcp_bridge.agent.client import AgentClient, AgentError
    from mcp_bridge.paths import state_paths

    async def main() -> int:
        try:
            client = await AgentClient.connect(state_paths())
        except AgentError as exc:
            print(f"compass-bridge {args.command}: {exc}", file=sys.stderr)
            return 2
        try:
            return await action(client, args)
        except AgentError as exc:
            print(f"compass-bridge {args.command}: {exc}", file=sys.stderr)
            return 2
        finally:
            await client.close()

    return asyncio.run(main())


def when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _list(client: Any, args: argparse.Namespace) -> int:
    runs = (await client.request("list"))["runs"]
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    if not runs:
        print("No runs yet. Start one: compass-bridge run 'PROMPT'")
        return 0
    print_table(("ID", "STATE", "ENGINE", "KEY", "TURNS", "UPDATED", "CWD"),
                [(r["id"], r["state"], r["engine"], r["key"], str(r["turns"]), when(r["updated_at"]), r["cwd"])
                 for r in runs])
    return 0


async def _show(client: Any, args: argparse.Namespace) -> int:
    run = (await client.request("show", run_id=args.run_id))["run"]
    if args.json:
        print(json.dumps(run, indent=2))
        return 0
    print(f"run {run['id']}: {run['state']} ({run['engine']}, key {run['key']}, {run['turns']} turn(s))")
    print(f"cwd {run['cwd']}; session {run['session_id'] or '-'}; cost {run['cost_usd'] or '-'} USD")
    if run["error"]:
        print(f"error: {run['error']}")
    for t in run["test_results"]:
        print(f"tests ({t['runner']}): {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")
    for review in run["pending_reviews"]:
        print(f"waiting for review {review['id']}: {review['summary']} (risk {review['risk']}); "
              f"`compass-bridge approvals allow {review['id']}`")
    for line in run["transcript"]:
        print(f"--- {line['role']}\n{line['content']}")
    return 0


async def _tail(client: Any, args: argparse.Namespace) -> int:
    from mcp_bridge.commands.run import TERMINAL_STATES, TerminalView

    await client.request("subscribe", run_id=args.run_id, after=args.after)
    view = TerminalView()
    async for event in client.events():
        if event.get("event") == "chunk":
            if args.json:
                print(json.dumps({"seq": event["seq"], "chunk": event["chunk"]}), flush=True)
            else:
                view.show(event["chunk"])
        elif event.get("event") == "state" and (args.no_follow or event.get("state") in TERMINAL_STATES):
            return 0  # the replay ends with the current state: with --no-follow, or once the run rests, stop
        elif event.get("event") == "overflow":
            await client.request("subscribe", run_id=args.run_id, after=event["after"])
    return 0


async def _abort(client: Any, args: argparse.Namespace) -> int:
    reply = await client.request("abort", run_id=args.run_id)
    print(json.dumps(reply) if args.json else f"run {reply['run_id']}: {reply['state']} (abort requested)")
    return 0

"""`compass-bridge run`: start an agent run (or continue one) and stream it to the terminal.

On a terminal: readable text, tool calls and reviews asked interactively; Ctrl-C interrupts the turn, a second
Ctrl-C aborts the run. With --json: one UIMessageChunk per line on stdout. With no terminal a review is denied
at once (the service does it, and the chunk says so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

TERMINAL_STATES = ("done", "failed", "aborted", "interrupted")
EXIT_CODES = {"done": 0, "failed": 1, "interrupted": 1, "aborted": 130}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run", help="run an agent (Claude Code or the Messages API) and stream it here",
        description="Start an agent run in the run service and stream it. PROMPT '-' reads it from stdin. "
        "Exit status: 0 when the run finishes, 1 when it fails, 130 when it is aborted, 2 when it cannot start.")
    parser.add_argument("prompt", metavar="PROMPT")
    parser.add_argument("--engine", choices=("claude-code", "anthropic"),
                        help="default: [agent] engine in config.toml, else claude-code")
    parser.add_argument("--cwd", type=Path, default=None, help="the run's working directory (default: here)")
    parser.add_argument("--continue", dest="run_id", metavar="RUN_ID",
                        help="send PROMPT as a follow-up to this run (continues its session)")
    parser.add_argument("--fork", dest="fork_of", metavar="RUN_ID",
                        help="start a new run from a copy of this claude-code run's session")
    parser.add_argument("--json", action="store_true", help="print one UIMessageChunk per line")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    return asyncio.run(_main(args, prompt))


async def _main(args: argparse.Namespace, prompt: str) -> int:
    from mcp_bridge.agent.client import AgentClient, AgentError
    from mcp_bridge.paths import state_paths

    interactive = sys.stdin.isatty() and args.prompt != "-"
    key = os.environ.get("COMPASS_BRIDGE_KEY", "").strip() or None
    try:
        client = await AgentClient.connect(state_paths())
    except AgentError as exc:
        print(f"compass-bridge run: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            if args.run_id:
                reply = await client.request("send", run_id=args.run_id, prompt=prompt, key=key,
                                             can_review=interactive)
            else:
                cwd = str((args.cwd or Path.cwd()).resolve())
                reply = await client.request("start", prompt=prompt, cwd=cwd, engine=args.engine, key=key,
                                             can_review=interactive, fork_of=args.fork_of)
        except AgentError as exc:
            print(f"compass-bridge run: {exc}", file=sys.stderr)
            return 2
        run_id = str(reply["run_id"])
        print(f"run {run_id} ({reply['state']}); `compass-bridge runs show {run_id}`", file=sys.stderr)
        return await _stream(client, run_id, args.json, interactive)
    finally:
        await client.close()


async def _stream(client: Any, run_id: str, as_json: bool, interactive: bool) -> int:
    presses = 0
    tasks: set[asyncio.Task[Any]] = set()

    def background(coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_sigint() -> None:
        nonlocal presses
        presses += 1
        op = "interrupt" if presses == 1 else "abort"
        print(f"\n[{'interrupting the turn (Ctrl-C again aborts the run)' if op == 'interrupt' else 'aborting'}]",
              file=sys.stderr)
        background(client.request(op, run_id=run_id))

    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    view = TerminalView()
    started = False
    async for event in client.events():
        if event.get("run_id") != run_id:
            continue
        if event.get("event") == "chunk":
            chunk = event["chunk"]
            if as_json:
                print(json.dumps(chunk), flush=True)
            else:
                view.show(chunk)
            if interactive and _is_review(chunk):
                background(_ask(client, chunk["data"]))
        elif event.get("event") == "state":
            state = str(event.get("state"))
            started = started or state not in TERMINAL_STATES
            if started and state in TERMINAL_STATES:
                if event.get("error") and state != "done":
                    print(f"\nrun {run_id} {state}: {event['error']}", file=sys.stderr)
                await asyncio.gather(*tasks, return_exceptions=True)  # an abort asked for still reaches the service
                return 130 if presses and state == "done" else EXIT_CODES[state]  # the user stopped it
        elif event.get("event") == "overflow":
            await client.request("subscribe", run_id=run_id, after=event["after"])
    print(f"\nthe run service went away; `compass-bridge runs show {run_id}`", file=sys.stderr)
    return 1


def _is_review(chunk: dict[str, Any]) -> bool:
    data = chunk.get("data")
    return (chunk.get("type") in ("data-permission", "data-question") and isinstance(data, dict)
            and data.get("state") == "requested" and bool(data.get("approvalId")))


def _line(prompt: str) -> asyncio.Future[str]:
    """A line typed on the terminal, read in a daemon thread: a review withdrawn or answered elsewhere leaves
    its question unanswered, and that must not keep the process from exiting when the run ends."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        try:
            text = input(prompt)
        except EOFError:
            text = ""
        loop.call_soon_threadsafe(_settle, future, text)

    threading.Thread(target=read, daemon=True).start()
    return future


def _settle(future: asyncio.Future[str], text: str) -> None:
    if not future.done():
        future.set_result(text)


async def _ask(client: Any, data: dict[str, Any]) -> None:
    from mcp_bridge.agent.client import AgentError

    if data.get("category") == "question":
        answers = {}
        for question in data.get("input", {}).get("questions", []):
            text = str(question.get("question", ""))
            options = [str(o.get("label")) for o in question.get("options", []) if isinstance(o, dict)]
            hint = f" ({' / '.join(options)})" if options else ""
            answers[text] = await _line(f"\n? {text}{hint}: ")
        params: dict[str, Any] = {"decision": "allow", "updated_input": {**data.get("input", {}), "answers": answers}}
    else:
        reply = (await _line(f"\n? {data.get('summary')} [risk {data.get('risk')}] — allow? "
                             "[y]es / [e]dit / [n]o / [s]top: ")).strip().lower()
        if reply.startswith("y"):
            params = {"decision": "allow"}
        elif reply.startswith("e"):
            print(f"  input now: {json.dumps(data.get('input'))}")
            try:
                edited = json.loads(await _line("  the input to run instead (one line of JSON): "))
            except json.JSONDecodeError as exc:
                edited = None
                print(f"  not JSON ({exc}): denied instead")
            params = {"decision": "allow", "updated_input": edited} if isinstance(edited, dict) else {
                "decision": "deny", "message": "the user's edit was not a JSON object"}
        else:
            stop = reply.startswith("s")
            reason = "" if stop else (await _line("  why (the agent sees this; Enter to skip): ")).strip()
            params = {"decision": "deny", "message": reason or "denied by the user", "stop": stop}
    with contextlib.suppress(AgentError):  # withdrawn or timed out meanwhile: the chunk stream says so
        await client.request("answer", approval_id=data["approvalId"], **params)


class TerminalView:
    """UIMessageChunks as readable text: the model's words, tool calls, results, reviews, test results."""

    def show(self, chunk: dict[str, Any]) -> None:
        kind = chunk.get("type")
        out = sys.stdout
        if kind == "text-delta":
            out.write(str(chunk.get("delta", "")))
        elif kind == "tool-input-available":
            out.write(f"\n⏺ {chunk.get('toolName')} {_short(json.dumps(chunk.get('input')))}\n")
        elif kind == "tool-output-available":
            out.write(f"  ⎿ {_short(_text(chunk.get('output')))}\n")
        elif kind in ("tool-output-error", "tool-input-error"):
            out.write(f"  ⎿ error: {_short(str(chunk.get('errorText')))}\n")
        elif kind in ("data-permission", "data-question"):
            data = chunk.get("data") or {}
            state = data.get("state")
            if state != "requested":
                note = f": {data['message']}" if data.get("message") else ""
                out.write(f"  [{data.get('summary')}: {state}{note}]\n")
        elif kind == "data-test-result":
            d = chunk.get("data") or {}
            out.write(f"  [tests ({d.get('runner')}): {d.get('passed')} passed, {d.get('failed')} failed, "
                      f"{d.get('skipped')} skipped]\n")
        elif kind == "error":
            out.write(f"\nerror: {chunk.get('errorText')}\n")
        elif kind == "finish":
            out.write("\n")
        elif kind == "abort":
            out.write("\n[interrupted]\n")
        out.flush()


def _text(output: Any) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return " ".join(str(b.get("text", "")) for b in output if isinstance(b, dict))
    return json.dumps(output)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

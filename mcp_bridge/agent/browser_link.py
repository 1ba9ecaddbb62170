"""The run service's link to one browser: a native-host client that declares `runs: true` and turns the
extension's `run_*` messages (docs/PROTOCOL.md, "Agent runs") into run-service requests, and run events back.

The native host starts it (`python -m mcp_bridge.agent.browser_link --host-pid PID`, detached) when the browser
first asks for a run; it starts the run service in turn if needed (AgentClient.connect). It holds no run state:
runs live in the run service, so when the browser (and with it the host) goes away the link exits and the runs
go on; the next browser session resumes them by run id and sequence number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from mcp_bridge import __version__
from mcp_bridge.agent.client import AgentClient, AgentError
from mcp_bridge.agent.page_keys import PageKeys
from mcp_bridge.paths import StatePaths, state_paths
from native_host import PROTOCOL_VERSION
from native_host.client import discover_hosts
from native_host.framing import FROM_BROWSER_MAX, HEADER, TO_BROWSER_MAX
from native_host.protocol import encode

TERMINAL = ("done", "failed", "aborted", "interrupted")
APPROVALS_POLL_S = 2.0
"""How often the pending reviews of every run (also those started from a terminal) are looked at."""


class Link:
    def __init__(self, agent: AgentClient, writer: asyncio.StreamWriter, paths: StatePaths) -> None:
        self._agent = agent
        self._paths = paths
        self._writer = writer
        self._approvals: list[dict[str, Any]] | None = None
        self._page_keys = PageKeys(paths)
        self._tasks: set[asyncio.Task[Any]] = set()

    def send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(encode(message))

    # ---- browser → run service ----------------------------------------------------------------------------

    def background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, message: dict[str, Any]) -> None:
        kind = str(message.get("type"))
        rid = message.get("rid")
        try:
            reply = await self._dispatch(kind, message)
        except AgentError as exc:
            reply = {"type": "run_error", "code": exc.code, "message": str(exc)}
            if isinstance(message.get("run_id"), str):
                reply["run_id"] = message["run_id"]
        if reply is not None:
            if rid is not None:
                reply["rid"] = rid
            self.send(reply)

    async def _dispatch(self, kind: str, m: dict[str, Any]) -> dict[str, Any] | None:
        a = self._agent
        if kind in ("run_start", "run_send"):
            async with self._driver_key(m) as key:
                if kind == "run_start":
                    reply = await a.request("start", prompt=m.get("prompt", ""), engine=m.get("engine"), key=key,
                                            cwd=m.get("cwd") or default_cwd(self._paths), can_review=True)
                else:
                    reply = await a.request("send", run_id=m.get("run_id"), prompt=m.get("prompt", ""), key=key,
                                            can_review=True)
            return {"type": "run_ack", "run_id": reply["run_id"], "state": reply["state"]}
        if kind == "run_resume":
            after = m.get("after", 0)
            reply = await a.request("subscribe", run_id=m.get("run_id"), after=after if type(after) is int else 0)
            return {"type": "run_ack", "run_id": reply["run_id"]}
        if kind in ("run_abort", "run_interrupt"):
            await a.request(kind.removeprefix("run_"), run_id=m.get("run_id"))
            return None
        if kind == "run_answer":
            reply = await a.request("answer", approval_id=m.get("approval_id"), decision=m.get("decision"),
                                    message=m.get("message"), updated_input=m.get("updated_input"),
                                    stop=bool(m.get("stop")))
            await self.refresh_approvals()
            return {"type": "run_answered", "approval_id": reply["approval_id"], "run_id": reply["run_id"]}
        if kind == "run_status":
            status = await a.request("hello")
            status.pop("id", None)
            status.pop("ok", None)
            return {"type": "run_status", "service": status, "compass": compass_status(self._paths)}
        if kind == "run_list":
            return {"type": "run_list", "runs": (await a.request("list"))["runs"]}
        return {"type": "run_error", "code": "bad_request", "message": (
            f"unknown run message {kind!r}; see docs/PROTOCOL.md, Agent runs")}

    def _driver_key(self, m: dict[str, Any]) -> contextlib.AbstractAsyncContextManager[str | None]:
        """Who drives this turn: a web page (the extension names its origin, which the browser stated) gets a key
        with its origin's scopes; the side panel, the person at the browser, none (`default_scopes`)."""
        origin = m.get("origin")
        if origin is None:
            return contextlib.nullcontext()
        if not isinstance(origin, str):
            raise AgentError("bad_request", "`origin` must be the page's origin as a string")
        return self._page_keys.key_for(origin)

    # ---- run service → browser ----------------------------------------------------------------------------

    async def pump_events(self) -> None:
        async for event in self._agent.events():
            kind = event.get("event")
            if kind == "chunk":
                self.send({"type": "run_chunk", "run_id": event["run_id"], "seq": event["seq"],
                           "chunk": event["chunk"]})
            elif kind == "state":
                state = event.get("state")
                body = {"run_id": event["run_id"], "state": state, "seq": event.get("seq")}
                if state == "failed":
                    self.send({"type": "run_error", "code": "run_failed", "message": str(event.get("error")), **body})
                elif state in TERMINAL:
                    self.send({"type": "run_done", **body})
                else:
                    self.send({"type": "run_state", **body})
                if state in TERMINAL:
                    # The service holds few subscriptions per connection; a follow-up or resume subscribes again.
                    with contextlib.suppress(AgentError):
                        await self._agent.request("unsubscribe", run_id=event["run_id"])
                await self.refresh_approvals()
            elif kind == "overflow":
                await self._agent.request("subscribe", run_id=event["run_id"], after=event["after"])

    async def refresh_approvals(self) -> None:
        approvals = (await self._agent.request("approvals"))["approvals"]
        if approvals != self._approvals:
            self._approvals = approvals
            self.send({"type": "run_approvals", "approvals": approvals})

    async def poll_approvals(self) -> None:
        while True:
            with contextlib.suppress(AgentError):
                await self.refresh_approvals()
            await asyncio.sleep(APPROVALS_POLL_S)


def default_cwd(paths: StatePaths) -> str:
    """Where a run from the browser works when the side panel names no directory (a page never names one): the
    doors' default (the first root; none without roots); the run service checks it like any other."""
    from mcp_bridge.config import ConfigError, load_config
    from mcp_bridge.doors.service import default_cwd as first_root

    try:
        return first_root(load_config(paths.config_file))
    except ConfigError:
        return ""


def compass_status(paths: StatePaths) -> dict[str, Any]:
    """Whether Compass is set up, for the side panel's status (the key itself never leaves this process)."""
    from mcp_bridge.compass.credentials import CredentialsError, read_stored

    try:
        stored = read_stored(paths)
    except CredentialsError as exc:
        return {"configured": False, "problem": str(exc)}
    if stored is None:
        return {"configured": False, "problem": "no Compass key is stored; run `compass-bridge compass login`"}
    return {"configured": True, "url": stored.url}


async def read_frames(reader: asyncio.StreamReader) -> Any:
    while True:
        try:
            header = await reader.readexactly(HEADER.size)
            (size,) = HEADER.unpack(header)
            if size > FROM_BROWSER_MAX + TO_BROWSER_MAX:
                return
            payload = await reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        yield json.loads(payload)


async def serve(paths: StatePaths, host_pid: int) -> int:
    if sys.platform == "win32":
        print("browser link: the run service needs Unix sockets, which this platform lacks", file=sys.stderr)
        return 1
    hosts = [h for h in discover_hosts(paths.run_dir) if h.pid == host_pid and h.kind == "unix"]
    if not hosts:
        print(f"browser link: no native host with pid {host_pid} in {paths.run_dir}", file=sys.stderr)
        return 1
    agent = await AgentClient.connect(paths)
    reader, writer = await asyncio.open_unix_connection(str(hosts[0].path), limit=2 * FROM_BROWSER_MAX)
    link = Link(agent, writer, paths)
    link.send({"type": "hello", "protocol": PROTOCOL_VERSION, "client": {
        "name": "compass-bridge agent (browser link)", "version": __version__, "pid": os.getpid(), "runs": True}})

    async def relay() -> None:
        async for message in read_frames(reader):
            if isinstance(message, dict) and str(message.get("type", "")).startswith("run_"):
                link.background(link.handle(message))

    # Whichever side leaves first ends the link: the host (browser closed) or the run service (restarted; the
    # host starts a new link with the next run message).
    tasks = {asyncio.create_task(relay()), asyncio.create_task(link.pump_events()),
             asyncio.create_task(link.poll_approvals())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
        await agent.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp_bridge.agent.browser_link",
                                     description="Started by the native host; not meant to be run by hand.")
    parser.add_argument("--host-pid", type=int, required=True)
    args = parser.parse_args(argv)
    return asyncio.run(serve(state_paths(), args.host_pid))


if __name__ == "__main__":
    sys.exit(main())

"""The run service's front door: JSON lines on a per-user Unix socket (0600, in a 0700 directory).

Requests are `{"id": N, "op": ..., ...}` and answered `{"id": N, "ok": true, ...}` or
`{"id": N, "ok": false, "error": {"code", "message"}}`; subscriptions push `{"event": ...}` lines.
Only the user's own processes may connect (the directory's mode, and the peer's uid where the OS tells).
The protocol is docs/AGENT_RUNS.md; `client.AgentClient` speaks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, cast

from mcp_bridge.agent.errors import ServiceError
from mcp_bridge.agent.service import Listener, RunService
from native_host.runtime_dir import ensure_private_dir

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_LINE = 4 * 1024 * 1024
"""A request line (a prompt, an edited input) may be this long; a longer one closes the connection."""
MAX_SUBSCRIPTIONS = 16


def agent_dir(run_dir: Path) -> Path:
    return run_dir / "agent"


def socket_file(run_dir: Path) -> Path:
    return agent_dir(run_dir) / "agent.sock"


class Connection:
    def __init__(self, service: RunService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._service = service
        self._reader = reader
        self._writer = writer
        self._pumps: dict[str, tuple[Listener, asyncio.Task[None]]] = {}

    def _send(self, message: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n")

    async def serve(self) -> None:
        self._service.connections += 1
        try:
            while True:
                try:
                    line = await self._reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    self._send({"event": "error", "error": {"code": "too_large", "message": (
                        f"a request line is over {MAX_LINE} bytes; the connection is closed")}})
                    return
                await self._handle(line)
                await self._writer.drain()
        except ConnectionError:
            return
        finally:
            self._service.connections -= 1
            for listener, task in self._pumps.values():
                task.cancel()
                self._service.unsubscribe(listener)
            self._writer.close()

    async def _handle(self, line: bytes) -> None:
        request_id: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise ServiceError("bad_request", 'a request is a JSON object with "op" (see docs/AGENT_RUNS.md)')
            request_id = request.get("id")
            result = await self._dispatch(request["op"], request)
            self._send({"id": request_id, "ok": True, **result})
        except json.JSONDecodeError as exc:
            self._send({"id": None, "ok": False, "error": {"code": "bad_request", "message": f"not JSON: {exc}"}})
        except ServiceError as exc:
            self._send({"id": request_id, "ok": False, "error": {"code": exc.code, "message": str(exc), **exc.extra}})
        except Exception as exc:  # one bad request must not end the service
            log.exception("request failed")
            self._send({"id": request_id, "ok": False, "error": {
                "code": "internal", "message": f"the run service failed on this request ({type(exc).__name__}: "
                f"{exc}); its log has the details"}})

    async def _dispatch(self, op: str, r: dict[str, Any]) -> dict[str, Any]:
        s = self._service
        if op == "hello":
            return {"protocol": PROTOCOL_VERSION, "pid": os.getpid(), **s.status()}
        if op == "start":
            fork_of = r.get("fork_of")
            run = s.start(prompt=r.get("prompt", ""), cwd=r.get("cwd"), engine=r.get("engine"), key=r.get("key"),
                          can_review=bool(r.get("can_review")), fork_of=fork_of if isinstance(fork_of, str) else None,
                          scopes=r.get("scopes"), approvals=r.get("approvals"), model=r.get("model"),
                          system=r.get("system"), messages=r.get("messages"))
            if r.get("subscribe", True):
                self._subscribe(run.id, 0)
            return {"run_id": run.id, "state": run.state}
        if op == "send":
            run = s.follow_up(_str(r, "run_id"), r.get("prompt", ""), r.get("key"), bool(r.get("can_review")),
                              scopes=r.get("scopes"), approvals=r.get("approvals"))
            if r.get("subscribe", True):
                self._subscribe(run.id, int(r.get("after", run.seq)))
            return {"run_id": run.id, "state": run.state}
        if op == "subscribe":
            run_id = _str(r, "run_id")
            s.get(run_id)
            self._subscribe(run_id, int(r.get("after", 0)))
            return {"run_id": run_id}
        if op == "unsubscribe":
            pump = self._pumps.pop(_str(r, "run_id"), None)
            if pump is not None:
                pump[1].cancel()
                s.unsubscribe(pump[0])
            return {}
        if op == "interrupt":
            await s.interrupt(_str(r, "run_id"))
            return {}
        if op == "abort":
            run = await s.abort(_str(r, "run_id"))
            return {"run_id": run.id, "state": run.state}
        if op == "list":
            return {"runs": s.list_runs()}
        if op == "show":
            return {"run": s.show(_str(r, "run_id"))}
        if op == "approvals":
            return {"approvals": s.approvals.pending()}
        if op == "answer":
            decision = r.get("decision")
            if decision not in ("allow", "deny"):
                raise ServiceError("bad_request", 'decision must be "allow" or "deny"')
            approval = s.approvals.answer(_str(r, "approval_id"), decision, message=r.get("message"),
                                          updated_input=r.get("updated_input"), stop=bool(r.get("stop")))
            return {"approval_id": approval.id, "run_id": approval.run_id}
        raise ServiceError("bad_request", f"unknown op {op!r}; see docs/AGENT_RUNS.md")

    def _subscribe(self, run_id: str, after: int) -> None:
        if run_id in self._pumps:
            old_listener, old_task = self._pumps.pop(run_id)
            old_task.cancel()
            self._service.unsubscribe(old_listener)
        if len(self._pumps) >= MAX_SUBSCRIPTIONS:
            raise ServiceError("too_many", f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection")
        listener, replay = self._service.subscribe(run_id, after)
        for event in replay:
            self._send(event)
        self._pumps[run_id] = (listener, asyncio.create_task(self._pump(listener)))

    async def _pump(self, listener: Listener) -> None:
        last = 0
        while True:
            if listener.overflowed and listener.queue.empty():
                self._send({"event": "overflow", "run_id": listener.run_id, "after": last, "message": (
                    "this connection fell too far behind; subscribe again with this `after` to resume")})
                self._service.unsubscribe(listener)
                return
            event = await listener.queue.get()
            last = int(event.get("seq", last))
            self._send(event)
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()


async def start_server(service: RunService, run_dir: Path) -> asyncio.AbstractServer:
    """Listen on the socket; the caller holds the service lock, so a leftover socket file is stale."""
    if sys.platform != "win32":
        return await _listen_unix(service, run_dir)
    raise OSError("the run service needs Unix sockets, which this platform lacks")


if sys.platform != "win32":
    from native_host.unix import peer_credentials

    async def _listen_unix(service: RunService, run_dir: Path) -> asyncio.AbstractServer:
        directory = ensure_private_dir(agent_dir(run_dir))
        path = socket_file(run_dir)
        path.unlink(missing_ok=True)
        me = os.getuid()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # asyncio hands out a TransportSocket, which has the getsockopt that peer_credentials needs.
            sock = cast(socket.socket, writer.get_extra_info("socket"))
            uid = peer_credentials(sock)[0] if sock is not None else None
            if uid is not None and uid != me:
                writer.close()
                return
            await Connection(service, reader, writer).serve()

        old = os.umask(0o177)  # the socket is born 0600: no window in which another user could connect
        try:
            server = await asyncio.start_unix_server(accept, path=str(path), limit=MAX_LINE)
        finally:
            os.umask(old)
        path.chmod(0o600)
        log.info("run service listening on %s (dir %s)", path, directory)
        return server


def _str(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise ServiceError("bad_request", f"`{name}` is required")
    return value

"""The HTTP/SSE run API for orchestrators (`[agent.http]`), on the run service, loopback only.

Before any route: the `Host` must be loopback or listed (DNS rebinding), a browser's `Origin` must be listed
(cross-site requests), and every request but `/health` carries a bridge key (`Authorization: Bearer cb_…`)
that the same gate as `serve` checks. The key's scopes decide what it may do here (read: look; write: start,
steer, answer and abort runs; admin: Claude Code configuration) and are the scopes its runs get. A key sees
only the runs it started (an admin key sees all). Per key: requests per minute, open event streams and
active runs are bounded (429 with Retry-After), besides the service's own run limits. The endpoints are
docs/DOORS.md and `GET /openapi.json`.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mcp_bridge import __version__
from mcp_bridge.agent.client import AgentClient, AgentError
from mcp_bridge.agent.errors import ServiceError
from mcp_bridge.agent.limits import RateLimit
from mcp_bridge.agent.store import ACTIVE_STATES
from mcp_bridge.config import Config
from mcp_bridge.doors import openapi
from mcp_bridge.doors.http import EventStream, HttpError, Request, Response
from mcp_bridge.doors.loopback import host_refusal, origin_refusal
from mcp_bridge.doors.prompt import PromptError, split
from mcp_bridge.doors.service import TERMINAL, connect, default_cwd, follow
from mcp_bridge.doors.settings import HttpSettings
from mcp_bridge.gate import Caller, Gate
from mcp_bridge.keys import KeyStore
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import Scope, allows, format_scopes
from mcp_bridge.tools.claude_config import ClaudeConfig, ConfigNotFound
from mcp_bridge.tools.failure import ToolFailure
from mcp_bridge.usage import UsageLog, UsageRecord

CLIENT_NAME = "http-door"
TEXT_TAIL_CHARS = 4000

_STATUS = {"bad_request": 400, "unsupported": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404,
           "conflict": 409, "no_roots": 409,
           "busy": 429, "rate_limited": 429, "too_many": 429, "engine_unavailable": 503, "not_running": 503,
           "disconnected": 503}
_BUSY_RETRY_S = 5


def _service_error(exc: AgentError) -> HttpError:
    status = _STATUS.get(exc.code, 500)
    headers = {}
    if status == 429:
        retry = exc.extra.get("retry_after")
        headers["Retry-After"] = str(max(1, math.ceil(float(retry)))) if retry is not None else str(_BUSY_RETRY_S)
    return HttpError(status, exc.code, str(exc), headers)


Route = Callable[[Request, Caller, str, "re.Match[str]", asyncio.StreamWriter], Awaitable[Response | None]]


class RunApi:
    def __init__(self, paths: StatePaths, config: Config, settings: HttpSettings, keys: KeyStore, usage: UsageLog,
                 claude_config: ClaudeConfig) -> None:
        self._paths = paths
        self._config = config
        self._settings = settings
        self._keys = keys
        self._usage = usage
        self._claude = claude_config
        self._requests = RateLimit(settings.requests_per_minute)
        self._streams: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._hosts = frozenset(settings.hosts)
        self._origins = frozenset(settings.origins)
        self._routes: list[tuple[str, re.Pattern[str], Scope, Route]] = [
            ("GET", re.compile(r"/openapi\.json"), Scope.READ, self._openapi),
            ("POST", re.compile(r"/v1/runs"), Scope.WRITE, self._start),
            ("GET", re.compile(r"/v1/runs"), Scope.READ, self._list),
            ("GET", re.compile(r"/v1/runs/(?P<run>[\w-]+)"), Scope.READ, self._show),
            ("DELETE", re.compile(r"/v1/runs/(?P<run>[\w-]+)"), Scope.WRITE, self._abort),
            ("GET", re.compile(r"/v1/runs/(?P<run>[\w-]+)/events"), Scope.READ, self._events),
            ("POST", re.compile(r"/v1/runs/(?P<run>[\w-]+)/messages"), Scope.WRITE, self._message),
            ("POST", re.compile(r"/v1/runs/(?P<run>[\w-]+)/approvals/(?P<approval>[\w-]+)"), Scope.WRITE,
             self._answer),
            ("GET", re.compile(r"/v1/config/(?P<kind>\w+)"), Scope.ADMIN, self._config_list),
            ("GET", re.compile(r"/v1/config/(?P<kind>\w+)/(?P<name>[^/]+)"), Scope.ADMIN, self._config_get),
            ("PUT", re.compile(r"/v1/config/(?P<kind>\w+)/(?P<name>[^/]+)"), Scope.ADMIN, self._config_put),
            ("DELETE", re.compile(r"/v1/config/(?P<kind>\w+)/(?P<name>[^/]+)"), Scope.ADMIN, self._config_delete),
        ]

    # -- the checks before any route -----------------------------------------------------------------

    async def handle(self, request: Request, writer: asyncio.StreamWriter) -> Response | None:
        refused = host_refusal(request.headers.get("host"), self._hosts)
        if refused is None:
            refused = origin_refusal(request.headers.get("origin"), self._origins, required=False)
        if refused is not None:
            raise HttpError(403, "forbidden", refused)
        if request.method == "GET" and request.path == "/health":
            return await self._health()
        found = [(method, scope, handler, match) for method, pattern, scope, handler in self._routes
                 if (match := pattern.fullmatch(request.path))]
        route = next(((scope, handler, match) for method, scope, handler, match in found
                      if method == request.method), None)
        caller, key = self._authenticate(request)
        if route is None:
            if found:
                raise HttpError(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}; "
                                "see GET /openapi.json")
            raise HttpError(404, "not_found", f"no endpoint {request.path}; see GET /openapi.json")
        scope, handler, match = route
        try:
            self._requests.check(caller.name)
        except ServiceError as exc:  # the service's own sliding window, counting requests here
            wait = float(exc.extra.get("retry_after", 1))
            raise HttpError(429, "rate_limited", f"the key '{caller.name}' made {self._settings.requests_per_minute} "
                            "requests in the last minute ([agent.http] requests_per_minute); slow down",
                            {"Retry-After": str(max(1, math.ceil(wait)))}) from None
        if not allows(caller.scopes, scope):
            raise HttpError(403, "scope", f"refused: {request.method} {request.path} needs the '{scope}' scope, "
                            f"and the bridge key '{caller.name}' has {format_scopes(caller.scopes)}; use a key with "
                            f"'{scope}' (`compass-bridge keys create --name NAME --scopes {scope}`)")
        if request.method in ("POST", "PUT"):
            media = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                raise HttpError(415, "unsupported_media_type", "send the body as JSON with Content-Type: "
                                "application/json (other types are refused: a web page can send those without "
                                "asking)")
        return await handler(request, caller, key, match, writer)

    def _authenticate(self, request: Request) -> tuple[Caller, str]:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise HttpError(401, "unauthorized", "a bridge key is required: send Authorization: Bearer cb_… "
                            "(`compass-bridge keys create --name NAME --scopes write`)",
                            {"WWW-Authenticate": 'Bearer realm="compass-bridge"'})
        key = key.strip()
        verdict = Gate(self._keys, key, self._config.default_scopes).identify()
        if verdict.refusal is not None:
            raise HttpError(401, "unauthorized", verdict.refusal, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return verdict.caller, key

    # -- runs ------------------------------------------------------------------------------------------

    async def _call(self, op: str, **params: Any) -> dict[str, Any]:
        client = await self._client()
        try:
            return await client.request(op, **params)
        except AgentError as exc:
            raise _service_error(exc) from None
        finally:
            await client.close()

    async def _client(self) -> AgentClient:
        try:
            return await connect(self._paths)
        except AgentError as exc:
            raise _service_error(exc) from None

    async def _owned(self, run_id: str, caller: Caller) -> dict[str, Any]:
        """The run, if this key started it (or is admin); otherwise it does not exist for this key."""
        run: dict[str, Any] = (await self._call("show", run_id=run_id))["run"]
        if run.get("key_id") != caller.key_id and Scope.ADMIN not in caller.scopes:
            raise HttpError(404, "not_found", f"no run {run_id} started by the key '{caller.name}'; see GET /v1/runs")
        return run

    async def _health(self) -> Response:
        try:
            client = await AgentClient.connect(self._paths, start=False)
        except AgentError as exc:
            return Response(503, {"status": "unavailable", "version": __version__, "message": str(exc)})
        try:
            hello = await client.request("hello")
        except AgentError as exc:
            return Response(503, {"status": "unavailable", "version": __version__, "message": str(exc)})
        finally:
            await client.close()
        return Response(200, {"status": "ok", "version": __version__, "concurrency": hello.get("concurrency")})

    async def _openapi(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                       writer: asyncio.StreamWriter) -> Response:
        return Response(200, openapi.document(__version__, f"http://{self._settings.listen}"))

    async def _start(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                     writer: asyncio.StreamWriter) -> Response | None:
        body = request.json()
        unknown = set(body) - {"prompt", "messages", "engine", "cwd", "approvals", "stream"}
        if unknown:
            raise HttpError(400, "bad_request", f"unknown field(s) {', '.join(sorted(unknown))}; see /openapi.json")
        if ("prompt" in body) == ("messages" in body):
            raise HttpError(400, "bad_request", "send either `prompt` (a string) or `messages` (a list)")
        try:
            prompt, earlier = split(body["messages"]) if "messages" in body else (body["prompt"], [])
        except PromptError as exc:
            raise HttpError(400, "bad_request", str(exc)) from None
        if not isinstance(prompt, str):
            raise HttpError(400, "bad_request", "`prompt` must be a string")
        stream = self._wants_stream(request, body)
        params = {"prompt": prompt, "cwd": body.get("cwd") or default_cwd(self._config),
                  "engine": body.get("engine"), "key": key, "can_review": True, "subscribe": stream,
                  "approvals": body.get("approvals"),  # the run's own envelope: the service lets it only narrow
                  "messages": earlier}
        return await self._run_request("start", params, caller, writer, stream, created=True)

    async def _message(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                       writer: asyncio.StreamWriter) -> Response | None:
        body = request.json()
        run_id = match["run"]
        await self._owned(run_id, caller)
        text = body.get("message", body.get("prompt"))
        if not isinstance(text, str) or not text.strip():
            raise HttpError(400, "bad_request", "send the follow-up as {\"message\": \"…\"}")
        stream = self._wants_stream(request, body)
        params = {"run_id": run_id, "prompt": text, "key": key, "can_review": True, "subscribe": stream}
        return await self._run_request("send", params, caller, writer, stream, created=False)

    @staticmethod
    def _wants_stream(request: Request, body: dict[str, Any]) -> bool:
        stream = body.get("stream")
        if stream is None:
            return "text/event-stream" in request.headers.get("accept", "")
        if not isinstance(stream, bool):
            raise HttpError(400, "bad_request", "`stream` must be true or false")
        return stream

    async def _run_request(self, op: str, params: dict[str, Any], caller: Caller, writer: asyncio.StreamWriter,
                           stream: bool, *, created: bool) -> Response | None:
        if stream:
            self._take_stream(caller)
        try:
            client = await self._client()
            try:
                async with self._locks.setdefault(caller.name, asyncio.Lock()):  # one start per key at a time
                    await self._check_active(client, caller)
                    try:
                        reply = await client.request(op, **params)
                    except AgentError as exc:
                        raise _service_error(exc) from None
                run_id = str(reply["run_id"])
                if not stream:
                    return Response(201 if created else 202, {"runId": run_id, "state": reply.get("state")},
                                    {"Location": f"/v1/runs/{run_id}"})
                await self._stream(client, run_id, writer, {"X-Run-Id": run_id})
                return None
            finally:
                await client.close()
        finally:
            if stream:
                self._end_stream(caller)

    async def _check_active(self, client: AgentClient, caller: Caller) -> None:
        try:
            runs = (await client.request("list"))["runs"]
        except AgentError as exc:
            raise _service_error(exc) from None
        active = [r["id"] for r in runs if r.get("key_id") == caller.key_id and r.get("state") in ACTIVE_STATES]
        if len(active) >= self._settings.runs_per_key:
            raise HttpError(429, "too_many_runs", f"the key '{caller.name}' has {len(active)} active runs "
                            f"({', '.join(active)}), the limit ([agent.http] runs_per_key); wait for one to rest "
                            "or abort it (DELETE /v1/runs/{id})", {"Retry-After": str(_BUSY_RETRY_S)})

    async def _stream(self, client: AgentClient, run_id: str, writer: asyncio.StreamWriter,
                      headers: dict[str, str]) -> None:
        events = EventStream(writer)
        await events.open(headers)
        rested = False
        try:
            async for event in follow(client, run_id):
                if event["event"] == "chunk":
                    await events.send(event["chunk"], event_id=int(event["seq"]))
                else:
                    rested = event.get("state") in TERMINAL
                    await events.send({k: event.get(k) for k in ("run_id", "state", "error", "seq")}, event="state")
            if not rested:  # the service went away mid-run: say so rather than just end
                await events.send({"run_id": run_id, "message": "the connection to the run service was lost; "
                                   "the run may go on: reattach with GET /v1/runs/{id}/events?after=<last id>"},
                                  event="error")
        except ConnectionError:
            return
        finally:
            events.close()

    def _take_stream(self, caller: Caller) -> None:
        open_now = self._streams.get(caller.name, 0)
        if open_now >= self._settings.streams_per_key:
            raise HttpError(429, "too_many_streams", f"the key '{caller.name}' has {open_now} event streams open, "
                            "the limit ([agent.http] streams_per_key); close one, or poll GET /v1/runs/{id}",
                            {"Retry-After": str(_BUSY_RETRY_S)})
        self._streams[caller.name] = open_now + 1

    def _end_stream(self, caller: Caller) -> None:
        self._streams[caller.name] -= 1

    async def _list(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                    writer: asyncio.StreamWriter) -> Response:
        runs = (await self._call("list"))["runs"]
        if Scope.ADMIN not in caller.scopes:
            runs = [r for r in runs if r.get("key_id") == caller.key_id]
        return Response(200, {"runs": runs})

    async def _show(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                    writer: asyncio.StreamWriter) -> Response:
        run = await self._owned(match["run"], caller)
        said = [t["content"] for t in run.pop("transcript", []) if t.get("role") == "assistant"]
        run["text"] = (said[-1] if said else "")[-TEXT_TAIL_CHARS:]
        return Response(200, run)

    async def _events(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                      writer: asyncio.StreamWriter) -> None:
        run_id = match["run"]
        await self._owned(run_id, caller)
        text = request.query.get("after") or request.headers.get("last-event-id") or "0"
        if not text.isdigit():
            raise HttpError(400, "bad_request", "`after` (or Last-Event-ID) must be a sequence number")
        self._take_stream(caller)
        try:
            client = await self._client()
            try:
                try:
                    await client.request("subscribe", run_id=run_id, after=int(text))
                except AgentError as exc:
                    raise _service_error(exc) from None
                await self._stream(client, run_id, writer, {})
            finally:
                await client.close()
        finally:
            self._end_stream(caller)

    async def _answer(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                      writer: asyncio.StreamWriter) -> Response:
        body = request.json()
        run = await self._owned(match["run"], caller)
        approval_id = match["approval"]
        if approval_id not in {a.get("id") for a in run.get("pending_reviews", [])}:
            raise HttpError(404, "not_found", f"no pending review {approval_id} in run {match['run']} (answered, "
                            "withdrawn or timed out); see GET /v1/runs/{id}")
        unknown = set(body) - {"decision", "message", "updated_input", "stop"}
        if unknown:
            raise HttpError(400, "bad_request", f"unknown field(s) {', '.join(sorted(unknown))}")
        reply = await self._call("answer", approval_id=approval_id, decision=body.get("decision"),
                                 message=body.get("message"), updated_input=body.get("updated_input"),
                                 stop=bool(body.get("stop")))
        return Response(200, {"approvalId": reply["approval_id"], "runId": reply["run_id"],
                              "decision": body.get("decision")})

    async def _abort(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                     writer: asyncio.StreamWriter) -> Response:
        await self._owned(match["run"], caller)
        reply = await self._call("abort", run_id=match["run"])
        return Response(200, {"runId": reply["run_id"], "state": reply["state"]})

    # -- Claude Code configuration -----------------------------------------------------------------------

    async def _config_op(self, op: str, caller: Caller, work: Callable[[], Any]) -> Response:
        started = time.monotonic()
        error: str | None = None
        try:
            result = await asyncio.to_thread(work)
        except ConfigNotFound as exc:
            error = str(exc)
            raise HttpError(404, "not_found", error) from None
        except ToolFailure as exc:  # the path policy's and these tools' refusals
            error = str(exc)
            raise HttpError(400, "refused", error) from None
        finally:
            self._usage.record(UsageRecord(
                key_id=caller.key_id, key_name=caller.name, tool=f"claude_config_{op}",
                outcome="ok" if error is None else "refused", error=error,
                duration_ms=(time.monotonic() - started) * 1000, client=CLIENT_NAME, ts=time.time()))
        return Response(200, result if isinstance(result, dict) else {"entries": result})

    async def _config_list(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                           writer: asyncio.StreamWriter) -> Response:
        project = request.query.get("project")
        return await self._config_op("list", caller, lambda: self._claude.list(match["kind"], project))

    async def _config_get(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                          writer: asyncio.StreamWriter) -> Response:
        project = request.query.get("project")
        return await self._config_op("get", caller, lambda: self._claude.get(match["kind"], match["name"], project))

    async def _config_put(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                          writer: asyncio.StreamWriter) -> Response:
        body = request.json()
        content = body.get("content")
        if not isinstance(content, str):
            raise HttpError(400, "bad_request", "send {\"content\": \"…\"} with the file's whole text")
        project = request.query.get("project")
        return await self._config_op("put", caller,
                                     lambda: self._claude.put(match["kind"], match["name"], content, project))

    async def _config_delete(self, request: Request, caller: Caller, key: str, match: re.Match[str],
                             writer: asyncio.StreamWriter) -> Response:
        project = request.query.get("project")
        return await self._config_op("delete", caller,
                                     lambda: self._claude.delete(match["kind"], match["name"], project))

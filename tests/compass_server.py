"""A contract server for the Compass bridge API (docs/COMPASS_API.md): real HTTP on 127.0.0.1.

It behaves the way the bridge expects Compass to: API keys stored only as SHA-256 digests, scopes
(read ⊂ write ⊂ admin), expiry, revocation, the user's role for admin tools, a few records, and each
user's memories, dashboards, theme and the installed skills. Tests turn knobs — revoke a key, change
its scopes, delay or fail or drop a request, go down and come back on the same port — and read the log
of every request (headers included) to assert what the bridge sent.

Standalone, for trying the bridge without a Compass:
    python -m tests.compass_server [--port 8765]
prints the URL and an admin key, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REGISTER = "/api/bridge/register"
TOOLS = "/api/bridge/tools"
SCOPES = ("read", "write", "admin")

TOOL_SCOPES = {
    "queryData": "read", "recallMemory": "read", "listThemes": "read", "listDashboards": "read",
    "listInstalledSkills": "read", "rememberContext": "write", "setTheme": "write",
    "installSkill": "admin", "uninstallSkill": "admin", "toggleInstalledSkill": "admin",
}
DESCRIPTIONS = {
    "queryData": "Query the application database by query type.",
    "recallMemory": "Search persistent memories for this user.",
    "listThemes": "List available visual themes.",
    "listDashboards": "List the user's saved custom dashboards.",
    "listInstalledSkills": "List all installed agent skills with their status.",
    "rememberContext": "Save something to persistent memory.",
    "setTheme": "Switch the user's visual theme.",
    "installSkill": "Install a skill from GitHub. Requires admin role.",
    "uninstallSkill": "Remove an installed skill permanently. Requires admin role.",
    "toggleInstalledSkill": "Enable or disable an installed skill.",
}
ADMIN_ROLE_TOOLS = {"installSkill", "uninstallSkill", "toggleInstalledSkill"}
# A tool the bridge has no schema of its own for: announced with Compass's schema.
PROJECT_SUMMARY = {
    "name": "projectSummary", "scope": "read",
    "description": "Summarise one project: its customer, open tasks and invoices.",
    "inputSchema": {"type": "object", "properties": {"projectId": {"type": "string"}}, "required": ["projectId"]},
}
THEME_PRESETS = ("native-compass", "corpo", "notebook", "mocha")
MEMORY_TYPES = ("preference", "workflow", "fact", "decision")

RECORDS: dict[str, list[dict[str, Any]]] = {
    "customers": [
        {"id": "cus_1", "name": "Acme Builders", "email": "office@acme.example"},
        {"id": "cus_2", "name": "Birch Homes", "email": "hello@birch.example"},
        {"id": "cus_3", "name": "Cedar Renovations", "email": "info@cedar.example"},
    ],
    "vendors": [{"id": "ven_1", "name": "Delta Lumber"}, {"id": "ven_2", "name": "Echo Electric"}],
    "projects": [
        {"id": "prj_1", "name": "Acme HQ remodel", "customerId": "cus_1", "status": "active"},
        {"id": "prj_2", "name": "Birch kitchen", "customerId": "cus_2", "status": "planning"},
    ],
    "invoices": [{"id": "inv_1", "projectId": "prj_1", "amount": 12500.0, "status": "sent"}],
    "vendor_bills": [{"id": "vb_1", "vendorId": "ven_1", "amount": 3400.0, "status": "open"}],
    "schedule_tasks": [
        {"id": "tsk_1", "projectId": "prj_1", "title": "Demolition", "status": "done"},
        {"id": "tsk_2", "projectId": "prj_1", "title": "Framing", "status": "in_progress"},
    ],
    "project_operations": [{"id": "op_1", "projectId": "prj_1", "stage": "construction"}],
}
_SEARCH_FIELD = {"customers": "name", "vendors": "name", "projects": "name", "schedule_tasks": "title"}
_DETAIL = {"project_detail": "projects", "customer_detail": "customers", "vendor_detail": "vendors"}


def expand(scopes: str) -> set[str]:
    top = max(SCOPES.index(s.strip()) for s in scopes.split(","))
    return set(SCOPES[: top + 1])


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ToolError(Exception):
    """The tool ran and failed: answered as `{success: false, error}`."""


@dataclass
class User:
    id: str
    name: str
    role: str
    theme: str = "native-compass"
    memories: list[dict[str, Any]] = field(default_factory=list)
    dashboards: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StoredKey:
    digest: str
    user: User
    scopes: set[str]
    expires_at: float | None
    revoked: bool = False


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names."""
    body: Any

    @property
    def tool(self) -> str | None:
        return self.body.get("tool") if isinstance(self.body, dict) else None


@dataclass
class Fault:
    kind: str
    """'status' (answer with `status`), 'delay' (wait `delay_s`, then answer normally) or 'drop' (close unanswered)."""
    times: int | None
    """How many matching requests it applies to; None for all until cleared."""
    path: str | None
    tool: str | None
    status: int
    delay_s: float
    message: str

    def matches(self, path: str, tool: str | None) -> bool:
        return (self.path is None or self.path == path) and (self.tool is None or self.tool == tool)


class CompassContractServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: list[StoredKey] = []
        self._faults: list[Fault] = []
        self._requests: list[Recorded] = []
        self._skills: list[dict[str, Any]] = [
            {"id": "skill_1", "name": "wrangler", "source": "cloudflare/skills/wrangler", "enabled": True},
        ]
        self._next_id = 100
        self.announce_all = False
        """When True, announce every tool whatever the key's scopes (a Compass that over-announces)."""
        self.extra_tools: list[dict[str, Any]] = [dict(PROJECT_SUMMARY)]
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> CompassContractServer:
        contract = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                contract._handle(self)

            def do_GET(self) -> None:
                contract._respond(self, 405, {"error": "use POST"})

            def log_message(self, format: str, *args: Any) -> None:
                return None  # the request log is in `requests`

        self._abort = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        # A short poll interval makes stop() (and go_down) quick: shutdown waits for the next poll.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name="compass-contract",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, and cut off requests still waiting on a delay."""
        self._abort.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    go_down = stop

    def come_up(self) -> None:
        """Listen again on the same port (as Compass does after a restart)."""
        self.start()

    def __enter__(self) -> CompassContractServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- accounts ----------------------------------------------------------------------------

    def add_user(self, name: str, role: str = "member") -> User:
        with self._lock:
            self._next_id += 1
            return User(
                id=f"usr_{self._next_id}", name=name, role=role,
                memories=[{"id": f"mem_{self._next_id}", "content": "Prefers weekly summaries on Mondays",
                           "memoryType": "preference", "tags": "reports", "importance": 0.7}],
                dashboards=[{"id": f"dash_{self._next_id}", "name": "Cash flow",
                             "description": "Invoices against vendor bills"}],
            )

    def create_key(self, user: User, scopes: str = "read", expires_at: float | None = None) -> str:
        key = "ck_" + secrets.token_hex(20)
        with self._lock:
            self._keys.append(StoredKey(digest(key), user, expand(scopes), expires_at))
        return key

    def revoke(self, key: str) -> None:
        self._stored(key).revoked = True

    def set_scopes(self, key: str, scopes: str) -> None:
        self._stored(key).scopes = expand(scopes)

    def user_of(self, key: str) -> User:
        return self._stored(key).user

    def skills(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for s in self._skills]

    def _stored(self, key: str) -> StoredKey:
        found = self._find(digest(key))
        assert found is not None, "no such key"
        return found

    def _find(self, wanted: str) -> StoredKey | None:
        with self._lock:
            return next((k for k in self._keys if hmac.compare_digest(k.digest, wanted)), None)

    # -- knobs and the request log -----------------------------------------------------------

    def fault(self, kind: str, *, times: int | None = 1, path: str | None = None, tool: str | None = None,
              status: int = 500, delay_s: float = 0.0, message: str = "internal error") -> None:
        assert kind in ("status", "delay", "drop")
        with self._lock:
            self._faults.append(Fault(kind, times, path, tool, status, delay_s, message))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def calls(self, tool: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == TOOLS and r.tool == tool]

    def registrations(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == REGISTER]

    def _take_fault(self, path: str, tool: str | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, tool):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # -- HTTP --------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        path = handler.path
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self._requests.append(Recorded(handler.command, path, headers, body))
        tool = body.get("tool") if isinstance(body, dict) else None
        fault = self._take_fault(path, tool)
        if fault is not None:
            if fault.kind == "delay" and self._abort.wait(fault.delay_s):
                return  # went down while waiting: the connection closes unanswered
            if fault.kind == "drop":
                return
            if fault.kind == "status":
                self._respond(handler, fault.status, {"error": fault.message})
                return
        stored, problem = self._authenticate(headers.get("authorization", ""))
        if stored is None:
            self._respond(handler, 401, {"error": problem})
        elif path == REGISTER:
            self._respond(handler, 200, self._registration(stored))
        elif path == TOOLS:
            self._respond(handler, *self._call(stored, body))
        else:
            self._respond(handler, 404, {"error": f"no route {path}"})

    @staticmethod
    def _respond(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _authenticate(self, authorization: str) -> tuple[StoredKey | None, str]:
        if not authorization.startswith("Bearer "):
            return None, "missing bearer token"
        stored = self._find(digest(authorization.removeprefix("Bearer ")))
        if stored is None:
            return None, "invalid API key"
        if stored.revoked:
            return None, "API key revoked"
        if stored.expires_at is not None and time.time() >= stored.expires_at:
            return None, "API key expired"
        return stored, ""

    # -- the API -----------------------------------------------------------------------------

    def _announced(self) -> list[dict[str, Any]]:
        tools = [{"name": n, "description": DESCRIPTIONS[n], "scope": scope} for n, scope in TOOL_SCOPES.items()]
        return tools + [dict(t) for t in self.extra_tools]

    def _allowed(self, stored: StoredKey, name: str, scope: str) -> bool:
        return scope in stored.scopes and (name not in ADMIN_ROLE_TOOLS or stored.user.role == "admin")

    def _registration(self, stored: StoredKey) -> dict[str, Any]:
        user = stored.user
        tools = [t for t in self._announced() if self.announce_all or self._allowed(stored, t["name"], t["scope"])]
        with self._lock:
            return {
                "user": {"id": user.id, "name": user.name, "role": user.role},
                "scopes": [s for s in SCOPES if s in stored.scopes],
                "tools": tools,
                "context": {
                    "memories": [dict(m) for m in user.memories],
                    "dashboards": [dict(d) for d in user.dashboards],
                    "installedSkills": [dict(s) for s in self._skills],
                },
            }

    def _call(self, stored: StoredKey, body: Any) -> tuple[int, dict[str, Any]]:
        if not (isinstance(body, dict) and isinstance(body.get("tool"), str) and isinstance(body.get("args"), dict)):
            return 400, {"error": "expected a JSON object {tool: string, args: object}"}
        name, args = body["tool"], body["args"]
        scope = TOOL_SCOPES.get(name) or next((t["scope"] for t in self.extra_tools if t["name"] == name), None)
        run = getattr(self, f"_tool_{name}", None)
        if scope is None or run is None:
            return 404, {"error": f"unknown tool '{name}'"}
        if scope not in stored.scopes:
            return 403, {"error": f"this API key lacks the '{scope}' scope that {name} needs"}
        if name in ADMIN_ROLE_TOOLS and stored.user.role != "admin":
            return 403, {"error": "admin role required"}
        try:
            with self._lock:
                result = run(stored.user, args)
        except ToolError as exc:
            return 200, {"success": False, "error": str(exc)}
        return 200, {"success": True, "result": result}

    @staticmethod
    def _limit(args: dict[str, Any], default: int) -> int:
        limit = args.get("limit", default)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ToolError("limit must be a positive integer")
        return limit

    @staticmethod
    def _text(args: dict[str, Any], name: str) -> str:
        value = args.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ToolError(f"{name} is required")
        return value

    def _tool_queryData(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        query_type = args.get("queryType")
        if query_type in _DETAIL:
            if not args.get("id"):
                raise ToolError("id required for detail query")
            row = next((r for r in RECORDS[_DETAIL[query_type]] if r["id"] == args["id"]), None)
            if row is None:
                raise ToolError("not found")
            return {"data": row}
        if query_type not in RECORDS:
            raise ToolError("unknown query type")
        rows = RECORDS[query_type]
        search, on = args.get("search"), _SEARCH_FIELD.get(query_type)
        if search and on:
            rows = [r for r in rows if str(search).lower() in r[on].lower()]
        rows = rows[: self._limit(args, 20)]
        return {"data": rows, "count": len(rows)}

    def _tool_projectSummary(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        project = next((p for p in RECORDS["projects"] if p["id"] == args.get("projectId")), None)
        if project is None:
            raise ToolError("not found")
        tasks = [t for t in RECORDS["schedule_tasks"] if t["projectId"] == project["id"] and t["status"] != "done"]
        return {"project": project, "openTasks": tasks}

    def _tool_recallMemory(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        query = self._text(args, "query").lower()
        found = [m for m in user.memories if query in m["content"].lower() or query in (m.get("tags") or "").lower()]
        found = found[: self._limit(args, 5)]
        return {"action": "memory_recall", "results": found, "count": len(found)}

    def _tool_rememberContext(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        content = self._text(args, "content")
        if args.get("memoryType") not in MEMORY_TYPES:
            raise ToolError(f"memoryType must be one of {', '.join(MEMORY_TYPES)}")
        importance = args.get("importance", 0.7)
        if not isinstance(importance, int | float) or not 0.3 <= importance <= 1.0:
            raise ToolError("importance must be between 0.3 and 1.0")
        self._next_id += 1
        memory = {"id": f"mem_{self._next_id}", "content": content, "memoryType": args["memoryType"],
                  "tags": args.get("tags"), "importance": importance}
        user.memories.append(memory)
        return {"action": "memory_saved", "id": memory["id"], "content": content, "memoryType": args["memoryType"]}

    def _tool_listThemes(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        return {"themes": [{"id": t, "name": t.replace("-", " ").title(), "isPreset": True} for t in THEME_PRESETS],
                "active": user.theme}

    def _tool_setTheme(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        theme = self._text(args, "themeId")
        if theme not in THEME_PRESETS:
            raise ToolError(f"unknown theme '{theme}'")
        user.theme = theme
        return {"action": "apply_theme", "themeId": theme}

    def _tool_listDashboards(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        return {"dashboards": [dict(d) for d in user.dashboards], "count": len(user.dashboards)}

    def _tool_listInstalledSkills(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        return {"skills": [dict(s) for s in self._skills], "count": len(self._skills)}

    def _tool_installSkill(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        source = self._text(args, "source")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+(/[\w.-]+)?", source):
            raise ToolError("source must be owner/repo or owner/repo/skill-name")
        self._next_id += 1
        skill = {"id": f"skill_{self._next_id}", "name": source.rsplit("/", 1)[-1], "source": source, "enabled": True}
        self._skills.append(skill)
        return {"installed": dict(skill)}

    def _skill(self, args: dict[str, Any]) -> dict[str, Any]:
        plugin_id = self._text(args, "pluginId")
        skill = next((s for s in self._skills if s["id"] == plugin_id), None)
        if skill is None:
            raise ToolError("installed skill was not found")
        return skill

    def _tool_uninstallSkill(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        skill = self._skill(args)
        self._skills.remove(skill)
        return {"removed": skill["id"]}

    def _tool_toggleInstalledSkill(self, user: User, args: dict[str, Any]) -> dict[str, Any]:
        skill = self._skill(args)
        if not isinstance(args.get("enabled"), bool):
            raise ToolError("enabled must be true or false")
        skill["enabled"] = args["enabled"]
        return {"skill": dict(skill)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the Compass bridge API contract on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    args = parser.parse_args()
    server = CompassContractServer()
    server.port = args.port
    key = server.create_key(server.add_user("Demo Admin", role="admin"), "admin")
    server.start()
    print(json.dumps({"url": server.url, "key": key}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

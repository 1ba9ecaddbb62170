"""The OpenAPI 3.1 document of the HTTP run API (`GET /openapi.json`): the contract http_api.py serves."""

from __future__ import annotations

from typing import Any

from mcp_bridge.tools.claude_config import KINDS

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "Invalid request", 401: "No or invalid bridge key", 403: "The key lacks the scope",
             404: "Not found (or not this key's run)", 409: "The run is busy or aborted",
             415: "The body is not application/json", 429: "Over a limit; see Retry-After",
             503: "The run service or the engine is unavailable"}
    out = {str(s): {**_json(_ERROR, words[s])} for s in statuses}
    if 429 in statuses:
        out["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
    return out


_COMMON = (400, 401, 403, 404, 429, 503)
_RUN_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_STREAM = {"description": "Server-sent events: each chunk as `data:` with `id:` = its sequence number; the run's "
           "state changes as `event: state`; the stream ends when the run rests.",
           "content": {"text/event-stream": {"schema": {"type": "string"}}}}
_PROJECT = {"name": "project", "in": "query", "required": False, "schema": {"type": "string"},
            "description": "A project directory inside the roots (its .claude/); omitted: ~/.claude"}
_KIND = {"name": "kind", "in": "path", "required": True, "schema": {"type": "string", "enum": list(KINDS)}}
_NAME = {"name": "name", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(\\.md)?$"},
         "description": "The entry's name (CLAUDE.md for claude_md)"}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def document(version: str, server_url: str) -> dict[str, Any]:
    started = _json({"type": "object", "properties": {"runId": {"type": "string"}, "state": {"type": "string"}},
                     "required": ["runId"]}, "Accepted; follow it with /v1/runs/{id}/events")
    return {
        "openapi": "3.1.0",
        "info": {"title": "compass-bridge run API", "version": version,
                 "description": "Start, follow, steer and approve agent runs on this machine (docs/DOORS.md)."},
        "servers": [{"url": server_url}],
        "security": [{"bridgeKey": []}],
        "paths": {
            "/health": {"get": {
                "operationId": "health", "security": [], "summary": "Liveness and the run service's load",
                "responses": {"200": _json({"$ref": "#/components/schemas/Health"}, "The service is up"),
                              "503": _json({"type": "object"}, "The run service is not running")}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"),
                                                    **_errors(401, 429)}}},
            "/v1/runs": {
                "post": {"operationId": "startRun", "summary": "Start a run (write scope)",
                         "requestBody": _body({"$ref": "#/components/schemas/StartRun"}),
                         "responses": {"200": _STREAM, "201": started, **_errors(*_COMMON, 415)}},
                "get": {"operationId": "listRuns", "summary": "This key's runs (all runs for an admin key)",
                        "responses": {"200": _json({"type": "object", "properties": {"runs": {
                            "type": "array", "items": {"$ref": "#/components/schemas/Run"}}}}, "Recent runs"),
                            **_errors(401, 403, 429, 503)}}},
            "/v1/runs/{id}": {
                "parameters": [_RUN_ID],
                "get": {"operationId": "getRun", "summary": "A snapshot: state, tail of text, tests, reviews",
                        "responses": {"200": _json({"$ref": "#/components/schemas/Run"}, "The run"),
                                      **_errors(*_COMMON)}},
                "delete": {"operationId": "abortRun", "summary": "Abort the run",
                           "responses": {"200": _json({"type": "object"}, "Aborted"), **_errors(*_COMMON)}}},
            "/v1/runs/{id}/events": {"get": {
                "operationId": "runEvents", "summary": "Reattach: the chunks after a sequence number, then live",
                "parameters": [_RUN_ID,
                               {"name": "after", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 0}},
                               {"name": "Last-Event-ID", "in": "header", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"200": _STREAM, **_errors(*_COMMON)}}},
            "/v1/runs/{id}/messages": {"post": {
                "operationId": "followUp", "summary": "A follow-up message in the run's session",
                "parameters": [_RUN_ID],
                "requestBody": _body({"type": "object", "required": ["message"], "properties": {
                    "message": {"type": "string"}, "stream": {"type": "boolean"}}}),
                "responses": {"200": _STREAM, "202": started, **_errors(*_COMMON, 409, 415)}}},
            "/v1/runs/{id}/approvals/{approvalId}": {"post": {
                "operationId": "answerReview", "summary": "Answer a pending review",
                "parameters": [_RUN_ID, {"name": "approvalId", "in": "path", "required": True,
                                         "schema": {"type": "string"}}],
                "requestBody": _body({"$ref": "#/components/schemas/Answer"}),
                "responses": {"200": _json({"type": "object"}, "Answered"), **_errors(*_COMMON, 415)}}},
            "/v1/config/{kind}": {"get": {
                "operationId": "listConfig", "summary": "Claude Code configuration entries (admin scope)",
                "parameters": [_KIND, _PROJECT],
                "responses": {"200": _json({"type": "object"}, "Entries"), **_errors(*_COMMON)}}},
            "/v1/config/{kind}/{name}": {
                "parameters": [_KIND, _NAME, _PROJECT],
                "get": {"operationId": "getConfig", "summary": "One entry's text",
                        "responses": {"200": _json({"type": "object"}, "The entry"), **_errors(*_COMMON)}},
                "put": {"operationId": "putConfig", "summary": "Create or replace an entry (atomic)",
                        "requestBody": _body({"type": "object", "required": ["content"],
                                              "properties": {"content": {"type": "string"}}}),
                        "responses": {"200": _json({"type": "object"}, "Written"), **_errors(*_COMMON, 415)}},
                "delete": {"operationId": "deleteConfig", "summary": "Delete an entry",
                           "responses": {"200": _json({"type": "object"}, "Deleted"), **_errors(*_COMMON)}}},
        },
        "components": {
            "securitySchemes": {"bridgeKey": {"type": "http", "scheme": "bearer",
                                              "description": "A bridge key (cb_…) from `compass-bridge keys create`"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Health": {"type": "object", "required": ["status", "version"], "properties": {
                    "status": {"type": "string"}, "version": {"type": "string"},
                    "concurrency": {"type": "object", "properties": {
                        "active": {"type": "integer"}, "max": {"type": "integer"}, "queued": {"type": "integer"}}}}},
                "StartRun": {"type": "object", "additionalProperties": False, "properties": {
                    "prompt": {"type": "string"},
                    "messages": {"type": "array", "items": {"type": "object", "properties": {
                        "role": {"type": "string"}, "content": {"type": "string"},
                        "parts": {"type": "array", "items": {"type": "object"}}}}},
                    "engine": {"type": "string", "enum": ["claude-code", "anthropic"]},
                    "cwd": {"type": "string", "description": "Inside the roots; default: the first root"},
                    "approvals": {"type": "object", "description": (
                        "The run's own approval envelope (the shape of [agent.approvals]: mode, defaults, rules, "
                        "shell_allowlist); it can only narrow the configured one")},
                    "stream": {"type": "boolean", "description": "SSE (default when Accept: text/event-stream)"}}},
                "Answer": {"type": "object", "required": ["decision"], "additionalProperties": False,
                           "properties": {"decision": {"type": "string", "enum": ["allow", "deny"]},
                                          "message": {"type": "string"}, "updated_input": {"type": "object"},
                                          "stop": {"type": "boolean"}}},
                "Run": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "state": {"type": "string", "enum": ["queued", "running", "requires_action", "done", "failed",
                                                         "aborted", "interrupted"]},
                    "engine": {"type": "string"}, "cwd": {"type": "string"}, "key": {"type": "string"},
                    "text": {"type": "string"}, "test_results": {"type": "array", "items": {"type": "object"}},
                    "pending_reviews": {"type": "array", "items": {"type": "object"}},
                    "last_seq": {"type": "integer"}}},
            },
        },
    }

"""The HTTP/SSE run API driven by a real HTTP client (httpx): runs started with SSE, reattached, reviewed,
followed up and aborted; keys, scopes, hosts, origins and limits refused; the OpenAPI document validated."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from mcp_bridge.keys import KeyStore
from mcp_bridge.scopes import parse_scopes
from tests.agent.harness import check_chunks
from tests.doors.harness import Doors, sse
from tests.support.claude_code import ClaudeCode, every_claude_code
from tests.support.messages_api import MessagesApi

CONFIG = """
[agent.http]
enabled = true
listen = "127.0.0.1:{http_port}"
hosts = ["host.docker.internal"]
origins = ["https://orchestrator.example"]
"""


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


@pytest.fixture
def doors(tmp_path: Path, api: MessagesApi) -> Iterator[Doors]:
    with Doors(tmp_path, api.url, CONFIG) as doors:
        yield doors


def stream(client: httpx.Client, method: str, url: str, **kwargs: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    with client.stream(method, url, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        return response, list(sse(response.iter_lines()))


def chunks_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if "event" not in e]


def test_start_with_sse_then_reattach_with_after(doors: Doors, tmp_path: Path) -> None:
    key = doors.key("orchestrator", "write")
    with doors.http(key) as client:
        response, events = stream(client, "POST", "/v1/runs", json={
            "prompt": "@@slow 4@@", "cwd": str(doors.project), "stream": True})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        run_id = response.headers["x-run-id"]
        chunks = chunks_of(events)
        check_chunks([chunks], tmp_path / "sse")
        ids = [e["id"] for e in events if "id" in e]
        assert ids == list(range(1, len(chunks) + 1))
        assert events[-1]["event"] == "state" and events[-1]["data"]["state"] == "done"

        # Reattach: only what came after the given sequence number, the same chunks, then the resting state.
        _, again = stream(client, "GET", f"/v1/runs/{run_id}/events", params={"after": 3})
        assert [e["id"] for e in again if "id" in e] == ids[3:]
        assert chunks_of(again) == chunks[3:]
        _, by_header = stream(client, "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": str(ids[-2])})
        assert chunks_of(by_header) == chunks[-1:]

        snapshot = client.get(f"/v1/runs/{run_id}").json()
        assert snapshot["state"] == "done" and snapshot["text"] == "tick 0 tick 1 tick 2 tick 3 "
        assert snapshot["key"] == "orchestrator" and snapshot["pending_reviews"] == []
        assert [r["id"] for r in client.get("/v1/runs").json()["runs"]] == [run_id]

        # A follow-up continues the session.
        response, events = stream(client, "POST", f"/v1/runs/{run_id}/messages",
                                  json={"message": "once more", "stream": True})
        assert response.status_code == 200
        follow_up = chunks_of(events)
        check_chunks([follow_up], tmp_path / "follow-up")
        assert "ECHO:3 messages" in "".join(c.get("delta", "") for c in follow_up)

    # Another key does not see the run.
    with doors.http(doors.key("someone-else", "write")) as other:
        assert other.get(f"/v1/runs/{run_id}").status_code == 404
        assert other.delete(f"/v1/runs/{run_id}").status_code == 404
        assert other.get("/v1/runs").json()["runs"] == []


def run_allowing_reviews(doors: Doors, key: str, body: dict[str, Any],
                         inspect: Callable[[httpx.Client, str, str], None] | None = None,
                         ) -> tuple[str, list[dict[str, Any]], list[httpx.Response]]:
    """A streamed run whose every review is allowed from a second connection while the stream waits."""
    answers = []
    with doors.http(key) as client, client.stream("POST", "/v1/runs", json=body,
                                                  headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200, response.read()
        run_id = response.headers["x-run-id"]
        events = []
        for event in sse(response.iter_lines()):
            events.append(event)
            data = event["data"]
            if data.get("type") == "data-permission" and data["data"]["state"] == "requested":
                if inspect is not None:
                    inspect(client, run_id, data["data"]["approvalId"])
                with doors.http(key) as other:
                    answers.append(other.post(f"/v1/runs/{run_id}/approvals/{data['data']['approvalId']}",
                                              json={"decision": "allow"}))
    return run_id, events, answers


def test_answer_a_review_over_http(doors: Doors, tmp_path: Path) -> None:
    key = doors.key("orchestrator", "write")

    def pending(client: httpx.Client, run_id: str, approval_id: str) -> None:
        snapshot = client.get(f"/v1/runs/{run_id}").json()
        assert snapshot["state"] == "requires_action"
        assert [r["id"] for r in snapshot["pending_reviews"]] == [approval_id]

    run_id, events, answered = run_allowing_reviews(doors, key, {
        "prompt": 'write @@tool write_file {"path": "out.txt", "content": "from http"}@@',
        "cwd": str(doors.project)}, pending)
    assert [a.status_code for a in answered] == [200], answered[0].text
    chunks = chunks_of(events)
    check_chunks([chunks], tmp_path / "review")
    assert [c["data"]["state"] for c in chunks if c["type"] == "data-permission"] == ["requested", "allowed"]
    assert (doors.project / "out.txt").read_text() == "from http"
    with doors.http(key) as client:
        late = client.post(f"/v1/runs/{run_id}/approvals/{answered[0].json()['approvalId']}",
                           json={"decision": "allow"})
        assert late.status_code == 404 and "no pending review" in late.json()["error"]["message"]


def test_abort(doors: Doors) -> None:
    key = doors.key("orchestrator", "write")
    with doors.http(key) as client:
        started = client.post("/v1/runs", json={"prompt": "@@slow 300@@", "cwd": str(doors.project)})
        assert started.status_code == 201, started.text
        run_id = started.json()["runId"]
        assert started.headers["location"] == f"/v1/runs/{run_id}"
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            lines = response.iter_lines()
            for event in sse(lines):
                if event["data"].get("type") == "text-delta":
                    assert client.delete(f"/v1/runs/{run_id}").status_code == 200
                    break
            rest = list(sse(lines))
        assert rest[-1]["data"]["state"] == "aborted"
        assert {"type": "abort"} in chunks_of(rest)
        assert client.get(f"/v1/runs/{run_id}").json()["state"] == "aborted"
        again = client.post(f"/v1/runs/{run_id}/messages", json={"message": "go on"})
        assert again.status_code == 409 and "aborted" in again.json()["error"]["message"]


def test_a_runs_own_envelope_narrows_and_runs_belong_to_a_key_id(doors: Doors) -> None:
    first = doors.key("orchestrator", "write")
    write = {"prompt": 'w @@tool write_file {"path": "out.txt", "content": "x"}@@', "cwd": str(doors.project),
             "stream": True, "approvals": {"mode": "read_only"}}
    with doors.http(first) as client:
        response, events = stream(client, "POST", "/v1/runs", json=write)
        assert response.status_code == 200, response.text
        run_id = response.headers["x-run-id"]
        [permission] = [c for c in chunks_of(events) if c.get("type") == "data-permission"]
        assert permission["data"]["state"] == "denied"  # never "requested": no one is asked
        assert "the run's own envelope" in permission["data"]["message"]
        assert not (doors.project / "out.txt").exists()
        assert client.get(f"/v1/runs/{run_id}").json()["key_id"]
    keys = KeyStore.open(doors.agent.paths)
    try:
        keys.revoke("orchestrator")
        keys.delete("orchestrator")
        second = keys.create("orchestrator", parse_scopes("write"))[1]  # the same name, another key
    finally:
        keys.close()
    with doors.http(second) as client:
        assert client.get(f"/v1/runs/{run_id}").status_code == 404
        assert client.get("/v1/runs").json()["runs"] == []


def test_refusals(doors: Doors) -> None:
    reader = doors.key("reader", "read")
    writer = doors.key("writer", "write")
    run = {"prompt": "hi", "cwd": str(doors.project)}
    with doors.http() as anonymous:
        health = anonymous.get("/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok" and set(health.json()["concurrency"]) == {"active", "max", "queued"}
        missing = anonymous.post("/v1/runs", json=run)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/openapi.json").status_code == 401
    with doors.http("cb_" + "0" * 40) as forged:
        assert forged.get("/v1/runs").status_code == 401
    with doors.http(reader) as client:
        assert client.get("/v1/runs").status_code == 200
        refused = client.post("/v1/runs", json=run)
        assert refused.status_code == 403 and "'write' scope" in refused.json()["error"]["message"]
        assert client.get("/v1/config/agents").status_code == 403
    with doors.http(writer) as client:
        text = client.post("/v1/runs", content=b'{"prompt": "hi"}', headers={"Content-Type": "text/plain"})
        assert text.status_code == 415
        rebound = client.get("/v1/runs", headers={"Host": "attacker.example"})
        assert rebound.status_code == 403 and "not a loopback name" in rebound.json()["error"]["message"]
        assert client.get("/v1/runs", headers={"Host": "host.docker.internal:1"}).status_code == 200
        page = client.post("/v1/runs", json=run, headers={"Origin": "https://evil.example"})
        assert page.status_code == 403 and "Origin" in page.json()["error"]["message"]
        assert client.get("/v1/runs", headers={"Origin": "https://orchestrator.example"}).status_code == 200
        assert client.post("/v1/runs", json={"prompt": "x", "approvals": {"mode": "yolo"}}).status_code == 400
        assert client.post("/v1/runs", json={"prompt": "x", "cwd": "/"}).status_code == 400
        big = client.post("/v1/runs", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                          headers={"Content-Type": "application/json"})
        assert big.status_code == 413
        assert client.get("/v1/nothing").status_code == 404
        assert client.put("/v1/runs", json={}).status_code == 405
        document = client.get("/openapi.json").json()
    validate(document)
    assert document["servers"] == [{"url": doors.base_url}]
    assert {"/v1/runs", "/v1/runs/{id}/events", "/v1/runs/{id}/approvals/{approvalId}", "/health",
            "/v1/config/{kind}/{name}"} <= set(document["paths"])


def test_rate_limits_answer_429_with_retry_after(tmp_path: Path, api: MessagesApi) -> None:
    with Doors(tmp_path, api.url, CONFIG.replace("[agent.http]", "[agent.http]\nrequests_per_minute = 3"),
               agent_config="runs_per_minute = 1") as doors:
        with doors.http(doors.key("busy", "write")) as client:
            first = client.post("/v1/runs", json={"prompt": "one", "cwd": str(doors.project)})
            assert first.status_code == 201
            second = client.post("/v1/runs", json={"prompt": "two", "cwd": str(doors.project)})
            assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1  # the service's limit
            assert client.get("/v1/runs").status_code == 200
            third = client.get("/v1/runs")
            assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1  # the door's limit
            assert "requests_per_minute" in third.json()["error"]["message"]
        with doors.http(doors.key("other", "read")) as other:
            assert other.get("/v1/runs").status_code == 200  # per key


def test_active_runs_per_key_answer_429(tmp_path: Path, api: MessagesApi) -> None:
    with Doors(tmp_path, api.url, CONFIG.replace("[agent.http]", "[agent.http]\nruns_per_key = 1")) as doors, \
            doors.http(doors.key("one-at-a-time", "write")) as client:
        run = {"prompt": "@@slow 300@@", "cwd": str(doors.project)}
        first = client.post("/v1/runs", json=run)
        assert first.status_code == 201
        second = client.post("/v1/runs", json=run)
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
        assert first.json()["runId"] in second.json()["error"]["message"]
        with doors.http(doors.key("another", "write")) as other:
            third = other.post("/v1/runs", json=run)  # another key's runs do not count
            assert third.status_code == 201
            assert other.delete(f"/v1/runs/{third.json()['runId']}").status_code == 200
        assert client.delete(f"/v1/runs/{first.json()['runId']}").status_code == 200


def test_a_stream_nobody_reads_gives_its_slot_back(tmp_path: Path, api: MessagesApi) -> None:
    with Doors(tmp_path, api.url, CONFIG.replace("[agent.http]", "[agent.http]\nstreams_per_key = 1")) as doors, \
            doors.http(doors.key("watcher", "write")) as client:
        # The run stalls after one delta (the scripted model holds its response open): no event would
        # ever tell the door that the stream's reader has gone.
        with client.stream("POST", "/v1/runs", json={"prompt": "@@stall@@", "cwd": str(doors.project),
                                                     "stream": True}) as response:
            run_id = response.headers["x-run-id"]
            events = sse(response.iter_lines())  # held: a dropped generator would close the response
            for event in events:
                if event["data"].get("type") == "text-delta":
                    break
            second = client.get(f"/v1/runs/{run_id}/events")
            assert second.status_code == 429 and "streams_per_key" in second.json()["error"]["message"]
        # Hung up: the slot comes back while the run still stalls.
        deadline = time.monotonic() + 30
        while (status := client.get(f"/v1/runs/{run_id}").json()["state"]) == "running":
            with client.stream("GET", f"/v1/runs/{run_id}/events") as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the stream's slot was never given back"
            time.sleep(0.1)
        assert status == "running"
        assert client.delete(f"/v1/runs/{run_id}").status_code == 200


def test_a_stream_cut_off_by_the_service_stopping_says_so(doors: Doors) -> None:
    with doors.http(doors.key("orchestrator", "write")) as client, client.stream("POST", "/v1/runs", json={
            "prompt": "@@slow 300@@", "cwd": str(doors.project), "stream": True}) as response:
        events = sse(response.iter_lines())
        for event in events:
            if event["data"].get("type") == "text-delta":
                break
        doors.lose_service()  # the doors, the service's child, live on
        rest = list(events)
    last = rest[-1]
    assert (last.get("event") == "state" and last["data"]["state"] == "interrupted") or (
        last.get("event") == "error" and "run service was lost" in last["data"]["message"]), rest[-3:]


@every_claude_code
def test_an_orchestrator_drives_claude_code_over_http(claude: ClaudeCode, tmp_path: Path, api: MessagesApi) -> None:
    """The ClawBridge use case: the host's own Claude Code, started, reviewed and followed over HTTP."""
    with Doors(tmp_path, api.url, CONFIG, env={"COMPASS_BRIDGE_CLAUDE": str(claude.binary)}) as doors:
        key = doors.key("orchestrator", "admin")  # Bash executes: a run may use it only for an admin key
        bash = '@@tool Bash {"command": "mkdir -p made && echo from-bash-42", "description": "t"}@@'
        run_id, events, answered = run_allowing_reviews(doors, key, {
            "prompt": bash, "engine": "claude-code", "cwd": str(doors.project)})
        assert [a.status_code for a in answered] == [200]
        chunks = chunks_of(events)
        check_chunks([chunks], tmp_path / "claude-code")
        assert events[-1]["data"]["state"] == "done"
        assert "from-bash-42" in "".join(c.get("delta", "") for c in chunks)
        assert (doors.project / "made").is_dir()
        with doors.http(key) as client:
            assert client.get(f"/v1/runs/{run_id}").json()["engine"] == "claude-code"

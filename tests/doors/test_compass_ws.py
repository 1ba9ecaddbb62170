"""Compass's bridge WebSocket, driven by an independent client that behaves like Compass's web client: it
connects with its page's Origin, waits for auth_ok, sends chat.send and follows the runId it is given."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.agent.harness import check_chunks
from tests.compass_server import CompassContractServer
from tests.doors.harness import Doors
from tests.support.claude_code import ClaudeCode, every_claude_code
from tests.support.messages_api import MessagesApi

pytestmark = pytest.mark.anyio

CONFIG = """
[agent.compass_ws]
enabled = true
port = {ws_port}
cwd = "{project}"
"""


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


@pytest.fixture
def doors(tmp_path: Path, api: MessagesApi, compass: CompassContractServer) -> Iterator[tuple[Doors, Any]]:
    user = compass.add_user("Ada Lovelace", role="admin")
    key = compass.create_key(user, "write")
    with Doors(tmp_path, api.url, CONFIG, env={"COMPASS_URL": compass.url, "COMPASS_API_KEY": key}) as doors:
        yield doors, user


def page_origin(compass: CompassContractServer) -> Origin:
    return Origin(compass.url)  # http://127.0.0.1:PORT: the origin of the stored Compass URL


async def receive(ws: ClientConnection, timeout: float = 60) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


def chat(text: str, conversation: str = "conv-1", earlier: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    messages = [*(earlier or []), {"id": "m-last", "role": "user", "parts": [{"type": "text", "text": text}]}]
    return {"type": "chat.send", "id": "req-1", "trigger": "submit-message", "messages": messages,
            "model": "claude-sonnet-4-5",
            "context": {"currentPage": "/dashboards/cash-flow", "timezone": "Europe/London",
                        "conversationId": conversation}}


async def follow(ws: ClientConnection, run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Chunks of `run_id` until chat.done or chat.error (which is returned)."""
    chunks = []
    while True:
        message = await receive(ws)
        if message.get("runId") != run_id:
            continue
        if message["type"] == "chunk":
            chunks.append(message["chunk"])
        elif message["type"] in ("chat.done", "chat.error"):
            return chunks, message


async def test_compass_client_gets_a_streamed_run_with_its_context(
        doors: tuple[Doors, Any], compass: CompassContractServer, api: MessagesApi, tmp_path: Path) -> None:
    door, user = doors
    async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=page_origin(compass)) as ws:
        hello = await receive(ws)
        assert hello == {"type": "auth_ok", "user": {"id": user.id, "name": "Ada Lovelace", "role": "admin"}}
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}

        earlier = [{"id": "m0", "role": "user", "parts": [{"type": "text", "text": "earlier question"}]},
                   {"id": "m1", "role": "assistant", "parts": [{"type": "text", "text": "earlier answer"}]}]
        await ws.send(json.dumps(chat("count for me @@slow 3@@", earlier=earlier)))
        ack = await receive(ws)
        assert ack["type"] == "chat.ack" and ack["id"] == "req-1" and ack["runId"].startswith("r_")
        chunks, end = await follow(ws, ack["runId"])
        assert end == {"type": "chat.done", "runId": ack["runId"]}
        check_chunks([chunks], tmp_path / "ws")
        assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == "tick 0 tick 1 tick 2 "

        # The model saw the Compass context (as the run's system prompt, as the original daemon gave it) and the
        # conversation so far (as earlier messages).
        system = api.requests[-1]["system"]
        assert "Prefers weekly summaries on Mondays" in system and "Cash flow" in system
        assert "Ada Lovelace" in system and "/dashboards/cash-flow" in system
        assert "earlier answer" in json.dumps(api.requests[-1]["messages"][:-1])

        # The same conversation continues the run's session: a follow-up, not a new run.
        await ws.send(json.dumps(chat("and again")))
        again = await receive(ws)
        assert again["type"] == "chat.ack" and again["runId"] == ack["runId"]
        chunks, end = await follow(ws, ack["runId"])
        assert end["type"] == "chat.done"
        check_chunks([chunks], tmp_path / "ws-followup")
        # The earlier two, the first request and its answer, the follow-up.
        assert "ECHO:5 messages" in "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


async def test_chat_abort_stops_the_run(doors: tuple[Doors, Any], compass: CompassContractServer,
                                        tmp_path: Path) -> None:
    door, _ = doors
    async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=page_origin(compass)) as ws:
        assert (await receive(ws))["type"] == "auth_ok"
        await ws.send(json.dumps(chat("@@slow 200@@", conversation="conv-abort")))
        ack = await receive(ws)
        chunks: list[dict[str, Any]] = []
        while True:
            message = await receive(ws)
            if message["type"] == "chunk":
                chunks.append(message["chunk"])
                if message["chunk"]["type"] == "text-delta":
                    break
        await ws.send(json.dumps({"type": "chat.abort", "runId": ack["runId"]}))
        rest, end = await follow(ws, ack["runId"])
        chunks += rest
        assert end == {"type": "chat.done", "runId": ack["runId"]}
        assert chunks[-1] == {"type": "abort"}
        assert sum(c["type"] == "text-delta" for c in chunks) < 200
        check_chunks([chunks], tmp_path / "abort")
    runs = door.agent.cli("runs", "list", "--json")
    assert '"aborted"' in runs.stdout, runs.stdout + runs.stderr

    # An abort for a run the door did not start is refused, and the connection keeps serving.
    async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=page_origin(compass)) as ws:
        assert (await receive(ws))["type"] == "auth_ok"
        await ws.send(json.dumps({"type": "chat.abort", "runId": "r_notmine"}))
        refused = await receive(ws)
        assert refused["type"] == "chat.error" and "no run started through this door" in refused["error"]
        await ws.send(json.dumps({"type": "chat.send", "id": "bad", "messages": [], "context": {}}))
        bad = await receive(ws)
        assert bad["type"] == "chat.error" and bad["id"] == "bad" and bad["runId"] is None
        assert "messages" in bad["error"]
        await ws.send("not json")
        assert (await receive(ws))["type"] == "error"
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}


@pytest.mark.parametrize("origin", [Origin("https://evil.example"), None, Origin("null")])
async def test_a_wrong_or_missing_origin_gets_no_auth_ok(doors: tuple[Doors, Any], origin: Origin | None) -> None:
    door, _ = doors
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=origin) as ws:
            await receive(ws, 5)
    assert refused.value.response.status_code == 403
    assert b"Origin" in refused.value.response.body


def upgrade(port: int, host: str, origin: str) -> bytes:
    """A WebSocket handshake by hand (so the Host header can be a rebound DNS name), read until the first
    frame has arrived or the server closed."""
    request = (f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        received = b""
        while b"auth_" not in received and (chunk := s.recv(4096)):
            received += chunk
    return received


def test_a_non_loopback_host_gets_no_auth_ok(doors: tuple[Doors, Any], compass: CompassContractServer) -> None:
    door, _ = doors
    refused = upgrade(door.ws_port, f"attacker.example:{door.ws_port}", page_origin(compass))
    assert refused.startswith(b"HTTP/1.1 403"), refused[:200]
    assert b"auth_ok" not in refused and b"not a loopback name" in refused
    accepted = upgrade(door.ws_port, f"localhost:{door.ws_port}", page_origin(compass))
    assert accepted.startswith(b"HTTP/1.1 101") and b"auth_ok" in accepted



async def test_auth_is_checked_against_compass(doors: tuple[Doors, Any], compass: CompassContractServer) -> None:
    door, _ = doors
    grace = compass.add_user("Grace Hopper")
    origin = page_origin(compass)
    async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=origin) as ws:
        assert (await receive(ws))["type"] == "auth_ok"
        await ws.send(json.dumps({"type": "auth", "compassUrl": compass.url,
                                  "apiKey": compass.create_key(grace, "read")}))
        assert await receive(ws) == {"type": "auth_ok", "user": {"id": grace.id, "name": "Grace Hopper",
                                                                 "role": "member"}}
    for url, key in ((compass.url, "ck_" + "0" * 40), ("https://elsewhere.example", compass.create_key(grace)),
                     (compass.url, "not a key")):
        async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=origin) as ws:
            assert (await receive(ws))["type"] == "auth_ok"
            await ws.send(json.dumps({"type": "auth", "compassUrl": url, "apiKey": key}))
            refused = await receive(ws)
            assert refused["type"] == "auth_error" and refused["message"], url
            assert "ck_0000" not in refused["message"]
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == 1008


async def test_a_rejected_compass_key_gets_auth_error(tmp_path: Path, api: MessagesApi,
                                                      compass: CompassContractServer) -> None:
    key = compass.create_key(compass.add_user("Ada"), "write")
    compass.revoke(key)
    with Doors(tmp_path, api.url, CONFIG, env={"COMPASS_URL": compass.url, "COMPASS_API_KEY": key}) as door:
        async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=page_origin(compass)) as ws:
            refused = await receive(ws)
            assert refused["type"] == "auth_error" and "rejected" in refused["message"]
            await asyncio.wait_for(ws.wait_closed(), 10)


async def test_connections_are_bounded(tmp_path: Path, api: MessagesApi, compass: CompassContractServer) -> None:
    key = compass.create_key(compass.add_user("Ada"), "write")
    with Doors(tmp_path, api.url, CONFIG + "max_connections = 1\n",
                 env={"COMPASS_URL": compass.url, "COMPASS_API_KEY": key}) as door:
        async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=page_origin(compass)) as ws:
            assert (await receive(ws))["type"] == "auth_ok"
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=page_origin(compass)):
                    pass
            assert refused.value.response.status_code == 503
            await ws.send(json.dumps({"type": "ping"}))
            assert await receive(ws) == {"type": "pong"}
        for _ in range(100):  # the slot comes back once the server has finished with the closed connection
            try:
                async with connect(f"ws://127.0.0.1:{door.ws_port}",
                                   origin=page_origin(compass)) as ws:
                    assert (await receive(ws))["type"] == "auth_ok"
                    break
            except InvalidStatus:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the connection's slot never came back")


async def test_a_run_cut_off_by_the_service_stopping_ends_in_chat_error(
        doors: tuple[Doors, Any], compass: CompassContractServer) -> None:
    door, _ = doors
    async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=page_origin(compass)) as ws:
        assert (await receive(ws))["type"] == "auth_ok"
        await ws.send(json.dumps(chat("@@slow 300@@", conversation="conv-cut")))
        ack = await receive(ws)
        while (await receive(ws)).get("chunk", {}).get("type") != "text-delta":
            pass
        door.lose_service()  # the doors, the service's child, live on
        _, end = await follow(ws, ack["runId"])
        assert end["type"] == "chat.error" and end["error"], end
        await ws.send(json.dumps({"type": "ping"}))
        assert await receive(ws) == {"type": "pong"}  # the page's connection keeps serving


@every_claude_code
async def test_the_claude_code_engine_on_request(claude: ClaudeCode, tmp_path: Path, api: MessagesApi,
                                                 compass: CompassContractServer) -> None:
    key = compass.create_key(compass.add_user("Ada"), "write")
    config = CONFIG + 'engine = "claude-code"\n'
    env = {"COMPASS_URL": compass.url, "COMPASS_API_KEY": key, "COMPASS_BRIDGE_CLAUDE": str(claude.binary)}
    with Doors(tmp_path, api.url, config, env=env) as door:
        async with connect(f"ws://127.0.0.1:{door.ws_port}", origin=page_origin(compass)) as ws:
            assert (await receive(ws))["type"] == "auth_ok"
            await ws.send(json.dumps(chat("hello from Compass")))
            ack = await receive(ws)
            chunks, end = await follow(ws, ack["runId"])
            assert end == {"type": "chat.done", "runId": ack["runId"]}
            check_chunks([chunks], tmp_path / "claude-code")
            assert "ECHO:" in "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
        shown = door.agent.cli("runs", "show", ack["runId"], "--json")
        assert '"engine": "claude-code"' in shown.stdout or '"engine":"claude-code"' in shown.stdout, shown.stdout

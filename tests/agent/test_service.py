"""The run service's own rules, on a real service process (the anthropic engine: no CLI needed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_bridge.agent.client import AgentError
from mcp_bridge.agent.server import socket_file
from tests.agent.harness import Harness
from tests.support.messages_api import MessagesApi
from tests.support.processes import alive, wait_gone

if sys.platform == "win32":
    pytest.skip("the run service is POSIX only (Unix sockets)", allow_module_level=True)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


def test_an_unreadable_envelope_refuses_to_start(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path, api.url, '[agent.approvals]\nmode = "allow_everything"\n')
    done = subprocess.run([sys.executable, "-m", "mcp_bridge", "agent"], env=harness.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to start" in done.stderr and "`mode` must be envelope, review_all or read_only" in done.stderr
    assert not socket_file(harness.paths.run_dir).exists()
    assert doctor(harness)["agent runs"]["status"] == "fail"
    assert "`mode` must be envelope" in doctor(harness)["agent runs"]["detail"]


def doctor(harness: Harness) -> dict[str, dict[str, str]]:
    done = harness.cli("doctor", "--json")
    report = json.loads(done.stdout)
    return {c["area"]: c for c in report["checks"]}


async def test_socket_limits_identity_and_working_directory(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path, api.url, '[agent]\nengine = "anthropic"\nruns_per_minute = 2\n')
    harness.start()
    try:
        path = socket_file(harness.paths.run_dir)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        checks = doctor(harness)
        assert checks["run service"]["status"] == "ok" and checks["engine anthropic"]["status"] == "ok"
        assert "no approval envelope" in checks["agent runs"]["detail"]
        # A second service of the same user does not start beside the first.
        again = subprocess.run([sys.executable, "-m", "mcp_bridge", "agent"], env=harness.env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "already running" in again.stderr

        client = await harness.client()
        try:
            with pytest.raises(AgentError) as outside:
                await client.request("start", prompt="hi", cwd=str(tmp_path), can_review=False)
            assert outside.value.code == "bad_request" and "outside the allowed roots" in str(outside.value)
            with pytest.raises(AgentError) as bad_key:
                await client.request("start", prompt="hi", cwd=str(harness.project), key="cb_" + "0" * 40)
            assert bad_key.value.code == "unauthorized"

            first = await harness.start_run(client, "one")
            assert (await harness.turn(client, first)).state == "done"
            await harness.start_run(client, "two")
            with pytest.raises(AgentError) as limited:
                await harness.start_run(client, "three")
            assert limited.value.code == "rate_limited" and limited.value.extra["retry_after"] > 0
            with pytest.raises(AgentError) as unknown:
                await client.request("answer", approval_id="ap_nothing", decision="allow")
            assert unknown.value.code == "not_found" and "approvals list" in str(unknown.value)
            assert (await client.request("hello"))["protocol"] == 1  # still serving after the refusals
        finally:
            await client.close()
    finally:
        assert harness.stop() == 0
    assert not socket_file(harness.paths.run_dir).exists()
    harness.check_streams()


async def test_the_anthropic_key_stored_like_the_compass_key(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path, api.url, '[agent]\nengine = "anthropic"\n')
    del harness.env["ANTHROPIC_API_KEY"]
    refused = harness.cli("agent", "--store-anthropic-key", stdin="not-a-key\n")
    assert refused.returncode == 2 and "not-a-key" not in refused.stderr + refused.stdout
    secret = "sk-ant-test-" + "7" * 20
    stored = harness.cli("agent", "--store-anthropic-key", stdin=secret + "\n")
    assert stored.returncode == 0, stored.stderr
    key_file = harness.paths.config_dir / "anthropic-api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and secret not in stored.stdout
    harness.start()
    try:
        client = await harness.client()
        try:
            run_id = await harness.start_run(client, "hello")
            assert (await harness.turn(client, run_id)).state == "done"
        finally:
            await client.close()
    finally:
        harness.stop()
    harness.check_streams()
    assert api.api_keys[-1] == secret
    for path in [*harness.paths.log_dir.rglob("*"), *harness.paths.data_dir.rglob("*"), tmp_path / "service.out"]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"the key leaked into {path}"
    assert harness.cli("agent", "--forget-anthropic-key").returncode == 0 and not key_file.exists()


async def test_a_resting_run_gives_its_slot_to_a_queued_one(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path, api.url, '[agent]\nengine = "anthropic"\nmax_concurrent = 1\nmax_queued = 1\n')
    harness.start()
    try:
        client = await harness.client()
        try:
            first = await harness.start_run(client, "one")
            assert (await harness.turn(client, first)).state == "done"  # resting: its session holds the slot
            second = await harness.start_run(client, "two")
            assert (await harness.turn(client, second)).state == "done"  # the resting one was closed for it
            await client.request("send", run_id=first, prompt="one again", can_review=False)
            again = await harness.turn(client, first)
            assert again.state == "done" and again.text().startswith("ECHO:")
            status = await client.request("hello")
            assert status["concurrency"]["max"] == 1 and status["concurrency"]["queued"] == 0
        finally:
            await client.close()
    finally:
        harness.stop()
    harness.check_streams()


async def test_an_idle_session_is_closed_and_a_follow_up_reopens_it(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path, api.url, '[agent]\nengine = "anthropic"\nidle_ttl_s = 0.5\n')
    harness.start()
    try:
        client = await harness.client()
        try:
            run_id = await harness.start_run(client, "one")
            assert (await harness.turn(client, run_id)).state == "done"
            for _ in range(100):  # the limit only turns a session that never closes into a failure
                keys = json.loads(harness.cli("keys", "list", "--json").stdout)
                if all(k["revoked"] for k in keys if k["name"].startswith(f"agent-run-{run_id}")):
                    break
                await asyncio.sleep(0.1)
            assert keys and all(k["revoked"] for k in keys if k["name"].startswith(f"agent-run-{run_id}"))
            assert (await client.request("hello"))["concurrency"]["active"] == 0
            await client.request("send", run_id=run_id, prompt="two", can_review=False)
            assert (await harness.turn(client, run_id)).state == "done"
        finally:
            await client.close()
    finally:
        harness.stop()
    harness.check_streams()


async def test_a_queued_run_that_waits_too_long_is_busy(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path, api.url,
                      '[agent]\nengine = "anthropic"\nmax_concurrent = 1\nmax_queued = 1\nqueue_timeout_s = 1\n')
    harness.start()
    try:
        client = await harness.client()
        try:
            slow = await harness.start_run(client, "count @@slow 100@@")
            queued = await client.request("start", prompt="me next", cwd=str(harness.project), can_review=False)
            assert queued["state"] == "queued"
            turn = await harness.turn(client, queued["run_id"])
            assert turn.state == "failed" and "no run slot became free within 1 s" in (turn.error or "")
            assert turn.of("error")[0]["errorText"].startswith("busy:")
            await client.request("abort", run_id=slow)
        finally:
            await client.close()
    finally:
        harness.stop()
    harness.check_streams()


async def test_the_service_stops_by_itself_when_idle(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path, api.url, '[agent]\nengine = "anthropic"\nexit_idle_s = 1\nidle_ttl_s = 0.2\n')
    harness.start()
    assert harness.service is not None
    client = await harness.client()
    try:
        run_id = await harness.start_run(client, "one")
        assert (await harness.turn(client, run_id)).state == "done"
        await asyncio.sleep(1.5)
        assert harness.service.poll() is None, "it stopped while a client was still connected"
    finally:
        await client.close()
    assert harness.service.wait(timeout=30) == 0  # the limit only turns a service that never stops into a failure
    assert not socket_file(harness.paths.run_dir).exists()
    harness.service = None
    harness.check_streams()


async def test_an_unreachable_api_fails_the_turn_and_the_service_keeps_serving(tmp_path: Path) -> None:
    harness = Harness(tmp_path, "http://127.0.0.1:9", '[agent]\nengine = "anthropic"\n')  # nothing listens there
    harness.start()
    try:
        client = await harness.client()
        try:
            run_id = await harness.start_run(client, "hello")
            turn = await harness.turn(client, run_id)
            assert turn.state == "failed" and "the Messages API at http://127.0.0.1:9 failed" in (turn.error or "")
            assert "ANTHROPIC_BASE_URL" in (turn.error or "")
            assert (await client.request("hello"))["protocol"] == 1
        finally:
            await client.close()
    finally:
        harness.stop()
    harness.check_streams()


async def test_the_first_front_end_starts_the_service_detached(tmp_path: Path, api: MessagesApi) -> None:
    harness = Harness(tmp_path, api.url, '[agent]\nengine = "anthropic"\n')
    done = harness.cli("run", "--json", "hello")  # no service yet: `run` starts one
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["type"] == "finish"
    pid = int((harness.paths.run_dir / "agent" / "agent.lock").read_text())
    try:
        assert alive(pid) and os.getsid(pid) == pid  # its own session: it outlives the terminal that started it
        assert harness.cli("runs", "list", "--json").returncode == 0
    finally:
        os.kill(pid, signal.SIGTERM)
        assert await wait_gone(pid, within=30)

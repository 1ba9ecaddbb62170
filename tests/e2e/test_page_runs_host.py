"""Agent runs through the native host (docs/PROTOCOL.md, "Agent runs"), below the browser: a real host with a
scripted extension on its stdio, the real browser link it starts, the real run service (the anthropic engine
against the scripted Messages API)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from native_host.framing import TO_BROWSER_MAX
from tests.agent.harness import Harness, check_chunks
from tests.support.messages_api import MessagesApi
from tests.support.native_host_harness import Browser, RawClient, address_of, until
from tests.support.processes import alive

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cb-runs-"))  # socket paths must stay short
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def service(root: Path, api: MessagesApi) -> AsyncIterator[Harness]:
    harness = Harness(root, api.url, '[agent]\nengine = "anthropic"\nreview_timeout_s = 30\n')
    harness.start()
    yield harness
    harness.stop()
    harness.stop_detached()  # one the host's link started after a test stopped the first


class Extension(Browser):
    """The scripted browser, plus what it received of the run protocol, with run_part frames joined."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        super().__init__(home)
        self.extra_env = env
        self.parts: dict[int, list[str]] = {}

    async def start(self) -> Extension:
        saved = dict(os.environ)
        os.environ.update(self.extra_env)
        try:
            await super().start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return self

    def runs(self, kind: str | None = None, **match: Any) -> list[dict[str, Any]]:
        found = []
        for message in self.other:
            if message.get("type") == "run_part":
                continue
            if kind is not None and message.get("type") != kind:
                continue
            if all(message.get(k) == v for k, v in match.items()):
                found.append(message)
        return found

    async def wait_for(self, kind: str, what: str = "", **match: Any) -> dict[str, Any]:
        await until(lambda: bool(self.runs(kind, **match)), what or f"a {kind} {match}")
        return self.runs(kind, **match)[-1]


def link_pids(extension: Extension) -> list[int]:
    return [c["pid"] for update in extension.clients_updates[-1:] for c in update
            if "browser link" in str(c.get("name"))]


async def chunks_until_done(extension: Extension, run_id: str) -> list[dict[str, Any]]:
    await extension.wait_for("run_done", f"run {run_id} to finish", run_id=run_id)
    chunks = extension.runs("run_chunk", run_id=run_id)
    seqs = [c["seq"] for c in chunks]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    return [c["chunk"] for c in chunks]


async def test_a_run_starts_the_link_streams_and_resumes(service: Harness, root: Path) -> None:
    extension = await Extension(service.bridge_home, service.env).start()
    try:
        await extension.send({"type": "run_start", "rid": "a", "prompt": "hello", "cwd": str(service.project)})
        status = await extension.wait_for("run_service", "the host to start the run service link")
        assert status["connected"] is True
        ack = await extension.wait_for("run_ack", rid="a")
        run_id = ack["run_id"]
        chunks = await chunks_until_done(extension, run_id)
        check_chunks([chunks], root / "run")
        assert any("ECHO:" in c.get("delta", "") for c in chunks)

        # Resume from a sequence number: only what came after it is replayed.
        first = extension.runs("run_chunk", run_id=run_id)
        after = first[2]["seq"]
        extension.other.clear()
        await extension.send({"type": "run_resume", "rid": "b", "run_id": run_id, "after": after})
        await extension.wait_for("run_ack", rid="b")
        await until(lambda: len(extension.runs("run_chunk")) == len(first) - 3, "the replay")
        assert [c["seq"] for c in extension.runs("run_chunk")] == [c["seq"] for c in first[3:]]

        # The browser goes away: the link leaves with its host, the run service and its runs stay.
        links = link_pids(extension)
        assert links, extension.clients_updates
    finally:
        await extension.stop()
    await until(lambda: not any(alive(pid) for pid in links), "the link to exit with its host")
    client = await service.client()
    try:
        shown = await client.request("show", run_id=run_id)
        assert shown["run"]["state"] == "done"
    finally:
        await client.close()


async def test_a_review_is_listed_and_answered_from_the_browser(service: Harness, root: Path) -> None:
    extension = await Extension(service.bridge_home, service.env).start()
    try:
        prompt = 'write @@tool write_file {"path": "out.txt", "content": "from the panel"}@@'
        await extension.send({"type": "run_start", "rid": 1, "prompt": prompt, "cwd": str(service.project)})
        run_id = (await extension.wait_for("run_ack", rid=1))["run_id"]

        def pending() -> list[dict[str, Any]]:
            lists = extension.runs("run_approvals")
            return lists[-1]["approvals"] if lists else []

        await until(lambda: bool(pending()), "the review to be listed")
        [review] = pending()
        assert review["run_id"] == run_id and review["tool"].endswith("write_file")
        await extension.send({"type": "run_answer", "rid": 2, "approval_id": review["id"], "decision": "allow"})
        await extension.wait_for("run_answered", rid=2)
        chunks = await chunks_until_done(extension, run_id)
        check_chunks([chunks], root / "review")
        states = [c["data"]["state"] for c in chunks if c["type"] == "data-permission"]
        assert states == ["requested", "allowed"], states
        assert (service.project / "out.txt").read_text() == "from the panel"
        await until(lambda: pending() == [], "the answered review to leave the list")

        # An answer to a review that is no longer pending says so, and the link keeps serving.
        await extension.send({"type": "run_answer", "rid": 3, "approval_id": review["id"], "decision": "deny"})
        error = await extension.wait_for("run_error", rid=3)
        assert error["code"] == "not_found" and "approvals list" in error["message"]
    finally:
        await extension.stop()


async def test_only_the_link_sends_runs_and_big_messages_are_split(root: Path) -> None:
    home = root / "bridge"
    home.mkdir(mode=0o700)
    extension = await Extension(home, {"COMPASS_BRIDGE_RUN_LINK": str(root / "no-such-link")}).start()
    try:
        address = await address_of(extension)
        plain = await RawClient.connect(address.path)
        await plain.send({"type": "run_chunk", "run_id": "r_x", "seq": 1, "chunk": {"type": "start"}})
        refusal = await plain.receive()
        assert refusal["type"] == "error" and "serves agent runs" in refusal["message"]
        assert not extension.runs("run_chunk")

        link = await RawClient.connect(address.path, hello=False)
        await link.send({"type": "hello", "client": {"name": "test link", "runs": True}})
        assert (await link.receive())["type"] == "welcome"
        await extension.wait_for("run_service", connected=True)
        rival = await RawClient.connect(address.path, hello=False)
        await rival.send({"type": "hello", "client": {"name": "rival", "runs": True}})
        assert (await rival.receive())["type"] == "welcome"
        conflict = await rival.receive()
        assert conflict["code"] == "conflict"

        # Browser → link, verbatim.
        await extension.send({"type": "run_abort", "run_id": "r_1"})
        assert await link.receive() == {"type": "run_abort", "run_id": "r_1"}

        # Link → browser: a 1.5 MiB chunk arrives in parts under the browser's limit, joined it is the same.
        text = "é" * (TO_BROWSER_MAX // 2) + "x" * (TO_BROWSER_MAX // 2)
        big = {"type": "run_chunk", "run_id": "r_1", "seq": 7,
               "chunk": {"type": "tool-output-available", "toolCallId": "t", "output": text}}
        await link.send(big)
        parts: list[dict[str, Any]] = []
        await until(lambda: _joined(extension, parts), "every part of the big chunk")
        assert all(len(json.dumps(p, separators=(",", ":"))) < TO_BROWSER_MAX for p in parts)
        assert json.loads("".join(p["data"] for p in parts)) == big

        # The link leaves: the browser is told; the next run message starts a link, which here cannot start.
        await link.close()
        await extension.wait_for("run_service", connected=False)
        await extension.send({"type": "run_start", "rid": 9, "prompt": "x"})
        error = await extension.wait_for("run_error", rid=9)
        assert "cannot start the run service link" in error["message"] and "doctor" in error["message"]
        await plain.close()
        await rival.close()
    finally:
        await extension.stop()


def _joined(extension: Extension, into: list[dict[str, Any]]) -> bool:
    parts = [m for m in extension.other if m.get("type") == "run_part"]
    if not parts or len(parts) < parts[0]["count"]:
        return False
    into[:] = sorted(parts, key=lambda p: p["index"])
    return True



async def test_a_browser_restart_does_not_end_a_run_waiting_for_review(service: Harness, root: Path) -> None:
    prompt = 'write @@tool write_file {"path": "later.txt", "content": "after the restart"}@@'
    first = await Extension(service.bridge_home, service.env).start()
    try:
        await first.send({"type": "run_start", "rid": 1, "prompt": prompt, "cwd": str(service.project)})
        run_id = (await first.wait_for("run_ack", rid=1))["run_id"]
        await until(lambda: any(m["approvals"] for m in first.runs("run_approvals")), "the review")
        links = link_pids(first)
    finally:
        await first.stop()  # the browser quits: its host and the host's link exit
    await until(lambda: not any(alive(pid) for pid in links), "the link to exit with its host")

    # The browser comes back: a new host starts a new link, the run is still waiting, and it finishes.
    second = await Extension(service.bridge_home, service.env).start()
    try:
        await second.send({"type": "run_resume", "rid": 2, "run_id": run_id, "after": 0})
        await second.wait_for("run_ack", rid=2)
        pending = await second.wait_for("run_approvals")
        [review] = [a for a in pending["approvals"] if a["run_id"] == run_id]
        await second.send({"type": "run_answer", "rid": 3, "approval_id": review["id"], "decision": "allow"})
        chunks = await chunks_until_done(second, run_id)
        check_chunks([chunks], root / "restart")
        assert (service.project / "later.txt").read_text() == "after the restart"
    finally:
        await second.stop()

"""A run service of its own per test: a private COMPASS_BRIDGE_HOME and HOME, a config, the service as a real
process (started and stopped by PID), a client, and the chunk checker (the AI SDK's own, ai@5)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_bridge.agent.client import AgentClient
from mcp_bridge.agent.server import socket_file
from mcp_bridge.paths import StatePaths
from tests.conftest import REPO, require
from tests.support import leftovers
from tests.support.claude_code import claude_env

AI_SDK_DIR = REPO / ".cache" / "ai-sdk" / "node_modules"
CHECKER = REPO / "tests" / "support" / "check_chunks.mjs"
TERMINAL = ("done", "failed", "aborted", "interrupted")


@dataclass
class Turn:
    """What one turn of a run streamed: chunks (in order, with sequence numbers) and the state it ended in."""

    chunks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    state: str = ""
    error: str | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [c for _, c in self.chunks if c["type"] == kind]

    def text(self) -> str:
        return "".join(c["delta"] for c in self.of("text-delta"))


class Harness:
    def __init__(self, root: Path, model_url: str, config: str = "", claude: Path | None = None) -> None:
        self.root = root
        self.bridge_home = root / "bridge"
        self.home = root / "home"
        self.project = self.home / "project"
        self.project.mkdir(parents=True)
        for d in (self.bridge_home, self.bridge_home / "config"):
            d.mkdir(mode=0o700)
        self.write_config(config)
        self.env = claude_env(self.home, model_url, COMPASS_BRIDGE_HOME=str(self.bridge_home))
        if claude is not None:
            self.env["COMPASS_BRIDGE_CLAUDE"] = str(claude)
        leftovers.register(root)  # the session guard looks for processes of this home (tests/conftest.py)
        self.paths = StatePaths(self.bridge_home / "config", self.bridge_home / "data", self.bridge_home / "logs",
                                self.bridge_home / "run")
        self.service: subprocess.Popen[bytes] | None = None
        self.streams: list[list[dict[str, Any]]] = []
        """Every turn's chunks, for `check_streams()` at the end of the test."""

    def write_config(self, config: str, *, admin_default: bool = True) -> None:
        """config.toml: `config`, with the project as the root unless it names roots (runs work only inside roots
        the user named) and, with `admin_default`, an admin key-less default unless it names one (the scripted
        runs use Bash, which a run may use only for an admin driver, as run_command)."""
        if not re.search(r"^roots\s*=", config, re.MULTILINE):
            config = f"roots = [{json.dumps(str(self.project))}]\n{config}"
        if admin_default and not re.search(r"^default_scopes\s*=", config, re.MULTILINE):
            config = f'default_scopes = "admin"\n{config}'
        (self.bridge_home / "config" / "config.toml").write_text(config)

    # -- the service process -------------------------------------------------------------------

    def start(self) -> None:
        log = open(self.root / "service.out", "ab")  # noqa: SIM115 - the child holds it
        self.service = subprocess.Popen([sys.executable, "-m", "mcp_bridge", "agent"], env=self.env,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.home)
        log.close()
        deadline = time.monotonic() + 20
        while not socket_file(self.paths.run_dir).exists():
            assert self.service.poll() is None, f"the service exited: {self.output()}"
            assert time.monotonic() < deadline, f"the service did not listen: {self.output()}"
            time.sleep(0.05)

    def stop(self) -> int:
        assert self.service is not None
        self.service.send_signal(signal.SIGTERM)
        code = self.service.wait(timeout=30)
        self.service = None
        return code

    def stop_detached(self) -> None:
        """Stop a run service this test caused but did not start itself (started on demand, detached, by the
        terminal front end, a door or the browser link), by the PID in its lock file."""
        leftovers.stop_run_service(self.bridge_home, self.paths.run_dir)

    def usage(self, until: Callable[[list[dict[str, Any]]], bool], within: float = 10) -> list[dict[str, Any]]:
        """The usage log's rows once `until(rows)` holds: the service writes them off the call's path, a
        moment after the call. (The limit only turns a missing row into a failure.)"""
        deadline = time.monotonic() + within
        while True:
            conn = sqlite3.connect(self.paths.database)
            try:
                rows = conn.execute("SELECT key_name, tool, outcome, error, client FROM usage ORDER BY id").fetchall()
            finally:
                conn.close()
            found = [dict(zip(("key", "tool", "outcome", "error", "client"), r, strict=True)) for r in rows]
            if until(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def check_streams(self) -> None:
        """Every turn this test streamed passes the AI SDK's checks (each turn is one UI message)."""
        if self.streams:
            check_chunks(self.streams, self.root / "chunks")

    def output(self) -> str:
        path = self.root / "service.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mcp_bridge", *args], env=self.env, cwd=self.project,
                              capture_output=True, text=True, timeout=120, input=stdin)

    async def client(self) -> AgentClient:
        return await AgentClient.connect(self.paths, start=False)

    # -- driving runs ----------------------------------------------------------------------------

    async def turn(self, client: AgentClient, run_id: str,
                   on_chunk: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                   timeout: float = 90) -> Turn:
        """Chunks until the run rests (a terminal state after it was active)."""
        turn = Turn()
        active = False

        async def consume() -> None:
            nonlocal active
            async for event in client.events():
                if event.get("run_id") != run_id:
                    continue
                if event["event"] == "chunk":
                    turn.chunks.append((event["seq"], event["chunk"]))
                    if on_chunk is not None:
                        await on_chunk(event["chunk"])
                elif event["event"] == "state":
                    active = active or event["state"] not in TERMINAL
                    if active and event["state"] in TERMINAL:
                        turn.state, turn.error = event["state"], event.get("error")
                        return

        await asyncio.wait_for(consume(), timeout)
        self.streams.append([c for _, c in turn.chunks])  # a whole turn: one UI message
        return turn

    async def stop_mid_stream(self, client: AgentClient, prompt: str, op: str) -> tuple[str, Turn]:
        """Start a slowly streaming run and send `op` (interrupt, abort) for it after its third text delta."""
        deltas = 0
        run_id = ""

        async def after_three(chunk: dict[str, Any]) -> None:
            nonlocal deltas
            if chunk["type"] == "text-delta":
                deltas += 1
                if deltas == 3:
                    await client.request(op, run_id=run_id)

        run_id = await self.start_run(client, prompt)
        return run_id, await self.turn(client, run_id, after_three)

    async def start_run(self, client: AgentClient, prompt: str, **params: Any) -> str:
        reply = await client.request("start", prompt=prompt, cwd=str(self.project), can_review=True, **params)
        return str(reply["run_id"])


def check_chunks(streams: list[list[dict[str, Any]]], where: Path) -> list[dict[str, Any]]:
    """The AI SDK's own verdict on each chunk stream (one message each), in one run of
    tests/support/check_chunks.mjs with ai@5; fails the test on the first stream it rejects."""
    require((AI_SDK_DIR / "ai").is_dir(), "ai@5 in .cache/ai-sdk", "run scripts/test (it installs it)")
    assert streams, "no chunk stream to check"
    where.mkdir(parents=True, exist_ok=True)
    files = []
    for index, chunks in enumerate(streams):
        files.append(where / f"stream-{index}.jsonl")
        files[-1].write_text("".join(json.dumps(c) + "\n" for c in chunks))
    done = subprocess.run(["node", str(CHECKER), *map(str, files)], env={**os.environ, "AI_SDK_DIR": str(AI_SDK_DIR)},
                          capture_output=True, text=True, timeout=120)
    parsed = json.loads(done.stdout)
    results: list[dict[str, Any]] = parsed if isinstance(parsed, list) else [parsed]
    for result in results:
        assert result["ok"], f"check_chunks rejected {result['file']}: {json.dumps(result['errors'])}"
        assert result["ai"].startswith("5."), f"the checker must run ai@5 (what Compass speaks), found {result['ai']}"
    assert done.returncode == 0, done.stderr
    return results


def argv_of_all_processes() -> list[str]:
    """Every process's command line (as far as /proc shows it), to prove a prompt never reached one."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return found

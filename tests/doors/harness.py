"""The doors as real processes: a run service of their own (tests/agent/harness.py, the anthropic engine
against the scripted Messages API), which starts `compass-bridge doors` as its child; stopped by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from mcp_bridge.keys import KeyStore
from mcp_bridge.scopes import parse_scopes
from tests.agent.harness import Harness
from tests.support import leftovers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Doors:
    def __init__(self, root: Path, model_url: str, doors_config: str, agent_config: str = "",
                 env: dict[str, str] | None = None) -> None:
        self.ws_port = free_port()
        self.http_port = free_port()
        self.agent = Harness(root, model_url, "")
        project = self.agent.project
        config = (f'[agent]\nengine = "anthropic"\nreview_timeout_s = 30\n{agent_config}\n'
                  + doors_config.format(ws_port=self.ws_port, http_port=self.http_port, project=project))
        self.agent.write_config(config, admin_default=False)
        self.orphans: list[int] = []
        """Doors children left running by `lose_service`."""
        self.agent.env.update(env or {})

    @property
    def project(self) -> Path:
        return self.agent.project

    def __enter__(self) -> Doors:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """The run service, which starts the enabled doors as its child; ready once each door says it listens."""
        self.agent.start()
        deadline = time.monotonic() + 20
        while self.output().count("compass-bridge doors: ") < self.expected_lines():
            assert self.agent.service is not None and self.agent.service.poll() is None, self.output()
            assert time.monotonic() < deadline, f"the doors did not listen: {self.output()}"
            time.sleep(0.05)
        assert "refusing to start" not in self.output(), f"the doors refused: {self.output()}"

    def expected_lines(self) -> int:
        config = (self.agent.bridge_home / "config" / "config.toml").read_text()
        return config.count("enabled = true")

    def lose_service(self) -> None:
        """The run service dies (SIGKILL) while its doors child lives on: what a door does when the service is
        lost. The orphaned doors are stopped by `stop`, by PID."""
        assert self.agent.service is not None
        service = self.agent.service
        tasks = Path(f"/proc/{service.pid}/task")
        self.orphans += [int(p) for t in tasks.iterdir() for p in (t / "children").read_text().split()]
        assert self.orphans, "the run service has no doors child"
        service.kill()
        service.wait(timeout=30)
        self.agent.service = None

    def stop(self) -> None:
        """The run service, and with it its doors."""
        if self.agent.service is not None:
            self.agent.stop()
        for pid in self.orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            while leftovers.home_of(pid) == self.agent.bridge_home:
                time.sleep(0.05)
        self.orphans = []
        self.agent.stop_detached()  # one a door started on demand, after a test stopped the first

    def output(self) -> str:
        return self.agent.output()

    def key(self, name: str, scopes: str) -> str:
        keys = KeyStore.open(self.agent.paths)
        try:
            return keys.create(name, parse_scopes(scopes))[1]
        finally:
            keys.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)


def sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events as {id, event, data} (data parsed as JSON); comments skipped."""
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                event["data"] = json.loads(value)
            elif name == "id":
                event["id"] = int(value)
            elif name == "event":
                event["event"] = value
    if "data" in event:
        yield event

"""Shared fixtures: an isolated state home per test, a Compass contract server, and the rule for end-to-end
prerequisites."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compass_server import CompassContractServer

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fails the run if a test left a process of one of its state homes running (tests/support/leftovers.py)."""
    yield
    from tests.support import leftovers

    leftovers.check(tmp_path_factory.getbasetemp())


def require(available: bool, what: str, how: str) -> None:
    """Skip locally when a prerequisite is missing; with CI=true a missing prerequisite is a failure."""
    if available:
        return
    message = f"{what} is not available: {how}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def claude_cli(version: str) -> Path | None:
    """The Claude Code CLI of this exact version that the test command installs under .cache/ (never one on
    PATH: the end-to-end tests must run the pinned versions, see tests/support/claude_code.py)."""
    local = REPO / ".cache" / "claude-code" / version / "node_modules" / ".bin" / "claude"
    return local if local.exists() else None


def chromium() -> Path | None:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


@pytest.fixture
def bridge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh COMPASS_BRIDGE_HOME holding all state (config, keys, usage, sockets) for one test."""
    home = tmp_path / "bridge-home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("COMPASS_BRIDGE_HOME", str(home))
    for var in ("COMPASS_BRIDGE_KEY", "COMPASS_URL", "COMPASS_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield home


@pytest.fixture
def host_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state home for a native host's tests, on a path short enough for its Unix socket (see `short_home`)."""
    from tests.support.native_host_harness import short_home

    with short_home(monkeypatch) as path:
        yield path


@pytest.fixture
def compass() -> Iterator[CompassContractServer]:
    """The Compass contract server on loopback, for one test."""
    server = CompassContractServer().start()
    yield server
    server.stop()

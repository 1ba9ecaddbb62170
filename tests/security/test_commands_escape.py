"""Hostile commands: processes that leave the command's process group or session must not outlive it.

Each case starts real processes that try to escape run_command's clean-up — a new session (setsid), a job
of its own (bash `set -m`), a double fork whose parent exits at once, a burst of forks, a cleared
environment — and checks, by pid, that every one of them is gone afterwards or named in the result.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.tools.commands import command_tools
from tests.conftest import require
from tests.support.processes import alive, wait_gone
from tests.support.tool_calls import invoke

if sys.platform != "linux":
    pytest.skip("the subreaper guarantee is Linux's (docs/SECURITY.md)", allow_module_level=True)

pytestmark = pytest.mark.anyio


@pytest.fixture
def setsid() -> None:
    require(shutil.which("setsid") is not None and shutil.which("env") is not None, "setsid(1) and env(1)",
            "install util-linux and coreutils")


@pytest.fixture
def bash() -> None:
    require(shutil.which("bash") is not None, "bash", "install bash")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path.resolve() / "root"
    root.mkdir()
    return root


async def run(root: Path, command: str, **args: Any) -> dict[str, Any]:
    (tool,) = command_tools(PathPolicy([root]), Limits())
    # A hang guard, not a speed check: an escaped `sleep 100` that is waited for would hang the test.
    with anyio.fail_after(60):
        out = await invoke(tool, {"command": command, **args})
    assert out.structured is not None
    return out.structured


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


@contextlib.contextmanager
def killed_afterwards(path: Path) -> Any:
    """Whatever the test finds, leave no process behind."""
    try:
        yield
    finally:
        if path.exists():
            for pid in pids(path):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


async def assert_all_gone(path: Path) -> None:
    survivors = [pid for pid in pids(path) if not await wait_gone(pid)]
    assert survivors == [], f"processes outlived run_command: {survivors}"


# A double fork into a new session whose intermediate parent exits at once: the classic daemon. The grandchild
# is re-parented to the server (the subreaper), outside the shell's tree and process group.
DAEMON = "setsid sh -c 'sleep 100 & echo $! >> {file}' & "


@pytest.mark.usefixtures("setsid")
async def test_a_daemonised_grandchild_dies_with_a_command_that_exits(root: Path) -> None:
    record = root / "pids"
    with killed_afterwards(record):
        result = await run(root, DAEMON.format(file=record) + "while [ ! -s pids ]; do sleep 0.01; done; echo ok")
        assert result["stdout"] == "ok\n" and result["still_running"] == []
        await assert_all_gone(record)


@pytest.mark.usefixtures("setsid")
async def test_daemons_are_ended_on_time_out_even_when_they_ignore_sigterm(root: Path) -> None:
    record = root / "pids"
    command = ("setsid sh -c \"trap '' TERM; sleep 100 & echo \\$! >> pids; wait\" & "
               "setsid sh -c \"echo \\$\\$ >> pids; trap '' TERM; while :; do sleep 1; done\" & sleep 100")
    with killed_afterwards(record):
        result = await run(root, command, timeout_s=1)
        assert result["timed_out"] is True and result["still_running"] == []
        assert len(pids(record)) == 2
        await assert_all_gone(record)


@pytest.mark.usefixtures("bash")
async def test_bash_job_control_groups_are_ended(root: Path) -> None:
    # `set -m` puts each background job in a process group of its own, out of reach of a group kill.
    record = root / "pids"
    command = "exec bash -c 'set -m; sleep 100 & echo $! >> pids; (sleep 100 & echo $! >> pids; wait) & sleep 0.2'"
    with killed_afterwards(record):
        result = await run(root, command)
        assert result["exit_code"] == 0 and result["still_running"] == []
        assert len(pids(record)) == 2
        await assert_all_gone(record)


async def test_a_burst_of_forks_is_ended_on_cancel(root: Path) -> None:
    record = root / "pids"
    command = "for i in $(seq 60); do setsid sleep 100 & echo $! >> pids; done; echo started > ready; wait"
    with killed_afterwards(record):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, root, command)
            with anyio.fail_after(30):
                while not (root / "ready").exists():
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        assert len(pids(record)) == 60
        await assert_all_gone(record)


@pytest.mark.usefixtures("setsid")
async def test_escapes_race_the_clean_up_for_seconds_and_none_survives(root: Path) -> None:
    # Not once but for a few seconds: escapes started at every moment relative to the shell's exit.
    record = root / "pids"
    deadline = anyio.current_time() + 3
    rounds = 0
    with killed_afterwards(record):
        while anyio.current_time() < deadline:
            rounds += 1
            result = await run(root, DAEMON.format(file=record) + f"sleep 0.0{rounds % 10}")
            assert result["still_running"] == []
        await assert_all_gone(record)
    assert rounds >= 3


# The shell itself is the daemon's first parent and exits at once; its child sets up a session, forks the daemon and
# exits too — so the clean-up starts while that intermediate parent is exiting (its environment already unreadable)
# and its child is about to be re-parented to the server. Found afterwards by the mark in their command lines.
PY_DAEMON = ("exec {py} -c 'import os, time\nif os.fork(): os._exit(0)\nos.setsid()\nif os.fork(): os._exit(0)\n"
             "for fd in (0, 1, 2): os.close(fd)\ntime.sleep(100)' {mark}")
DAEMON_RUNS = 30


def marked(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and mark.encode() in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


async def test_a_daemon_whose_parent_is_exiting_is_ended_every_time(root: Path) -> None:
    # A count, not a duration: each of DAEMON_RUNS runs must end its daemon (this once escaped ~2 runs in 10).
    mark = f"escape-test-{uuid.uuid4().hex}"
    try:
        for run_no in range(1, DAEMON_RUNS + 1):
            result = await run(root, PY_DAEMON.format(py=sys.executable, mark=mark))
            assert result["still_running"] == [], f"run {run_no}: {result['still_running']}"
            survivors = [pid for pid in marked(mark) if not await wait_gone(pid)]
            assert survivors == [], f"run {run_no}: {survivors} outlived run_command unreported"
    finally:
        for pid in marked(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.Signals["SIGKILL"])


@pytest.mark.usefixtures("setsid")
async def test_an_escapee_that_clears_its_environment_is_reported_by_pid(root: Path) -> None:
    # Without the marker the server cannot prove it is the command's: it is named in the result, not killed.
    record = root / "pids"
    command = ("env -i setsid sh -c 'echo $$ >> pids; exec sleep 100' & "
               "while [ ! -s pids ]; do sleep 0.01; done")
    with killed_afterwards(record):
        result = await run(root, command)
        (pid,) = pids(record)
        assert alive(pid)
        assert any(f"pid {pid} (sleep)" in line and f"kill {pid}" in line for line in result["still_running"])

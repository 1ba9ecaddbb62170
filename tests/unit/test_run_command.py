"""run_command with real processes: exit codes, confinement of cwd, time-outs that kill whole trees, caps."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy, PathRefused
from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import CallContext, ProgressReporter, ToolFailure, ToolOutput
from mcp_bridge.tools.commands import command_tools
from tests.support.processes import wait_gone
from tests.support.tool_calls import invoke

if sys.platform == "win32":
    pytest.skip("uses POSIX shells and process groups", allow_module_level=True)

pytestmark = pytest.mark.anyio

Run = Callable[..., Coroutine[Any, Any, ToolOutput]]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path.resolve() / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return root


def make_runner(root: Path, limits: Limits | None = None, progress: ProgressReporter | None = None) -> Run:
    (tool,) = command_tools(PathPolicy([root]), limits or Limits())
    call = CallContext(key_name="test") if progress is None else CallContext(key_name="test", report_progress=progress)

    async def run(**args: Any) -> ToolOutput:
        with anyio.fail_after(30):
            return await invoke(tool, args, call)

    return run


@pytest.fixture
def run(root: Path) -> Run:
    return make_runner(root)


def structured(output: ToolOutput) -> dict[str, Any]:
    assert output.structured is not None
    return output.structured


def text(output: ToolOutput) -> str:
    first = output.content[0]
    assert first.type == "text"
    return first.text


def test_declared_as_admin_and_destructive(root: Path) -> None:
    (tool,) = command_tools(PathPolicy([root]), Limits())
    assert tool.name == "run_command" and tool.scope is Scope.ADMIN
    assert not tool.hints.read_only and tool.hints.destructive and not tool.hints.idempotent
    assert "30 s" in tool.description and "600 s" in tool.description


async def test_exit_code_and_both_streams(run: Run, root: Path) -> None:
    out = await run(command="echo out; echo err >&2; exit 3")
    result = structured(out)
    assert (result["exit_code"], result["timed_out"]) == (3, False)
    assert result["stdout"] == "out\n" and result["stderr"] == "err\n"
    assert result["cwd"] == str(root) and result["duration_s"] >= 0
    assert text(out).startswith("exit code 3 after ")
    assert "--- stdout (4 bytes) ---\nout" in text(out) and "--- stderr (4 bytes) ---\nerr" in text(out)


async def test_cwd_defaults_to_the_first_root_and_stays_inside(run: Run, root: Path) -> None:
    assert structured(await run(command="pwd"))["stdout"] == f"{root}\n"
    assert structured(await run(command="pwd", cwd="sub"))["stdout"] == f"{root / 'sub'}\n"
    marker = root.parent / "outside" / "ran"
    for cwd in ("..", str(root.parent / "outside"), "../outside"):
        with pytest.raises(PathRefused):
            await run(command=f"touch {marker}", cwd=cwd)
    (root / "file").write_text("")
    with pytest.raises(ToolFailure, match="not a directory"):
        await run(command=f"touch {marker}", cwd="file")
    assert not marker.exists()


async def test_timeout_above_the_maximum_is_refused_before_starting(root: Path) -> None:
    run = make_runner(root, Limits(command_timeout_max_s=10))
    with pytest.raises(ToolFailure) as refused:
        await run(command="touch started", timeout_s=11)
    assert "maximum of 10 s" in str(refused.value) and "command_timeout_max_s" in str(refused.value)
    assert not (root / "started").exists()
    with pytest.raises(ToolFailure, match="timeout_s"):
        await run(command="true", timeout_s=0)


async def test_timeout_kills_the_whole_process_tree(run: Run, root: Path) -> None:
    with anyio.fail_after(60):  # a hang guard, not a speed check: the tree would otherwise live 100 s
        out = await run(command="sleep 100 & echo $! > child.pid; wait", timeout_s=0.5)
    result = structured(out)
    assert result["timed_out"] is True and result["exit_code"] < 0
    assert text(out).startswith("timed out after 0.5 s")
    assert await wait_gone(int((root / "child.pid").read_text()))


async def test_a_timed_out_command_never_looks_like_a_success(run: Run) -> None:
    # Were the child signalled before the shell, `wait` could return and the shell exit 0 before its own signal
    # landed (it did, about 1 run in 8): 10 runs, each must be reported as killed.
    for run_no in range(10):
        result = structured(await run(command="sleep 100 & sleep 100 & wait", timeout_s=0.2))
        assert result["timed_out"] is True and result["exit_code"] < 0, f"run {run_no}: {result}"


async def test_processes_ignoring_sigterm_get_sigkill(run: Run, root: Path) -> None:
    # Ignored signals stay ignored across exec, so the grandchild shrugs off SIGTERM too.
    out = await run(command="trap '' TERM; sleep 100 & echo $! > child.pid; wait", timeout_s=0.3)
    assert structured(out)["timed_out"] is True
    assert await wait_gone(int((root / "child.pid").read_text()))


async def test_background_processes_end_with_the_command(run: Run, root: Path) -> None:
    with anyio.fail_after(60):  # a hang guard, not a speed check: waiting on the `sleep 100` would hang
        out = await run(command="sleep 100 > /dev/null 2>&1 & echo $! > child.pid; echo done")
    assert structured(out)["stdout"] == "done\n" and structured(out)["timed_out"] is False
    assert await wait_gone(int((root / "child.pid").read_text()))


async def test_cancelling_the_call_kills_the_tree(run: Run, root: Path) -> None:
    pid_file = root / "child.pid"
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run(command="sleep 100 & echo $! > child.pid.tmp; mv child.pid.tmp child.pid; wait"))
        with anyio.fail_after(10):
            while not pid_file.exists():
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    assert await wait_gone(int(pid_file.read_text()))


def recorded(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def test_a_cancel_at_any_moment_leaves_nothing_running(run: Run, root: Path) -> None:
    # Cancelled at 20 different moments, the early ones while the shell is still being spawned: a cancel landing
    # there once killed the shell alone (anyio's clean-up) and left what it had already started running.
    record = root / "pids"
    try:
        for moment in range(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: run(command="sleep 100 & echo $! >> pids; sleep 100 & echo $! >> pids; wait"))
                await anyio.sleep(moment * 0.005)
                tg.cancel_scope.cancel()
            survivors = [pid for pid in recorded(record) if not await wait_gone(pid)]
            assert survivors == [], f"cancelled after {moment * 5} ms: {survivors} still running"
        assert recorded(record)  # some moments came late enough for the command to start its children
    finally:
        for pid in recorded(record):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.Signals["SIGKILL"])


async def test_output_is_capped_but_fully_drained(root: Path) -> None:
    run = make_runner(root, Limits(command_output_max_bytes=1000))
    script = ("printf HEAD; head -c 200000 /dev/zero | tr '\\0' x; printf TAIL; "
              "head -c 300000 /dev/zero | tr '\\0' y >&2")
    out = await run(command=script)
    result = structured(out)
    assert result["exit_code"] == 0 and result["timed_out"] is False
    assert result["stdout_dropped_bytes"] == 200008 - 1000
    assert result["stderr_dropped_bytes"] == 300000 - 1000
    assert result["stdout"].startswith("HEADxxx") and result["stdout"].endswith("xxxTAIL")
    assert f"[... {200008 - 1000:,} bytes dropped ...]" in result["stdout"]
    assert "200,008 bytes; 199,008 in the middle dropped" in text(out)


async def test_stdin_is_empty(run: Run) -> None:
    out = await run(command="cat; echo end", timeout_s=5)
    assert structured(out)["stdout"] == "end\n" and structured(out)["timed_out"] is False


async def test_killed_by_a_signal_is_a_result(run: Run) -> None:
    out = await run(command="kill -KILL $$")
    assert structured(out)["exit_code"] == -9 and text(out).startswith("killed by SIGKILL")


async def test_undecodable_output_is_replaced(run: Run) -> None:
    assert structured(await run(command="printf 'caf\\351'"))["stdout"] == "caf\ufffd"


async def test_progress_is_reported_while_running(root: Path) -> None:
    reports: list[tuple[float, float | None, str | None]] = []

    def progress(done: float, total: float | None, message: str | None) -> None:  # a plain call, from any thread
        reports.append((done, total, message))

    run = make_runner(root, progress=progress)
    await run(command="sleep 1.3", timeout_s=20)
    assert reports
    done, total, message = reports[0]
    assert 0.9 <= done <= 20 and total == 20 and message is not None and "running for" in message


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
async def test_a_process_escaping_the_group_is_ended_or_reported_not_waited_for(run: Run, root: Path) -> None:
    # The escaped child writes its pid only once it is in its own session, and the command waits for
    # that: otherwise the group kill could catch it before it escaped and there would be nothing to see.
    command = ("setsid sh -c 'echo $$ > escaped.pid; exec sleep 100' & "
               "while [ ! -s escaped.pid ]; do sleep 0.01; done; echo started")
    try:
        # Not a speed check: waiting for the escaped `sleep 100` would hang the test, so fail instead.
        with anyio.fail_after(60):
            out = await run(command=command)
        assert structured(out)["stdout"] == "started\n"
        escaped = int((root / "escaped.pid").read_text())
        if sys.platform == "linux":  # the subreaper finds it: ended like the rest of the tree
            assert await wait_gone(escaped)
            assert structured(out)["still_running"] == [] and "still holds" not in text(out)
        else:
            assert "still holds its output open" in text(out)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int((root / "escaped.pid").read_text()), signal.SIGKILL)

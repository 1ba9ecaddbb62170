"""run_command: a shell command in a working directory inside the roots, with a time limit and capped output.

The command runs in a new session (a process group of its own), so everything it starts can be
stopped together: on time-out, on cancellation of the call, and when the shell exits leaving
background processes behind. A process that moves itself into yet another session (setsid, a
daemon) is beyond reach; that is stated in docs/TOOLS.md rather than papered over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ByteReceiveStream, Process
from pydantic import BaseModel, ConfigDict, Field

from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import CallContext, Hints, Tool, ToolFailure, ToolOutput, model_tool

_GRACE_S = 1.0
"""How long processes get to exit after SIGTERM before SIGKILL."""
_PROGRESS_EVERY_S = 1.0
_POLL_S = 0.05
_PROC = Path("/proc")

_HINTS = Hints(read_only=False, destructive=True, idempotent=False, open_world=True)


class RunCommandArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, description="Shell command line (/bin/sh -c on POSIX, cmd /c on Windows).")
    cwd: str | None = Field(None, description="Working directory inside the allowed roots: absolute, or relative "
                            "to the first root (the default).")
    timeout_s: float | None = Field(None, gt=0, description="Seconds before the command and everything it "
                                    "started are killed (default and maximum: see the tool description).")


class _Capture:
    """One output stream: the first and last halves of the cap are kept, the middle is counted and dropped.

    The tail is usually where errors are, the head where the command said what it was doing. Reading
    never stops at the cap, so a chatty child is never blocked on a full pipe.
    """

    def __init__(self, cap: int) -> None:
        self._head_cap = cap - cap // 2
        self._tail_cap = cap // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self._tail_cap:
            self._tail += chunk
            del self._tail[: max(0, len(self._tail) - self._tail_cap)]

    @property
    def dropped(self) -> int:
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        middle = f"\n[... {self.dropped:,} bytes dropped ...]\n" if self.dropped else ""
        return self._head.decode("utf-8", "replace") + middle + self._tail.decode("utf-8", "replace")

    async def drain(self, stream: ByteReceiveStream | None) -> None:
        if stream is None:
            return
        try:
            async for chunk in stream:
                self.feed(chunk)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return


# -- stopping a process group -------------------------------------------------------------------


def _member_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in the group.

    kill(0) alone would count zombies, and where PID 1 never reaps orphans (common in containers)
    those stay forever; /proc, where there is one, tells the two apart.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not _PROC.is_dir():
        return True
    with os.scandir(_PROC) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            # After the command name: state, ppid, pgrp.
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return


def _kill_now(process: Process) -> None:
    """Kill the command's whole tree at once, without awaiting (usable while the call is being cancelled)."""
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        _signal_group(process.pid, signal.SIGKILL)


async def _stop(process: Process) -> None:
    """End every process the command started: SIGTERM to the group, SIGKILL to whatever outlives the grace."""
    if sys.platform == "win32":
        _kill_now(process)
        return
    pgid = process.pid  # start_new_session made the shell the leader of its own group
    if not _member_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    for _ in range(round(_GRACE_S / _POLL_S)):
        await anyio.sleep(_POLL_S)
        if not _member_alive(pgid):
            return
    _signal_group(pgid, signal.SIGKILL)


# -- running ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Result:
    exit_code: int
    timed_out: bool
    duration_s: float
    stdout: _Capture
    stderr: _Capture
    pipes_held: bool
    """A process outside the group kept the output pipes open after everything in the group ended."""


async def _wait(process: Process, started: float, limit_s: float, call: CallContext) -> bool:
    """Wait for the shell to exit, reporting progress about once a second; True if the time ran out."""
    deadline = started + limit_s
    while (remaining := deadline - time.monotonic()) > 0:
        with anyio.move_on_after(min(_PROGRESS_EVERY_S, remaining)):
            await process.wait()
            return False
        elapsed = time.monotonic() - started
        await call.report_progress(elapsed, limit_s, f"running for {elapsed:.0f} s (time limit {limit_s:g} s)")
    return True


async def _execute(command: str, cwd: Path, limit_s: float, cap: int, call: CallContext) -> _Result:
    stdout, stderr = _Capture(cap), _Capture(cap)
    started = time.monotonic()
    async with await anyio.open_process(
        command,  # a string: anyio runs it with /bin/sh -c, or cmd /c on Windows
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
        start_new_session=True, creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
    ) as process:
        try:
            async with anyio.create_task_group() as readers:
                readers.start_soon(stdout.drain, process.stdout)
                readers.start_soon(stderr.drain, process.stderr)
                timed_out = await _wait(process, started, limit_s, call)
                await _stop(process)
                # With the whole group gone the pipes are closed, unless a process that escaped the group
                # still holds them: read what is left for a moment, then stop waiting for it.
                readers.cancel_scope.deadline = anyio.current_time() + _GRACE_S
            exit_code = await process.wait()
        except BaseException:
            _kill_now(process)
            raise
    return _Result(exit_code, timed_out, time.monotonic() - started, stdout, stderr,
                   readers.cancel_scope.cancelled_caught)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _report(command: str, cwd: Path, timeout: float, result: _Result) -> ToolOutput:
    if result.timed_out:
        head = (f"timed out after {timeout:g} s: the command and every process it started were killed. "
                "Pass a larger timeout_s if it needs longer, or make it finish sooner.")
    elif result.exit_code < 0:
        head = f"killed by {_signal_name(result.exit_code)} after {result.duration_s:.2f} s"
    else:
        head = f"exit code {result.exit_code} after {result.duration_s:.2f} s"
    lines = [head]
    for name, capture in (("stdout", result.stdout), ("stderr", result.stderr)):
        if capture.total == 0:
            lines.append(f"--- {name}: empty ---")
            continue
        size = f"{capture.total:,} bytes"
        if capture.dropped:
            size += f"; {capture.dropped:,} in the middle dropped (cap {capture.total - capture.dropped:,})"
        lines.append(f"--- {name} ({size}) ---")
        lines.append(capture.text().rstrip("\n"))
    if result.pipes_held:
        lines.append("[a process that left the command's process group (setsid, a daemon) still holds its "
                     "output open; it was not stopped, and output it writes from now on is not shown]")
    structured: dict[str, Any] = {
        "command": command,
        "cwd": str(cwd),
        "exit_code": result.exit_code,
        "timed_out": result.timed_out,
        "duration_s": round(result.duration_s, 3),
        "stdout": result.stdout.text(),
        "stderr": result.stderr.text(),
        "stdout_dropped_bytes": result.stdout.dropped,
        "stderr_dropped_bytes": result.stderr.dropped,
    }
    return ToolOutput.text("\n".join(lines), structured)


async def _run_command(policy: PathPolicy, limits: Limits, args: RunCommandArgs, call: CallContext) -> ToolOutput:
    timeout = args.timeout_s if args.timeout_s is not None else limits.command_timeout_default_s
    if timeout > limits.command_timeout_max_s:
        raise ToolFailure(f"timeout_s={timeout:g} is above the maximum of {limits.command_timeout_max_s:g} s, so "
                          "the command was not started; pass a smaller timeout_s, or ask the user to raise "
                          "`command_timeout_max_s` under [limits] in config.toml")
    cwd = policy.resolve(args.cwd if args.cwd is not None else ".", must_exist=True)
    if not cwd.is_dir():
        raise ToolFailure(f"cwd {args.cwd!r} is not a directory, so the command was not started; give a "
                          "directory inside the roots")
    try:
        result = await _execute(args.command, cwd, timeout, limits.command_output_max_bytes, call)
    except OSError as exc:
        raise ToolFailure(f"could not start the command in {cwd}: {exc.strerror or exc}; check that the "
                          "directory is accessible") from None
    return _report(args.command, cwd, timeout, result)


def command_tools(policy: PathPolicy, limits: Limits) -> list[Tool]:
    """run_command, confined to the roots by `policy` and bounded by `limits`."""
    return [
        model_tool(
            name="run_command", title="Run a shell command", scope=Scope.ADMIN, hints=_HINTS, args=RunCommandArgs,
            run=partial(_run_command, policy, limits),
            description="Run a shell command line (/bin/sh -c; cmd /c on Windows) in `cwd`, a directory inside "
            "the allowed roots (default: the first root), with stdin closed. Returns the exit code, stdout, "
            "stderr and duration; a non-zero exit code is a normal result, not an error. Each of stdout and "
            f"stderr keeps at most {limits.command_output_max_bytes:,} bytes (the start and the end; the size "
            f"of the dropped middle is stated). Time limit timeout_s: default "
            f"{limits.command_timeout_default_s:g} s, at most {limits.command_timeout_max_s:g} s; when it runs "
            "out, or the shell exits, every process the command started is stopped (SIGTERM, then SIGKILL), so "
            "use this for commands that finish, not for servers that should keep running. Progress is "
            "reported about once a second.",
        ),
    ]

"""run_command: a shell command in a working directory inside the roots, with a time limit and capped output.

Everything a command starts is ended with it — on time-out, on cancellation of the call, and when the shell
exits leaving processes behind. On Linux the server process is a child subreaper (PR_SET_CHILD_SUBREAPER),
so a process that leaves the command's process group or session (`setsid`, bash `set -m`, a daemon's double
fork) is re-parented to the server instead of to init and stays findable: the command's tree is its shell's
descendants plus the orphans carrying the call's marker variable, and all of it is frozen (SIGSTOP, so
nothing forks while it is being killed) and killed after SIGTERM's grace. The clean-up rescans until it is
settled, because a process caught mid-exit can no longer be attributed while its children are still on their
way to the server. A process that cannot be attributed (it replaced its whole environment after escaping) or
that outlives SIGKILL is reported in the result, never silently left. Elsewhere (macOS) the process group is
what can be reached and a process that escaped it is reported when it keeps the output open; on Windows the
tree is ended with `taskkill /T`.
Children get a scrubbed environment (`childenv`): no bridge, Compass or other keys.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from mcp_bridge import childenv
from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.scopes import Scope
from mcp_bridge.selfguard import become_subreaper
from mcp_bridge.tools.base import Args, CallContext, Hints, Tool, ToolFailure, ToolOutput, arg, declared_tool

if TYPE_CHECKING:
    from anyio.abc import ByteReceiveStream, Process

# anyio and subprocess are imported by the coroutines that run a command, not here: every server builds the
# tool list as it starts, and most never run a command. The handler runs on the server's event loop.

log = logging.getLogger(__name__)

_GRACE_S = 1.0
"""How long processes get to exit after SIGTERM before SIGKILL."""
_PROGRESS_EVERY_S = 1.0
_POLL_S = 0.05
_PROC = Path("/proc")
_KILL_ROUNDS = 50
"""Freeze-and-rescan rounds before the kill: a bound, so a fork bomb cannot keep the server looping."""
_SETTLE_ROUNDS = 3 * round(_GRACE_S / _POLL_S)
"""Rescans of the whole clean-up (the grace, the kill, then waiting for what is mid-exit): its bound, ~3 s."""
_SHELLS: set[int] = set()
"""The shells of the commands running in this process: its own children, which anyio waits for — never taken
for orphans, never reaped here (that would take their exit status from anyio's child watcher)."""
MARKER_ENV = "COMPASS_BRIDGE_COMMAND_ID"
"""Set in each command's environment (a random id per call) so its orphans can be told from others'."""

_HINTS = Hints(read_only=False, destructive=True, idempotent=False, open_world=True)


class RunCommandArgs(Args):
    command: str = arg(min_length=1, description="Shell command line (/bin/sh -c on POSIX, cmd /c on Windows).")
    cwd: str | None = arg(None, description="Working directory inside the allowed roots: absolute, or relative "
                          "to the first root (the default).")
    timeout_s: float | None = arg(None, gt=0, description="Seconds before the command and everything it "
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
        import anyio

        if stream is None:
            return
        try:
            async for chunk in stream:
                self.feed(chunk)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return


# -- the process tree (Linux) --------------------------------------------------------------------


class _Proc(NamedTuple):
    pid: int
    ppid: int
    pgid: int
    zombie: bool
    name: str


def _process_table() -> dict[int, _Proc]:
    table: dict[int, _Proc] = {}
    with os.scandir(_PROC) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                head, tail = Path(entry.path, "stat").read_text().rsplit(")", 1)
            except (OSError, ValueError):
                continue  # gone meanwhile
            fields = tail.split()  # after the command name: state, ppid, pgrp, ...
            table[int(entry.name)] = _Proc(int(entry.name), int(fields[1]), int(fields[2]), fields[0] == "Z",
                                           head.partition("(")[2])
    return table


def _exiting(pid: int) -> bool:
    """True when the process has already released its memory (its command line reads empty): it is exiting,
    and its children are about to be re-parented. Its environment reads empty too, so it cannot be attributed."""
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes() == b""
    except OSError:
        return True  # gone meanwhile: its children have been re-parented already, the next scan sees them


def _environ_marker(pid: int) -> bytes | None:
    """The run_command marker in the process's environment (as it was at exec), or None."""
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = MARKER_ENV.encode() + b"="
    return next((item for item in environ.split(b"\0") if item.startswith(prefix)), None)


class _Tree:
    """One command's processes: found from its shell, its process group, and orphans carrying its marker."""

    def __init__(self, shell: int, marker: bytes, preexisting: frozenset[int]) -> None:
        self.shell = shell
        self.marker = marker
        self.preexisting = preexisting
        """This process's children before the command started: never the command's, never reported."""
        self.seen: set[int] = set()
        self.exited: set[int] = set()
        """Orphans of ours caught mid-exit: reaped here once they are zombies (nobody else waits for them: the
        only children the server starts itself are the commands' shells, which _SHELLS keeps out)."""

    def members(self, table: dict[int, _Proc]) -> set[int]:
        me = os.getpid()
        roots = {self.shell} | {p.pid for p in table.values() if p.pgid == self.shell}
        # Orphans are re-parented to us (the subreaper), or to init where we could not become one.
        roots |= {p.pid for p in table.values() if p.ppid in (me, 1) and not p.zombie and p.pid != self.shell
                  and _environ_marker(p.pid) == self.marker}
        children: dict[int, list[int]] = defaultdict(list)
        for p in table.values():
            children[p.ppid].append(p.pid)
        found: set[int] = set()
        stack = [pid for pid in roots if pid in table]
        while stack:
            pid = stack.pop()
            if pid not in found and pid != me:
                found.add(pid)
                stack.extend(children.get(pid, ()))
        self.seen |= found
        return found

    def live(self, table: dict[int, _Proc] | None = None) -> dict[int, _Proc]:
        table = _process_table() if table is None else table
        return {pid: table[pid] for pid in self.members(table) if not table[pid].zombie}

    def _orphans(self, table: dict[int, _Proc]) -> list[_Proc]:
        """Live processes re-parented to us since the command started (not a running command's shell)."""
        me = os.getpid()
        return [p for p in table.values() if p.ppid == me and not p.zombie and p.pid not in self.preexisting
                and p.pid not in _SHELLS]

    def unattributed(self, table: dict[int, _Proc]) -> list[_Proc]:
        """Orphans that carry no command's marker at all: most likely this command's (they cleared their
        environment), but not provably, so not killed."""
        return [p for p in self._orphans(table) if p.pid not in self.seen and _environ_marker(p.pid) is None]

    def exiting(self, table: dict[int, _Proc]) -> set[int]:
        """Orphans caught mid-exit, whose marker can no longer be read: a daemon's intermediate parent, say,
        whose child (marker intact) is re-parented to us a moment later. The clean-up rescans until none is left."""
        found = {p.pid for p in self._orphans(table) if _environ_marker(p.pid) is None and _exiting(p.pid)}
        self.exited |= found
        return found

    def reap(self) -> None:
        """Collect the exit status of the command's processes that were re-parented to us (zombies otherwise):
        this tree's pids and the orphans seen exiting, never a running command's shell, which anyio waits for."""
        if sys.platform == "win32":
            return
        for pid in (self.seen | self.exited) - _SHELLS - {self.shell}:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue


def _send(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            continue


def _kill_tree_now(tree: _Tree) -> None:
    """Freeze the whole tree, rescanning until nothing new appears (so no fork slips through), then kill it."""
    if sys.platform == "win32":
        return
    frozen: set[int] = set()
    for _ in range(_KILL_ROUNDS):
        new = set(tree.live()) - frozen
        if not new:
            break
        _send(new, signal.SIGSTOP)
        frozen |= new
    _send(frozen, signal.SIGKILL)
    tree.reap()


async def _stop_tree(tree: _Tree) -> list[str]:
    """End the command's tree: SIGTERM to each member as it is found, SIGKILL (frozen first) to what outlives
    the grace. A single scan is not enough: a process caught mid-exit cannot be attributed, and its children
    are re-parented to us only a moment later. So it rescans until the picture is settled — nothing of the tree
    alive, no orphan of ours mid-exit, and two scans in a row finding the same — within _SETTLE_ROUNDS. What
    survives even SIGKILL, or could not be attributed, is returned for the report."""
    if sys.platform == "win32":
        return []
    import anyio

    grace_rounds = round(_GRACE_S / _POLL_S)
    termed: set[int] = set()
    previous: frozenset[int] | None = None
    for rounds in range(_SETTLE_ROUNDS):
        table = _process_table()
        live = tree.live(table)
        if live and rounds >= grace_rounds:
            _kill_tree_now(tree)
        elif new := set(live) - termed:
            # The shell first: were its child to die first, the shell's `wait` could return and the shell exit 0
            # before its own signal lands, and a command ended by force would look like one that succeeded.
            _send(sorted(new, key=lambda pid: pid != tree.shell), signal.SIGTERM)
            termed |= new
        exiting = tree.exiting(table)
        picture = frozenset(live) | {p.pid for p in tree.unattributed(table)}
        if not live and not exiting:
            if picture == previous:
                break
            previous = picture  # confirm at once: a fork that raced this scan is listed by the next one
            continue
        previous = None
        await anyio.sleep(_POLL_S)
        tree.reap()
    table = _process_table()
    escaped = [f"pid {p.pid} ({p.name}) outlived SIGKILL (stuck in the kernel?)" for p in tree.live(table).values()]
    escaped += [f"pid {p.pid} ({p.name}) left the command and removed its environment, so it cannot be told "
                f"apart from other processes; it was not stopped: check it and end it with `kill {p.pid}`"
                for p in tree.unattributed(table)]
    tree.reap()
    return escaped


# -- the process group (other POSIX systems) ----------------------------------------------------


def _member_alive(pgid: int) -> bool:
    """True while a live process is in the group (kill(0) alone would also count zombies)."""
    if sys.platform == "win32":
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    if sys.platform == "win32":
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return


async def _stop_group(pgid: int) -> None:
    """SIGTERM to the group, SIGKILL to whatever outlives the grace."""
    if sys.platform == "win32" or not _member_alive(pgid):
        return
    import anyio

    _signal_group(pgid, signal.SIGTERM)
    for _ in range(round(_GRACE_S / _POLL_S)):
        await anyio.sleep(_POLL_S)
        if not _member_alive(pgid):
            return
    _signal_group(pgid, signal.SIGKILL)


# -- ending a command, per platform -------------------------------------------------------------


class _Ender:
    """Everything needed to end one command's processes, whatever the platform."""

    def __init__(self, tree: _Tree | None) -> None:
        self.tree = tree

    @classmethod
    def before_start(cls) -> tuple[_Ender, str]:
        """An ender for a command about to start, and the marker value to put in its environment."""
        token = secrets.token_hex(8)
        if sys.platform != "linux" or not _PROC.is_dir():
            return cls(None), token
        me = os.getpid()
        children = frozenset(p.pid for p in _process_table().values() if p.ppid == me)
        return cls(_Tree(0, f"{MARKER_ENV}={token}".encode(), children)), token

    def started(self, process: Process) -> None:
        _SHELLS.add(process.pid)
        if self.tree is not None:
            self.tree.shell = process.pid

    def finished(self, process: Process) -> None:
        _SHELLS.discard(process.pid)

    async def stop(self, process: Process) -> list[str]:
        if sys.platform == "win32":
            self.kill_now(process)
            return []
        if self.tree is not None:
            return await _stop_tree(self.tree)
        await _stop_group(process.pid)  # start_new_session made the shell the leader of its own group
        return []

    def kill_now(self, process: Process) -> None:
        """Kill the command's whole tree at once, without awaiting (usable while the call is being cancelled)."""
        if sys.platform == "win32":
            import subprocess

            subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False)
        elif self.tree is not None:
            _kill_tree_now(self.tree)
        else:
            _signal_group(process.pid, signal.SIGKILL)


# -- running ------------------------------------------------------------------------------------


class _Result(NamedTuple):
    exit_code: int
    timed_out: bool
    duration_s: float
    stdout: _Capture
    stderr: _Capture
    pipes_held: bool
    """A process outside the tree kept the output pipes open after everything in the tree ended."""
    escaped: list[str]
    """Processes the command started that are still running: could not be stopped or attributed."""


async def _wait(process: Process, started: float, limit_s: float, call: CallContext) -> bool:
    """Wait for the shell to exit, reporting progress about once a second; True if the time ran out."""
    import anyio

    deadline = started + limit_s
    while (remaining := deadline - time.monotonic()) > 0:
        with anyio.move_on_after(min(_PROGRESS_EVERY_S, remaining)):
            await process.wait()
            return False
        elapsed = time.monotonic() - started
        call.report_progress(elapsed, limit_s, f"running for {elapsed:.0f} s (time limit {limit_s:g} s)")
    return True


async def _execute(command: str, cwd: Path, limit_s: float, cap: int, call: CallContext) -> _Result:
    import subprocess

    import anyio

    stdout, stderr = _Capture(cap), _Capture(cap)
    ender, token = _Ender.before_start()
    started = time.monotonic()
    # Shielded: a cancellation landing while the shell is being spawned would make anyio kill the shell alone
    # and abandon whatever it had started by then. Delivered at the first checkpoint below instead, it ends all.
    with anyio.CancelScope(shield=True):
        process = await anyio.open_process(
            command,  # a string: anyio runs it with /bin/sh -c, or cmd /c on Windows
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
            env=childenv.scrubbed({MARKER_ENV: token}),
            start_new_session=True, creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
        )
    ender.started(process)
    try:
        async with process:
            try:
                async with anyio.create_task_group() as readers:
                    readers.start_soon(stdout.drain, process.stdout)
                    readers.start_soon(stderr.drain, process.stderr)
                    timed_out = await _wait(process, started, limit_s, call)
                    escaped = await ender.stop(process)
                    # With the whole tree gone the pipes are closed, unless a process that escaped it still
                    # holds them: read what is left for a moment, then stop waiting for it.
                    readers.cancel_scope.deadline = anyio.current_time() + _GRACE_S
                exit_code = await process.wait()
            except BaseException:
                ender.kill_now(process)
                # Settle like a normal end (what was mid-exit leaves children behind), and let the shell be
                # collected by anyio's watcher rather than by the close below, which would reap it first.
                with anyio.move_on_after(3 * _GRACE_S, shield=True):
                    for line in await ender.stop(process):
                        log.warning("run_command cancelled: %s", line)
                    await process.wait()
                raise
    finally:
        ender.finished(process)
    return _Result(exit_code, timed_out, time.monotonic() - started, stdout, stderr,
                   readers.cancel_scope.cancelled_caught, escaped)


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
    for escaped in result.escaped:
        lines.append(f"[still running: {escaped}]")
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
        "still_running": result.escaped,
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


_OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "command": {"type": "string"},
        "cwd": {"type": "string"},
        "exit_code": {"type": "integer", "description": "negative: killed by that signal"},
        "timed_out": {"type": "boolean"},
        "duration_s": {"type": "number"},
        "stdout": {"type": "string"},
        "stderr": {"type": "string"},
        "stdout_dropped_bytes": {"type": "integer"},
        "stderr_dropped_bytes": {"type": "integer"},
        "still_running": {"type": "array", "items": {"type": "string"},
                          "description": "processes the command started that could not be stopped or attributed"},
    },
    "required": ["command", "cwd", "exit_code", "timed_out", "duration_s", "stdout", "stderr"],
}


def command_tools(policy: PathPolicy, limits: Limits) -> list[Tool]:
    """run_command, confined to the roots by `policy` and bounded by `limits`. On Linux this makes the
    calling process a child subreaper (see the module docstring): call it in the process that will run
    the commands."""
    become_subreaper()
    return [
        declared_tool(
            name="run_command", title="Run a shell command", scope=Scope.ADMIN, hints=_HINTS, args=RunCommandArgs,
            run=partial(_run_command, policy, limits), output_schema=_OUTPUT_SCHEMA,
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

"""Corpus, class 8 — run_command through a real `serve` (admin key): escapees and secrets.

Each command starts a process that tries to outlive it in a way of its own — nohup, `setsid -f`, a classic
double-fork daemon that closes its descriptors, one that ignores SIGTERM and SIGHUP, and a "fork walker" whose
every generation forks and exits so that its pid keeps changing — then the shell exits at once. Afterwards each is
gone or named by pid in `still_running`. Processes are found by a marker in their command line and, whatever the
test finds, killed by pid. The secrets the server was started with must not be in any child's environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.test_corpus_support import create_key, make_home, serve, text
from tests.support.processes import alive

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the subreaper guarantee is Linux's")

PY = sys.executable
ESCAPES = {
    "nohup": "nohup {py} -c 'import time; time.sleep(300)' {mark} >/dev/null 2>&1 &",
    "setsid -f": "setsid -f {py} -c 'import time; time.sleep(300)' {mark} >/dev/null 2>&1",
    "daemon": "{py} -c 'import os, time\nif os.fork(): os._exit(0)\nos.setsid()\nif os.fork(): os._exit(0)\n"
              "os.chdir(\"/\")\nfor fd in (0, 1, 2): os.close(fd)\ntime.sleep(300)' {mark}",
    "ignores TERM and HUP": "(trap '' TERM HUP; exec {py} -c 'import signal, time\n"
                            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGHUP, "
                            "signal.SIG_IGN)\ntime.sleep(300)' {mark}) >/dev/null 2>&1 &",
    "fork walker": "{py} -c 'import os, time\nwhile True:\n    if os.fork(): os._exit(0)\n    os.setsid()\n"
                   "    time.sleep(0.005)' {mark} >/dev/null 2>&1 &",
}


def _marked(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if mark.encode() in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    """Whether `pid` ends within 3 s: a SIGKILL sent just before the answer may not have landed yet (a hang
    guard, as in test_commands_escape's wait_gone; nothing is timed)."""
    deadline = time.monotonic() + 3
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


@contextlib.contextmanager
def _killed_afterwards(mark: str) -> Iterator[None]:
    try:
        yield
    finally:
        for _ in range(50):  # a fork walker may need several rounds
            pids = _marked(mark)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.Signals["SIGKILL"])


DAEMON_RUNS = 30
"""The double-fork daemon races the clean-up (its intermediate parent exits as the shell does): it once slipped
past ~2 runs in 10, so it is run this many times, each one checked."""


@pytest.mark.parametrize("how", list(ESCAPES))
def test_an_escapee_is_ended_or_reported(tmp_path: Path, how: str) -> None:
    home = make_home(tmp_path)
    with serve(home, key=create_key(home, "admin")) as client:
        for _ in range(DAEMON_RUNS if how == "daemon" else 1):
            mark = f"corpus-{uuid.uuid4().hex}"
            with _killed_afterwards(mark):
                ran = client.call_tool("run_command", {"command": ESCAPES[how].format(py=PY, mark=mark),
                                                       "cwd": "project", "timeout_s": 20})
                reported = " ".join((ran.get("structuredContent") or {}).get("still_running") or [])
                survivors = [pid for pid in _marked(mark) if str(pid) not in reported and not _gone(pid)]
                assert not survivors, f"{how}: {survivors} outlived run_command unreported: {text(ran)}"


def test_no_child_reads_the_servers_keys(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    key = create_key(home, "admin")
    secrets = {"COMPASS_API_KEY": "ck_corpus_compass", "ANTHROPIC_API_KEY": "sk-ant-corpus",
               "GITHUB_TOKEN": "ghp_corpus", "my_db_password": "corpus-db-password",
               "AWS_SECRET_ACCESS_KEY": "corpus-aws"}
    with serve(home, key=key, env=secrets) as client:
        ran = client.call_tool("run_command", {"command": "env; sh -c 'cat /proc/$$/environ' | tr '\\0' '\\n'",
                                               "cwd": "project"})
        said = json.dumps(ran)
        assert "PATH=" in said, said[:300]
        for value in (key, *secrets.values()):
            assert value not in said, value


# Each ancestor of the command, from its shell's parent (the server) up: its pid, then its environment one variable a
# line (or nothing, when the kernel refuses to show it).
_ANCESTORS = ("p=$PPID; while [ \"$p\" -gt 1 ]; do echo \"ancestor $p\"; "
              "tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null; "
              "p=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status); done")


def test_no_child_reads_the_keys_from_the_servers_own_environment(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    key = create_key(home, "admin")
    with serve(home, key=key, env={"COMPASS_API_KEY": "ck_corpus_compass", "GITHUB_TOKEN": "ghp_corpus"}) as client:
        ran = client.call_tool("run_command", {"command": _ANCESTORS, "cwd": "project"})
        said = json.dumps(ran)
        stdout = (ran.get("structuredContent") or {}).get("stdout", "")
        server = client.process.pid
        assert f"ancestor {server}\n" in stdout and f"ancestor {os.getpid()}\n" in stdout, said[:500]
        for value in (key, "ck_corpus_compass", "ghp_corpus"):
            assert value not in said, value
        # Where the server's environment can still be read (by root), the names are there and the values not.
        server_env = stdout.split(f"ancestor {server}\n", 1)[1].split("ancestor ", 1)[0]
        assert not server_env or "COMPASS_BRIDGE_KEY=\n" in server_env, server_env[:300]

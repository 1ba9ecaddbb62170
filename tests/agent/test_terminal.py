"""`compass-bridge run` on a real pseudo-terminal: a review is asked and answered there; Ctrl-C (SIGINT)
interrupts the turn. (A second Ctrl-C aborts the run; two signals sent at once merge in the kernel, so that
is shown with `runs abort`, which sends the same request.)"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.harness import Harness
from tests.support.claude_code import ClaudeCode, every_claude_code
from tests.support.messages_api import MessagesApi

if sys.platform == "win32":
    pytest.skip("pseudo-terminals and the run service are POSIX only", allow_module_level=True)


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesApi]:
    with MessagesApi() as server:
        yield server


class Terminal:
    """`compass-bridge run PROMPT` with a pty as its stdin, stdout and stderr."""

    def __init__(self, harness: Harness, prompt: str) -> None:
        self._fd, child = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "mcp_bridge", "run", prompt], env=harness.env,
                                     cwd=harness.project, stdin=child, stdout=child, stderr=child)
        os.close(child)
        self.output = ""

    def expect(self, text: str, within: float = 60) -> None:
        """Read until `text` shows (the limit only turns a hang into a failure)."""
        deadline = time.monotonic() + within
        while text not in self.output:
            assert time.monotonic() < deadline, f"never saw {text!r} in:\n{self.output}"
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self._fd, 65536).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    assert text in self.output, f"never saw {text!r} in:\n{self.output}"

    def type(self, line: str) -> None:
        os.write(self._fd, line.encode() + b"\r")

    def wait(self) -> int:
        code = self.proc.wait(timeout=60)
        self.expect("")  # drain
        os.close(self._fd)
        return code


@every_claude_code
def test_review_on_the_terminal_and_ctrl_c(tmp_path: Path, api: MessagesApi, claude: ClaudeCode) -> None:
    harness = Harness(tmp_path, api.url, "", claude.binary)
    harness.start()
    try:
        term = Terminal(harness, 'do @@tool Bash {"command": "mkdir -p asked && echo yes", "description": "t"}@@')
        term.expect("allow? [y]es / [e]dit / [n]o / [s]top:")
        assert "run `mkdir -p asked && echo yes`" in term.output and "risk medium" in term.output
        term.type("y")
        term.expect("RESULT(is_error=False):yes")
        assert term.wait() == 0
        assert (harness.project / "asked").is_dir()

        term = Terminal(harness, 'do @@tool Bash {"command": "mkdir -p original", "description": "t"}@@')
        term.expect("[s]top:")
        term.type("e")
        term.expect("one line of JSON):")
        term.type('{"command": "echo edited", "description": "t"}')
        term.expect("RESULT(is_error=False):edited")
        assert term.wait() == 0 and not (harness.project / "original").exists()

        term = Terminal(harness, "count @@slow 100@@")
        term.expect("tick 1")
        term.proc.send_signal(signal.SIGINT)
        term.expect("[interrupted]")
        assert term.wait() == 130
        runs = json.loads(harness.cli("runs", "list", "--json").stdout)
        assert runs[0]["state"] == "done" and "tick 99" not in term.output

        term = Terminal(harness, "count @@slow 100@@")
        term.expect("tick 1")
        run_id = term.output.split("run ", 1)[1].split()[0]
        aborted = harness.cli("runs", "abort", run_id)
        assert aborted.returncode == 0 and "abort requested" in aborted.stdout
        assert term.wait() == 130
        assert json.loads(harness.cli("runs", "show", run_id, "--json").stdout)["state"] == "aborted"

    finally:
        harness.stop()

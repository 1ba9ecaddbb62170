"""kill -9 during write_file leaves a full-size temp file; the next server removes it — and only that.

Real processes: a writer is stopped inside write_file after its temp file holds the whole content (its fsync
never returns) and killed with SIGKILL, by PID. A second writer stays alive meanwhile: its temp file must
survive the clean-up, as must anything else that merely looks like a temp file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.tools.files import file_tools
from mcp_bridge.tools.tempfiles import SUFFIX, TempJournal

if sys.platform == "win32":
    pytest.skip("SIGKILL", allow_module_level=True)

CONTENT_BYTES = 4 * 1024 * 1024

WRITER = """
import os, sys, threading
from pathlib import Path
from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.tools.base import CallContext
from mcp_bridge.tools.files import file_tools
from mcp_bridge.tools.tempfiles import TempJournal

root, journal, name, size = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
os.fsync = lambda fd: threading.Event().wait()  # the write stops here, its temp file complete, until killed
tools = {t.name: t for t in file_tools(PathPolicy([root]), Limits(), TempJournal(journal))}
tools["write_file"].run({"path": name, "content": "x" * size}, CallContext(key_name="w"))
"""


def _temps(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))


def _start_writer(root: Path, journal: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(journal), name, str(CONTENT_BYTES)])


def _wait_for_full_temp(directory: Path, stem: str, proc: subprocess.Popen[bytes]) -> Path:
    """The writer's temp file once it holds all the content (the limit only turns a hang into a failure)."""
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        assert proc.poll() is None, "the writer exited before it was killed"
        for temp in _temps(directory):
            if temp.name.startswith(f".{stem}.") and temp.stat().st_size == CONTENT_BYTES:
                return temp
        time.sleep(0.02)
    raise AssertionError("the writer never wrote its temp file")


def test_the_next_start_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    root = tmp_path.resolve() / "root"
    (root / "sub").mkdir(parents=True)
    journal = tmp_path / "data" / "pending-writes"
    decoys = [root / "sub" / f".notes.txt.{'0' * 12}deadbeef{SUFFIX}",  # our pattern, a token nobody journalled
              root / "sub" / f".x{SUFFIX}", root / "sub" / "mine.tmp", root / "sub" / "keep.txt"]
    for decoy in decoys:
        decoy.write_text("not ours to remove\n")

    killed = _start_writer(root, journal, "sub/big.txt")
    alive = _start_writer(root, journal, "sub/other.txt")
    try:
        leftover = _wait_for_full_temp(root / "sub", "big.txt", killed)
        in_use = _wait_for_full_temp(root / "sub", "other.txt", alive)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(30)
        assert leftover.exists() and not (root / "sub" / "big.txt").exists()

        # The next server starts: file_tools with the journal cleans in the background.
        file_tools(PathPolicy([root]), Limits(), TempJournal(journal))
        give_up = time.monotonic() + 60
        # The clean-up removes the temp file, then the dead writer's journal.
        while (leftover.exists() or len(list(journal.iterdir())) > 1) and time.monotonic() < give_up:
            time.sleep(0.02)
        assert not leftover.exists(), "the killed writer's temp file was not removed"
        assert len(list(journal.iterdir())) == 1, "the killed writer's journal was not removed"
        assert in_use.exists(), "a live writer's temp file was removed"
        assert all(d.exists() for d in decoys)
    finally:
        for proc in (killed, alive):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)

    # Once the second writer is dead too, a later start removes its leftover as well.
    assert TempJournal(journal).clean_stale(PathPolicy([root])) == 1
    assert not in_use.exists() and all(d.exists() for d in decoys)
    assert list(journal.iterdir()) == []


def test_clean_up_stays_inside_the_roots_of_the_server_that_starts(tmp_path: Path) -> None:
    base = tmp_path.resolve()
    inside, elsewhere = base / "inside", base / "elsewhere"
    inside.mkdir()
    elsewhere.mkdir()
    journal = base / "data" / "pending-writes"
    dead = TempJournal(journal)
    for directory in (inside, elsewhere):
        dead.record(str(directory))
        (directory / dead.temp_name("f.txt")).write_text("left over\n")
    # Simulate the kill: the journal stays, its lock goes with the process (here: the file is closed).
    assert dead._file is not None
    dead._file.close()
    assert TempJournal(journal).clean_stale(PathPolicy([inside])) == 1
    assert _temps(inside) == [] and len(_temps(elsewhere)) == 1

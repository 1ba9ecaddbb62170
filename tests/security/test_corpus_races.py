"""Corpus, class 4 — races: a project directory swapped, for seconds, with a symlink to a protected directory that
lies inside the root (so confinement to the root alone would not stop it: only never following a symlink does).

A separate process swaps `project/d` with a symlink to `~/.ssh` (renameat2 RENAME_EXCHANGE, as fast as it can)
while a real `serve` holding a write key runs every file tool at `project/d/...` in bounded loops. Nothing from
`~/.ssh` may come back and nothing in it may change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.security.test_corpus_support import CANARY, create_key, make_home, serve, text
from tests.security.test_fs_races import _start_swapper

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="renameat2 swaps")

ROUNDS = 150
"""Rounds of every tool: about 3 s of swapping on 2 cores."""


def _ssh_state(ssh: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(ssh.iterdir())}


def test_a_directory_swapped_for_a_link_to_a_protected_one_leaks_nothing(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    ssh = home.path / ".ssh"
    for name in ("f.txt", "config.toml"):
        (ssh / name).write_text(f"inside\n{CANARY} ssh {name}\n")
    real = home.project / "d"
    real.mkdir()
    (real / "f.txt").write_text("inside\nproject\n")
    (real / "config.toml").write_text("inside\nproject\n")
    link = home.project / "d-link"
    link.symlink_to("../.ssh")
    before = _ssh_state(ssh)
    said: list[str] = []
    stop = tmp_path / "stop"
    with serve(home, key=create_key(home, "write")) as client:
        swapper = _start_swapper(real, link, stop)
        try:
            for n in range(ROUNDS):
                for tool, args in (
                        ("read_file", {"path": "project/d/f.txt"}),
                        ("list_directory", {"path": "project/d"}),
                        ("search_files", {"path": "project/d", "pattern": "*"}),
                        ("search_files", {"path": "project", "pattern": "d/*.txt"}),
                        ("write_file", {"path": "project/d/f.txt", "content": f"pwned {n}\n"}),
                        ("write_file", {"path": f"project/d/new{n}.txt", "content": "pwned\n"}),
                        ("write_file", {"path": f"project/d/sub{n}/x.txt", "content": "pwned\n", "create_dirs": True}),
                        ("edit_file", {"path": "project/d/config.toml", "old_text": "inside", "new_text": "pwned"}),
                        ("edit_file", {"path": "project/d/config.toml", "old_text": "pwned", "new_text": "inside"}),
                        ("edit_file", {"path": "project/d/f.txt", "old_text": "\n", "new_text": "\n",
                                       "dry_run": True})):
                    said.append(json.dumps(client.call_tool(tool, args)))
        finally:
            stop.touch()
            out, _ = swapper.communicate(timeout=30)
    assert swapper.returncode == 0 and int(out) > 100, out  # it really swapped, many times
    leaks = [s[:300] for s in said if CANARY in s]
    assert not leaks, f"{len(leaks)} of {len(said)} results leaked:\n" + "\n".join(leaks[:10])
    assert _ssh_state(ssh) == before
    # The project side did take the writes that found it in place (so the loops really ran the tools).
    assert any('"isError": false' in s and "wrote" in s for s in said), text(json.loads(said[4]))


def test_a_file_swapped_with_a_hard_link_to_a_key_leaks_nothing(tmp_path: Path) -> None:
    """No symlink at all: `project/f.txt` is exchanged with a hard link to a file in `~/.ssh`, so every path
    check passes and only the device-and-inode check of what was opened can refuse it."""
    home = make_home(tmp_path)
    secret = home.path / ".ssh" / "f.txt"
    secret.write_text(f"inside\n{CANARY} ssh\n")
    real = home.project / "f.txt"
    real.write_text("inside\nproject\n")
    hard = home.project / "hl.txt"
    hard.hardlink_to(secret)
    said: list[str] = []
    stop = tmp_path / "stop"
    with serve(home, key=create_key(home, "write")) as client:
        swapper = _start_swapper(real, hard, stop)
        try:
            for _ in range(ROUNDS * 3):
                for tool, args in (("read_file", {"path": "project/f.txt"}),
                                   ("edit_file", {"path": "project/f.txt", "old_text": "\n", "new_text": "\n",
                                                  "dry_run": True}),
                                   ("read_file", {"path": "project/hl.txt", "limit": 1})):
                    said.append(json.dumps(client.call_tool(tool, args)))
        finally:
            stop.touch()
            out, _ = swapper.communicate(timeout=30)
    assert swapper.returncode == 0 and int(out) > 100, out
    leaks = [s[:300] for s in said if CANARY in s]
    assert not leaks, f"{len(leaks)} of {len(said)} results leaked:\n" + "\n".join(leaks[:10])
    assert any('"isError": false' in s and "project" in s for s in said)
    assert secret.read_text() == f"inside\n{CANARY} ssh\n"

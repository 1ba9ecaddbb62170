"""Races: a directory or file swapped for a symlink to the outside while every file tool runs, for seconds.

Check-then-open cannot win this (issue 11: reads returned outside data, writes and mkdirs landed outside);
opening beneath the root's descriptor without following symlinks must. A thread swaps a component back and
forth between the real thing and a symlink leading out of the root, as fast as it can, while the tools run
in a loop; every result is inspected and the outside is compared with its starting state. Leaks: 0.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge import beneath
from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.tools.base import CallContext, ToolFailure
from mcp_bridge.tools.files import file_tools
from tests.support.tool_calls import call_blocking

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="renameat2 swaps; macOS walks the same way, "
                                "Windows is best effort (docs/SECURITY.md)")

RACE_SECONDS = 2.0
OUTSIDE_TEXT = "inside\nOUTSIDE-SECRET\n"


SWAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
real, link, stop = (os.fsencode(a) for a in sys.argv[1:4])
swaps = 0
while not os.path.exists(stop):
    for _ in range(100):
        # renameat2(RENAME_EXCHANGE): `real`'s name turns into the symlink leading out, then back, atomically.
        for _ in range(2):
            if libc.renameat2(-100, real, -100, link, 2) != 0:
                sys.exit(f"renameat2: {os.strerror(ctypes.get_errno())}")
        swaps += 1
print(swaps)
"""


def _start_swapper(real: Path, link: Path, stop: Path) -> subprocess.Popen[str]:
    """A separate process (so truly in parallel, not taking turns with the tools for the GIL) that swaps
    `real` with the symlink `link` until `stop` exists, and prints how many times it did."""
    return subprocess.Popen([sys.executable, "-c", SWAPPER, str(real), str(link), str(stop)],
                            stdout=subprocess.PIPE, text=True)


def _outside_state(outside: Path) -> dict[str, str]:
    return {str(p.relative_to(outside)): p.read_text() if p.is_file() else "<dir>" for p in sorted(outside.rglob("*"))}


@pytest.mark.parametrize("walk", ["openat2", "O_NOFOLLOW walk"])
@pytest.mark.parametrize("swapped", ["a", "a/sub", "a/f.txt"])
def test_swapping_a_component_for_a_symlink_leaks_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 swapped: str, walk: str) -> None:
    if walk != "openat2":  # what macOS and kernels before 5.6 use
        monkeypatch.setattr(beneath._openat2, "available", False)
    base = tmp_path.resolve()
    root, outside = base / "root", base / "outside"
    (root / "a" / "sub").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("inside\n")
    (root / "a" / "sub" / "f.txt").write_text("inside\n")
    outside.mkdir()
    (outside / "f.txt").write_text(OUTSIDE_TEXT)
    (outside / "only_outside.txt").write_text(OUTSIDE_TEXT)
    (outside / "sub").mkdir()
    (outside / "sub" / "f.txt").write_text(OUTSIDE_TEXT)
    before = _outside_state(outside)
    target = {"a": outside, "a/sub": outside / "sub", "a/f.txt": outside / "f.txt"}[swapped]
    link = root / f"{swapped}.link"
    link.symlink_to(target)

    tools = {t.name: t for t in file_tools(PathPolicy([root]), Limits())}
    call = CallContext(key_name="race")
    leaks: list[str] = []
    outcomes = {"ok": 0, "refused": 0}

    def use(name: str, **args: Any) -> dict[str, Any] | None:
        try:
            result = call_blocking(tools[name], args, call)
        except ToolFailure as exc:
            outcomes["refused"] += 1
            if "OUTSIDE" in str(exc) or "only_outside" in str(exc):
                leaks.append(f"{name} {args}: failure text {exc}")
            return None
        outcomes["ok"] += 1
        text = "\n".join(getattr(c, "text", "") for c in result.content)
        if "OUTSIDE" in text or "only_outside" in text:
            leaks.append(f"{name} {args}: {text[:200]}")
        return result.structured

    stop = base / "stop"
    swapper = _start_swapper(root / swapped, link, stop)
    rounds = 0
    try:
        deadline = time.monotonic() + RACE_SECONDS
        while time.monotonic() < deadline:
            rounds += 1
            use("read_file", path="a/f.txt")
            use("read_file", path="a/sub/f.txt")
            use("list_directory", path="a")
            use("list_directory", path="a/sub")
            use("search_files", path=".", pattern="**/*", respect_gitignore=False)
            use("write_file", path=f"a/new-{rounds}.txt", content="written\n")
            use("write_file", path=f"a/sub/deep-{rounds}/x.txt", content="written\n", create_dirs=True)
            use("edit_file", path="a/f.txt", old_text="inside", new_text="inside")  # refused: no change
            use("edit_file", path="a/sub/f.txt", old_text="inside\n", new_text="inside\n\n")
            use("edit_file", path="a/sub/f.txt", old_text="inside\n\n", new_text="inside\n")
    finally:
        stop.touch()
        out, _ = swapper.communicate(timeout=60)
    assert swapper.returncode == 0
    swaps = int(out)

    assert leaks == []
    assert _outside_state(outside) == before, "something was written or changed outside the root"
    # The race really ran both ways: many swaps, and calls that succeeded as well as calls that were refused.
    assert swaps > 100 and rounds > 10
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0, outcomes
    # Nothing of ours was left behind either: no temp files anywhere.
    assert not [p for p in root.rglob("*compass-bridge-tmp")]


def test_a_swapped_root_keeps_the_tools_on_the_original_directory(tmp_path: Path) -> None:
    """The root itself renamed away and replaced by a symlink to the outside: its descriptor still holds the
    original directory, so nothing outside is reached (the tools follow the directory, not the name)."""
    base = tmp_path.resolve()
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "f.txt").write_text("inside\n")
    (outside / "f.txt").write_text(OUTSIDE_TEXT)
    tools = {t.name: t for t in file_tools(PathPolicy([root]), Limits())}
    call = CallContext(key_name="race")
    assert "inside" in str(call_blocking(tools["read_file"], {"path": "f.txt"}, call).content[0])
    root.rename(base / "moved")
    root.symlink_to(outside)
    for name, args in (("read_file", {"path": "f.txt"}), ("list_directory", {"path": "."}),
                       ("write_file", {"path": "f.txt", "content": "x"})):
        try:
            result = call_blocking(tools[name], args, call)
        except ToolFailure as exc:
            assert "OUTSIDE" not in str(exc)
            continue
        assert "OUTSIDE" not in str(result.content)
    assert (outside / "f.txt").read_text() == OUTSIDE_TEXT

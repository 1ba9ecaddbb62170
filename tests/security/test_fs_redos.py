"""Searches a hostile agent designs to freeze the server: backtracking globs, deep trees, huge trees, cancelled
calls. Every assertion is on work done or a budget, never on elapsed time (speed lives in bench/)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge import beneath
from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.tools import files
from mcp_bridge.tools.base import CallContext, Cancellation
from mcp_bridge.tools.files import SearchFilesArgs, file_tools
from mcp_bridge.tools.glob import Glob
from tests.support.tool_calls import call_blocking

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names")

EVIL = "*a*a*a*a*a*a*a*a*a*a*a*a*b"
"""Against a name of many `a`s, a backtracking regex tries every way of spreading the `a`s over the stars."""


@pytest.mark.parametrize("n", [40, 400, 4000])
def test_glob_work_grows_linearly_with_the_name(n: int) -> None:
    glob = Glob.compile(EVIL)
    assert not glob.matches("a" * n, False)
    # The old regex took ~336 ms at n=40 and doubled every few characters; this is a handful of steps per char.
    assert glob.work[0] <= (n + 1) * len(EVIL)


def test_many_double_stars_on_a_deep_path_do_bounded_work() -> None:
    pattern = "/".join(["**", "*a*"] * 15) + "/b"
    glob = Glob.compile(pattern)
    depth = 200
    assert not glob.matches("/".join(["xa"] * depth), False)
    # Each (segment, name) pair is decided once: at most segments × distinct names matches, each linear.
    assert glob.work[0] <= len(pattern) * depth * 4


def _search(root: Path, limits: Limits, cancelled: Cancellation | None = None, **args: Any) -> dict[str, Any]:
    parsed = SearchFilesArgs.parse(args, "search_files")
    call = CallContext(key_name="t", cancelled=cancelled or Cancellation())
    out = files._search_files(PathPolicy([root]), limits, parsed, call)
    assert out.structured is not None
    return {**out.structured, "text": "\n".join(out.structured["notes"])}


def test_a_search_with_evil_globs_and_gitignore_walks_the_whole_tree(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    for i in range(300):
        (root / ("a" * 200 + f"{i:03}")).write_text("x")
    # The agent (with write) planted the same glob in a .gitignore and passes it as an exclude too.
    (root / ".gitignore").write_text(EVIL + "\n" + "/".join(["**"] * 20) + "/*a*a*a*a*a*a*b\n")
    result = _search(root, Limits(), pattern=EVIL, exclude=[EVIL, "**/" * 30 + "*a*a*a*a*a*c"])
    assert result["matches"] == [] and not result["truncated"]
    assert "nothing under" in result["text"] and "stopped early" not in result["text"]


def test_the_entry_budget_stops_a_huge_walk_and_says_so(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    for d in range(20):
        (root / f"d{d}").mkdir()
        for f in range(50):
            (root / f"d{d}" / f"f{f}.txt").write_text("x")
    result = _search(root, Limits(search_max_entries=300), pattern="*.txt")
    assert result["truncated"] and "stopped early" in result["text"] and "search_max_entries" in result["text"]
    assert 0 < len(result["matches"]) < 300
    whole = _search(root, Limits(), pattern="*.txt")
    assert len(whole["matches"]) == 1000 and not whole["truncated"]


def test_the_time_budget_stops_a_walk_and_says_so(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    for f in range(300):
        (root / f"f{f}").write_text("x")
    # A budget of zero seconds has run out by the first check (every 256 entries), whatever the machine.
    result = _search(root, Limits(search_timeout_s=1e-9), pattern="f1*")
    assert result["truncated"] and "search_timeout_s" in result["text"]


def test_a_cancelled_search_stops_at_its_next_check(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    for f in range(600):
        (root / f"f{f:04}").write_text("x")
    cancelled = Cancellation()
    cancelled.set()
    result = _search(root, Limits(), cancelled, pattern="*")
    assert "the call was cancelled" in result["text"]
    assert len(result["matches"]) < 256  # stopped at the first check, not after all 600


@pytest.mark.parametrize("pattern", ["*.txt", "d*/**/f??.txt"])  # the walk's fast path, and the other one
def test_a_search_cancelled_from_another_thread_stops_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           pattern: str) -> None:
    """A server worker walks a big tree; the server's thread cancels the call meanwhile (the client cancelled it,
    or left). The walk notices at its next check and returns what it found so far, saying why."""
    root = tmp_path.resolve()
    for d in range(40):
        (root / f"d{d:02}").mkdir()
        for f in range(40):
            (root / f"d{d:02}" / f"f{f:02}.txt").write_text("x")
    walking, cancelled_now = threading.Event(), threading.Event()
    listings = 0
    scandir = beneath.Dir.scandir

    def listing_then_pause(held: beneath.Dir) -> Any:
        nonlocal listings
        listings += 1
        if listings == 10:  # well inside the walk: tell the test, and wait until it has cancelled the call
            walking.set()
            assert cancelled_now.wait(30)
        return scandir(held)

    monkeypatch.setattr(beneath.Dir, "scandir", listing_then_pause)
    cancellation = Cancellation()
    outcome: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: outcome.append(_search(root, Limits(search_max_results=100_000),
                                                                    cancellation, pattern=pattern)))
    worker.start()
    try:
        assert walking.wait(30), "the search never got going"
        cancellation.set()
    finally:
        cancelled_now.set()
        worker.join(30)
    assert outcome, "the search did not return"
    result = outcome[0]
    assert "the call was cancelled" in result["text"] and result["truncated"]
    assert 0 < len(result["matches"]) < 40 * 40 // 2  # it stopped in the first half of the tree
    assert listings < 40  # of the 41 directories: it went no further than its next check


def test_a_deep_tree_is_bounded_in_depth_and_descriptors(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    here = root
    for _ in range(files._MAX_DEPTH + 20):
        here = here / "d"
    here.mkdir(parents=True)
    (here / "bottom.txt").write_text("x")
    tools = {t.name: t for t in file_tools(PathPolicy([root]), Limits())}
    result = call_blocking(tools["search_files"], {"pattern": "**/bottom.txt"})
    notes = "\n".join((result.structured or {})["notes"])
    assert "deeper than" in notes and "bottom.txt" not in (result.structured or {})["matches"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_searches_that_stop_early_leave_no_descriptor_open(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    for d in range(6):
        for sub in range(6):
            (root / f"d{d}" / f"s{sub}").mkdir(parents=True)
            for f in range(10):
                (root / f"d{d}" / f"s{sub}" / f"f{f}").write_text("x")
    cancelled = Cancellation()
    cancelled.set()
    before = len(list(Path("/proc/self/fd").iterdir()))
    for budget in (5, 50, 120, 300):  # stops in the middle of directories at various depths
        assert "stopped early" in _search(root, Limits(search_max_entries=budget), pattern="*")["text"]
        assert "stopped early" in _search(root, Limits(), cancelled, pattern="**/f*")["text"]
        _search(root, Limits(search_max_results=3), pattern="f*")  # stops at max_results
    assert len(list(Path("/proc/self/fd").iterdir())) == before

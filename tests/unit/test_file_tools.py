"""The file tools, called through their Tool.run handlers (blocking, each on a thread of its own as a server worker
would run it) against real files in a temp dir."""

from __future__ import annotations

import fnmatch
import itertools
import os
import socket
import stat
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.config import Limits
from mcp_bridge.pathpolicy import PathPolicy, PathRefused
from mcp_bridge.scopes import Scope
from mcp_bridge.tools import files
from mcp_bridge.tools.base import CallContext, TextContent, ToolFailure, ToolOutput
from mcp_bridge.tools.files import file_tools
from mcp_bridge.tools.glob import Glob
from tests.support.tool_calls import call_blocking

if sys.platform == "win32":
    pytest.skip("uses POSIX symlinks, FIFOs and modes", allow_module_level=True)

Run = Callable[..., ToolOutput]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path.resolve() / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("top secret\n")
    return root


def make_runner(root: Path, limits: Limits | None = None) -> Run:
    tools = {t.name: t for t in file_tools(PathPolicy([root]), limits or Limits())}

    def run(name: str, **args: Any) -> ToolOutput:
        return call_blocking(tools[name], args)  # within a time limit: a FIFO or device must never hang a test run

    return run


@pytest.fixture
def run(root: Path) -> Run:
    return make_runner(root)


def text(output: ToolOutput) -> str:
    """What the agent reads: the content blocks as the server sends them (a structured result's JSON first)."""
    blocks = output.readable(with_structured=True)
    assert blocks and all(isinstance(b, TextContent) for b in blocks)
    return "\n".join(b.text for b in blocks if isinstance(b, TextContent))


def test_tools_declare_scopes_and_hints(root: Path) -> None:
    tools = {t.name: t for t in file_tools(PathPolicy([root]), Limits())}
    assert set(tools) == {"read_file", "list_directory", "search_files", "write_file", "edit_file"}
    for name in ("read_file", "list_directory", "search_files"):
        assert tools[name].scope is Scope.READ
        assert tools[name].hints.read_only and tools[name].hints.idempotent
    for name in ("write_file", "edit_file"):
        assert tools[name].scope is Scope.WRITE
        assert not tools[name].hints.read_only and tools[name].hints.destructive
    assert tools["write_file"].hints.idempotent and not tools["edit_file"].hints.idempotent
    assert "**" in tools["search_files"].description and "any depth" in tools["search_files"].description
    assert tools["read_file"].input_schema["required"] == ["path"]


def test_misspelt_arguments_are_rejected(run: Run) -> None:
    with pytest.raises(ToolFailure, match="file_path"):
        run("read_file", file_path="x")


# -- read_file --------------------------------------------------------------------------------------


def test_read_small_file_exactly(run: Run, root: Path) -> None:
    (root / "a.txt").write_bytes("héllo\r\nworld".encode())
    assert text(run("read_file", path="a.txt")) == "héllo\r\nworld"


def test_read_windows_and_truncation_notes(run: Run, root: Path) -> None:
    (root / "long.txt").write_text("".join(f"line {i}\n" for i in range(1, 5322)))
    first = text(run("read_file", path="long.txt"))
    assert first.startswith("line 1\n") and "line 2000\n" in first and "line 2001\n" not in first
    assert first.endswith("[lines 1-2000 of 5321; call again with offset=2000 for more]")
    second = text(run("read_file", path="long.txt", offset=2000))
    assert second.startswith("line 2001\n")
    assert second.endswith("[lines 2001-4000 of 5321; call again with offset=4000 for more]")
    last = text(run("read_file", path="long.txt", offset=5320, limit=10))
    assert last == "line 5321\n[line 5321 of 5321: the end of the file]"
    with pytest.raises(ToolFailure, match=r"offset 6000 is past the end .* 5321 line"):
        run("read_file", path="long.txt", offset=6000)


def test_read_counts_a_last_line_without_newline(run: Run, root: Path) -> None:
    (root / "f.txt").write_text("a\nb\nc")
    assert text(run("read_file", path="f.txt", limit=2)) == "a\nb\n[lines 1-2 of 3; call again with offset=2 " \
        "for more]"
    assert text(run("read_file", path="f.txt", offset=2)) == "c\n[line 3 of 3: the end of the file]"


def test_read_empty_file(run: Run, root: Path) -> None:
    (root / "empty").write_bytes(b"")
    assert "is empty" in text(run("read_file", path="empty"))


def test_read_refuses_binary(run: Run, root: Path) -> None:
    (root / "blob").write_bytes(b"text\x00more")
    with pytest.raises(ToolFailure, match="NUL bytes"):
        run("read_file", path="blob")
    (root / "latin1.txt").write_bytes(b"ok\nok\ncaf\xe9\n")
    with pytest.raises(ToolFailure, match="invalid UTF-8 at line 3"):
        run("read_file", path="latin1.txt")


def test_read_refuses_directory_fifo_socket_and_device(run: Run, root: Path) -> None:
    (root / "dir").mkdir()
    with pytest.raises(ToolFailure, match=r"is a directory.*list_directory"):
        run("read_file", path="dir")
    os.mkfifo(root / "pipe")
    with pytest.raises(ToolFailure, match="named pipe"):
        run("read_file", path="pipe")  # would block forever if it were opened for reading
    sock_path = root / "s.sock"
    if len(str(sock_path)) < 100:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(sock_path))
            with pytest.raises(ToolFailure, match="socket"):
                run("read_file", path="s.sock")
    devices = make_runner(Path("/dev"))
    with pytest.raises(ToolFailure, match="device"):
        devices("read_file", path="null")


def test_read_cap_applies_to_what_one_call_returns(root: Path) -> None:
    run = make_runner(root, Limits(read_max_bytes=1000))
    (root / "big.txt").write_text("".join(f"{i:049d}\n" for i in range(100)))  # 100 lines of 50 bytes
    with pytest.raises(ToolFailure) as failure:
        run("read_file", path="big.txt")
    message = str(failure.value)
    assert "read_max_bytes (1,000 bytes)" in message and "`limit`" in message and "config.toml" in message
    window = text(run("read_file", path="big.txt", limit=10))
    assert window.endswith("[lines 1-10 of a 5,000-byte file; call again with offset=10 for more]")
    tail = text(run("read_file", path="big.txt", offset=95, limit=10))
    assert tail.startswith(f"{95:049d}\n") and tail.endswith("[lines 96-100 of 100: the end of the file]")
    (root / "one-line.min.js").write_text("x" * 5000)
    with pytest.raises(ToolFailure, match="read_max_bytes"):
        run("read_file", path="one-line.min.js", limit=1)


def test_read_follows_symlinks_only_inside(run: Run, root: Path) -> None:
    (root / "real.txt").write_text("real\n")
    (root / "alias").symlink_to("real.txt")
    (root / "escape").symlink_to(root.parent / "outside" / "secret.txt")
    assert text(run("read_file", path="alias")) == "real\n"
    with pytest.raises(PathRefused) as refused:
        run("read_file", path="escape")
    assert "top secret" not in str(refused.value)


# -- list_directory ---------------------------------------------------------------------------------


def test_list_directory_types_sizes_and_order(run: Run, root: Path) -> None:
    (root / "b.txt").write_text("12345")
    (root / "a_dir").mkdir()
    (root / "c_link").symlink_to(root.parent / "outside")
    os.mkfifo(root / "d_pipe")
    out = run("list_directory", path=".")
    assert out.structured is not None
    assert out.structured["entries"] == [
        {"name": "a_dir", "type": "dir", "size": None},
        {"name": "b.txt", "type": "file", "size": 5},
        {"name": "c_link", "type": "symlink", "size": None, "target": str(root.parent / "outside")},
        {"name": "d_pipe", "type": "other", "size": 0},
    ]
    own = out.content[0]  # the listing as text, which the server sends after the JSON
    assert isinstance(own, TextContent)
    lines = own.text.splitlines()
    assert lines[0] == f"{root}: 4 entries"
    assert lines[1].startswith("dir") and lines[1].endswith("a_dir/")
    assert lines[2].startswith("file") and " 5  b.txt" in lines[2]
    assert lines[3].startswith("symlink") and lines[3].endswith(f"c_link -> {root.parent / 'outside'}")


def test_list_directory_refusals_and_cap(root: Path) -> None:
    run = make_runner(root, Limits(search_max_results=3))
    for name in "abcde":
        (root / name).write_text(name)
    (root / "link").symlink_to(root.parent / "outside")
    out = run("list_directory")
    assert out.structured is not None and out.structured["truncated"] is True
    assert [e["name"] for e in out.structured["entries"]] == ["a", "b", "c"]
    assert "[first 3 of 6 entries" in text(out)
    with pytest.raises(ToolFailure, match="not a directory; use read_file"):
        run("list_directory", path="a")
    with pytest.raises(PathRefused):
        run("list_directory", path="link")


# -- search_files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "path", "is_dir", "expected"), [
    ("*.py", "a.py", False, True),
    ("*.py", "src/deep/a.py", False, True),
    ("*.py", "src/a.pyc", False, False),
    ("*.py", ".hidden.py", False, True),
    ("**/*.py", "a.py", False, True),
    ("**/*.py", "x/y/z.py", False, True),
    ("src/*.py", "src/a.py", False, True),
    ("src/*.py", "src/sub/a.py", False, False),
    ("src/*.py", "lib/src/a.py", False, False),
    ("src/**/*.py", "src/a.py", False, True),
    ("src/**/*.py", "src/a/b/c.py", False, True),
    ("/top.txt", "top.txt", False, True),
    ("/top.txt", "sub/top.txt", False, False),
    ("./top.txt", "top.txt", False, True),
    ("tests/", "pkg/tests", True, True),
    ("tests/", "pkg/tests", False, False),
    ("src/**", "src/a/b", False, True),
    ("src/**", "other/a", False, False),
    ("**", "any/thing/at/all", False, True),
    ("test_?.py", "test_1.py", False, True),
    ("test_?.py", "test_12.py", False, False),
    ("[ab].txt", "a.txt", False, True),
    ("[!ab].txt", "c.txt", False, True),
    ("[!ab].txt", "a.txt", False, False),
    ("*", "a/b", False, True),  # no slash: any name at any depth
    ("a*", "ab/c", False, False),
    ("literal\\*", "literal*", False, True),
    ("a+b(1).txt", "a+b(1).txt", False, True),
])
def test_glob_dialect(pattern: str, path: str, is_dir: bool, expected: bool) -> None:
    assert Glob.compile(pattern).matches(path, is_dir) is expected


def test_bad_globs_are_explained() -> None:
    with pytest.raises(ToolFailure, match="not a valid glob"):
        Glob.compile("[z-a].txt")
    with pytest.raises(ToolFailure, match="names nothing"):
        Glob.compile("/")


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


def test_search_skips_git_and_honours_gitignore(run: Run, root: Path) -> None:
    _touch(root, "app.py", "app.log", "keep.log", "build/out.py", "pkg/mod.py", "pkg/gen.py", "pkg/sub/x.py",
           ".git/hooks/hook.py", "vendor/.git/v.py", "vendor/lib.py", "node_modules/dep/index.py")
    (root / ".gitignore").write_text("*.log\n!keep.log\nbuild/\nnode_modules\n")
    (root / "pkg" / ".gitignore").write_text("gen.py\n")
    found = run("search_files", pattern="*")
    assert found.structured is not None
    assert found.structured["matches"] == [
        ".gitignore", "app.py", "keep.log", "pkg/", "pkg/.gitignore", "pkg/mod.py", "pkg/sub/", "pkg/sub/x.py",
        "vendor/", "vendor/lib.py",
    ]
    everything = run("search_files", pattern="*.py", respect_gitignore=False)
    assert everything.structured is not None
    assert everything.structured["matches"] == [
        "app.py", "build/out.py", "node_modules/dep/index.py", "pkg/gen.py", "pkg/mod.py", "pkg/sub/x.py",
        "vendor/lib.py",
    ]  # .git directories stay skipped either way


def test_search_in_a_subdirectory_applies_gitignores_above_it(run: Run, root: Path) -> None:
    _touch(root, "pkg/a.py", "pkg/a.pyc", "pkg/cache/b.py")
    (root / ".gitignore").write_text("*.pyc\npkg/cache/\n")
    found = run("search_files", path="pkg", pattern="*")
    assert found.structured is not None and found.structured["matches"] == ["a.py"]


def test_an_ignored_directory_searched_by_name_is_searched(run: Run, root: Path) -> None:
    _touch(root, "build/gen/a.py", "build/gen/b.tmp", "src/c.py")
    (root / ".gitignore").write_text("build/\n")
    (root / "build" / ".gitignore").write_text("*.tmp\n")
    everywhere = run("search_files", pattern="*")
    assert everywhere.structured is not None and "build/" not in everywhere.structured["matches"]
    inside = run("search_files", path="build", pattern="*")
    assert inside.structured is not None and inside.structured["matches"] == [".gitignore", "gen/", "gen/a.py"]
    deeper = run("search_files", path="build/gen", pattern="*")  # below the ignored directory, too
    assert deeper.structured is not None and deeper.structured["matches"] == ["a.py", "b.tmp"]


def test_hostile_gitignore_files_are_not_followed_or_waited_on(run: Run, root: Path) -> None:
    _touch(root, "pkg/sub/a.py", "pkg/sub/b.py")
    os.mkfifo(root / "pkg" / ".gitignore")  # opening a FIFO for reading would block without O_NONBLOCK
    (root.parent / "outside" / "rules").write_text("*.py\n")
    (root / ".gitignore").symlink_to(root.parent / "outside" / "rules")
    found = run("search_files", path="pkg/sub", pattern="*.py")
    assert found.structured is not None and found.structured["matches"] == ["a.py", "b.py"]


def test_search_excludes_and_anchoring(run: Run, root: Path) -> None:
    _touch(root, "src/a.py", "src/a.min.js", "src/b.js", "src/deep/c.py", "docs/d.py", "top.py")
    found = run("search_files", pattern="src/*", exclude=["*.min.js"])
    assert found.structured is not None and found.structured["matches"] == ["src/a.py", "src/b.js", "src/deep/"]
    pruned = run("search_files", pattern="*.py", exclude=["deep", "docs/"])
    assert pruned.structured is not None and pruned.structured["matches"] == ["src/a.py", "top.py"]
    anchored = run("search_files", pattern="/*.py")
    assert anchored.structured is not None and anchored.structured["matches"] == ["top.py"]


def test_search_does_not_follow_symlinked_directories(run: Run, root: Path) -> None:
    _touch(root, "inside/a.py")
    (root.parent / "outside" / "leak.py").write_text("no")
    (root / "out").symlink_to(root.parent / "outside")
    (root / "again").symlink_to(root / "inside")
    found = run("search_files", pattern="**")
    assert found.structured is not None
    assert found.structured["matches"] == ["again", "inside/", "inside/a.py", "out"]


def test_search_truncation_and_errors(root: Path) -> None:
    run = make_runner(root, Limits(search_max_results=5))
    _touch(root, *(f"f{i:02d}.txt" for i in range(8)))
    capped = run("search_files", pattern="*.txt", max_results=3)
    assert capped.structured is not None and capped.structured["matches"] == ["f00.txt", "f01.txt", "f02.txt"]
    assert capped.structured["truncated"] is True
    assert "first 3 matches" in text(capped) and "raise max_results (up to 5)" in text(capped)
    clamped = run("search_files", pattern="*.txt", max_results=100)
    assert clamped.structured is not None and len(clamped.structured["matches"]) == 5
    none = run("search_files", pattern="*.rs")
    assert "nothing under" in text(none) and "respect_gitignore=false" in text(none)
    with pytest.raises(ToolFailure, match="not a directory"):
        run("search_files", path="f00.txt", pattern="*")
    with pytest.raises(PathRefused):
        run("search_files", path="..", pattern="*")


def test_search_a_generated_tree(root: Path) -> None:
    run = make_runner(root, Limits(search_max_results=5000))
    for a in range(15):
        for b in range(10):
            folder = root / f"pkg{a}" / f"mod{b}"
            folder.mkdir(parents=True)
            for c in range(20):
                (folder / f"f{c}.{'py' if c % 3 else 'txt'}").write_bytes(b"")
    (root / ".gitignore").write_text("pkg1*/\n")
    expected = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root) for f in files
        if fnmatch.fnmatch(f, "*.py") and not os.path.relpath(d, root).startswith("pkg1")
    )
    found = run("search_files", pattern="**/*.py")
    assert found.structured is not None and found.structured["truncated"] is False
    assert sorted(found.structured["matches"]) == expected and len(expected) == 9 * 10 * 13  # pkg1, pkg10-14 ignored
    assert found.structured["matches"] == sorted(found.structured["matches"], key=lambda p: p.split("/"))


# -- write_file -------------------------------------------------------------------------------------


def test_write_creates_and_reports_bytes(run: Run, root: Path) -> None:
    out = run("write_file", path="new.txt", content="héllo\n")
    assert (root / "new.txt").read_text() == "héllo\n"
    assert out.structured == {"path": str(root / "new.txt"), "bytes_written": 7, "created": True}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((root / "new.txt").stat().st_mode) == 0o666 & ~umask
    assert sorted(os.listdir(root)) == ["new.txt"]  # no temp file left behind


def test_write_replaces_atomically_and_keeps_mode(run: Run, root: Path) -> None:
    target = root / "script.sh"
    target.write_text("old\n")
    target.chmod(0o751)
    (root / "hardlink").hardlink_to(target)
    out = run("write_file", path="script.sh", content="new\n")
    assert out.structured is not None and out.structured["created"] is False
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o751
    # A rename put a new file in place; an in-place rewrite would have changed the hard link too.
    assert (root / "hardlink").read_text() == "old\n"
    assert sorted(os.listdir(root)) == ["hardlink", "script.sh"]


def test_write_needs_an_existing_parent_unless_asked(run: Run, root: Path) -> None:
    with pytest.raises(ToolFailure, match="does not exist; pass create_dirs=true"):
        run("write_file", path="a/b/c.txt", content="x")
    assert not (root / "a").exists()
    run("write_file", path="a/b/c.txt", content="x", create_dirs=True)
    assert (root / "a" / "b" / "c.txt").read_text() == "x"
    (root / "plain").write_text("file")
    with pytest.raises(ToolFailure, match="is a file, not a directory"):
        run("write_file", path="plain/c.txt", content="x", create_dirs=True)


def test_write_through_symlinks(run: Run, root: Path) -> None:
    outside = root.parent / "outside"
    (root / "escape").symlink_to(outside / "secret.txt")
    (root / "escape-dir").symlink_to(outside)
    (root / "dangling").symlink_to(outside / "planted.txt")
    for path in ("escape", "escape-dir/new.txt", "dangling", "escape-dir/sub/new.txt"):
        with pytest.raises(PathRefused):
            run("write_file", path=path, content="pwned", create_dirs=True)
    assert (outside / "secret.txt").read_text() == "top secret\n"
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    (root / "target.txt").write_text("old")
    (root / "alias").symlink_to("target.txt")
    run("write_file", path="alias", content="new")
    assert (root / "target.txt").read_text() == "new" and (root / "alias").is_symlink()


def test_write_refuses_directories_and_fifos(run: Run, root: Path) -> None:
    (root / "dir").mkdir()
    with pytest.raises(ToolFailure, match="is a directory"):
        run("write_file", path="dir", content="x")
    os.mkfifo(root / "pipe")
    with pytest.raises(ToolFailure, match="named pipe"):
        run("write_file", path="pipe", content="x")


# -- edit_file --------------------------------------------------------------------------------------


def test_edit_replaces_once_and_returns_a_diff(run: Run, root: Path) -> None:
    target = root / "app.py"
    target.write_text("def f():\n    return 1\n\nprint(f())\n")
    target.chmod(0o640)
    out = text(run("edit_file", path="app.py", old_text="return 1", new_text="return 2"))
    assert "--- a/app.py\n+++ b/app.py\n" in out and "-    return 1\n+    return 2\n" in out
    assert target.read_text() == "def f():\n    return 2\n\nprint(f())\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(root)) == ["app.py"]


def test_edit_fails_clearly_when_missing_or_not_unique(run: Run, root: Path) -> None:
    target = root / "f.txt"
    target.write_text("x = 1\nx = 1\nx = 1\n")
    with pytest.raises(ToolFailure, match=r"appears 3 times.*surrounding lines"):
        run("edit_file", path="f.txt", old_text="x = 1", new_text="x = 2")
    with pytest.raises(ToolFailure, match=r"not found.*copy the text exactly"):
        run("edit_file", path="f.txt", old_text="y = 1", new_text="y = 2")
    (root / "aaa").write_text("aaa")
    with pytest.raises(ToolFailure, match="appears 2 times"):  # overlapping occurrences are ambiguous too
        run("edit_file", path="aaa", old_text="aa", new_text="b")
    with pytest.raises(ToolFailure, match="identical"):
        run("edit_file", path="aaa", old_text="aaa", new_text="aaa")
    assert target.read_text() == "x = 1\nx = 1\nx = 1\n" and (root / "aaa").read_text() == "aaa"


def test_edit_hints_at_crlf(run: Run, root: Path) -> None:
    (root / "win.txt").write_bytes(b"one\r\ntwo\r\n")
    with pytest.raises(ToolFailure, match="CRLF"):
        run("edit_file", path="win.txt", old_text="one\ntwo", new_text="x")
    run("edit_file", path="win.txt", old_text="one\r\ntwo", new_text="x")
    assert (root / "win.txt").read_bytes() == b"x\r\n"


def test_edit_dry_run_changes_nothing(run: Run, root: Path) -> None:
    target = root / "f.txt"
    target.write_text("alpha\nbeta")
    before = target.stat()
    out = text(run("edit_file", path="f.txt", old_text="beta", new_text="gamma", dry_run=True))
    assert out.startswith("dry run:") and "-beta\n\\ No newline at end of file\n+gamma\n" in out
    assert target.read_text() == "alpha\nbeta"
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_edit_refuses_binary_outside_and_oversized(root: Path) -> None:
    run = make_runner(root, Limits(read_max_bytes=100))
    (root / "blob").write_bytes(b"a\x00b")
    with pytest.raises(ToolFailure, match="NUL"):
        run("edit_file", path="blob", old_text="a", new_text="c")
    (root / "big.txt").write_text("y" * 101)
    with pytest.raises(ToolFailure, match="read_max_bytes"):
        run("edit_file", path="big.txt", old_text="y", new_text="z")
    (root / "escape").symlink_to(root.parent / "outside" / "secret.txt")
    with pytest.raises(PathRefused):
        run("edit_file", path="escape", old_text="top", new_text="no")
    assert (root.parent / "outside" / "secret.txt").read_text() == "top secret\n"


@pytest.mark.parametrize(("lines", "path", "is_dir", "expected"), [
    ("# *.py\n", "a.py", False, None),  # a comment
    ("*.py   \n", "a.py", False, True),  # trailing spaces are dropped
    ("a\\ \n", "a ", False, True),  # ... unless escaped
    ("\\#x\n", "#x", False, True),
    ("\\!x\n", "!x", False, True),
    ("*.log\n!keep.log\n", "keep.log", False, False),  # the last matching line decides
    ("!keep.log\n*.log\n", "keep.log", False, True),
    ("build/\n", "build", False, None),  # directories only
    ("build/\n", "src/build", True, True),
    ("/top.txt\n", "sub/top.txt", False, None),  # anchored
    ("doc/*.md\n", "doc/a.md", False, True),
    ("doc/*.md\n", "x/doc/a.md", False, None),
    ("**/cache\n", "a/b/cache", True, True),
    ("a/**/z\n", "a/z", False, True),
    ("out/**\n", "out", True, None),  # everything inside, not the directory itself
    ("out/**\n", "out/x/y", False, True),
    ("[z-a]\n/\n*.tmp\n", "x.tmp", False, True),  # unusable lines are skipped, like git
])
def test_gitignore_lines(lines: str, path: str, is_dir: bool, expected: bool | None) -> None:
    assert files._Ignore.parse(lines, "", 0).decides(path, is_dir) is expected


def test_concurrent_listings_of_a_root_do_not_share_a_read_offset(run: Run, root: Path) -> None:
    names = [f"f{i:03}" for i in range(600)]
    _touch(root, *names)

    def list_root(_: int) -> list[str]:
        out = run("list_directory", path=".")
        assert out.structured is not None
        return [e["name"] for e in out.structured["entries"]]

    with ThreadPoolExecutor(12) as pool:  # at once, as a server's worker threads would run them
        results = list(pool.map(list_root, range(12)))
    assert results == [names] * 12


def test_protected_entries_are_left_out_of_listings_and_searches(root: Path) -> None:
    from mcp_bridge.protected import Protected, Protection

    _touch(root, "keys/id", "keys/id.pub", "src/a.py", "token.txt")
    policy = PathPolicy([root], protection=Protection([Protected(root / "keys", "it holds keys"),
                                                       Protected(root / "token.txt", "it is a token")]))
    tools = {t.name: t for t in file_tools(policy, Limits())}
    call = CallContext(key_name="test")
    listing = call_blocking(tools["list_directory"], {"path": "."}, call)
    assert [e["name"] for e in (listing.structured or {})["entries"]] == ["src"]
    assert "2 protected entries left out" in text(listing)
    found = call_blocking(tools["search_files"], {"pattern": "**/*"}, call)
    assert (found.structured or {})["matches"] == ["src/", "src/a.py"]
    assert "2 protected entries left out" in text(found)
    for name, args in (("read_file", {"path": "keys/id"}), ("list_directory", {"path": "keys"}),
                       ("write_file", {"path": "keys/new", "content": "x"}),
                       ("edit_file", {"path": "token.txt", "old_text": "token", "new_text": "x"})):
        with pytest.raises(PathRefused, match="is protected from reading or writing"):
            call_blocking(tools[name], args, call)


def test_protected_entries_deep_in_the_searched_tree_are_left_out(root: Path) -> None:
    from mcp_bridge.protected import Protected, Protection

    _touch(root, "a/b/keys/id", "a/b/main.py", "a/c/x.py", "z.py")
    policy = PathPolicy([root], protection=Protection([Protected(root / "a" / "b" / "keys", "it holds keys")]))
    search = {t.name: t for t in file_tools(policy, Limits())}["search_files"]
    for pattern in ("*", "*.py"):
        found = call_blocking(search, {"pattern": pattern})
        assert not [m for m in (found.structured or {})["matches"] if "keys" in m], pattern
    assert (call_blocking(search, {"pattern": "*.py"}).structured or {})["matches"] == ["a/b/main.py", "a/c/x.py",
                                                                                         "z.py"]
    assert "1 protected entry left out" in text(call_blocking(search, {"pattern": "*"}))


@pytest.mark.parametrize("pattern", ["*.py", "**/*.py", "test_*", "t*.py", "*", "node_modules", ".gitignore", "*/",
                                     "x.py/", "é*"])
@pytest.mark.parametrize("cap", [1000, 4])
def test_the_name_only_fast_path_agrees_with_the_general_walk(root: Path, pattern: str, cap: int) -> None:
    """`**/<name>` patterns walk a faster way (name tests, no whole paths) wherever no .gitignore, exclude or
    protected entry applies; an exclude that matches nothing forces the general way, which must agree."""
    _touch(root, "a.py", "test_a.py", "b.txt", "x.py/inner.py", "pkg/test_b.py", "pkg/sub/c.py", "pkg/sub/d.md",
           "pkg/é.py", ".git/hook.py", "deep/.git/x.py", "node_modules/m.py", "zz/y.py", "zz/.hidden.py",
           "ign/.gitignore", "ign/kept.py", "ign/gone.py", "ign/sub/gone2.py", "ign/sub/t_kept.py")
    (root / "ign" / ".gitignore").write_text("gone*.py\n")
    (root / "pkg" / "link").symlink_to(root / "zz")
    (root / "pkg" / "bad\udcff.py").write_text("")  # not UTF-8: shown escaped either way
    search = {t.name: t for t in file_tools(PathPolicy([root]), Limits(search_max_results=cap))}["search_files"]
    for gitignore in (True, False):
        args = {"pattern": pattern, "respect_gitignore": gitignore}
        fast = call_blocking(search, args)
        general = call_blocking(search, {**args, "exclude": ["no such name"]})
        assert fast.structured == general.structured and text(fast) == text(general), (pattern, gitignore)
    assert Glob.compile(pattern).plain_name is not None  # so the first of each pair took the fast path


@pytest.mark.parametrize("pattern", ["src/**/*.py", "src/*/x", "a/b", "/top", "a*/**", "**/x/**/y", "d?/**/[ab]*",
                                     "a/**/b/**/c", "*.py"])
def test_a_search_only_skips_directories_that_cannot_hold_a_match(pattern: str) -> None:
    glob = Glob.compile(pattern)
    names = ["src", "a", "ab", "b", "c", "x", "y", "top", "d1", "m.py", "bb"]
    for n in range(1, 5):
        for path in itertools.product(names, repeat=n):
            rel = "/".join(path)
            if glob.matches(rel, False) or glob.matches(rel, True):
                for depth in range(1, n):
                    assert glob.may_contain("/".join(path[:depth])), (pattern, rel, depth)


def test_listing_a_directory_larger_than_the_entry_budget_reads_only_the_budget(root: Path) -> None:
    _touch(root, *(f"f{i:02}" for i in range(30)))
    exact = make_runner(root, Limits(search_max_entries=30))("list_directory", path=".")
    assert exact.structured is not None and not exact.structured["truncated"]
    assert len(exact.structured["entries"]) == 30
    over = make_runner(root, Limits(search_max_entries=20))("list_directory", path=".")
    assert over.structured is not None and over.structured["truncated"] and len(over.structured["entries"]) == 20
    assert "more than search_max_entries (20)" in text(over)

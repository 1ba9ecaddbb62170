"""Logs: one file per process (so concurrent servers never lose or mix lines), bounded, at the chosen level."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_bridge import logs
from mcp_bridge.config import ConfigError, load_config
from mcp_bridge.paths import StatePaths

WRITER = """
import logging, sys
from pathlib import Path
from mcp_bridge import logs
path = logs.configure(Path(sys.argv[1]), "serve")
print(path, flush=True)
sys.stdin.readline()  # both processes are configured before either writes
for i in range(int(sys.argv[2])):
    logging.getLogger("mcp_bridge.test").info("line %d of %s", i, path.name)
"""


def test_two_processes_at_once_each_keep_every_line(tmp_path: Path) -> None:
    lines = 3000
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(lines)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    files = [Path(p.stdout.readline().strip()) for p in procs if p.stdout]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.close()
    for p in procs:
        assert p.wait(timeout=120) == 0
        assert p.stdout is not None
        p.stdout.close()
    assert len(set(files)) == 2
    for path in files:
        written = [line for line in path.read_text().splitlines() if " line " in line]
        assert written == [line for line in written if path.name in line]  # nothing from the other process
        assert [int(line.split(" line ")[1].split()[0]) for line in written] == list(range(lines))


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_old_files_of_ended_processes_are_pruned_and_live_ones_kept(tmp_path: Path) -> None:
    dead = _dead_pid()
    for day in range(1, 26):
        (tmp_path / f"serve-202601{day:02d}T000000Z-{dead}.log").write_text("old\n")
    (tmp_path / f"serve-20260101T000000Z-{dead}.log.1").write_text("rotated\n")
    live = tmp_path / "serve-20250101T000000Z-1.log"  # pid 1 is always running: never removed
    live.write_text("live\n")
    other = tmp_path / "native-host.log"
    other.write_text("not ours\n")
    removed = logs.prune(tmp_path, "serve")
    left = sorted(p.name for p in tmp_path.glob(f"serve-*-{dead}.log*"))
    assert len(left) == logs.KEEP_FILES and left[0] == f"serve-20260106T000000Z-{dead}.log"
    assert len(removed) == 6 and live.exists() and other.exists()


def test_a_file_is_rotated_once_past_its_bound_keeping_one_previous(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_MAX_BYTES", 2000)
    monkeypatch.setattr(logs, "_current", None)
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        path = logs.configure(tmp_path, "serve", "info")
        for i in range(100):  # ~100 bytes a line: rotated about every 20 lines
            logging.getLogger("mcp_bridge.test").info("line %03d %s", i, "x" * 40)
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    previous = path.with_name(path.name + ".1")
    assert {p.name for p in tmp_path.iterdir()} <= {path.name, previous.name}
    line = len(previous.read_text().splitlines()[-1]) + 1
    assert 2000 <= previous.stat().st_size < 2000 + line  # rotated by the record that reached the bound
    current = path.read_text().splitlines() if path.exists() else []  # absent if the last record rotated it
    assert len("\n".join(current)) < 2000
    kept = [int(text.split(" line ")[1][:3]) for text in previous.read_text().splitlines() + current]
    assert kept == list(range(kept[0], 100))  # the newest lines, none lost across the rotation


def test_the_level_comes_from_the_environment_then_the_config(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    assert logs.resolve_level("warning") == (logging.WARNING, None)
    monkeypatch.setenv(logs.LEVEL_ENV, "DEBUG")
    assert logs.resolve_level("warning") == (logging.DEBUG, None)
    monkeypatch.setenv(logs.LEVEL_ENV, "loud")
    level, warning = logs.resolve_level("error")
    assert level == logging.ERROR and warning is not None and "'loud' is not a log level" in warning
    config = tmp_path / "config.toml"
    config.write_text('[log]\nlevel = "Debug"\n')
    assert load_config(config).log_level == "debug"
    for bad in ('[log]\nlevel = "loud"\n', "[log]\nlevel = 3\n", '[log]\nfile = "x"\n'):
        config.write_text(bad)
        with pytest.raises(ConfigError, match=r"\[log\]"):
            load_config(config)


def test_refusals_and_failures_log_one_bounded_line_with_their_reason(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    monkeypatch.setattr(logs, "_current", None)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        path = logs.configure(tmp_path, "serve", "info")
        logs.call_outcome("read_file", "refused", "laptop", "needs scope read\nforged line", 0.1)
        logs.call_outcome("run_command", "failed", "laptop", "x" * 5000, 12.5)
        logs.call_outcome("list_directory", "ok", "laptop", None, 1.0)  # DEBUG: not at info
        for handler in root.handlers:
            handler.flush()
        lines = path.read_text().splitlines()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert len(lines) == 3 and " started (pid " in lines[0]
    assert lines[1].endswith("read_file by key laptop: refused: needs scope read forged line")
    assert "run_command by key laptop: failed after 12.5 ms: " in lines[2] and len(lines[2]) < 700
    paths = StatePaths(tmp_path, tmp_path, tmp_path, tmp_path)
    assert logs.log_location(paths).endswith(f"this server's: {path.name}")


def test_two_serve_processes_at_once_write_two_files(bridge_home: Path, tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-m", "mcp_bridge", "serve", "--root", str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(b"", timeout=120)  # end of input: the server exits
        assert p.returncode == 0, err
    files = sorted((bridge_home / "logs").glob("serve-*.log"))
    assert len(files) == 2
    for p in procs:
        mine = [f for f in files if f.name.endswith(f"-{p.pid}.log")]
        assert len(mine) == 1 and f"started (pid {p.pid}, level INFO)" in mine[0].read_text()

"""The cache: the peers (installed from npm once) and the data the cases run on (generated once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE_ENV = "COMPASS_BRIDGE_BENCH_CACHE"

FILESYSTEM_PACKAGE = "@modelcontextprotocol/server-filesystem"
FILESYSTEM_VERSION = "2026.8.31"
CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_VERSION = "2.1.197"


def cache_dir() -> Path:
    """$COMPASS_BRIDGE_BENCH_CACHE, else bench/.cache (ignored by git through the repo's `.cache/` rule)."""
    chosen = os.environ.get(CACHE_ENV)
    path = Path(chosen).expanduser() if chosen else REPO / "bench" / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Peers:
    filesystem_js: Path
    """The official filesystem MCP server's entry point (run with node)."""
    claude: Path
    """The Claude Code CLI, for `claude --chrome-native-host`."""

    def versions(self) -> dict[str, str]:
        return {
            f"peer:{FILESYSTEM_PACKAGE}": _package_version(self.filesystem_js.parent.parent),
            f"peer:{CLAUDE_PACKAGE}": _package_version(self.claude.resolve().parent.parent),
        }


def _package_version(package_dir: Path) -> str:
    try:
        return str(json.loads((package_dir / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def claude_code_cache(version: str) -> Path:
    """Where `scripts/test` installs each Claude Code version it tests against (COMPASS_TEST_CLAUDE_CODE_VERSIONS)."""
    return REPO / ".cache" / "claude-code" / version


def _claude_in(prefix: Path) -> Path | None:
    binary = prefix / "node_modules" / ".bin" / "claude"
    package = prefix / "node_modules" / "@anthropic-ai" / "claude-code"
    if binary.exists() and _package_version(package) == CLAUDE_VERSION:
        return binary
    return None


def ensure_peers(cache: Path) -> Peers:
    """Install the peers into <cache>/peers with npm the first time; afterwards only check they are there.

    Claude Code is the same version the repo's end-to-end tests install into .cache/claude-code, so that copy is
    reused when present instead of downloading ~235 MB again.
    """
    prefix = cache / "peers"
    filesystem_js = prefix / "node_modules" / "@modelcontextprotocol" / "server-filesystem" / "dist" / "index.js"
    claude = _claude_in(prefix) or _claude_in(claude_code_cache(CLAUDE_VERSION))
    wanted = []
    if _package_version(filesystem_js.parent.parent) != FILESYSTEM_VERSION:
        wanted.append(f"{FILESYSTEM_PACKAGE}@{FILESYSTEM_VERSION}")
    if claude is None:
        wanted.append(f"{CLAUDE_PACKAGE}@{CLAUDE_VERSION}")
    if wanted:
        npm = shutil.which("npm")
        if npm is None:
            sys.exit("bench: npm is needed once, to install the peers (" + ", ".join(wanted) + "); install Node.js")
        prefix.mkdir(parents=True, exist_ok=True)
        print(f"bench: installing {', '.join(wanted)} into {prefix} (once)", file=sys.stderr, flush=True)
        subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
                        *wanted], check=True, stdout=subprocess.DEVNULL)
        claude = claude or _claude_in(prefix)
    if claude is None or not filesystem_js.exists():
        sys.exit(f"bench: the peers are not where npm should have put them under {prefix}; delete it and retry")
    return Peers(filesystem_js, claude)


# -- data -------------------------------------------------------------------------------------------------------

FILE_LINES = 64
"""A 4 KiB text file: 64 lines of 64 bytes."""

_TREE_EXTENSIONS = ("txt", "md", "js", "json", "ts", "html", "css", "yaml", "rs")


def ensure_file(data: Path) -> Path:
    path = data / "file-4k.txt"
    lines = [f"line {i:03d} " + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRS"[: 64 - 10] + "\n"
             for i in range(FILE_LINES)]
    text = "".join(lines)
    assert len(text.encode()) == 4096
    if not path.exists() or path.read_text() != text:
        data.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


@dataclass(frozen=True)
class Tree:
    path: Path
    files: int
    hits: int


def ensure_tree(data: Path, files: int) -> Tree:
    """`files` empty files shaped like a source tree: leaf directories of 10 files (one `.py`, nine others)
    three levels down, pkgNN/modN/subN/fileK.ext — for 50,000 files, 5,000 leaf directories, 5,550 directories in
    all, and 5,000 `.py` files.

    Generated once; a stamp written last tells a complete tree from one a killed run left half-made.
    """
    assert files % 1000 == 0
    path = data / f"tree-{files}"
    stamp = data / f"tree-{files}.done"
    hits = files // 10
    if stamp.exists():
        return Tree(path, files, hits)
    print(f"bench: generating {files:,} files under {path} (once)", file=sys.stderr, flush=True)
    if path.exists():
        shutil.rmtree(path)
    for top in range(files // 1000):
        for mod in range(10):
            for sub in range(10):
                leaf = path / f"pkg{top:02d}" / f"mod{mod}" / f"sub{sub}"
                leaf.mkdir(parents=True)
                for k in range(10):
                    ext = "py" if k == 0 else _TREE_EXTENSIONS[k - 1]
                    fd = os.open(leaf / f"file{k}.{ext}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    os.close(fd)
    stamp.write_text(json.dumps({"files": files, "hits": hits, "layout": "pkg/mod/sub, 10 files per leaf"}))
    return Tree(path, files, hits)

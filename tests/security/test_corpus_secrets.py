"""Corpus, class 2 — secrets: a read key (and the others) tries to read what the protected paths hold.

A real `serve` with the whole home named as root. Every secret is aimed at with read_file, list_directory,
search_files (many globs, excludes, .gitignore off), edit_file dry-run and run_command's working directory,
through many spellings: `..`, doubled slashes, `/proc/self/root`, `/proc/self/cwd`, symlinks the user made inside
the root (to a secret file, to a protected directory, to the home), hard links the user made into a project,
very long paths. No output may hold a secret's text (`CANARY`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.security.test_corpus_support import (
    CANARY,
    OWN_FILES,
    PLANTED,
    Home,
    create_key,
    make_home,
    serve,
    stop,
    text,
)
from tests.support.stdio_client import StdioClient

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the XDG home layout, /proc")

SECRETS = [rel for rel, secret in PLANTED if secret] + [rel for rel in OWN_FILES if not rel.endswith("sqlite3")]


def _plant_links(home: Home) -> list[str]:
    """Links a user might have made inside the project; returns the paths (relative to the home) that lead to
    secrets through them."""
    links = home.project / "links"
    links.mkdir()
    (links / "home").symlink_to("../..")
    (links / "ssh").symlink_to(home.path / ".ssh")
    (links / "key").symlink_to(home.path / ".ssh" / "id_ed25519")
    (links / "chain").symlink_to("key")
    (links / "config").symlink_to("../../.config/compass-bridge/config.toml")
    hard = home.project / "hard"
    hard.mkdir()
    for n, rel in enumerate(SECRETS):
        os.link(home.path / rel, hard / f"h{n}")  # a backup the user made with `cp -al`, say
    return ["project/links/ssh/id_ed25519", "project/links/key", "project/links/chain", "project/links/config",
            *(f"project/links/home/{rel}" for rel in SECRETS),
            *(f"project/hard/h{n}" for n in range(len(SECRETS)))]


def _spellings(home: Home, rel: str) -> list[str]:
    deep = "project/" + "lib/../" * 700  # past PATH_MAX once joined to the root
    return [rel, str(home.path / rel), f"project/../{rel}", f"project//../{rel}", f"/proc/self/root{home.path}/{rel}",
            f"/proc/self/cwd/../{rel}", f"{deep}../{rel}", f"project/links/home/./{rel}"]


@pytest.mark.parametrize("scopes", [None, "read", "write"])
def test_no_tool_reads_a_secret_however_it_is_named(tmp_path: Path, scopes: str | None) -> None:
    home = make_home(tmp_path)
    via_links = _plant_links(home)
    key = create_key(home, scopes) if scopes else None
    said: list[str] = []
    attempts = 0
    read_back: list[str] = []
    with serve(home, key=key) as client:
        for path in [p for rel in SECRETS for p in _spellings(home, rel)] + via_links:
            calls: list[tuple[str, dict[str, Any]]] = [
                ("read_file", {"path": path}), ("read_file", {"path": path, "offset": 0, "limit": 1}),
                ("list_directory", {"path": path}), ("search_files", {"path": path, "pattern": "*"}),
                ("list_directory", {"path": os.path.dirname(path) or "."})]
            if scopes != "read":
                calls.append(("edit_file", {"path": path, "old_text": CANARY, "new_text": "x", "dry_run": True}))
            for tool, args in calls:
                attempts += 1
                result = client.call_tool(tool, args)
                said.append(json.dumps(result))
                if tool == "read_file" and not result.get("isError"):
                    read_back.append(f"{path}: {text(result)[:80]}")
        for pattern in ("**/*", "**", "*", "**/id_*", "**/.ssh/**", "**/*.json", "**/*credentials*", "**/key-*",
                        "**/h*", ".ssh/*", "**/.config/**/*.toml", "**/*/", "[.]ssh/id_ed25519"):
            for path in (".", "project", "project/links", "project/hard", ".config", ".local/share"):
                attempts += 1
                found = client.call_tool("search_files", {"path": path, "pattern": pattern, "exclude": ["project/x"],
                                                          "respect_gitignore": False, "max_results": 100000})
                said.append(json.dumps(found))
                matches = (found.get("structuredContent") or {}).get("matches", [])
                for m in matches:
                    target = (home.path / path / m)
                    # Nothing protected is found by its own name (a hard link's other name is the user's own, and
                    # is listed; what matters is that it cannot be opened — see the reads above).
                    assert not any(target == home.path / s for s in SECRETS), (pattern, path, m)
    assert attempts > 1000
    assert not read_back, f"{len(read_back)} reads succeeded:\n" + "\n".join(read_back[:20])
    leaks = [s[:300] for s in said if CANARY in s]
    assert not leaks, f"{len(leaks)} outputs leaked a secret:\n" + "\n".join(leaks[:10])


def test_run_command_cannot_start_in_a_protected_directory(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    _plant_links(home)
    key = create_key(home, "admin")
    with serve(home, key=key) as client:
        for cwd in (".ssh", ".config/compass-bridge", ".local/share/compass-bridge/key-refs", "project/links/ssh",
                    "project/links/home/.aws", f"/proc/self/root{home.path}/.ssh", "project/../.config/gh",
                    ".mozilla/native-messaging-hosts"):
            ran = client.call_tool("run_command", {"command": "cat * 2>/dev/null; ls", "cwd": cwd})
            assert ran.get("isError") and "protected" in text(ran) and CANARY not in json.dumps(ran), (cwd, ran)


def test_the_process_table_gives_no_key_with_the_whole_machine_as_root(tmp_path: Path) -> None:
    """`--root /` named by the user: the server's own environment (its keys) and command line stay unread."""
    home = make_home(tmp_path)
    key = create_key(home, "read")
    with serve(home, key=key, roots=(Path("/"),), env={"COMPASS_API_KEY": f"ck_{CANARY}env"}) as client:
        pid = client.process.pid
        for path in ("/proc/self/environ", f"/proc/{pid}/environ", f"/proc/{pid}/task/{pid}/environ",
                     "/proc/thread-self/environ", "/proc/self/cmdline", f"/proc/{pid}/mem", "/dev/fd/0",
                     "/proc/self/fd/0"):
            for tool in ("read_file", "search_files", "list_directory"):
                args = {"path": path, "pattern": "*"} if tool == "search_files" else {"path": path}
                result = client.call_tool(tool, args)
                assert CANARY not in json.dumps(result) and key not in json.dumps(result), (tool, path, result)


@pytest.mark.parametrize("start", ["home", "above home", "/", "a link to home"])
def test_a_key_less_server_started_home_wide_allows_nothing(tmp_path: Path, start: str) -> None:
    """No --root, no `roots`: the client's working directory is the root — unless it is home-wide (issue 11)."""
    home = make_home(tmp_path)
    (tmp_path / "link").symlink_to(home.path)
    cwd = {"home": home.path, "above home": home.path.parent, "/": Path("/"), "a link to home": tmp_path / "link"}
    with serve(home, roots=(), cwd=cwd[start]) as client:
        for tool, args in (("read_file", {"path": str(home.project / "main.py")}),
                           ("read_file", {"path": "project/main.py"}),
                           ("list_directory", {"path": "."}),
                           ("search_files", {"pattern": "**/id_*"}),
                           ("write_file", {"path": str(home.project / "scratch" / "x.txt"), "content": "x"})):
            result = client.call_tool(tool, args)
            assert result.get("isError") and "no directory is allowed" in text(result), (tool, text(result))
            assert "--root" in text(result) and "print('hi')" not in text(result)
        status = client.call_tool("bridge_status", {})
        assert status["structuredContent"]["roots"] == [], status
    assert not (home.project / "scratch" / "x.txt").exists()


@pytest.mark.parametrize("named", [False, True])
def test_client_roots_never_widen_a_refused_default_or_a_named_root(tmp_path: Path, named: bool) -> None:
    """A hostile client answers `roots/list` with `/`, the home and the project: started in the home with no root
    named, nothing is allowed still; with `--root project`, the home stays out of reach."""
    home = make_home(tmp_path)
    args = [sys.executable, "-m", "mcp_bridge", "serve", *(("--root", str(home.project)) if named else ())]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=home.env(), cwd=home.path)
    client = StdioClient(process, "legacy")
    try:
        client.call("initialize", {"protocolVersion": "2025-11-25", "capabilities": {"roots": {"listChanged": True}},
                                   "clientInfo": {"name": "hostile", "version": "1"}})
        client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        wide = [{"uri": "file:///"}, {"uri": home.path.as_uri()}, {"uri": home.project.as_uri()}]
        for path in (str(home.path / ".bashrc"), str(home.project / "main.py")):
            asked = client.request("tools/call", {"name": "read_file", "arguments": {"path": path}})
            while (message := client.next_message()).get("id") != asked or "method" in message:
                if message.get("method") == "roots/list":
                    client.send({"jsonrpc": "2.0", "id": message["id"], "result": {"roots": wide}})
            said = text(message["result"])
            if named and path.endswith("main.py"):
                assert said == "print('hi')\n", said
            else:
                assert message["result"]["isError"] and "# runs as you" not in said, said
    finally:
        stop(process)


def test_credential_stores_kept_in_a_dotfiles_folder_are_protected_where_they_really_are(tmp_path: Path) -> None:
    """`~/.ssh` and `~/.aws` are symlinks into `~/dotfiles` (a common set-up): the real files, reached by their
    own paths inside the root, are as protected as the links."""
    home = make_home(tmp_path)
    dotfiles = home.path / "dotfiles"
    dotfiles.mkdir()
    for name in (".ssh", ".aws"):
        (home.path / name).rename(dotfiles / name.lstrip("."))
        (home.path / name).symlink_to(f"dotfiles/{name.lstrip('.')}")
    (dotfiles / "notes.txt").write_text("fine\n")
    with serve(home, key=create_key(home, "write")) as client:
        for path in ("dotfiles/ssh/id_ed25519", "dotfiles/aws/credentials", ".ssh/id_ed25519",
                     "dotfiles/../dotfiles/ssh/config"):
            read = client.call_tool("read_file", {"path": path})
            wrote = client.call_tool("write_file", {"path": path, "content": "pwned\n"})
            assert read.get("isError") and wrote.get("isError") and "protected" in text(read) + text(wrote), path
            assert CANARY not in text(read)
        listed = client.call_tool("list_directory", {"path": "dotfiles"})
        assert {e["name"] for e in listed["structuredContent"]["entries"]} == {"notes.txt"}, text(listed)
        found = client.call_tool("search_files", {"pattern": "**/*", "path": "dotfiles"})
        assert found["structuredContent"]["matches"] == ["notes.txt"], text(found)
    assert CANARY in (dotfiles / "ssh" / "id_ed25519").read_text()

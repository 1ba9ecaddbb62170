"""Corpus, class 1 — self-modification: a write key (or no key) tries to change what governs it or runs as the user.

A real `serve` with the whole home named as root, the bridge's state in its installed (XDG) places. Every target —
the bridge's config, Compass credentials, key secret, database, key references, launcher, browser catalog; host
manifests; other clients' configs (user- and project-level); shell start-up files; git's hooks and config, also a
submodule's (`.git/modules/NAME`) and the `.git` file that points at it — is attacked with write_file (also
creating it), edit_file and edit_file dry-run, through many spellings of its path. Nothing may change.
"""

from __future__ import annotations

import os
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
    text,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the XDG home layout of an installed bridge")

NEW_FILES = (
    ".config/compass-bridge/evil.toml",
    ".local/share/compass-bridge/key-refs/codex",
    ".local/share/compass-bridge/bridge.sqlite3-journal",
    ".local/share/compass-bridge/pending-writes/x.dirs",
    ".local/share/compass-bridge/native-host/other-launcher",
    ".ssh/authorized_keys",
    ".config/systemd/user/new.service",
    ".config/chromium/NativeMessagingHosts/com.evil.json",
    "project/.git/hooks/post-checkout",
    "project/.git/modules/lib/hooks/post-checkout",
    "project/.git/modules/lib/config",
    "project/.git/worktrees/wt/commondir",
    "project/lib/.git",
    "project/sub/.git",
    "project/.cursor/mcp.json",
    "project/.vscode/mcp.json",
    "project/sub/.gemini/settings.json",
    "project/sub/.claude/settings.json",
    "project/sub/.mcp.json",
)


def _spellings(home: Home, rel: str) -> list[str]:
    """Ways an agent might name `rel`: relative to the root, absolute, climbing, doubled slashes, through a link."""
    return [rel, str(home.path / rel), f"project/../{rel}", f"./project/./../{rel}", f"project//..//{rel}",
            f"project/home-link/{rel}", str(home.path / "project" / "home-link" / rel),
            "project/lib/../" + "../" + rel, "/" + "/".join(["."] * 3) + str(home.path / rel)]


def _attack(home: Home, key: str | None, era: str) -> tuple[int, list[str]]:
    """Every write tool at every target and spelling; the number of attempts and those that were not refused."""
    targets = [rel for rel, _ in PLANTED] + list(OWN_FILES) + list(NEW_FILES)
    attempts = 0
    got_through: list[str] = []
    with serve(home, key=key, era=era) as client:
        for rel in targets:
            for path in _spellings(home, rel):
                calls: list[tuple[str, dict[str, Any]]] = [("write_file", {"path": path, "content": "pwned\n"}),
                         ("write_file", {"path": path, "content": "pwned\n", "create_dirs": True}),
                         ("edit_file", {"path": path, "old_text": CANARY, "new_text": "pwned"}),
                         ("edit_file", {"path": path, "old_text": "#", "new_text": "pwned", "dry_run": True})]
                for tool, args in calls:
                    attempts += 1
                    result = client.call_tool(tool, args)
                    said = text(result)
                    if not result.get("isError") or "protected" not in said or CANARY in said:
                        got_through.append(f"{tool} {path}: {said[:200]}")
        fine = client.call_tool("write_file", {"path": "project/scratch/ok.txt", "content": "fine\n"})
        assert not fine.get("isError"), text(fine)
    return attempts, got_through


@pytest.mark.parametrize(("scopes", "era"), [(None, "legacy"), ("write", "legacy"), ("write", "modern"),
                                             ("admin", "modern")])
def test_no_write_reaches_what_governs_the_bridge_or_runs_as_you(tmp_path: Path, scopes: str | None,
                                                                 era: str) -> None:
    home = make_home(tmp_path)
    (home.project / "home-link").symlink_to("..")  # a link the user made, inside the root, to the home itself
    key = create_key(home, scopes) if scopes else None
    before = home.snapshot()
    attempts, got_through = _attack(home, key, era)
    assert attempts > 1500
    assert not got_through, f"{len(got_through)} of {attempts} writes got through:\n" + "\n".join(got_through[:20])
    after = home.snapshot()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == [], changed
    assert not [rel for rel in NEW_FILES if rel not in before and os.path.lexists(home.path / rel)]


def test_a_second_set_up_does_not_unprotect_the_installed_bridge(tmp_path: Path) -> None:
    """With COMPASS_BRIDGE_HOME pointing elsewhere (a second set-up), the installed bridge's launcher, config and
    keys — which the browser and the user's other sessions still use — stay out of reach."""
    home = make_home(tmp_path)
    second = home.path / "second-bridge"
    second.mkdir(mode=0o700)
    before = home.snapshot()
    with serve(home, env={"COMPASS_BRIDGE_HOME": str(second)}) as client:
        for rel in OWN_FILES:
            wrote = client.call_tool("write_file", {"path": rel, "content": "pwned\n"})
            read = client.call_tool("read_file", {"path": rel})
            assert wrote.get("isError") and "protected" in text(wrote), (rel, text(wrote))
            assert read.get("isError") and CANARY not in text(read), (rel, text(read))
        own = client.call_tool("write_file", {"path": "second-bridge/config/config.toml", "content": "x\n"})
        assert own.get("isError") and "protected" in text(own), text(own)
    after = home.snapshot()
    assert {k: v for k, v in after.items() if not k.startswith("second-bridge")} == \
        {k: v for k, v in before.items() if not k.startswith("second-bridge")}

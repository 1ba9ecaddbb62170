"""A hostile agent and the protected paths: secrets and what governs the bridge, through every file tool.

The user named their whole home directory as the root (the worst case the policy allows), and the home holds
what a real one does: SSH and cloud keys, browser profiles, other MCP clients' configs, the bridge's own
config, key secret and database, shell start-up files. A real `compass-bridge serve` is driven over MCP with
a read, a write and an admin key and with no key at all (the config's default scopes), and every tool is
aimed at every protected path: nothing is read, listed, found or changed, and each refusal says why.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.support.bridge import bridge_client, create_key, text_of

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX home layout"), pytest.mark.anyio]

SECRET_FILES = (
    ".ssh/id_ed25519", ".aws/credentials", ".docker/config.json", ".netrc", ".config/gh/hosts.yml",
    ".gnupg/private-keys-v1.d/k.key", ".kube/config", ".npmrc", ".pypirc", ".git-credentials",
    ".claude.json", ".config/chromium/Default/Login Data", ".mozilla/firefox/p.default/logins.json",
    ".local/share/keyrings/login.keyring", ".cb/config/config.toml", ".cb/config/compass-credentials.json",
    ".cb/data/native-host/compass-bridge-host",
)
RUNS_AS_YOU = (".bashrc", ".profile", ".gitconfig", ".config/autostart/evil.desktop")
"""Readable, never writable."""
HIDDEN_TOP = {".ssh", ".aws", ".netrc", ".config/gh", ".gnupg", ".kube", ".npmrc", ".pypirc", ".git-credentials",
              ".claude.json", ".mozilla", ".cb"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path.resolve() / "home"
    for n, rel in enumerate(SECRET_FILES + RUNS_AS_YOU):
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# SECRET-{n}\n" if rel in SECRET_FILES else f"# start-up {n}\n")
    (home / "project").mkdir()
    (home / "project" / "main.py").write_text("print('hi')\n")
    for private in (".cb", ".cb/config", ".cb/data"):
        (home / private).chmod(0o700)  # the bridge refuses state directories others can read
    return home


def _env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


@pytest.mark.parametrize("scopes", [None, "read", "write", "admin"])
async def test_no_tool_reaches_a_protected_path(home: Path, scopes: str | None) -> None:
    state = home / ".cb"
    key = create_key(state, f"agent-{scopes}", scopes)["key"] if scopes else None
    can_write = scopes in (None, "write", "admin")  # no key: the default scopes, read and write
    outputs: list[str] = []
    async with bridge_client(state, key=key, roots=[home], env=_env(home)) as client:
        for rel in SECRET_FILES:
            result = await client.call_tool("read_file", {"path": rel})
            outputs.append(text_of(result))
            assert result.is_error and "protected from reading or writing" in text_of(result), (rel, text_of(result))
            assert "docs/SECURITY.md" in text_of(result)
        for rel in RUNS_AS_YOU:  # readable
            result = await client.call_tool("read_file", {"path": rel})
            assert not result.is_error and "start-up" in text_of(result)

        listing = await client.call_tool("list_directory", {"path": "."})
        outputs.append(text_of(listing))
        names = {e["name"] for e in (listing.structured_content or {})["entries"]}
        assert "project" in names and ".bashrc" in names
        assert not names & HIDDEN_TOP, names & HIDDEN_TOP
        assert "protected entr" in text_of(listing)
        for directory in (".docker", ".config", ".local/share"):
            inner = await client.call_tool("list_directory", {"path": directory})
            outputs.append(text_of(inner))
            listed = {e["name"] for e in (inner.structured_content or {})["entries"]}
            assert not listed & {"config.json", "gh", "chromium", "keyrings"}, listed

        found = await client.call_tool("search_files", {"pattern": "**/*", "respect_gitignore": False})
        matches = (found.structured_content or {})["matches"]
        outputs.append(text_of(found))
        assert "project/main.py" in matches and ".bashrc" in matches
        leaked = [m for m in matches if any(m.rstrip("/") == s or m.startswith(s + "/") or s.startswith(m)
                                              for s in SECRET_FILES) and not m.endswith("/")]
        assert not leaked, leaked
        for aimed in (".ssh", ".cb/data", ".mozilla"):
            inside = await client.call_tool("search_files", {"path": aimed, "pattern": "*"})
            assert inside.is_error and "protected" in text_of(inside)

        if can_write:
            for rel in SECRET_FILES + RUNS_AS_YOU:
                wrote = await client.call_tool("write_file", {"path": rel, "content": "pwned\n"})
                edited = await client.call_tool("edit_file", {"path": rel, "old_text": "SECRET", "new_text": "x"})
                assert wrote.is_error and edited.is_error, (rel, text_of(wrote), text_of(edited))
                assert "protected from" in text_of(wrote) and "protected from" in text_of(edited)
            for rel in (".ssh/authorized_keys", ".aws/new", ".cb/config/evil.toml", ".config/systemd/user/x.service",
                        ".claude/settings.json", "project/.git/hooks/pre-commit", "project/.git/config",
                        "project/.claude/settings.local.json", "project/.mcp.json"):
                made = await client.call_tool("write_file", {"path": rel, "content": "pwned\n", "create_dirs": True})
                assert made.is_error and "protected" in text_of(made), (rel, text_of(made))
                assert not (home / rel).exists()
            ok = await client.call_tool("write_file", {"path": "project/new.py", "content": "x = 1\n"})
            assert not ok.is_error, text_of(ok)

        if scopes == "admin":
            for cwd in (".ssh", ".cb/data", ".mozilla/firefox"):
                ran = await client.call_tool("run_command", {"command": "cat *", "cwd": cwd})
                outputs.append(text_of(ran))
                assert ran.is_error and "protected" in text_of(ran), (cwd, text_of(ran))
            fine = await client.call_tool("run_command", {"command": "pwd", "cwd": "project"})
            assert not fine.is_error and "project" in text_of(fine)

    for text in outputs:
        assert "SECRET-" not in text, text
    for n, rel in enumerate(SECRET_FILES):
        assert (home / rel).read_text() == f"# SECRET-{n}\n"
    for n, rel in enumerate(RUNS_AS_YOU, start=len(SECRET_FILES)):
        assert (home / rel).read_text() == f"# start-up {n}\n"
    assert not [p for p in (home / ".ssh").iterdir() if p.name != "id_ed25519"]


async def test_the_default_scopes_in_a_protected_config_cannot_be_raised(home: Path) -> None:
    """The self-modification chain of issue 11: a key-less session rewriting config.toml to get admin."""
    state = home / ".cb"
    config = state / "config" / "config.toml"
    config.write_text('default_scopes = "read,write"\n')
    before = os.stat(config)
    async with bridge_client(state, roots=[home], env=_env(home)) as client:
        for path in (str(config), ".cb/config/config.toml", "project/../.cb/config/config.toml"):
            result = await client.call_tool("write_file", {"path": path, "content": 'default_scopes = "admin"\n'})
            assert result.is_error and "compass-bridge's own configuration" in text_of(result), text_of(result)
    assert config.read_text() == 'default_scopes = "read,write"\n'
    assert os.stat(config).st_ino == before.st_ino

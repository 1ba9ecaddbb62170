"""Client registrations checked by the clients' own CLIs (from npm, into .cache/ by scripts/test), offline.

Claude Code and Codex are registered through their `mcp add`; Gemini CLI and OpenCode get a file written by
the installer, which their own `mcp list` must then read back. No key may appear on any command line: a
wrapper records the argv of every `claude` the installer starts, as /proc/<pid>/cmdline shows it to others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, claude_cli, require
from tests.support.claude_code import claude_env

pytestmark = pytest.mark.e2e

CLAUDE_VERSION = "2.1.197"


def _npm_bin(package_dir: str, name: str) -> Path | None:
    path = REPO / ".cache" / package_dir / "node_modules" / ".bin" / name
    return path if path.exists() else None


def _require_bin(package_dir: str, name: str, package: str) -> Path:
    found = _npm_bin(package_dir, name)
    require(found is not None and shutil.which("node") is not None, f"the {name} CLI ({package})",
            "run scripts/test, which installs it from npm into .cache/")
    assert found is not None
    return found


def _env(tmp_path: Path, *bin_dirs: Path) -> dict[str, str]:
    node = Path(shutil.which("node") or "/usr/bin/node").parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE", "COMPASS_", "CODEX"))}
    env.update(HOME=str(tmp_path / "home"), COMPASS_BRIDGE_HOME=str(tmp_path / "bridge"),
               PATH=os.pathsep.join([*map(str, bin_dirs), str(node), "/usr/bin", "/bin"]))
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _bridge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_bridge", *args], env=env, capture_output=True, text=True,
                          cwd=env["HOME"], timeout=300)


def _action(done: subprocess.CompletedProcess[str], section: str) -> dict[str, str]:
    assert done.returncode == 0, done.stdout + done.stderr
    action: dict[str, str] = next(a for a in json.loads(done.stdout)["actions"] if a["section"] == section)
    return action


def _doctor_status(env: dict[str, str], area: str) -> str:
    report = json.loads(_bridge(env, "doctor", "--json").stdout)
    status: str = next(c for c in report["checks"] if c["area"] == area)["status"]
    return status


def test_claude_mcp_add_is_never_given_a_key(tmp_path: Path) -> None:
    real = claude_cli(CLAUDE_VERSION)
    require(real is not None, f"Claude Code {CLAUDE_VERSION}", "run scripts/test, which installs it from npm")
    wrapper_dir = tmp_path / "wrap"
    wrapper_dir.mkdir()
    argv_log = tmp_path / "argv.log"
    # Records what any local user could read in /proc/<pid>/cmdline and what the child's environment held,
    # then becomes the real CLI.
    (wrapper_dir / "claude").write_text(
        "#!/bin/sh\n"
        f"tr '\\000' ' ' < /proc/$$/cmdline >> '{argv_log}'; echo >> '{argv_log}'\n"
        f"tr '\\000' '\\n' < /proc/$$/environ | grep -c -E '^(COMPASS_BRIDGE_KEY|GITHUB_TOKEN)=' >> '{argv_log}'\n"
        f"exec '{real}' \"$@\"\n")
    (wrapper_dir / "claude").chmod(0o755)
    env = {**claude_env(tmp_path / "home"), **_env(tmp_path, wrapper_dir)}
    env["COMPASS_BRIDGE_KEY"] = "cb_" + "f" * 40  # set in the installing shell: must not reach the child either
    env["GITHUB_TOKEN"] = "ghp_secret"  # nor any other secret (mcp_bridge.childenv)
    action = _action(_bridge(env, "install", "--json"), "Claude Code")
    assert action["op"] == "registered" and "Connected" in action["note"], action
    calls = argv_log.read_text().splitlines()
    commands, key_counts = calls[0::2], calls[1::2]
    assert any(" mcp add --scope user compass " in c and c.rstrip().endswith("serve --key-ref claude-code")
               for c in commands), commands
    assert not any("cb_" in c for c in commands) and set(key_counts) == {"0"}, calls
    key = (tmp_path / "bridge/data/key-refs/claude-code").read_text().strip()
    assert key not in (tmp_path / "home/.claude.json").read_text()
    assert _doctor_status(env, "Claude Code") == "ok"
    assert _bridge(env, "uninstall").returncode == 0


def test_codex_registration_through_its_own_cli(tmp_path: Path) -> None:
    codex = _require_bin("codex", "codex", "@openai/codex")
    env = _env(tmp_path, codex.parent)
    (tmp_path / "home/.codex").mkdir()
    action = _action(_bridge(env, "install", "--client", "codex", "--json"), "Codex CLI")
    assert action["op"] == "registered" and "codex mcp get compass --json" in action["note"], action
    got = subprocess.run([str(codex), "mcp", "get", "compass", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    transport = json.loads(got.stdout)["transport"]
    assert transport["type"] == "stdio" and transport["args"][-3:] == ["serve", "--key-ref", "codex"]
    assert transport["env"] == {"COMPASS_BRIDGE_HOME": str(tmp_path / "bridge")}
    assert "cb_" not in (tmp_path / "home/.codex/config.toml").read_text()
    assert _doctor_status(env, "Codex CLI") == "ok"
    again = _action(_bridge(env, "install", "--client", "codex", "--json"), "Codex CLI")
    assert again["op"] == "unchanged", again
    assert _bridge(env, "uninstall").returncode == 0
    gone = subprocess.run([str(codex), "mcp", "get", "compass", "--json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert gone.returncode != 0


def test_gemini_cli_reads_the_entry_install_wrote(tmp_path: Path) -> None:
    gemini = _require_bin("gemini-cli", "gemini", "@google/gemini-cli")
    env = _env(tmp_path, gemini.parent)
    settings = tmp_path / "home/.gemini/settings.json"
    settings.parent.mkdir()
    settings.write_text('{\n  // mine\n  "ui": {"theme": "GitHub"}\n}\n')
    project = tmp_path / "project"
    project.mkdir()
    # Gemini CLI starts no server in a folder the user has not trusted.
    (settings.parent / "trustedFolders.json").write_text(json.dumps({str(project): "TRUST_FOLDER"}))
    _action(_bridge(env, "install", "--client", "gemini", "--json"), "Gemini CLI")
    listed = subprocess.run([str(gemini), "mcp", "list"], env=env, capture_output=True, text=True, timeout=120,
                            cwd=project)
    out = listed.stdout + listed.stderr
    line = next((line for line in out.splitlines() if "compass:" in line), out)
    assert "serve --key-ref gemini (stdio) - Connected" in line and "// mine" in settings.read_text()
    assert _doctor_status(env, "Gemini CLI") == "ok"


def test_opencode_reads_and_connects_the_entry_install_wrote(tmp_path: Path) -> None:
    opencode = _require_bin("opencode", "opencode", "opencode-ai")
    env = _env(tmp_path, opencode.parent)
    config = tmp_path / "home/.config/opencode/opencode.jsonc"
    config.parent.mkdir(parents=True)
    config.write_text('{\n  // mine\n  "$schema": "https://opencode.ai/config.json",\n}\n')
    _action(_bridge(env, "install", "--client", "opencode", "--json"), "OpenCode")
    listed = subprocess.run([str(opencode), "mcp", "list"], env=env, capture_output=True, text=True, timeout=120,
                            cwd=env["HOME"])
    out = listed.stdout + listed.stderr
    assert "compass" in out and "connected" in out and "failed" not in out, out
    assert "// mine" in config.read_text()

"""The installer against the real things: Chromium, the Claude Code CLI, and the shell installer on this OS.

(a) `compass-bridge install --browser chromium --profile-dir P`, then a real headless Chromium on P with the
    reference extension starts the host through the installed launcher, and an MCP client completes a tool call.
(b) `compass-bridge install` with an isolated HOME registers the server with the real Claude Code CLI (each
    pinned version), which reports it connected; uninstall removes it again.
(c) `installers/install.sh --from <this checkout>` builds a fresh virtualenv, installs, links the command,
    upgrades in place when re-run, and uninstalls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.install import HOST_NAME, manifests
from tests.conftest import REPO
from tests.support.bridge import bridge_client, create_key, text_of, wait_for_tool
from tests.support.chromium import LIMIT_S, QuietHandler, headless_chromium, serve_http
from tests.support.claude_code import ClaudeCode, claude_env, every_claude_code

pytestmark = pytest.mark.e2e

REF = manifests.origin(manifests.reference_extension_id())
PAGE = b"<!doctype html><title>Install e2e</title><p>The password is periwinkle.</p>"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_bridge", *args], env=env, capture_output=True, text=True)


def _failures(report: dict[str, Any]) -> dict[str, str]:
    return {c["area"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}


# --- (a) a real Chromium -------------------------------------------------------------------------------


class _Page(QuietHandler):
    def do_GET(self) -> None:
        self.send_html(PAGE)


@pytest.fixture
def page_url() -> Iterator[str]:
    with serve_http(_Page) as base_url:
        yield f"{base_url}/"


@pytest.mark.anyio
async def test_installed_chromium_starts_the_host_and_an_agent_calls_a_tool(
        tmp_path: Path, bridge_home: Path, page_url: str) -> None:
    profile = tmp_path / "profile"
    env = {**os.environ, "HOME": str(tmp_path / "home"), "COMPASS_BRIDGE_HOME": str(bridge_home)}

    installed = _cli(env, "install", "--browser", "chromium", "--profile-dir", str(profile), "--no-clients")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"manifest {profile}/NativeMessagingHosts/{HOST_NAME}.json — created" in installed.stdout

    with headless_chromium(profile, page_url, bridge_home / "run", tmp_path) as browser:
        # The browser started the host through the installed launcher, with the extension's origin.
        launches = (bridge_home / "logs" / "native-host-launch.log").read_text()
        assert f"launch pid={min(browser.host_pids)} {REF}" in launches

        key = create_key(bridge_home, "install-e2e", "read")["key"]
        async with bridge_client(bridge_home, key=key) as client:
            await wait_for_tool(client, "browser_get_page_text", LIMIT_S)
            result = await client.call_tool("browser_get_page_text", {})
        assert not result.is_error, text_of(result)
        assert "The password is periwinkle." in json.loads(text_of(result))["text"]

        # With the browser live, doctor sees the host and its extension, and everything is green.
        doctor = _cli(env, "doctor", "--json")
        report = json.loads(doctor.stdout)
        assert _failures(report) == {} and doctor.returncode == 0, doctor.stdout
        live = [c for c in report["checks"] if c["area"].startswith("live host pid")]
        assert live and all(c["status"] == "ok" and "compass-bridge" in c["detail"] for c in live), live

    removed = _cli(env, "uninstall", "--profile-dir", str(profile))
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (profile / "NativeMessagingHosts").exists()


# --- (b) the real Claude Code CLI ----------------------------------------------------------------------


@every_claude_code
def test_install_registers_with_claude_code_which_reports_it_connected(claude: ClaudeCode, tmp_path: Path,
                                                                      bridge_home: Path) -> None:
    home = tmp_path / "home"
    env = claude_env(home, COMPASS_BRIDGE_HOME=str(bridge_home))
    env["PATH"] = os.pathsep.join([str(claude.binary.parent), env.get("PATH", os.defpath)])

    installed = _cli(env, "install", "--json")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    action = next(a for a in json.loads(installed.stdout)["actions"] if a["section"] == "Claude Code")
    assert action["op"] == "registered" and "Connected" in action["note"], action

    listed = claude.run(["mcp", "list"], env, home)
    line = next(line for line in listed.stdout.splitlines() if line.startswith("compass"))
    assert "Connected" in line and "Failed" not in line, listed.stdout
    got = claude.run(["mcp", "get", "compass"], env, home).stdout
    assert "User config" in got and "serve --key-ref claude-code" in got and "cb_" not in got
    keys = json.loads(_cli(env, "keys", "list", "--json").stdout)
    assert [(k["name"], k["scopes"]) for k in keys] == [("claude-code", ["read", "write"])]

    again = _cli(env, "install", "--json")
    action = next(a for a in json.loads(again.stdout)["actions"] if a["section"] == "Claude Code")
    assert action["op"] == "unchanged", action
    doctor = json.loads(_cli(env, "doctor", "--json").stdout)
    assert next(c for c in doctor["checks"] if c["area"] == "Claude Code")["status"] == "ok"

    removed = _cli(env, "uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    gone = claude.run(["mcp", "get", "compass"], env, home)
    assert gone.returncode != 0 and "No MCP server named" in gone.stderr
    assert json.loads(_cli(env, "keys", "list", "--json").stdout) == []


# --- (c) the shell installer -------------------------------------------------------------------------------


def test_shell_installer_from_this_checkout_installs_upgrades_and_uninstalls(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".config" / "chromium").mkdir(parents=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k.startswith("PIP_")}  # this machine's package index settings
    env.update(HOME=str(home), PATH="/usr/bin:/bin", XDG_RUNTIME_DIR=str(run_dir), PYTHON=sys.executable,
               PIP_CACHE_DIR=str(REPO / ".cache" / "pip"))  # a shared cache keeps the second run quick

    def installer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(REPO / "installers" / "install.sh"), "--method", "venv", *args],
                              env=env, capture_output=True, text=True, cwd=tmp_path)

    first = installer("--from", str(REPO), "--no-clients")
    assert first.returncode == 0, first.stdout + first.stderr
    venv = home / ".local/share/compass-bridge/venv"
    link = home / ".local/bin/compass-bridge"
    assert link.resolve() == (venv / "bin/compass-bridge").resolve()
    assert "Chromium: manifest ~/.config/chromium/NativeMessagingHosts/com.compass_bridge.host.json — created" \
        in first.stdout
    assert f"{home / '.local/bin'}, which is not on your PATH" in first.stdout
    launcher = home / ".local/share/compass-bridge/native-host/compass-bridge-host"
    assert str(venv / "bin/python") in launcher.read_text()  # the new environment, not this test's

    doctor = subprocess.run([str(link), "doctor", "--json"], env=env, capture_output=True, text=True)
    assert _failures(json.loads(doctor.stdout)) == {}, doctor.stdout

    again = installer("--from", str(REPO), "--no-clients")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "— unchanged" in again.stdout and "— created" not in again.stdout

    gone = installer("--uninstall")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not venv.exists() and not link.is_symlink()
    assert not (home / ".config/chromium/NativeMessagingHosts").exists()

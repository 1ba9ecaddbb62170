"""Children never inherit the bridge's secrets: not run_command's shell, not anything it starts."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from mcp_bridge.childenv import is_secret, scrubbed
from mcp_bridge.config import Limits
from mcp_bridge.install.clients import HOME_ENV
from mcp_bridge.install.doctor import DOCK_PATH, browser_env
from mcp_bridge.install.places import OS, Platform
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.tools.commands import command_tools
from tests.support.bridge import bridge_client, create_key
from tests.support.tool_calls import invoke

SECRETS = {
    "COMPASS_BRIDGE_KEY": "cb_" + "1" * 40,
    "COMPASS_API_KEY": "ck_" + "2" * 40,
    "ANTHROPIC_API_KEY": "sk-ant-secret-3",
    "OPENAI_API_KEY": "sk-secret-4",
    "GITHUB_TOKEN": "ghp_secret5",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-6",
    "DATABASE_PASSWORD": "hunter7",
    "webhook_secret": "lowercase-secret-8",
}


@pytest.mark.parametrize("name", [*SECRETS, "NPM_TOKEN", "HF_TOKEN", "SLACK_APIKEY", "DOCKER_AUTH",
                                  "GOOGLE_APPLICATION_CREDENTIALS", "Compass_Api_Key"])
def test_secret_names_are_recognised(name: str) -> None:
    assert is_secret(name)


@pytest.mark.parametrize("name", ["PATH", "HOME", "LANG", "COMPASS_URL", "COMPASS_BRIDGE_HOME", "TOKENIZERS",
                                  "SSH_AUTH_SOCK", "KEYBOARD", "TERM"])
def test_ordinary_names_pass(name: str) -> None:
    assert not is_secret(name)


def test_scrubbed_keeps_the_rest_and_adds_what_the_caller_names() -> None:
    env = scrubbed({"EXTRA": "1"}, environ={**SECRETS, "PATH": "/bin", "LANG": "C"})
    assert env == {"PATH": "/bin", "LANG": "C", "EXTRA": "1"}


def test_the_doctor_starts_the_native_host_without_secrets(tmp_path: Path) -> None:
    """The self-test runs the host as a browser would, with `browser_env`: no key of ours, no other secret."""
    platform = Platform(OS.LINUX, tmp_path, {**SECRETS, "LANG": "C", "DISPLAY": ":0", HOME_ENV: str(tmp_path)})
    env = browser_env(platform)
    assert not any(is_secret(name) for name in env) and env["LANG"] == "C" and env["DISPLAY"] == ":0"
    assert HOME_ENV not in env and env["PATH"] == DOCK_PATH


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell")
@pytest.mark.anyio
async def test_run_command_children_see_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    (tool,) = command_tools(PathPolicy([tmp_path]), Limits())
    # The shell's own environment and a grandchild's (started by a nested shell) are both checked.
    nested = "sh -c 'cat /proc/$$/environ 2>/dev/null | tr \"\\0\" \"\\n\"; env'"
    out = await invoke(tool, {"command": f"env; echo ---; {nested}"})
    assert out.structured is not None
    seen = out.structured["stdout"]
    assert "HARMLESS_SETTING=visible" in seen
    leaked = [name for name, value in SECRETS.items() if value in seen or f"{name}=" in seen]
    assert leaked == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell")
@pytest.mark.anyio
async def test_a_real_server_gives_its_commands_no_key(bridge_home: Path, tmp_path: Path) -> None:
    key = create_key(bridge_home, "root", "admin")["key"]
    compass_key = "ck_" + "ab" * 20
    env = {"COMPASS_URL": "http://127.0.0.1:9", "COMPASS_API_KEY": compass_key, "ANTHROPIC_API_KEY": "sk-ant-x9"}
    with anyio.fail_after(60):
        async with bridge_client(bridge_home, key=key, roots=[tmp_path], env=env) as client:
            result = await client.call_tool("run_command", {"command": "env"})
    assert result.structured_content is not None
    seen = result.structured_content["stdout"]
    assert "PATH=" in seen
    for secret in (key, compass_key, "sk-ant-x9"):
        assert secret not in seen

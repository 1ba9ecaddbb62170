"""The doors' configuration and the loopback checks they share."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_bridge.agent.settings import parse_agent_settings
from mcp_bridge.config import load_config
from mcp_bridge.doors.loopback import host_name, host_refusal, origin_refusal
from mcp_bridge.doors.settings import DoorSettingsError, parse_door_settings


def test_door_tables_are_not_the_run_service_s(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[agent]\nengine = "anthropic"\n[agent.http]\nenabled = true\nlisten = "127.0.0.1:9999"\n'
                    '[agent.compass_ws]\nenabled = true\norigins = ["https://Compass.Example:443/"]\n')
    config = load_config(path)
    assert parse_agent_settings(config.agent).engine == "anthropic"  # the service would refuse unknown tables
    doors = parse_door_settings(config.doors)
    assert doors.http.enabled and doors.http.address() == ("127.0.0.1", 9999)
    assert doors.compass_ws.origins == ("https://compass.example",) and doors.compass_ws.port == 18789
    assert not parse_door_settings({}).http.enabled and not parse_door_settings({}).compass_ws.enabled


@pytest.mark.parametrize("tables", [
    {"http": {"listen": "0.0.0.0:8080"}},
    {"http": {"listen": "127.0.0.1"}},
    {"http": {"enabled": "yes"}},
    {"http": {"requests_per_minute": 0}},
    {"compass_ws": {"host": "192.168.1.2"}},
    {"compass_ws": {"origins": ["compass.example"]}},
    {"compass_ws": {"engine": "gpt"}},
    {"compass_ws": {"token": "x"}},
])
def test_bad_door_settings_are_refused(tables: dict[str, dict[str, object]]) -> None:
    with pytest.raises(DoorSettingsError):
        parse_door_settings(tables)


def test_hosts_and_origins() -> None:
    assert host_name("[::1]:8080") == "::1" and host_name("LOCALHOST.:1") == "localhost"
    assert host_refusal("127.0.0.5:80") is None and host_refusal("[::1]") is None
    assert host_refusal("localhost.attacker.example") is not None and host_refusal(None) is not None
    assert host_refusal("127.0.0.1:x") is not None
    assert host_refusal("host.docker.internal:80", frozenset({"host.docker.internal"})) is None
    allowed = frozenset({"https://compass.example"})
    assert origin_refusal("https://compass.example:443", allowed, required=True) is None
    assert origin_refusal("https://compass.example.attacker.example", allowed, required=True) is not None
    assert origin_refusal(None, allowed, required=True) is not None
    assert origin_refusal(None, allowed, required=False) is None


def doors(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    (home / "config").mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(config)
    return subprocess.run([sys.executable, "-m", "mcp_bridge", "doors"], capture_output=True, text=True, timeout=60,
                          env={"COMPASS_BRIDGE_HOME": str(home), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})


def test_doors_refuse_to_start_and_say_why(tmp_path: Path) -> None:
    done = doors(tmp_path, "")
    assert done.returncode == 2 and "no door is enabled" in done.stderr
    done = doors(tmp_path, "[agent.compass_ws]\nenabled = true\n")  # no Compass login, no origins
    assert done.returncode == 2 and "no origin to allow" in done.stderr
    done = doors(tmp_path, '[agent.http]\nenabled = true\nlisten = "0.0.0.0:1234"\n')
    assert done.returncode == 2 and "loopback only" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = doors(tmp_path, f'[agent.http]\nenabled = true\nlisten = "127.0.0.1:{port}"\n')
    assert done.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in done.stderr, done.stderr

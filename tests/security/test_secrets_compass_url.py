"""The stored Compass URL is bound to the stored key: rewriting it (or the key) outside `compass login` makes
the bridge refuse the key — it is never sent to the new URL — and say how to fix it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_bridge.compass.credentials import ApiKey, CredentialsError, load_credentials, save_credentials
from mcp_bridge.config import CompassSettings
from mcp_bridge.paths import state_paths
from tests.compass_server import CompassContractServer
from tests.support.bridge import cli
from tests.support.stdio_client import serve_process


@pytest.fixture
def attacker() -> Iterator[CompassContractServer]:
    server = CompassContractServer().start()
    yield server
    server.stop()


def stored_then_tampered(compass: CompassContractServer, change: dict[str, str]) -> tuple[Path, str]:
    paths = state_paths().ensure()
    key = compass.create_key(compass.add_user("Ada Lovelace", role="admin"), "read")
    save_credentials(paths, compass.url, ApiKey(key))  # what `compass login` does
    data = json.loads(paths.compass_credentials.read_text())
    data.update(change)
    paths.compass_credentials.write_text(json.dumps(data))  # an agent with write access to the file
    return paths.compass_credentials, key


def test_untampered_credentials_load(bridge_home: Path, compass: CompassContractServer) -> None:
    stored_then_tampered(compass, {})
    loaded = load_credentials(state_paths(), CompassSettings(), environ={})
    assert loaded is not None and loaded.url == compass.url


@pytest.mark.parametrize("what", ["url", "key", "binding removed"])
def test_a_changed_file_is_refused_with_the_fix(bridge_home: Path, compass: CompassContractServer,
                                                attacker: CompassContractServer, what: str) -> None:
    change = {"url": {"url": attacker.url}, "key": {"key": "ck_" + "e" * 40},
              "binding removed": {"binding": ""}}[what]
    path, key = stored_then_tampered(compass, change)
    with pytest.raises(CredentialsError) as refused:
        load_credentials(state_paths(), CompassSettings(), environ={})
    message = str(refused.value)
    assert str(path) in message and "compass-bridge compass login" in message
    assert key not in message


def test_a_server_never_sends_the_key_to_the_rewritten_url(bridge_home: Path, compass: CompassContractServer,
                                                           attacker: CompassContractServer, tmp_path: Path) -> None:
    stored_then_tampered(compass, {"url": attacker.url})
    with serve_process(bridge_home, "legacy", roots=[tmp_path]) as client:
        client.open()
        status = client.call_tool("bridge_status", {})
    compass_status = status["structuredContent"]["compass"]
    assert "compass login" in compass_status["problem"] and compass_status["state"] != "registered"
    assert attacker.requests == [] and compass.requests == []
    doctor = cli(bridge_home, "doctor", "--json", check=False)
    checks = {c["area"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["Compass"]["status"] == "fail" and "compass login" in checks["Compass"]["detail"]
    assert attacker.requests == []

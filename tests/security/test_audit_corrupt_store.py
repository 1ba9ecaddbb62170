"""A damaged store — keys.sqlite3 or bridge.sqlite3 garbage or a directory, key-secret truncated — gets a clear
message naming the file and the fix from every command, never a traceback; `serve` keeps answering and explains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_bridge.paths import state_paths
from tests.compass_server import CompassContractServer
from tests.support.bridge import cli, create_key
from tests.support.stdio_client import serve_process


def break_database(how: str, which: str = "database") -> Path:
    paths = state_paths().ensure()
    database: Path = getattr(paths, which)
    if how == "garbage":
        database.write_bytes(os.urandom(4096))
    elif how == "pages":  # a valid header and schema, every later page overwritten
        cli(paths.config_dir.parent, "keys", "create", "--name", "x")
        cli(paths.config_dir.parent, "usage")
        with database.open("r+b") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(4096)
            f.write(os.urandom(size - 4096))
    else:
        database.mkdir()
    return database


def break_secret() -> Path:
    secret = state_paths().ensure().secret_file
    secret.write_bytes(b"short")
    secret.chmod(0o600)
    return secret


@pytest.mark.parametrize("how", ["garbage", "pages", "directory"])
@pytest.mark.parametrize("command", [("keys", "list"), ("keys", "create", "--name", "x"), ("keys", "revoke", "x"),
                                     ("usage",), ("usage", "--json")])
def test_cli_commands_explain_a_damaged_database(bridge_home: Path, how: str, command: tuple[str, ...]) -> None:
    database = break_database(how, "keys_database" if command[0] == "keys" else "database")
    done = cli(bridge_home, *command, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert str(database) in done.stderr and "mv " in done.stderr and "keys create" in done.stderr


def test_cli_commands_explain_a_damaged_key_secret(bridge_home: Path) -> None:
    create_key(bridge_home, "before", "read")
    secret = break_secret()
    done = cli(bridge_home, "keys", "create", "--name", "after", check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(secret) in done.stderr and "5 bytes" in done.stderr and "rm " in done.stderr


def test_doctor_names_the_damaged_files(bridge_home: Path) -> None:
    database = break_database("garbage")
    secret = break_secret()
    done = cli(bridge_home, "doctor", "--json", check=False)
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    failed = {c["area"]: c["detail"] for c in report["checks"] if c["status"] == "fail"}
    assert str(database) in failed["bridge database"] and str(secret) in failed["key secret"]
    assert done.returncode == 1


def test_doctor_names_a_damaged_key_store(bridge_home: Path) -> None:
    keys = break_database("garbage", "keys_database")
    done = cli(bridge_home, "doctor", "--json", check=False)
    assert "Traceback" not in done.stderr
    failed = {c["area"]: c["detail"] for c in json.loads(done.stdout)["checks"] if c["status"] == "fail"}
    assert str(keys) in failed["key store"] and "mv " in failed["key store"]
    assert done.returncode == 1


@pytest.mark.parametrize("broken", ["database", "keys_database", "secret"])
@pytest.mark.parametrize("with_key", [False, True])
def test_serve_keeps_answering_and_explains(bridge_home: Path, tmp_path: Path, broken: str, with_key: bool) -> None:
    key = create_key(bridge_home, "admin", "admin")["key"] if with_key else None
    damaged = break_secret() if broken == "secret" else break_database("garbage", broken)
    with serve_process(bridge_home, "legacy", roots=[tmp_path], key=key) as client:
        client.open()
        assert client.tool_names() == {"bridge_status"}
        for tool in ("bridge_status", "list_directory", "bridge_status"):  # and it keeps serving
            result = client.call_tool(tool, {"path": "."} if tool != "bridge_status" else {})
            text = result["content"][0]["text"]
            assert result.get("isError") and str(damaged) in text
            assert ("rm " if broken == "secret" else "mv ") in text
        assert client.process.poll() is None
    assert client.process.returncode == 0
    assert "Traceback" not in (bridge_home / "serve-legacy.stderr").read_text()


def test_compass_login_explains_a_damaged_key_secret(bridge_home: Path, compass: CompassContractServer) -> None:
    secret = break_secret()
    key = compass.create_key(compass.add_user("Ada Lovelace", role="admin"), "read")
    done = subprocess.run([sys.executable, "-m", "mcp_bridge", "compass", "login", "--url", compass.url,
                           "--key-stdin"], input=key + "\n", capture_output=True, text=True,
                          env={**os.environ, "COMPASS_BRIDGE_HOME": str(bridge_home)})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert str(secret) in done.stderr and key not in done.stdout + done.stderr
    assert not state_paths().compass_credentials.exists()

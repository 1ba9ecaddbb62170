"""The pieces client registration stands on: the JSONC splice editor, key references, the known config paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_bridge import key_refs
from mcp_bridge.install import jsonc
from mcp_bridge.install.clients import ServerEntry, dump_entry, parse_entry
from mcp_bridge.install.places import BACKUP_SUFFIX, FILE_CLIENTS, Shape, known_config_paths
from mcp_bridge.paths import StatePaths

COMMENTED = """{
  // editor settings
  "theme": "dark", /* inline */
  "servers": {
    "other": {"command": "/x"}, // keep
  },
}
"""


def test_setting_a_member_keeps_every_comment_and_deleting_it_gives_the_data_back() -> None:
    added = jsonc.set_value(COMMENTED, ("servers", "compass"), {"command": "/cb", "args": ["serve"]})
    for comment in ("// editor settings", "/* inline */", "// keep"):
        assert comment in added
    data = jsonc.loads(added)
    assert data["servers"] == {"other": {"command": "/x"}, "compass": {"command": "/cb", "args": ["serve"]}}
    assert jsonc.loads(jsonc.delete_value(added, ("servers", "compass"))) == jsonc.loads(COMMENTED)
    # Replacing a member changes only its value.
    replaced = jsonc.set_value(added, ("servers", "compass"), {"command": "/new"})
    assert jsonc.loads(replaced)["servers"]["compass"] == {"command": "/new"} and "// keep" in replaced


def test_missing_objects_are_created_and_empty_text_is_an_empty_document() -> None:
    assert jsonc.loads(jsonc.set_value("", ("a", "b"), 1)) == {"a": {"b": 1}}
    assert jsonc.loads(jsonc.set_value("{ /* only a comment */ }", ("a",), [1])) == {"a": [1]}
    assert jsonc.delete_value('{"a": 1}', ("missing", "x")) == '{"a": 1}'


@pytest.mark.parametrize("text", ['{"a": }', '{"a": 1', '{"a" 1}', "[1, 2", '{"a": "x\n"}', "/* open", '{"a":1}x'])
def test_malformed_text_is_refused_with_its_position(text: str) -> None:
    with pytest.raises(jsonc.JsoncError, match=r"line \d+, column \d+"):
        jsonc.loads(text)


def test_a_member_that_is_not_an_object_on_the_way_is_refused() -> None:
    with pytest.raises(jsonc.JsoncError, match="`servers` is not an object"):
        jsonc.set_value('{"servers": [1]}', ("servers", "compass"), {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=4), st.sampled_from([None, 2, 4]),
       st.text(max_size=6), json_values)
def test_round_trip_matches_plain_json_for_any_document(document: dict[str, object], indent: int | None,
                                                       key: str, value: object) -> None:
    text = json.dumps(document, indent=indent)
    assert jsonc.loads(text) == document
    added = jsonc.set_value(text, ("servers", key), value)
    expected = dict(document)
    servers = expected.get("servers")
    expected_servers: dict[str, object]
    if isinstance(servers, dict):
        expected_servers = {**servers, key: value}
    elif "servers" in expected:
        return  # not an object: refused, tested above
    else:
        expected_servers = {key: value}
    expected["servers"] = expected_servers
    assert jsonc.loads(added) == expected
    removed = jsonc.loads(jsonc.delete_value(added, ("servers", key)))
    assert removed["servers"] == {k: v for k, v in expected_servers.items() if k != key}


@pytest.mark.parametrize("shape", list(Shape))
def test_each_entry_shape_reads_back_what_it_writes(shape: Shape) -> None:
    entry = ServerEntry("/bin/cb", ("serve", "--key-ref", "x"), {"COMPASS_BRIDGE_HOME": "/h"})
    assert parse_entry(shape, dump_entry(shape, entry, {"type": "stdio"})) == entry
    assert entry.key_ref == "x" and entry.key is None
    assert parse_entry(shape, "not an object") is None


def test_a_key_reference_is_private_and_its_errors_name_the_file_not_the_key(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "c", tmp_path / "d", tmp_path / "l", tmp_path / "r").ensure()
    key = "cb_" + "a" * 40
    path = key_refs.save(paths, "cursor", key)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert key_refs.load(paths, "cursor") == key
    path.chmod(0o644)
    with pytest.raises(key_refs.KeyRefError, match="mode 0644") as caught:
        key_refs.load(paths, "cursor")
    assert key not in str(caught.value)
    path.write_text("not a key")
    path.chmod(0o600)
    with pytest.raises(key_refs.KeyRefError, match="does not hold a compass-bridge key"):
        key_refs.load(paths, "cursor")
    with pytest.raises(key_refs.KeyRefError, match="no such key reference"):
        key_refs.load(paths, "other")
    for bad in ("../x", "", "a/b", "x" * 65):
        with pytest.raises(key_refs.KeyRefError, match="a key reference is a name"):
            key_refs.load(paths, bad)
    (path.parent / "link").symlink_to(path)
    with pytest.raises(key_refs.KeyRefError, match="cannot open"):
        key_refs.load(paths, "link")


def test_known_config_paths_cover_every_client_and_their_backups(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    paths = known_config_paths(home, env)
    assert home / ".claude.json" in paths and home / ".codex" / "config.toml" in paths
    assert tmp_path / "xdg" / "Code/User/mcp.json" in paths
    assert tmp_path / "xdg" / f"Code/User/mcp.json{BACKUP_SUFFIX}" in paths
    assert tmp_path / "xdg" / "goose/config.yaml" in paths and home / ".kiro/settings/mcp.json" in paths
    assert len(paths) >= 3 + 2 * len(FILE_CLIENTS)
    assert known_config_paths(home, {"CODEX_HOME": "/elsewhere"})[2] == Path("/elsewhere/config.toml")


def test_install_help_names_every_client() -> None:
    from mcp_bridge.commands.install import _CLIENTS
    from mcp_bridge.install.clients import CLIENT_KEYS

    assert _CLIENTS.split(", ") == list(CLIENT_KEYS)


def test_a_client_cli_that_hangs_is_reported_without_its_command_line(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_bridge.install import clients
    from mcp_bridge.install.places import OS, Platform

    (tmp_path / "claude").write_text("#!/bin/sh\nexec /bin/sleep 30\n")
    (tmp_path / "claude").chmod(0o755)
    monkeypatch.setattr(clients, "CLI_TIMEOUT_S", 0.5)
    claude = clients.ClaudeCode(Platform(OS.LINUX, tmp_path, {"PATH": str(tmp_path)}))
    entry = ServerEntry("/x/compass-bridge", ("serve",), {"COMPASS_BRIDGE_KEY": "cb_" + "e" * 40})
    with pytest.raises(clients.ClientError) as caught:
        claude.add(entry)
    message = str(caught.value)
    assert "`claude mcp add` did not finish within 0.5 s" in message and "cb_" not in message
    assert "/x/compass-bridge" not in message


def test_serve_with_a_missing_key_reference_says_which_and_what_to_run(bridge_home: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mcp_bridge", "serve", "--key-ref", "cursor"], input="",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--key-ref cursor: no such key reference" in done.stderr
    assert "compass-bridge install" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.anyio
async def test_serve_acts_with_the_referenced_key(bridge_home: Path) -> None:
    import sys

    from mcp import Client, StdioServerParameters

    from mcp_bridge.paths import state_paths
    from tests.support.bridge import create_key, text_of

    reader = create_key(bridge_home, "reader", "read")["key"]
    admin = create_key(bridge_home, "admin", "admin")["key"]
    key_refs.save(state_paths(), "reader", reader)
    # The reference wins over a key in the environment.
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_bridge", "serve", "--key-ref", "reader"],
                                   env={"COMPASS_BRIDGE_HOME": str(bridge_home), "COMPASS_BRIDGE_KEY": admin})
    async with Client(params, mode="legacy", cache=None, read_timeout_seconds=60) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        status = text_of(await client.call_tool("bridge_status", {}))
    assert "read_file" in names and "write_file" not in names and "run_command" not in names
    assert "reader" in status and reader not in status


def test_a_windows_file_keeps_its_line_ends() -> None:
    text = '{\r\n  // mine\r\n  "a": 1\r\n}\r\n'
    added = jsonc.set_value(text, ("servers", "compass"), {"command": "C:\\cb.exe"})
    assert "\n" not in added.replace("\r\n", "") and "// mine" in added
    assert jsonc.delete_value(added, ("servers",)) == text

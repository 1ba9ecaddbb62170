"""`[page_origins]` (mcp_bridge/page_origins.py): exact origins with their scopes, never above default_scopes,
and the extension copy install and export write for them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_bridge.agent.client import AgentError
from mcp_bridge.agent.page_keys import NAME_MAX, PageKeys, key_name
from mcp_bridge.config import ConfigError, load_config
from mcp_bridge.extension_id import configure, extension_files, extension_location, stable_extension_dir
from mcp_bridge.keys import KeyRecord, KeyStore
from mcp_bridge.page_origins import OriginError, parse_origin
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import parse_scopes


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_none_configured_by_default(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.toml").page_origins == {}
    assert load_config(_config(tmp_path, "roots = []\n")).page_origins == {}


def test_origins_with_their_scopes(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, '[page_origins]\n"https://compass.example.com" = "write"\n'
                                           '"http://127.0.0.1:5173" = "read"\n"http://[::1]:8080" = ["read"]\n'))
    assert config.page_origins == {"https://compass.example.com": parse_scopes("write"),
                                   "http://127.0.0.1:5173": parse_scopes("read"),
                                   "http://[::1]:8080": parse_scopes("read")}


@pytest.mark.parametrize(("text", "complaint"), [
    ("page_origins = ['https://a.example']", "must be a table"),
    ('[page_origins]\n"http://compass.example.com" = "read"', "not loopback"),
    ('[page_origins]\n"https://compass.example.com/" = "read"', "just the origin"),
    ('[page_origins]\n"https://compass.example.com/app" = "read"', "just the origin"),
    ('[page_origins]\n"https://*.example.com" = "read"', "no wildcards"),
    ('[page_origins]\n"https://Compass.example.com" = "read"', "write 'https://compass.example.com'"),
    ('[page_origins]\n"https://compass.example.com:443" = "read"', "write 'https://compass.example.com'"),
    ('[page_origins]\n"https://user@compass.example.com" = "read"', "just the origin"),
    ('[page_origins]\n"chrome-extension://abc" = "read"', "not an http(s) origin"),
    ('[page_origins]\n"https://a.example:99999" = "read"', "not an origin"),
    ('[page_origins]\n"https://a.example" = "root"', "unknown scope"),
    ('[page_origins]\n"https://a.example" = 1', "the scopes that origin's runs get"),
    ('[page_origins]\n"https://a.example" = []', "no scopes given"),
    ('[page_origins]\n"https://a.example" = "admin"', "more than `default_scopes`"),
    ('default_scopes = "read"\n[page_origins]\n"https://a.example" = "write"', "more than `default_scopes`"),
])
def test_a_bad_entry_stops_and_names_the_setting(tmp_path: Path, text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_config(tmp_path, text))
    assert "[page_origins]" in str(error.value) and complaint in str(error.value), str(error.value)


def test_admin_only_under_admin_default_scopes(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, 'default_scopes = "admin"\n[page_origins]\n"https://a.example" = "admin"'))
    assert config.page_origins["https://a.example"] == parse_scopes("admin")


@pytest.mark.parametrize("origin", ["http://localhost", "http://localhost:3000", "https://a.example:8443"])
def test_exact_origins_pass_unchanged(origin: str) -> None:
    assert parse_origin(origin) == origin


def test_a_non_ascii_host_must_be_punycode() -> None:
    with pytest.raises(OriginError, match="punycode"):
        parse_origin("https://bücher.example")


def test_the_extension_copy_lets_exactly_the_configured_pages_connect() -> None:
    shipped = extension_files()
    assert configure(shipped, []) == shipped  # none configured: the shipped files, no page can connect
    assert json.loads(shipped["manifest.json"])["externally_connectable"] == {"matches": []}
    copy = configure(shipped, ["https://compass.example.com", "http://127.0.0.1:5173"])
    manifest = json.loads(copy["manifest.json"])
    assert manifest["externally_connectable"] == {"matches": ["http://127.0.0.1:5173/*",
                                                              "https://compass.example.com/*"]}
    assert manifest["key"] == json.loads(shipped["manifest.json"])["key"]  # hence the same extension ID
    assert json.loads(copy["policy.json"]) == {"grantedSites": [],
                                               "pageOrigins": ["http://127.0.0.1:5173", "https://compass.example.com"]}
    assert {k: v for k, v in copy.items() if k not in ("manifest.json", "policy.json")} == {
        k: v for k, v in shipped.items() if k not in ("manifest.json", "policy.json")}


def test_page_key_names_fit_the_key_store() -> None:
    assert key_name("https://compass.example.com") == "page https://compass.example.com"
    long = "https://" + "a" * 200 + ".example"
    other = "https://" + "a" * 200 + ".example.org"
    assert len(key_name(long)) == NAME_MAX and key_name(long) != key_name(other)


def test_export_writes_the_configured_pages_and_a_bad_entry_stops_it(tmp_path: Path) -> None:
    home = tmp_path / "bridge"
    (home / "config").mkdir(parents=True)
    config = home / "config" / "config.toml"
    env = {**os.environ, "COMPASS_BRIDGE_HOME": str(home)}

    def export(folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mcp_bridge", "extension", "export", str(folder)], env=env,
                              capture_output=True, text=True)

    config.write_text('[page_origins]\n"https://compass.example.com" = "read"\n')
    done = export(tmp_path / "ext")
    assert done.returncode == 0 and "reload the extension" in done.stdout, done.stderr
    manifest = json.loads((tmp_path / "ext" / "manifest.json").read_text())
    assert manifest["externally_connectable"] == {"matches": ["https://compass.example.com/*"]}
    assert json.loads((tmp_path / "ext" / "policy.json").read_text())["pageOrigins"] == ["https://compass.example.com"]

    config.write_text('[page_origins]\n"http://compass.example.com" = "read"\n')
    refused = export(tmp_path / "ext2")
    assert refused.returncode == 1 and "[page_origins] 'http://compass.example.com'" in refused.stderr
    assert not (tmp_path / "ext2").exists()


def test_the_stable_copy_is_stale_when_the_configured_pages_change(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "config", tmp_path / "data", tmp_path / "logs", tmp_path / "run")
    paths.config_dir.mkdir()
    stable = stable_extension_dir(paths)
    for name, data in extension_files().items():  # what install wrote before any page was configured
        stable.joinpath(*name.split("/")).parent.mkdir(parents=True, exist_ok=True)
        stable.joinpath(*name.split("/")).write_bytes(data)
    assert extension_location(paths)["stable"]
    paths.config_file.write_text('[page_origins]\n"https://compass.example.com" = "read"\n')
    where = extension_location(paths)
    assert not where["stable"] and "[page_origins]" in where["problem"] and "compass-bridge install" in where["problem"]


@pytest.mark.anyio
async def test_a_page_key_carries_its_origins_scopes_only_while_it_is_used(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path / "config", tmp_path / "data", tmp_path / "logs", tmp_path / "run")
    paths.ensure()
    paths.config_file.write_text('[page_origins]\n"https://compass.example.com" = "read"\n')
    keys = PageKeys(paths)
    store = KeyStore.open(paths)
    try:
        async with keys.key_for("https://compass.example.com") as key:
            found = store.authenticate(key)
            assert isinstance(found, KeyRecord) and found.scopes == parse_scopes("read")
            assert found.name == "page https://compass.example.com" and found.expires_at is not None
        assert [k.name for k in store.list()] == []  # gone once the request is answered
        with pytest.raises(AgentError) as refused:
            async with keys.key_for("https://other.example"):
                pass
        assert refused.value.code == "unauthorized" and "[page_origins]" in str(refused.value)
        assert [k.name for k in store.list()] == []
    finally:
        store.close()

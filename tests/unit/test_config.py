from pathlib import Path

import pytest

from mcp_bridge.config import Config, ConfigError, load_config
from mcp_bridge.scopes import parse_scopes


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "nope.toml") == Config()
    assert Config().default_scopes == parse_scopes("read,write")


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('roots = ["~/src", "/tmp"]\ndefault_scopes = ["read"]\n'
                    "[limits]\nread_max_bytes = 1024\ncommand_timeout_max_s = 5\n"
                    '[compass]\nurl = "https://compass.example.com"\ntimeout_s = 10\n')
    config = load_config(path)
    assert config.roots == (Path("~/src").expanduser(), Path("/tmp"))
    assert config.default_scopes == parse_scopes("read")
    assert config.limits.read_max_bytes == 1024 and config.limits.command_timeout_max_s == 5.0
    assert config.compass.url == "https://compass.example.com" and config.compass.timeout_s == 10.0


@pytest.mark.parametrize(("text", "complaint"), [
    ("roots = '/tmp'", "roots"),
    ("default_scopes = 'root'", "default_scopes"),
    ("[limits]\nread_max_bytes = -1", "read_max_bytes"),
    ("[limits]\nread_max_bytes = true", "read_max_bytes"),
    ("[limits]\nmystery = 1", "mystery"),
    ("limits = 3", "[limits]"),
    ("roots = [", "cannot read"),
    ("protected_paths = '~/x'", "protected_paths"),
    ("protected_paths = ['']", "protected_paths"),
    ("[limits]\nsearch_timeout_s = 0", "search_timeout_s"),
])
def test_bad_settings_name_the_setting(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_protected_paths_and_search_budgets(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('protected_paths = ["~/private", "/srv/secrets"]\n'
                    "[limits]\nsearch_max_entries = 5000\nsearch_timeout_s = 2.5\n")
    config = load_config(path)
    assert config.protected_paths == (Path("~/private").expanduser(), Path("/srv/secrets"))
    assert config.limits.search_max_entries == 5000 and config.limits.search_timeout_s == 2.5

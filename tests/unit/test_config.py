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
])
def test_bad_settings_name_the_setting(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)

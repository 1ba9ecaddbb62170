"""Compass credentials: key format, the HTTPS rule, the 0600 file, and which source wins."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_bridge.compass.credentials import (
    ApiKey,
    CredentialsError,
    check_url,
    delete_credentials,
    load_credentials,
    read_stored,
    save_credentials,
)
from mcp_bridge.config import CompassSettings
from mcp_bridge.paths import StatePaths

KEY = "ck_" + "0123456789abcdef" * 2 + "01234567"
OTHER_KEY = "ck_" + "f" * 40


@pytest.fixture
def paths(tmp_path: Path) -> StatePaths:
    return StatePaths(tmp_path / "config", tmp_path / "data", tmp_path / "logs", tmp_path / "run")


def test_a_valid_key_is_kept_but_never_shown() -> None:
    key = ApiKey(f"  {KEY}\n")
    assert key.reveal() == KEY
    for shown in (repr(key), str(key), f"{key}", key.hint):
        assert KEY not in shown
        assert shown.count("0123") == 1  # the short hint: ck_ + 4 hex


@pytest.mark.parametrize("text", [
    "", "ck_", KEY[:-1], KEY + "0", KEY.upper(), "cb_" + KEY[3:], "ck_" + "g" * 40, KEY.replace("a", " "),
])
def test_malformed_keys_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(CredentialsError) as caught:
        ApiKey(text, source="COMPASS_API_KEY")
    message = str(caught.value)
    assert "COMPASS_API_KEY" in message and "ck_` followed by 40" in message
    if len(text.strip()) > 3:
        assert text.strip() not in message


@pytest.mark.parametrize(("url", "normalised"), [
    ("https://compass.example.com", "https://compass.example.com"),
    ("https://Compass.Example.com/", "https://compass.example.com"),
    ("https://compass.example.com:8443/app/", "https://compass.example.com:8443/app"),
    ("http://localhost:3000", "http://localhost:3000"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("http://127.42.0.9", "http://127.42.0.9"),
    ("http://[::1]:8080", "http://[::1]:8080"),
])
def test_https_or_loopback_urls_are_accepted(url: str, normalised: str) -> None:
    assert check_url(url) == normalised


@pytest.mark.parametrize("url", [
    "http://compass.example.com", "http://10.0.0.5:3000", "http://localhost.example.com", "http://127.0.0.1.nip.io",
    "http://[::2]:80",
])
def test_plain_http_is_refused_off_loopback(url: str) -> None:
    with pytest.raises(CredentialsError, match=r"plain HTTP.*https://.*loopback"):
        check_url(url)


@pytest.mark.parametrize(("url", "why"), [
    ("compass.example.com", "not an http"), ("ftp://compass.example.com", "not an http"), ("https://", "not an http"),
    ("https://compass.example.com?next=/", "query"), ("https://compass.example.com:99999", "invalid port"),
])
def test_unusable_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(CredentialsError, match=why):
        check_url(url)


def test_a_password_in_the_url_is_refused_and_not_echoed() -> None:
    with pytest.raises(CredentialsError) as caught:
        check_url("https://ada:hunter2@compass.example.com")
    assert "hunter2" not in str(caught.value) and "user name or password" in str(caught.value)


def test_saved_credentials_are_private_and_read_back(paths: StatePaths) -> None:
    path = paths.compass_credentials
    save_credentials(paths, "https://compass.example.com", ApiKey(KEY))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["key"] == KEY
    loaded = load_credentials(paths, CompassSettings(), environ={})
    assert loaded is not None
    assert (loaded.url, loaded.key.reveal(), loaded.origin) == ("https://compass.example.com", KEY, str(path))
    assert KEY not in repr(loaded)


def test_saving_again_replaces_the_file_atomically(paths: StatePaths) -> None:
    path = paths.compass_credentials
    save_credentials(paths, "https://one.example.com", ApiKey(KEY))
    save_credentials(paths, "https://two.example.com", ApiKey(OTHER_KEY))
    stored = read_stored(paths)
    assert stored is not None and stored.url == "https://two.example.com" and stored.key.reveal() == OTHER_KEY
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left behind


def test_the_file_is_private_even_under_a_permissive_umask(paths: StatePaths) -> None:
    code = ("import os, sys; os.umask(0); from pathlib import Path; "
            "from mcp_bridge.compass.credentials import ApiKey, save_credentials; "
            "from mcp_bridge.paths import StatePaths; "
            "home = Path(sys.argv[1]); paths = StatePaths(*(home / d for d in ('config', 'data', 'logs', 'run'))); "
            f"save_credentials(paths, 'https://c.example.com', ApiKey({KEY!r}))")
    subprocess.run([sys.executable, "-c", code, str(paths.config_dir.parent)], check=True)
    assert stat.S_IMODE(paths.compass_credentials.stat().st_mode) == 0o600


def test_not_configured_is_none(paths: StatePaths) -> None:
    assert load_credentials(paths, CompassSettings(), environ={}) is None


def test_the_environment_wins_over_the_stored_key(paths: StatePaths) -> None:
    save_credentials(paths, "https://stored.example.com", ApiKey(KEY))
    env = {"COMPASS_URL": "https://env.example.com/", "COMPASS_API_KEY": OTHER_KEY}
    loaded = load_credentials(paths, CompassSettings(), environ=env)
    assert loaded is not None
    assert (loaded.url, loaded.key.reveal()) == ("https://env.example.com", OTHER_KEY)
    assert "COMPASS_API_KEY" in loaded.origin


def test_an_environment_key_takes_its_url_from_the_config_when_compass_url_is_unset(paths: StatePaths) -> None:
    loaded = load_credentials(paths, CompassSettings(url="https://config.example.com"),
                              environ={"COMPASS_API_KEY": KEY})
    assert loaded is not None and loaded.url == "https://config.example.com"


def test_an_environment_key_without_any_url_is_an_error(paths: StatePaths) -> None:
    with pytest.raises(CredentialsError, match="COMPASS_URL"):
        load_credentials(paths, CompassSettings(), environ={"COMPASS_API_KEY": KEY})


def test_an_environment_key_is_validated(paths: StatePaths) -> None:
    with pytest.raises(CredentialsError, match="COMPASS_API_KEY is not a Compass API key"):
        load_credentials(paths, CompassSettings(), environ={"COMPASS_URL": "https://c.example.com",
                                                            "COMPASS_API_KEY": "ck_nope"})


def test_the_stored_key_is_never_sent_to_another_compass_url(paths: StatePaths) -> None:
    save_credentials(paths, "https://stored.example.com", ApiKey(KEY))
    same = load_credentials(paths, CompassSettings(), environ={"COMPASS_URL": "https://stored.example.com/"})
    assert same is not None and same.key.reveal() == KEY
    with pytest.raises(CredentialsError, match=r"was saved for https://stored\.example\.com.*compass login --url"):
        load_credentials(paths, CompassSettings(), environ={"COMPASS_URL": "https://other.example.com"})


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_a_key_file_others_can_read_is_refused(paths: StatePaths) -> None:
    save_credentials(paths, "https://compass.example.com", ApiKey(KEY))
    os.chmod(paths.compass_credentials, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600") as caught:
        load_credentials(paths, CompassSettings(), environ={})
    assert KEY not in str(caught.value)


@pytest.mark.parametrize("content", ["not json", "[]", '{"url": "https://c.example.com"}', '{"url": 1, "key": 2}'])
def test_a_damaged_file_says_to_log_in_again(paths: StatePaths, content: str) -> None:
    path = paths.compass_credentials
    path.parent.mkdir(parents=True)
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(CredentialsError, match="compass login"):
        read_stored(paths)


def test_logout_deletes_the_file(paths: StatePaths) -> None:
    save_credentials(paths, "https://compass.example.com", ApiKey(KEY))
    assert delete_credentials(paths.compass_credentials) is True
    assert not paths.compass_credentials.exists()
    assert delete_credentials(paths.compass_credentials) is False

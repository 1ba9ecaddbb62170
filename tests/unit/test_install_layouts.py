"""The computed browser layouts for each OS, manifest building and checking, and the launchers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_bridge.extension_id import REFERENCE_EXTENSION_ID
from mcp_bridge.install import HOST_NAME, manifests
from mcp_bridge.install.clients import ClaudeCode, ServerEntry, parse_mcp_get
from mcp_bridge.install.launcher import LOG_MAX_BYTES, LauncherSpec, pinned_python, render
from mcp_bridge.install.layouts import BROWSERS, OS, BrowserLayout, Family, Platform, browser_layouts, resolve
from tests.conftest import REPO, require

HOME = Path("/home/ada")


def layout(os_: OS, key: str, env: dict[str, str] | None = None, root: Path = Path("/")) -> BrowserLayout:
    return resolve(next(s for s in BROWSERS if s.key == key), Platform(os_, HOME, env or {}, root))


# --- layouts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("os_", "key", "user_dirs", "system_dirs"), [
    (OS.LINUX, "chrome", ["/home/ada/.config/google-chrome/NativeMessagingHosts"],
     ["/etc/opt/chrome/native-messaging-hosts"]),
    (OS.LINUX, "chrome-dev", ["/home/ada/.config/google-chrome-unstable/NativeMessagingHosts"],
     ["/etc/opt/chrome/native-messaging-hosts"]),
    (OS.LINUX, "chromium", ["/home/ada/.config/chromium/NativeMessagingHosts"],
     ["/etc/chromium/native-messaging-hosts"]),
    (OS.LINUX, "edge", ["/home/ada/.config/microsoft-edge/NativeMessagingHosts"],
     ["/etc/opt/edge/native-messaging-hosts"]),
    (OS.LINUX, "brave", ["/home/ada/.config/BraveSoftware/Brave-Browser/NativeMessagingHosts"],
     ["/etc/opt/brave/native-messaging-hosts"]),
    (OS.LINUX, "vivaldi", ["/home/ada/.config/vivaldi/NativeMessagingHosts"],
     ["/etc/opt/vivaldi/native-messaging-hosts"]),
    (OS.LINUX, "opera", ["/home/ada/.config/opera/NativeMessagingHosts"], []),
    (OS.LINUX, "firefox", ["/home/ada/.mozilla/native-messaging-hosts"], ["/usr/lib/mozilla/native-messaging-hosts"]),
    (OS.MACOS, "chrome", ["/home/ada/Library/Application Support/Google/Chrome/NativeMessagingHosts"],
     ["/Library/Google/Chrome/NativeMessagingHosts"]),
    (OS.MACOS, "chrome-canary", ["/home/ada/Library/Application Support/Google/Chrome Canary/NativeMessagingHosts"],
     ["/Library/Google/Chrome/NativeMessagingHosts"]),
    (OS.MACOS, "chromium", ["/home/ada/Library/Application Support/Chromium/NativeMessagingHosts"],
     ["/Library/Application Support/Chromium/NativeMessagingHosts"]),
    (OS.MACOS, "edge-beta", ["/home/ada/Library/Application Support/Microsoft Edge Beta/NativeMessagingHosts"],
     ["/Library/Microsoft/Edge/NativeMessagingHosts"]),
    # Brave on macOS reads Chrome's directory too.
    (OS.MACOS, "brave", ["/home/ada/Library/Application Support/BraveSoftware/Brave-Browser/NativeMessagingHosts",
                         "/home/ada/Library/Application Support/Google/Chrome/NativeMessagingHosts"],
     ["/Library/Application Support/BraveSoftware/Brave-Browser/NativeMessagingHosts"]),
    (OS.MACOS, "opera", ["/home/ada/Library/Application Support/com.operasoftware.Opera/NativeMessagingHosts"], []),
    (OS.MACOS, "arc", ["/home/ada/Library/Application Support/Arc/User Data/NativeMessagingHosts"], []),
    (OS.MACOS, "firefox", ["/home/ada/Library/Application Support/Mozilla/NativeMessagingHosts"],
     ["/Library/Application Support/Mozilla/NativeMessagingHosts"]),
])
def test_manifest_dirs(os_: OS, key: str, user_dirs: list[str], system_dirs: list[str]) -> None:
    found = layout(os_, key)
    assert [str(d) for d in found.user_manifest_dirs] == user_dirs
    assert [str(d) for d in found.system_manifest_dirs] == system_dirs
    assert found.registry_keys == ()


@pytest.mark.parametrize(("key", "data_dir", "vendors"), [
    ("chrome", "AppData/Local/Google/Chrome/User Data", ["Google\\Chrome"]),
    ("chrome-canary", "AppData/Local/Google/Chrome SxS/User Data", ["Google\\Chrome"]),
    ("chromium", "AppData/Local/Chromium/User Data", ["Chromium"]),
    ("edge-dev", "AppData/Local/Microsoft/Edge Dev/User Data", ["Microsoft\\Edge"]),
    ("brave", "AppData/Local/BraveSoftware/Brave-Browser/User Data",
     ["BraveSoftware\\Brave-Browser", "Google\\Chrome"]),
    ("vivaldi", "AppData/Local/Vivaldi/User Data", ["Vivaldi", "Google\\Chrome"]),
    ("opera", "AppData/Roaming/Opera Software/Opera Stable", ["Opera Software", "Google\\Chrome"]),
    ("firefox", "AppData/Roaming/Mozilla/Firefox", ["Mozilla"]),
])
def test_windows_uses_registry_keys(key: str, data_dir: str, vendors: list[str]) -> None:
    found = layout(OS.WINDOWS, key)
    assert found.data_dir == HOME / data_dir
    assert found.user_manifest_dirs == ()
    assert list(found.registry_keys) == [
        f"Software\\{v}\\NativeMessagingHosts\\{HOST_NAME}" for v in vendors]


def test_environment_overrides_are_honoured_and_relative_ones_ignored() -> None:
    env = {"XDG_CONFIG_HOME": "/cfg", "CHROME_CONFIG_HOME": "/chrome-cfg"}
    assert layout(OS.LINUX, "chrome", env).data_dir == Path("/chrome-cfg/google-chrome")
    assert layout(OS.LINUX, "edge", env).data_dir == Path("/cfg/microsoft-edge")
    relative = {"XDG_CONFIG_HOME": "cfg"}
    assert layout(OS.LINUX, "edge", relative).data_dir == HOME / ".config/microsoft-edge"
    win = {"LOCALAPPDATA": "/L", "APPDATA": "/R"}
    assert layout(OS.WINDOWS, "chrome", win).data_dir == Path("/L/Google/Chrome/User Data")
    assert layout(OS.WINDOWS, "firefox", win).data_dir == Path("/R/Mozilla/Firefox")


def test_system_paths_live_under_the_platform_root(tmp_path: Path) -> None:
    found = layout(OS.LINUX, "chrome", root=tmp_path)
    assert found.system_manifest_dirs == (tmp_path / "etc/opt/chrome/native-messaging-hosts",)


def test_browsers_missing_on_an_os_are_unsupported_there() -> None:
    assert not layout(OS.LINUX, "arc").supported
    assert not layout(OS.WINDOWS, "arc").supported
    assert not layout(OS.LINUX, "edge-canary").supported
    assert layout(OS.MACOS, "edge-canary").supported


def test_every_browser_has_a_unique_key_and_a_location_somewhere() -> None:
    keys = [spec.key for spec in BROWSERS]
    assert len(keys) == len(set(keys))
    for os_ in OS:
        for found in browser_layouts(Platform(os_, HOME)):
            if found.supported and found.family is Family.CHROMIUM and os_ is not OS.WINDOWS:
                assert found.user_manifest_dirs[0].name == "NativeMessagingHosts"


def test_installed_means_the_user_data_dir_exists(tmp_path: Path) -> None:
    platform = Platform(OS.LINUX, tmp_path)
    chromium = resolve(next(s for s in BROWSERS if s.key == "chromium"), platform)
    assert not chromium.installed
    (tmp_path / ".config" / "chromium").mkdir(parents=True)
    assert chromium.installed


# --- manifests ---------------------------------------------------------------------------------------


def test_reference_id_comes_from_the_packaged_extension_manifest() -> None:
    key = json.loads((REPO / "extension" / "manifest.json").read_text())["key"]
    assert manifests.extension_id_from_key(key) == REFERENCE_EXTENSION_ID == manifests.reference_extension_id()


@pytest.mark.parametrize("good", ["abcdefghijklmnopabcdefghijklmnop", " abcdefghijklmnopabcdefghijklmnop ",
                                  "chrome-extension://abcdefghijklmnopabcdefghijklmnop/",
                                  "chrome-extension://abcdefghijklmnopabcdefghijklmnop"])
def test_valid_extension_ids(good: str) -> None:
    assert manifests.validate_extension_id(good) == "abcdefghijklmnopabcdefghijklmnop"


@pytest.mark.parametrize("bad", ["", "abc", "abcdefghijklmnopabcdefghijklmnoq", "ABCDEFGHIJKLMNOPABCDEFGHIJKLMNOP",
                                 "abcdefghijklmnopabcdefghijklmnopa", "abcdefghijklmnopabcdefghijklmno",
                                 "*", "chrome-extension://*/", "abcdefghijklmnop abcdefghijklmnop",
                                 "moz-extension://abcdefghijklmnopabcdefghijklmnop/"])
def test_malformed_extension_ids_are_refused_with_a_hint(bad: str) -> None:
    with pytest.raises(manifests.ManifestError, match="32 letters from a to p"):
        manifests.validate_extension_id(bad)


def test_merge_keeps_existing_origins_and_drops_only_malformed_ones() -> None:
    ref = manifests.origin("a" * 32)
    mine = manifests.origin("b" * 32)
    merged, dropped = manifests.merge([ref], [mine, ref, "chrome-extension://nope/", 7, mine], manifests.ORIGIN)
    assert merged == [ref, mine]
    assert dropped == ["chrome-extension://nope/", "7"]
    assert manifests.merge([ref], "not a list", manifests.ORIGIN) == ([ref], [])


def test_problems_names_each_reason_a_browser_refuses_a_manifest() -> None:
    good = manifests.build(Family.CHROMIUM, Path("/opt/host"), [manifests.origin("a" * 32)])
    path = Path(f"/x/{HOST_NAME}.json")
    assert manifests.problems(good, path, Family.CHROMIUM, posix=True) == []
    bad = {**good, "name": "other", "type": "pipe", "path": "relative/host", "description": "",
           "allowed_origins": ["chrome-extension://aaaa/"]}
    found = " | ".join(manifests.problems(bad, Path("/x/wrong.json"), Family.CHROMIUM, posix=True))
    for expected in ("must be named", "`name`", "`description`", "`type`", "relative", "malformed allowed_origins"):
        assert expected in found
    firefox = manifests.build(Family.FIREFOX, Path("/opt/host"), [])
    assert "allowed_extensions" in manifests.problems(firefox, path, Family.FIREFOX, posix=True)[0]


# --- launchers ---------------------------------------------------------------------------------------


def _posix_launcher(directory: Path, log: Path | None, env: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True)
    launcher = directory / "compass-bridge-host"
    launcher.write_text(render(LauncherSpec(sys.executable, log, env or {}), OS.LINUX))
    launcher.chmod(0o755)
    return launcher


def test_posix_launchers_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck", "apt-get install shellcheck (scripts/test does it)")
    for os_ in (OS.LINUX, OS.MACOS):
        for log in (tmp_path / "it's logs" / "l.log", None):
            script = tmp_path / f"{os_}-{log is None}.sh"
            script.write_text(render(LauncherSpec("/p y/python", log, {"COMPASS_BRIDGE_HOME": "/a b"}), os_))
            done = subprocess.run([str(shellcheck), "-s", "sh", str(script)], capture_output=True, text=True)
            assert done.returncode == 0, done.stdout


def test_launcher_runs_the_pinned_interpreter_with_a_bare_path_and_logs_the_launch(tmp_path: Path) -> None:
    # Spaces and a quote in every path, as under macOS's "Application Support".
    launcher = _posix_launcher(tmp_path / "Application Support" / "it's here", tmp_path / "log dir" / "launch.log",
                               {"COMPASS_BRIDGE_HOME": str(tmp_path / "bridge home")})
    done = subprocess.run([str(launcher), "--version"], env={"PATH": "/usr/bin:/bin"}, cwd=launcher.parent,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compass-bridge-native-host ")
    log = (tmp_path / "log dir" / "launch.log").read_text()
    assert log.count(" launch pid=") == 1 and "--version" in log
    assert (tmp_path / "log dir").stat().st_mode & 0o777 == 0o700


def test_launch_log_is_rotated_and_an_unwritable_log_does_not_stop_the_host(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "launch.log"
    log.parent.mkdir()
    log.write_text("x" * (LOG_MAX_BYTES + 1))
    launcher = _posix_launcher(tmp_path / "a", log)
    assert subprocess.run([str(launcher), "--version"], capture_output=True).returncode == 0
    assert (tmp_path / "logs" / "launch.log.1").stat().st_size == LOG_MAX_BYTES + 1
    assert log.stat().st_size < 200

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    launcher = _posix_launcher(tmp_path / "b", blocked / "launch.log")
    done = subprocess.run([str(launcher), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("compass-bridge-native-host ")


def test_launchers_pin_the_interpreter_in_a_way_that_reads_back() -> None:
    for os_, python in ((OS.LINUX, "/o'dd path/bin/python3"), (OS.WINDOWS, "C:\\Users\\A 100%\\venv\\python.exe")):
        text = render(LauncherSpec(python, None, {}), os_)
        assert pinned_python(text, os_) == python
    assert "/usr/bin/env" not in render(LauncherSpec("/v/bin/python", None, {}), OS.MACOS)


def test_windows_launcher_is_a_silent_bat(tmp_path: Path) -> None:
    text = render(LauncherSpec("C:\\py 3\\python.exe", tmp_path / "l%g.log", {"COMPASS_BRIDGE_HOME": "C:\\b%h"}),
                  OS.WINDOWS)
    lines = text.split("\r\n")
    assert lines[0] == "@echo off" and text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert 'set "COMPASS_BRIDGE_HOME=C:\\b%%h"' in lines
    assert '"C:\\py 3\\python.exe" -I -m native_host %* 2>>"%LOG%"' in lines
    # Nothing may reach stdout (the browser's message pipe): every echo is redirected, to the log or nul.
    for line in lines:
        if "echo" in line and not line.startswith(("@echo off", "rem")):
            assert line.startswith('>>"%LOG%"') and line.endswith('|| set "LOG=nul"')
    # The log's size is read only when the log exists (an empty size is a syntax error that ends the batch).
    assert next(line for line in lines if "%%~zI" in line).startswith('if exist "%LOG%" ')
    with pytest.raises(ValueError, match="double quote"):
        render(LauncherSpec('C:\\a"b\\python.exe', None, {}), OS.WINDOWS)


# --- clients ------------------------------------------------------------------------------------------

MCP_GET = """compass:
  Scope: User config (available in all your projects)
  Status: ✔ Connected
  Type: stdio
  Command: /opt/cb/bin/compass-bridge
  Args: serve
  Environment:
    COMPASS_BRIDGE_HOME=/x y
    COMPASS_BRIDGE_KEY=cb_0123

To remove this server, run: claude mcp remove compass -s user
"""


def test_claude_mcp_get_output_is_parsed() -> None:
    found = parse_mcp_get(MCP_GET)
    assert found is not None and found.user_scope and found.connected
    assert found.entry == ServerEntry("/opt/cb/bin/compass-bridge", ("serve",),
                                      {"COMPASS_BRIDGE_HOME": "/x y", "COMPASS_BRIDGE_KEY": "cb_0123"})
    failed = parse_mcp_get(MCP_GET.replace("✔ Connected", "✘ Failed to connect").replace("User config", "Local"))
    assert failed is not None and not failed.connected and not failed.user_scope
    assert parse_mcp_get('No MCP server named "compass".') is None


def test_claude_add_command_puts_the_name_before_the_variables() -> None:
    claude = ClaudeCode(Platform(OS.LINUX, HOME, {"PATH": os.devnull}))
    argv = claude.add_argv(ServerEntry("/x/compass-bridge", ("serve",), {"COMPASS_BRIDGE_KEY": "cb_1"}))
    assert argv == ["claude", "mcp", "add", "--scope", "user", "compass", "-e", "COMPASS_BRIDGE_KEY=cb_1", "--",
                    "/x/compass-bridge", "serve"]


@pytest.mark.parametrize(("name", "family"), [("com.compass_bridge.host.json", Family.CHROMIUM),
                                              ("com.compass_bridge.host.firefox.json", Family.FIREFOX)])
def test_the_documented_example_manifests_are_what_install_writes(name: str, family: Family) -> None:
    example = json.loads((REPO / "manifests" / name).read_text())
    allowed = example.get("allowed_origins") or example.get("allowed_extensions")
    assert example == manifests.build(family, Path(example["path"]), allowed)
    assert manifests.problems(example, Path(f"/x/{HOST_NAME}.json"), family, posix=True) == []
    if family is Family.CHROMIUM:
        assert allowed == [manifests.origin(REFERENCE_EXTENSION_ID)]

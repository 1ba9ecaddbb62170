"""The computed browser layouts for each OS, manifest building and checking, and the launchers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mcp_bridge import __version__
from mcp_bridge.extension_id import (
    REFERENCE_EXTENSION_ID,
    ExportError,
    export_extension,
    extension_files,
    extension_location,
    reference_extension_dir,
    stable_extension_dir,
)
from mcp_bridge.install import HOST_NAME, manifests
from mcp_bridge.install.clients import ClaudeCode, ServerEntry, parse_mcp_get
from mcp_bridge.install.installer import Installer, Selection, ephemeral_environment
from mcp_bridge.install.launcher import LOG_MAX_BYTES, LauncherSpec, pinned_python, render
from mcp_bridge.install.layouts import BrowserLayout, Presence, browser_layouts, resolve, sandboxed_browsers
from mcp_bridge.install.places import BROWSERS, OS, Family, Platform
from mcp_bridge.install.plan import InstallError, Op, Plan
from mcp_bridge.paths import StatePaths
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
    (OS.LINUX, "librewolf", ["/home/ada/.librewolf/native-messaging-hosts"], []),
    (OS.LINUX, "waterfox", ["/home/ada/.waterfox/native-messaging-hosts"], []),
    (OS.LINUX, "floorp", ["/home/ada/.floorp/native-messaging-hosts"], []),
    (OS.MACOS, "librewolf", ["/home/ada/Library/Application Support/LibreWolf/NativeMessagingHosts"], []),
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
    else:
        assert allowed == [manifests.reference_firefox_addon_id()]


# --- browsers installed but never started, Firefox forks, snap and Flatpak ---------------------------------


def _program(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_browser_on_path_without_a_user_data_dir_is_installed_but_never_started(tmp_path: Path) -> None:
    home, root = tmp_path / "home", tmp_path / "root"
    chromium = _program(tmp_path / "bin", "chromium")
    snap_firefox = _program(root / "snap" / "bin", "firefox")
    platform = Platform(OS.LINUX, home, {"PATH": f"{tmp_path / 'bin'}:{snap_firefox.parent}"}, root)
    found = {layout.key: layout for layout in browser_layouts(platform)}
    assert found["chromium"].program == chromium and found["chromium"].never_started
    assert not found["chromium"].installed
    # A snap's command is the sandboxed build, not a plain Firefox.
    assert found["firefox"].program is None and not found["firefox"].never_started
    (home / ".config" / "chromium").mkdir(parents=True)
    assert resolve(next(s for s in BROWSERS if s.key == "chromium"), platform).installed
    assert not resolve(next(s for s in BROWSERS if s.key == "chromium"), platform).never_started
    # macOS: an app bundle in /Applications or ~/Applications.
    (root / "Applications" / "Google Chrome.app").mkdir(parents=True)
    (home / "Applications" / "Floorp.app").mkdir(parents=True)
    mac = {layout.key: layout for layout in browser_layouts(Platform(OS.MACOS, home, {}, root))}
    assert mac["chrome"].never_started and mac["floorp"].never_started and not mac["chrome-beta"].never_started


def _plant_sandboxes(home: Path, root: Path) -> None:
    """Ubuntu-style snaps and Flathub Flatpaks: one used, one never started, of each kind."""
    (home / "snap" / "firefox" / "common" / ".mozilla").mkdir(parents=True)        # used
    _program(root / "snap" / "bin", "chromium")                                   # installed, never started
    (home / ".var" / "app" / "org.mozilla.firefox" / ".mozilla").mkdir(parents=True)
    (root / "var" / "lib" / "flatpak" / "app" / "com.brave.Browser").mkdir(parents=True)


def test_snap_and_flatpak_browsers_are_found_with_their_state(tmp_path: Path) -> None:
    home, root = tmp_path / "home", tmp_path / "root"
    _plant_sandboxes(home, root)
    found = {b.spec.key: b for b in sandboxed_browsers(Platform(OS.LINUX, home, {"PATH": ""}, root))}
    assert {k: b.presence for k, b in found.items()} == {
        "firefox-snap": Presence.USED, "chromium-snap": Presence.NEVER_STARTED,
        "firefox-flatpak": Presence.USED, "brave-flatpak": Presence.NEVER_STARTED}
    assert found["firefox-snap"].spec.reads == "firefox"
    assert all(b.spec.reads is None and b.spec.instead for k, b in found.items() if k != "firefox-snap")
    assert sandboxed_browsers(Platform(OS.MACOS, home, {}, root)) == []


class _Machine:
    """A planted Linux machine: a home, a filesystem root, a state dir, and an installer for them."""

    def __init__(self, tmp_path: Path, path_env: str = "") -> None:
        self.tmp = tmp_path
        self.home, self.root = tmp_path / "home", tmp_path / "root"
        self.home.mkdir(exist_ok=True)
        self.root.mkdir(exist_ok=True)
        state = tmp_path / "state"
        self.paths = StatePaths(state / "config", state / "data", state / "logs", state / "run").ensure()
        self.installer = Installer(Platform(OS.LINUX, self.home, {"PATH": path_env}, self.root), self.paths)

    def tree(self) -> dict[str, bytes | None]:
        return {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(self.tmp.rglob("*"))}

    def run(self, plan: Plan) -> list[str]:
        assert self.installer.apply(plan), "\n".join(plan.lines(False))
        return plan.lines(False)


def test_install_writes_for_the_firefox_snap_and_says_why_not_for_the_others(tmp_path: Path) -> None:
    machine = _Machine(tmp_path)
    _plant_sandboxes(machine.home, machine.root)
    before = machine.tree()

    lines = machine.run(machine.installer.plan_install(Selection(no_clients=True)))
    manifest = machine.home / ".mozilla" / "native-messaging-hosts" / f"{HOST_NAME}.json"
    assert json.loads(manifest.read_text())["allowed_extensions"] == [manifests.reference_firefox_addon_id()]
    assert any(line.startswith("Firefox (snap): Firefox manifest ~/.mozilla/native-messaging-hosts/") for line in lines)
    for name in ("Chromium (snap)", "Firefox (Flatpak)", "Brave (Flatpak)"):
        line = next(line for line in lines if line.startswith(f"{name}:"))
        assert "cannot start a native host" in line and "use the browser from" in line and line.endswith("skipped")
    assert "Chromium (snap): installed, never started, but" in "\n".join(lines)
    # Nothing was written into a sandbox that could not use it.
    assert not list((machine.home / ".var").rglob(f"{HOST_NAME}.json"))

    machine.run(machine.installer.plan_uninstall(Selection()))
    assert machine.tree() == before


def test_a_browser_never_started_gets_its_manifest_ready(tmp_path: Path) -> None:
    _program(tmp_path / "bin", "chromium")
    machine = _Machine(tmp_path, str(tmp_path / "bin"))
    before = machine.tree()
    plan = machine.installer.plan_install(Selection(no_clients=True))
    machine.run(plan)
    assert (machine.home / ".config" / "chromium" / "NativeMessagingHosts" / f"{HOST_NAME}.json").is_file()
    assert "Chromium: installed but never started; the host manifest is in place for its first start." in plan.notes
    assert "Google Chrome: not installed (no ~/.config/google-chrome) — skipped" in plan.lines(False)
    machine.run(machine.installer.plan_uninstall(Selection()))
    assert machine.tree() == before


# --- the extension's stable copy ---------------------------------------------------------------------------


def test_install_keeps_a_current_copy_of_the_extension_and_uninstall_removes_it(tmp_path: Path) -> None:
    machine = _Machine(tmp_path)
    (machine.home / ".config" / "chromium").mkdir(parents=True)
    before = machine.tree()
    assert extension_location(machine.paths)["stable"] is False
    assert "does not exist yet" in extension_location(machine.paths)["problem"]

    plan = machine.installer.plan_install(Selection(no_clients=True))
    lines = machine.run(plan)
    copy = stable_extension_dir(machine.paths)
    assert f"Extension: copy {copy} (version {__version__}) — created" in lines
    assert extension_files(copy) == extension_files() and "manifest.json" in extension_files(copy)
    where = extension_location(machine.paths)
    assert where["stable"] and where["path"] == str(copy) and where["problem"] is None
    assert where["firefox_id"] == manifests.reference_firefox_addon_id()
    assert any(f"Load unpacked and choose {copy}" in note for note in plan.notes)

    # A copy that no longer matches what this version ships (an upgrade, or a hand edit) is refreshed.
    (copy / "background.js").write_text("// old\n")
    (copy / "gone-in-this-version.js").write_text("")
    assert "out of date" in extension_location(machine.paths)["problem"]
    again = machine.installer.plan_install(Selection(no_clients=True))
    assert next(a for a in again.actions if a.section == "Extension").op is Op.UPDATE
    machine.run(again)
    assert extension_location(machine.paths)["stable"]
    assert machine.run(machine.installer.plan_install(Selection(no_clients=True)))
    assert next(a for a in machine.installer.plan_install(Selection(no_clients=True)).actions
                if a.section == "Extension").op is Op.UNCHANGED

    # The stray file was not install's: uninstall leaves it (and so its folder), and removes the rest.
    machine.run(machine.installer.plan_uninstall(Selection()))
    assert sorted(p.name for p in copy.iterdir()) == ["gone-in-this-version.js"]
    (copy / "gone-in-this-version.js").unlink()
    copy.rmdir()
    assert machine.tree() == before


def test_export_copies_the_extension_and_refuses_a_folder_with_other_files(tmp_path: Path) -> None:
    target, count = export_extension(tmp_path / "new" / "ext", extension_files())
    assert count == len(extension_files()) and extension_files(target) == extension_files()
    assert export_extension(target, extension_files()) == (target, count)  # an earlier export is replaced
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ExportError, match="not empty"):
        export_extension(other, extension_files())
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]


def test_extension_commands(tmp_path: Path) -> None:
    env = {**os.environ, "COMPASS_BRIDGE_HOME": str(tmp_path / "bridge")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mcp_bridge", "extension", *args], env=env,
                              capture_output=True, text=True)

    shown = cli("path")
    assert shown.returncode == 0 and Path(shown.stdout.strip()) == reference_extension_dir()
    assert "compass-bridge install" in shown.stderr  # the shipped folder moves with the Python: said so
    exported = cli("export", str(tmp_path / "ext"))
    assert exported.returncode == 0 and f"Load unpacked and choose {tmp_path / 'ext'}" in exported.stdout
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    refused = cli("export", str(tmp_path / "notes"))
    assert refused.returncode == 1 and "not empty" in refused.stderr
    as_json = json.loads(cli("path", "--json").stdout)
    assert as_json["chromium_id"] == REFERENCE_EXTENSION_ID and set(as_json["load_steps"]) == {"chromium", "firefox"}


# --- ephemeral environments (uvx, pipx run) ----------------------------------------------------------------


@pytest.mark.parametrize(("python", "env", "why"), [
    ("/home/ada/.cache/uv/archive-v0/TndNkMFUmgWSyD9p/bin/python", {}, "uv's cache"),
    ("/scratch/uvc/builds-v0/.tmpwrbud4/bin/python", {}, "uv's cache"),
    ("/scratch/my-uv-cache/envs/x/bin/python", {"UV_CACHE_DIR": "/scratch/my-uv-cache"}, "uv's cache"),
    ("/home/ada/.cache/pipx/3f1e2a/bin/python", {}, "pipx run"),
    ("/opt/px/.cache/3f1e2a/bin/python", {"PIPX_HOME": "/opt/px"}, "pipx run"),
    ("/home/ada/AppData/Local/uv/cache/archive-v0/x/Scripts/python.exe", {}, "uv's cache"),
    ("/home/ada/.local/share/uv/tools/compass-bridge/bin/python", {}, None),
    ("/home/ada/.local/share/pipx/venvs/compass-bridge/bin/python", {}, None),
    ("/home/ada/.local/share/compass-bridge/venv/bin/python", {}, None),
])
def test_ephemeral_environments_are_told_by_the_interpreter_path(python: str, env: dict[str, str],
                                                                 why: str | None) -> None:
    found = ephemeral_environment(Path(python), Platform(OS.LINUX, HOME, env))
    assert (found is None) if why is None else (found is not None and why in found)


def test_install_from_uvx_pins_nothing_and_says_what_to_do(tmp_path: Path) -> None:
    machine = _Machine(tmp_path)
    (machine.home / ".config" / "chromium").mkdir(parents=True)
    machine.installer.python = machine.home / ".cache/uv/archive-v0/TndNkMFUmgWSyD9p/bin/python"
    before = machine.tree()
    plan = machine.installer.plan_install(Selection(no_clients=True))
    assert plan.blocked is not None and "uv tool install" in plan.blocked and "pipx install" in plan.blocked
    assert "nothing was installed" in plan.blocked and str(machine.installer.python) in plan.blocked
    assert machine.installer.apply(plan) is False
    assert machine.tree() == before


def test_install_from_a_temporary_directory_warns(tmp_path: Path) -> None:
    machine = _Machine(tmp_path)
    machine.installer.python = Path(tempfile.gettempdir()) / "venv-x" / "bin" / "python"
    plan = machine.installer.plan_install(Selection(no_clients=True, browsers=("chromium",)))
    assert plan.blocked is None and any("temporary directory" in note for note in plan.notes)


def test_a_named_sandboxed_browser_that_is_not_there_is_said_so(tmp_path: Path) -> None:
    machine = _Machine(tmp_path)
    plan = machine.installer.plan_install(Selection(browsers=("chromium-snap",), no_clients=True))
    assert "Chromium (snap): not found on this machine — skipped" in plan.lines(True)
    with pytest.raises(InstallError, match=r"unknown browser 'netscape-snap'.*firefox-snap"):
        machine.installer.plan_install(Selection(browsers=("netscape-snap",)))


def test_doctor_warns_about_a_launcher_pinned_to_uvs_cache(tmp_path: Path, bridge_home: Path) -> None:
    from mcp_bridge.install.doctor import Doctor, Status

    machine = _Machine(tmp_path)
    (machine.home / ".config" / "chromium").mkdir(parents=True)
    # What an older install run through `uvx` left: a launcher pinning an interpreter in uv's cache.
    cached = machine.home / ".cache" / "uv" / "archive-v0" / "Tnd" / "bin" / "python"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(sys.executable)
    machine.run(machine.installer.plan_install(Selection(no_clients=True)))
    launcher = machine.paths.data_dir / "native-host" / "compass-bridge-host"
    launcher.write_text(launcher.read_text().replace(str(Path(sys.executable).absolute()), str(cached)))

    checks = Doctor(machine.installer.platform, machine.paths).run()
    warned = [c for c in checks if c.area == f"launcher {launcher}" and c.status is Status.WARN]
    assert any("uv's cache" in c.detail and "uv tool install" in c.fix for c in warned), checks

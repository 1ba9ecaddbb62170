"""Install, re-install and uninstall into isolated homes, for the Linux, macOS and Windows layouts.

Real files throughout; the Windows registry is the in-memory backend (the only stand-in). The layouts are
computed from an explicit Platform, so all three OSes install into a temporary home on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from mcp_bridge.install import HOST_NAME, jsonc, manifests
from mcp_bridge.install.clients import CLIENT_LABELS, cli_command, file_client
from mcp_bridge.install.installer import Installer, Selection
from mcp_bridge.install.places import OS, Platform
from mcp_bridge.install.plan import Action, InstallError, Op, Plan
from mcp_bridge.install.registry import Hive, MemoryRegistry
from mcp_bridge.keys import KeyStore
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import parse_scopes
from tests.conftest import require

REF = manifests.origin(manifests.reference_extension_id())
OTHER_ID = "b" * 32
MIN_DIRS = {
    OS.LINUX: {"chrome": ".config/google-chrome", "chromium": ".config/chromium",
               "brave": ".config/BraveSoftware/Brave-Browser"},
    OS.MACOS: {"chrome": "Library/Application Support/Google/Chrome",
               "brave": "Library/Application Support/BraveSoftware/Brave-Browser",
               "arc": "Library/Application Support/Arc/User Data"},
    OS.WINDOWS: {"chrome": "AppData/Local/Google/Chrome/User Data",
                 "brave": "AppData/Local/BraveSoftware/Brave-Browser/User Data",
                 "edge": "AppData/Local/Microsoft/Edge/User Data"},
}
CURSOR_CONFIG = '{\n    "mcpServers": {"other": {"command": "/usr/bin/other", "args": []}},\n    "theme": "dark"\n}\n'


class World:
    """One isolated machine: a home, a state dir, a filesystem root for machine-wide paths, a registry."""

    def __init__(self, tmp: Path, os_: OS, *, elevated: bool = False) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.root = tmp / "root"
        for d in (self.home, self.root, tmp / "empty-bin"):
            d.mkdir(parents=True, exist_ok=True)
        # PATH with no `claude`: Claude Code registration is then printed, not run (the real CLI is in e2e).
        self.platform = Platform(os_, self.home, {"PATH": str(tmp / "empty-bin")}, self.root, elevated)
        state = tmp / "state"
        self.paths = StatePaths(state / "config", state / "data", state / "logs", state / "run").ensure()
        self.registry = MemoryRegistry()
        self.installer = Installer(self.platform, self.paths, self.registry)

    def browsers(self, *keys: str) -> None:
        for key in keys:
            (self.home / MIN_DIRS[self.platform.os][key]).mkdir(parents=True)

    def install(self, **selection: Any) -> Plan:
        plan = self.installer.plan_install(Selection(**selection))
        self.installer.apply(plan)
        assert plan.ok, "\n".join(plan.lines(False))
        return plan

    def uninstall(self, **selection: Any) -> Plan:
        plan = self.installer.plan_uninstall(Selection(**selection))
        self.installer.apply(plan)
        assert plan.ok, "\n".join(plan.lines(False))
        return plan

    def snapshot(self) -> dict[str, tuple[int, bytes | None]]:
        """Every file and directory (mode and content), except the key store and the usage log, whose bytes change
        with any use."""
        found: dict[str, tuple[int, bytes | None]] = {}
        for base in (self.home, self.root, self.tmp / "state"):
            for dirpath, dirnames, filenames in os.walk(base):
                for name in dirnames + filenames:
                    path = Path(dirpath) / name
                    if path.name.startswith(("bridge.sqlite3", "keys.sqlite3")):
                        continue
                    found[str(path)] = (path.stat().st_mode, path.read_bytes() if path.is_file() else None)
        return found

    def record_without_claude_code(self) -> list[object]:
        items = json.loads((self.paths.data_dir / "install-record.json").read_text())["items"]
        return [i for i in items if "client:claude-code" not in i["owners"]]

    def key_names(self) -> list[str]:
        store = KeyStore.open(self.paths)
        try:
            return sorted(record.name for record in store.list())
        finally:
            store.close()

    def manifest(self, path: Path) -> dict[str, object]:
        data: dict[str, object] = json.loads(path.read_text())
        return data


def _ref(world: World, name: str) -> Path:
    return world.paths.data_dir / "key-refs" / name


def _ops(plan: Plan) -> dict[str, set[Op]]:
    found: dict[str, set[Op]] = {}
    for action in plan.actions:
        found.setdefault(action.section, set()).add(action.op)
    return found


# --- the whole round trip, per OS -----------------------------------------------------------------------


@pytest.mark.parametrize("os_", list(OS))
def test_install_reinstall_uninstall_round_trip(tmp_path: Path, os_: OS) -> None:
    world = World(tmp_path, os_)
    world.browsers(*MIN_DIRS[os_])
    (world.home / ".cursor").mkdir()
    (world.home / ".cursor" / "mcp.json").write_text(CURSOR_CONFIG)
    store = KeyStore.open(world.paths)
    store.create("my own key", parse_scopes("read"))  # the user's: uninstall must leave it
    store.close()
    before = world.snapshot()

    plan = world.install(clients=("cursor",))

    own = world.paths.data_dir / "native-host"
    if os_ is OS.WINDOWS:
        launcher = own / "compass-bridge-host.bat"
        assert launcher.read_bytes().startswith(b"@echo off\r\n")
        manifest = own / f"{HOST_NAME}.json"
        for vendor in ("Google\\Chrome", "BraveSoftware\\Brave-Browser", "Microsoft\\Edge"):
            key = f"Software\\{vendor}\\NativeMessagingHosts\\{HOST_NAME}"
            assert world.registry.get_default(Hive.CURRENT_USER, key) == str(manifest)
        written = [manifest]
    else:
        launcher = own / "compass-bridge-host"
        assert os.access(launcher, os.X_OK) and launcher.read_text().startswith("#!/bin/sh\n")
        written = [world.home / d / "NativeMessagingHosts" / f"{HOST_NAME}.json" for d in MIN_DIRS[os_].values()]
        if os_ is OS.MACOS:
            # Brave on macOS reads Chrome's dir; that file is shared, not written twice.
            assert "(also for Brave)" in next(a.detail for a in plan.actions if "Google/Chrome/" in a.what)
    for path in written:
        data = world.manifest(path)
        assert data["path"] == str(launcher) and data["allowed_origins"] == [REF] and data["type"] == "stdio"
        assert data["name"] == HOST_NAME
    assert sys.executable in launcher.read_text()
    cursor = json.loads((world.home / ".cursor" / "mcp.json").read_text())
    assert cursor["theme"] == "dark" and cursor["mcpServers"]["other"]["command"] == "/usr/bin/other"
    # The entry names its key; the key itself is only in the bridge's private data dir.
    assert cursor["mcpServers"]["compass"]["args"][-3:] == ["serve", "--key-ref", "cursor"]
    assert "env" not in cursor["mcpServers"]["compass"] and "cb_" not in (world.home / ".cursor/mcp.json").read_text()
    assert _ref(world, "cursor").stat().st_mode & 0o777 == 0o600
    claude = next(a for a in plan.actions if a.section == "Claude Code")
    assert claude.op is Op.MANUAL and "claude mcp add --scope user compass -- " in claude.note
    assert claude.note.endswith("serve --key-ref claude-code") and "cb_" not in claude.note
    assert world.key_names() == ["claude-code", "cursor", "my own key"]

    # Re-running changes nothing (the Claude Code command is printed again, with the same key reference).
    installed, record = world.snapshot(), world.record_without_claude_code()
    again = world.install(clients=("cursor",))
    changed = {section: ops for section, ops in _ops(again).items() if ops - {Op.UNCHANGED, Op.SKIP}}
    assert changed == {"Claude Code": {Op.MANUAL}}
    record_file = str(world.paths.data_dir / "install-record.json")
    assert {k: v for k, v in world.snapshot().items() if k != record_file} == \
        {k: v for k, v in installed.items() if k != record_file}
    assert world.record_without_claude_code() == record
    assert world.key_names() == ["claude-code", "cursor", "my own key"]

    world.uninstall()
    assert world.snapshot() == before
    assert world.registry.values == {}
    assert world.key_names() == ["my own key"]
    # Cursor's config is back byte for byte, formatting included.
    assert (world.home / ".cursor" / "mcp.json").read_text() == CURSOR_CONFIG


def test_browsers_not_installed_are_skipped_and_said_so(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    world.browsers("chromium")
    plan = world.install(no_clients=True)
    lines = plan.lines(False)
    assert "Google Chrome: not installed (no ~/.config/google-chrome) — skipped" in lines
    assert "Firefox: not installed (no ~/.mozilla) — skipped" in lines
    assert not (world.home / ".config" / "google-chrome").exists()


def test_a_named_browser_is_installed_even_when_not_detected(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    plan = world.install(browsers=("vivaldi",), no_clients=True)
    assert (world.home / ".config/vivaldi/NativeMessagingHosts" / f"{HOST_NAME}.json").is_file()
    assert any("Vivaldi: not detected" in note for note in plan.notes)
    world.uninstall()
    assert not (world.home / ".config").exists()  # every directory install made is gone again


def test_firefox_gets_its_own_manifest_with_allowed_extensions(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    (world.home / ".mozilla").mkdir()
    world.install(firefox_extension_ids=("bridge@example.org",), no_clients=True)
    data = world.manifest(world.home / ".mozilla/native-messaging-hosts" / f"{HOST_NAME}.json")
    # The reference extension's add-on ID is always allowed, as its Chromium ID is.
    assert data["allowed_extensions"] == [manifests.reference_firefox_addon_id(), "bridge@example.org"]
    assert "allowed_origins" not in data
    with pytest.raises(InstallError, match="Firefox add-on ID"):
        world.installer.plan_install(Selection(firefox_extension_ids=("not an id",)))


# --- origins --------------------------------------------------------------------------------------------


def test_existing_origins_are_merged_never_clobbered_and_restored_on_uninstall(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    world.browsers("chromium")
    path = world.home / ".config/chromium/NativeMessagingHosts" / f"{HOST_NAME}.json"
    path.parent.mkdir()
    original = json.dumps({"name": HOST_NAME, "description": "hand-made", "path": "/old/host", "type": "stdio",
                           "allowed_origins": [manifests.origin(OTHER_ID), "chrome-extension://broken/"]})
    path.write_text(original)
    third = "c" * 32

    plan = world.install(extension_ids=(third,), no_clients=True)

    assert world.manifest(path)["allowed_origins"] == [REF, manifests.origin(third), manifests.origin(OTHER_ID)]
    detail = next(a.detail for a in plan.actions if a.section == "Chromium")
    assert "kept 1 extension(s) already allowed" in detail and "chrome-extension://broken/" in detail
    world.uninstall()
    assert path.read_text() == original


def test_malformed_extension_ids_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    world.browsers("chromium")
    before = world.snapshot()
    for bad in ("abc", "A" * 32, "q" * 32, "a" * 33):
        with pytest.raises(InstallError, match="32 letters from a to p"):
            world.installer.plan_install(Selection(extension_ids=(bad,)))
    assert world.snapshot() == before


def test_an_unreadable_manifest_is_replaced_and_put_back_on_uninstall(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    world.browsers("chromium")
    path = world.home / ".config/chromium/NativeMessagingHosts" / f"{HOST_NAME}.json"
    path.parent.mkdir()
    path.write_text("{not json")
    plan = world.install(no_clients=True)
    assert "replacing a broken file" in next(a.detail for a in plan.actions if a.section == "Chromium")
    assert world.manifest(path)["allowed_origins"] == [REF]
    world.uninstall()
    assert path.read_text() == "{not json"


# --- shared items and partial uninstall ------------------------------------------------------------------


def test_windows_keys_shared_by_browsers_stay_until_their_last_browser_goes(tmp_path: Path) -> None:
    world = World(tmp_path, OS.WINDOWS)
    world.browsers("chrome", "brave")
    world.install(no_clients=True)
    chrome_key = f"Software\\Google\\Chrome\\NativeMessagingHosts\\{HOST_NAME}"
    brave_key = f"Software\\BraveSoftware\\Brave-Browser\\NativeMessagingHosts\\{HOST_NAME}"
    manifest = world.paths.data_dir / "native-host" / f"{HOST_NAME}.json"

    plan = world.uninstall(browsers=("brave",))

    assert world.registry.get_default(Hive.CURRENT_USER, brave_key) is None
    assert world.registry.get_default(Hive.CURRENT_USER, chrome_key) == str(manifest)
    assert manifest.is_file()
    assert any(a.op is Op.KEEP and "still used by Google Chrome" in a.detail for a in plan.actions)
    world.uninstall(browsers=("chrome",))
    assert world.registry.values == {}
    assert not (world.paths.data_dir / "native-host").exists()
    assert not (world.paths.data_dir / "install-record.json").exists()


def test_a_registry_value_that_existed_before_is_put_back(tmp_path: Path) -> None:
    world = World(tmp_path, OS.WINDOWS)
    world.browsers("edge")
    key = f"Software\\Microsoft\\Edge\\NativeMessagingHosts\\{HOST_NAME}"
    world.registry.set_default(Hive.CURRENT_USER, key, "C:\\old\\manifest.json")
    world.install(no_clients=True)
    assert world.registry.get_default(Hive.CURRENT_USER, key) != "C:\\old\\manifest.json"
    world.uninstall()
    assert world.registry.get_default(Hive.CURRENT_USER, key) == "C:\\old\\manifest.json"


def test_profile_dir_gets_the_manifest_and_nothing_else_does(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    world.browsers("chromium")
    profile = tmp_path / "profile with space"
    plan = world.install(browsers=("chromium",), profile_dirs=(profile,), no_clients=True)
    assert world.manifest(profile / "NativeMessagingHosts" / f"{HOST_NAME}.json")["allowed_origins"] == [REF]
    assert not (world.home / ".config/chromium/NativeMessagingHosts").exists()
    assert any(a.section == f"Profile {profile}" for a in plan.actions)
    world.uninstall(profile_dirs=(profile,))
    assert not profile.exists()  # install created it, so it went again


def test_profile_dir_on_windows_is_covered_by_the_registry(tmp_path: Path) -> None:
    world = World(tmp_path, OS.WINDOWS)
    profile = tmp_path / "profile"
    plan = world.install(browsers=("chromium",), profile_dirs=(profile,), no_clients=True)
    assert any("through the registry" in note for note in plan.notes) and not profile.exists()
    key = f"Software\\Chromium\\NativeMessagingHosts\\{HOST_NAME}"
    assert world.registry.get_default(Hive.CURRENT_USER, key) is not None


def test_uninstall_with_nothing_recorded_says_so(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    plan = world.uninstall()
    assert plan.actions == [] and "Nothing to remove" in plan.notes[0]


# --- machine-wide ----------------------------------------------------------------------------------------


def test_system_install_prints_the_elevated_command_when_not_elevated(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    before = world.snapshot()
    plan = world.installer.plan_install(Selection(browsers=("chrome",), system=True,
                                                  argv=("install", "--browser", "chrome", "--system")))
    assert plan.blocked is not None and "sudo " in plan.blocked and "install --browser chrome --system" in plan.blocked
    assert world.installer.apply(plan) is False
    assert world.snapshot() == before


@pytest.mark.parametrize("os_", list(OS))
def test_system_install_writes_machine_wide_locations_and_uninstall_removes_them(tmp_path: Path, os_: OS) -> None:
    world = World(tmp_path, os_, elevated=True)
    before = world.snapshot()
    plan = world.install(browsers=("chrome", "chromium"), system=True)
    # Any note may come first (e.g. a warning when this checkout lives in a temporary directory).
    assert any("registered per user" in note for note in plan.notes)  # no MCP clients machine-wide
    if os_ is OS.WINDOWS:
        key = f"Software\\Google\\Chrome\\NativeMessagingHosts\\{HOST_NAME}"
        manifest = world.registry.get_default(Hive.LOCAL_MACHINE, key)
        assert manifest == str(world.root / "ProgramData" / "compass-bridge" / f"{HOST_NAME}.json")
    else:
        chrome_dir = {OS.LINUX: "etc/opt/chrome/native-messaging-hosts",
                      OS.MACOS: "Library/Google/Chrome/NativeMessagingHosts"}[os_]
        data = world.manifest(world.root / chrome_dir / f"{HOST_NAME}.json")
        assert str(data["path"]).startswith(str(world.root))
        # A machine-wide launcher logs to each user's own log dir, not to the installing user's.
        assert "$HOME" in Path(str(data["path"])).read_text()
    world.uninstall(system=True)
    assert world.snapshot() == before and world.registry.values == {}


# --- MCP clients -------------------------------------------------------------------------------------------


def _action(plan: Plan, section: str) -> Action:
    return next(a for a in plan.actions if a.section == section)


def test_a_jsonc_config_keeps_its_comments_and_gets_its_bytes_back(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    config = world.home / ".config/Code/User/mcp.json"
    config.parent.mkdir(parents=True)
    original = '{\n  // my servers\n  "servers": {\n    "x": {"command": "/x"}, // keep me\n  },\n}\n'
    config.write_text(original)
    world.install(clients=("vscode",))
    text = config.read_text()
    assert "// my servers" in text and "// keep me" in text
    entry = jsonc.loads(text)["servers"]["compass"]
    assert entry["type"] == "stdio" and entry["args"][-2:] == ["--key-ref", "vscode"]
    world.uninstall(clients=("vscode",))
    assert config.read_text() == original


def test_a_settings_file_without_servers_gets_its_bytes_back(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    config = world.home / ".config/zed/settings.json"
    config.parent.mkdir(parents=True)
    original = '// Zed settings\n{\n  "theme": "One Dark", // mine\n}\n'
    config.write_text(original)
    world.install(clients=("zed",))
    assert jsonc.loads(config.read_text())["context_servers"]["compass"]["args"][-1] == "zed"
    assert config.read_text().startswith('// Zed settings\n{\n  "theme": "One Dark", // mine\n')
    world.uninstall(clients=("zed",))
    assert config.read_text() == original


def test_a_symlinked_config_is_edited_where_it_points(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    dotfiles = tmp_path / "dotfiles" / "cursor-mcp.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text(CURSOR_CONFIG)
    (world.home / ".cursor").mkdir()
    (world.home / ".cursor/mcp.json").symlink_to(dotfiles)
    world.install(clients=("cursor",))
    assert (world.home / ".cursor/mcp.json").is_symlink()
    assert json.loads(dotfiles.read_text())["mcpServers"]["compass"]["args"][-1] == "cursor"
    world.uninstall(clients=("cursor",))
    assert (world.home / ".cursor/mcp.json").is_symlink() and dotfiles.read_text() == CURSOR_CONFIG


def test_a_config_that_cannot_be_parsed_is_left_untouched_and_the_entry_is_printed(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    config = world.home / ".cursor/mcp.json"
    config.parent.mkdir(parents=True)
    config.write_text('{"mcpServers": {')
    plan = world.installer.plan_install(Selection(clients=("cursor",)))
    world.installer.apply(plan)
    cursor = _action(plan, "Cursor")
    assert cursor.result == "failed" and not plan.ok
    assert "not JSON or JSONC" in cursor.note and "was not touched" in cursor.note
    # The entry to add by hand, complete, with a key reference that works as soon as it is pasted.
    snippet = cursor.note[cursor.note.index("by hand:\n") + len("by hand:\n"):]
    assert jsonc.loads(snippet)["mcpServers"]["compass"]["args"][-2:] == ["--key-ref", "cursor"]
    assert _ref(world, "cursor").exists() and "cursor" in world.key_names()
    assert config.read_text() == '{"mcpServers": {'
    world.uninstall()
    assert world.key_names() == [] and not _ref(world, "cursor").exists()
    assert config.read_text() == '{"mcpServers": {'


def test_vscode_gets_a_servers_entry_with_a_type_and_a_new_file_is_private(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    (world.home / ".config/Code/User").mkdir(parents=True)
    world.install(clients=("vscode",))
    config = world.home / ".config/Code/User/mcp.json"
    entry = json.loads(config.read_text())["servers"]["compass"]
    assert entry["type"] == "stdio" and entry["args"][-3:] == ["serve", "--key-ref", "vscode"]
    assert config.stat().st_mode & 0o777 == 0o600
    world.uninstall(clients=("vscode",))
    assert not config.exists() and not _ref(world, "vscode").exists()
    assert world.key_names() == ["claude-code"]  # only that client's key went


def test_a_readable_config_holding_a_key_is_tightened_and_the_output_says_so(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    config = world.home / ".cursor/mcp.json"
    config.parent.mkdir(parents=True)
    held = {"mcpServers": {"old": {"command": "/x", "env": {"COMPASS_BRIDGE_KEY": "cb_" + "1" * 40}}}}
    config.write_text(json.dumps(held))
    config.chmod(0o644)
    plan = world.install(clients=("cursor",))
    assert config.stat().st_mode & 0o777 == 0o600
    assert "tightened ~/.cursor/mcp.json from 0644 to 0600" in _action(plan, "Cursor").line(False)
    # Without a key in it, a file keeps the mode its owner chose.
    other = World(tmp_path / "other", OS.LINUX)
    (other.home / ".cursor").mkdir(parents=True)
    (other.home / ".cursor/mcp.json").write_text(CURSOR_CONFIG)
    (other.home / ".cursor/mcp.json").chmod(0o644)
    other.install(clients=("cursor",))
    assert (other.home / ".cursor/mcp.json").stat().st_mode & 0o777 == 0o644


def test_clients_are_written_only_where_installed_and_an_entry_not_ours_is_left_alone(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    plan = world.install(clients=("windsurf", "claude-desktop"), no_clients=False)
    lines = plan.lines(False)
    assert "Windsurf: not installed (no ~/.codeium/windsurf) — skipped" in lines
    assert "Claude Desktop: not installed (no ~/.config/Claude) — skipped" in lines
    (world.home / ".cursor").mkdir()
    mine = {"mcpServers": {"compass": {"command": "/my/own/compass", "args": []}}}
    (world.home / ".cursor" / "mcp.json").write_text(json.dumps(mine))
    plan = world.install(clients=("cursor",))
    assert _action(plan, "Cursor").op is Op.SKIP
    assert json.loads((world.home / ".cursor" / "mcp.json").read_text()) == mine


def test_a_revoked_client_key_is_replaced_on_reinstall(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    (world.home / ".cursor").mkdir()
    world.install(clients=("cursor",))
    first = _ref(world, "cursor").read_text()
    store = KeyStore.open(world.paths)
    store.revoke("cursor")
    store.close()
    plan = world.install(clients=("cursor",))
    assert _action(plan, "Cursor").op is Op.UPDATE
    assert _ref(world, "cursor").read_text() != first
    assert world.key_names() == ["claude-code", "cursor"]  # the revoked one was deleted, not left to pile up


def test_an_entry_with_an_inline_key_from_an_older_install_is_moved_to_a_reference(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    (world.home / ".cursor").mkdir()
    world.install(clients=("cursor",))
    config = world.home / ".cursor/mcp.json"
    data = json.loads(config.read_text())
    entry = data["mcpServers"]["compass"]
    key = _ref(world, "cursor").read_text().strip()
    entry["args"], entry["env"] = entry["args"][:-2], {"COMPASS_BRIDGE_KEY": key}
    config.write_text(json.dumps(data))
    record = json.loads((world.paths.data_dir / "install-record.json").read_text())
    for item in record["items"]:
        if item["target"] == "cursor":
            item["data"] = {"command": entry["command"], "key_prefix": key[:8], "path": str(config),
                            "created_file": True}
    (world.paths.data_dir / "install-record.json").write_text(json.dumps(record))
    plan = world.install(clients=("cursor",))
    assert _action(plan, "Cursor").op is Op.UPDATE
    assert "cb_" not in config.read_text() and json.loads(config.read_text())["mcpServers"]["compass"]["args"][-1] \
        == "cursor"


# Each client's entry as its documentation shows one (sources in docs/INSTALL.md), with our command.
SERVE = ["serve", "--key-ref"]
DOCUMENTED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "claude-desktop": (".config/Claude/claude_desktop_config.json", lambda d: d["mcpServers"]["compass"]),
    "cursor": (".cursor/mcp.json", lambda d: d["mcpServers"]["compass"]),
    "vscode": (".config/Code/User/mcp.json", lambda d: d["servers"]["compass"]),
    "vscode-insiders": (".config/Code - Insiders/User/mcp.json", lambda d: d["servers"]["compass"]),
    "vscodium": (".config/VSCodium/User/mcp.json", lambda d: d["servers"]["compass"]),
    "windsurf": (".codeium/windsurf/mcp_config.json", lambda d: d["mcpServers"]["compass"]),
    "gemini": (".gemini/settings.json", lambda d: d["mcpServers"]["compass"]),
    "copilot": (".copilot/mcp-config.json", lambda d: d["mcpServers"]["compass"]),
    "opencode": (".config/opencode/opencode.jsonc", lambda d: d["mcp"]["compass"]),
    "zed": (".config/zed/settings.json", lambda d: d["context_servers"]["compass"]),
    "cline": (".config/Code/User/globalStorage/saoudrizwan.claude-dev/settings/cline_mcp_settings.json",
              lambda d: d["mcpServers"]["compass"]),
    "roo-code": (".config/Code/User/globalStorage/rooveterinaryinc.roo-cline/settings/mcp_settings.json",
                 lambda d: d["mcpServers"]["compass"]),
    "goose": (".config/goose/config.yaml", lambda d: d["extensions"]["compass"]),
    "junie": (".junie/mcp/mcp.json", lambda d: d["mcpServers"]["compass"]),
    "kiro": (".kiro/settings/mcp.json", lambda d: d["mcpServers"]["compass"]),
}


def _expected(client: str, ref: str) -> dict[str, Any]:
    command, *prefix = cli_command()
    args = [*prefix, *SERVE, ref]
    if client == "opencode":
        return {"type": "local", "command": [command, *args], "enabled": True}
    if client == "goose":
        return {"name": "compass", "type": "stdio", "cmd": command, "args": args, "envs": {}, "enabled": True,
                "timeout": 300, "description": "compass-bridge: files, commands, browser and Compass tools"}
    extra: dict[str, dict[str, Any]] = {
        "vscode": {"type": "stdio"}, "vscode-insiders": {"type": "stdio"}, "vscodium": {"type": "stdio"},
        "copilot": {"type": "local", "tools": ["*"]},
        "cline": {"disabled": False}, "roo-code": {"disabled": False}, "kiro": {"disabled": False}}
    return {**extra.get(client, {}), "command": command, "args": args}


@pytest.mark.parametrize("client", sorted(DOCUMENTED))
def test_each_client_gets_its_documented_entry_and_loses_it_again(tmp_path: Path, client: str) -> None:
    world = World(tmp_path, OS.LINUX)
    rel, servers = DOCUMENTED[client]
    config = world.home / rel
    client_dir = file_client(client, world.platform).dir
    assert client_dir is not None
    client_dir.mkdir(parents=True)
    plan = world.install(clients=(client,))
    assert _action(plan, CLIENT_LABELS[client]).op is Op.REGISTER
    text = config.read_text()
    data = YAML(typ="safe").load(text) if client == "goose" else jsonc.loads(text)
    assert servers(data) == _expected(client, client)
    assert "cb_" not in text and config.stat().st_mode & 0o777 == 0o600
    assert _ref(world, client).exists()
    world.uninstall(clients=(client,))
    assert not config.exists() and not _ref(world, client).exists()
    assert client_dir.is_dir() and list(client_dir.iterdir()) == []  # no directory of ours left either


def test_goose_yaml_keeps_its_comments_and_gets_its_bytes_back(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    config = world.home / ".config/goose/config.yaml"
    config.parent.mkdir(parents=True)
    original = ("GOOSE_PROVIDER: anthropic  # the provider\n"
                "extensions:\n"
                "  developer:\n"
                "    enabled: true  # built in\n"
                "    name: developer\n"
                "    type: builtin\n")
    config.write_text(original)
    world.install(clients=("goose",))
    text = config.read_text()
    assert "# the provider" in text and "# built in" in text
    data = YAML(typ="safe").load(text)
    assert data["extensions"]["developer"]["type"] == "builtin"
    assert data["extensions"]["compass"] == _expected("goose", "goose")
    world.uninstall(clients=("goose",))
    assert config.read_text() == original


def test_jetbrains_gets_the_entry_to_paste_and_a_key_behind_it(tmp_path: Path) -> None:
    world = World(tmp_path, OS.LINUX)
    plan = world.install(clients=("jetbrains",))
    action = _action(plan, "JetBrains AI Assistant")
    assert action.op is Op.MANUAL and "Settings → Tools → AI Assistant" in action.note
    snippet = json.loads(action.note[action.note.index("{"):])
    assert snippet["mcpServers"]["compass"]["args"][-2:] == ["--key-ref", "jetbrains"]
    assert "cb_" not in action.note and "jetbrains" in world.key_names()
    gone = world.uninstall(clients=("jetbrains",))
    assert "by hand" in _action(gone, "JetBrains AI Assistant").note
    assert "jetbrains" not in world.key_names()


# --- the command line ----------------------------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(tmp_path / "home"), "COMPASS_BRIDGE_HOME": str(tmp_path / "bridge"),
           "PATH": str(tmp_path / "empty-bin"), "XDG_RUNTIME_DIR": str(tmp_path / "no-such-dir")}
    return subprocess.run([sys.executable, "-m", "mcp_bridge", *args], env=env, capture_output=True, text=True,
                          cwd=tmp_path)


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
            if not p.name.startswith(("bridge.sqlite3", "keys.sqlite3"))}


def test_cli_dry_run_changes_nothing_and_bad_input_is_refused(tmp_path: Path) -> None:
    (tmp_path / "home/.config/chromium").mkdir(parents=True)
    (tmp_path / "empty-bin").mkdir()
    before = _tree(tmp_path)
    done = _cli(tmp_path, "install", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["dry_run"] and any(a["section"] == "Chromium" and a["op"] == "created" for a in plan["actions"])
    assert _tree(tmp_path) == before

    bad = _cli(tmp_path, "install", "--extension-id", "not-an-id")
    assert bad.returncode == 2 and "not a Chromium extension ID" in bad.stderr
    unknown = _cli(tmp_path, "install", "--browser", "netscape")
    assert unknown.returncode == 2 and "unknown browser 'netscape'" in unknown.stderr
    assert _tree(tmp_path) == before


def test_cli_install_and_uninstall_on_this_machine(tmp_path: Path) -> None:
    (tmp_path / "home/.config/chromium").mkdir(parents=True)
    (tmp_path / "empty-bin").mkdir()
    assert _cli(tmp_path, "keys", "create", "--name", "mine").returncode == 0
    before = _tree(tmp_path)
    done = _cli(tmp_path, "install", "--browser", "chromium")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Chromium: manifest ~/.config/chromium/NativeMessagingHosts/com.compass_bridge.host.json — created" \
        in done.stdout
    assert "once Claude Code is installed, run:" in done.stdout
    launcher = tmp_path / "bridge/data/native-host/compass-bridge-host"
    # The browser will not pass COMPASS_BRIDGE_HOME on: the launcher carries it.
    assert f"COMPASS_BRIDGE_HOME={tmp_path / 'bridge'}; export COMPASS_BRIDGE_HOME" in launcher.read_text()
    gone = _cli(tmp_path, "uninstall")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert _tree(tmp_path) == before


# --- the installer scripts ---------------------------------------------------------------------------------

INSTALLERS = Path(__file__).resolve().parents[2] / "installers"


def test_install_sh_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck", "apt-get install shellcheck (scripts/test does it)")
    done = subprocess.run([str(shellcheck), "-s", "sh", str(INSTALLERS / "install.sh")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout


def _powershell_syntax_errors(script: Path) -> list[str] | None:
    """Parse errors in `script`: PowerShell's own parser when pwsh is here, else the tree-sitter PowerShell
    grammar (pwsh is not packaged in Debian or on PyPI, so this machine has only the grammar). None: no parser."""
    pwsh = shutil.which("pwsh")
    if pwsh:
        command = ("$errors = $null; [void][System.Management.Automation.Language.Parser]::ParseFile("
                   f"'{script}', [ref]$null, [ref]$errors); $errors | ForEach-Object {{ $_.ToString() }}")
        done = subprocess.run([pwsh, "-NoProfile", "-NonInteractive", "-Command", command], capture_output=True,
                              text=True)
        return [line for line in done.stdout.splitlines() if line.strip()]
    try:
        import tree_sitter
        import tree_sitter_powershell
    except ImportError:
        return None
    source = script.read_bytes()
    tree = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language())).parse(source)
    found: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            found.append(f"line {node.start_point[0] + 1}: {source[node.start_byte:node.end_byte][:80]!r}")
        stack.extend(node.children)
    return found


def test_install_ps1_parses(tmp_path: Path) -> None:
    script = INSTALLERS / "install.ps1"
    errors = _powershell_syntax_errors(script)
    require(errors is not None, "a PowerShell parser",
            "install pwsh, or the dev extras (tree-sitter, tree-sitter-powershell)")
    assert errors == []
    # The parser does catch a broken script, so an empty list means something.
    broken = tmp_path / "broken.ps1"
    broken.write_bytes(script.read_bytes().replace(b"if ($LASTEXITCODE -ne 0) {", b"if ($LASTEXITCODE -ne 0 {", 1))
    assert _powershell_syntax_errors(broken)

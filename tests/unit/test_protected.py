"""The built-in protected paths cover every place the installer knows, from the installer's own facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_bridge.install.clients import file_client
from mcp_bridge.install.layouts import browser_layouts
from mcp_bridge.install.places import FILE_CLIENTS, Platform
from mcp_bridge.protected import Guard, builtin


@pytest.mark.parametrize("env", [{}, {"XDG_CONFIG_HOME": "/xdg", "CHROME_CONFIG_HOME": "/chrome"}])
def test_every_browser_profile_manifest_dir_and_client_config_the_installer_knows_is_protected(
        tmp_path: Path, env: dict[str, str]) -> None:
    home = tmp_path / "home"
    protected = {entry.path: entry for entry in builtin(home, [], env)}
    platform = Platform.for_user(home, env)
    expected = {platform.system_own_dir()}
    for layout in browser_layouts(platform):  # what `install` writes to and doctor checks
        expected |= {*layout.user_manifest_dirs, *layout.system_manifest_dirs}
        if layout.data_dir is not None:
            expected.add(layout.data_dir)
    for spec in FILE_CLIENTS:
        client = file_client(spec.key, platform)
        if client.path is not None:
            expected |= {client.path, client.backup}
    assert expected - set(protected) == set()
    assert all(protected[path].guard is Guard.ALL for path in expected)

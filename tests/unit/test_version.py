"""The version is written once (mcp_bridge/__init__.py); every other place that states it must agree."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import metadata

import native_host
from mcp_bridge import __version__
from tests.conftest import REPO


def test_the_package_metadata_takes_its_version_from_mcp_bridge() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "mcp_bridge/__init__.py"
    # The installed (editable) distribution was built from that source.
    assert metadata.version("compass-bridge") == __version__


def test_the_native_host_reports_the_same_version() -> None:
    assert native_host.__version__ == __version__


def test_the_extension_manifest_has_the_same_version() -> None:
    manifest = json.loads((REPO / "extension" / "manifest.json").read_text())
    assert manifest["version"] == __version__


def test_the_latest_changelog_release_is_this_version() -> None:
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+[^\]]*)\] - \d{4}-\d{2}-\d{2}$",
                          (REPO / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert releases and releases[0] == __version__, (
        f"CHANGELOG.md's latest release is {releases[:1]}, the package is {__version__}: move the Unreleased "
        "entries under a new `## [version] - date` heading when bumping the version")


def test_the_protocol_examples_show_this_version() -> None:
    # The examples in the docs show what this version sends: the extension's and the bridge's hello.
    for doc in ("PROTOCOL.md", "COMPASS_API.md"):
        text = (REPO / "docs" / doc).read_text()
        stated = set(re.findall(r'"name": ?"compass-bridge", ?"version": ?"([^"]+)"', text))
        stated |= set(re.findall(r'"host": ?\{"version": ?"([^"]+)"', text))
        assert stated == {__version__}, f"docs/{doc} states versions {sorted(stated)}"

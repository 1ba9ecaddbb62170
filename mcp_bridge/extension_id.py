"""The reference extension (`extension/`): its fixed IDs, where its files are, and how to load it.

Chromium derives an unpacked extension's ID from the manifest's `key`: sha256 of the DER public key, the
first 32 hex digits, each mapped 0-f → a-p. Firefox takes the ID the manifest declares in
`browser_specific_settings.gecko.id`. The installer allows both IDs in the native-host manifests.

The package carries the extension inside site-packages, a path that moves whenever the tool's environment
gets another Python. So `compass-bridge install` keeps a copy in the bridge's data directory (refreshed when
the files change) and that copy is the one people are told to load: it stays where it is across upgrades.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mcp_bridge.config import ConfigError, load_config
from mcp_bridge.page_origins import match_pattern
from mcp_bridge.paths import StatePaths

REFERENCE_EXTENSION_ID = "lbkpfkbndadjpidhgejmmihcbnjfdllf"
STABLE_DIR_NAME = "extension"
"""The copy's folder under the data directory."""


def reference_extension_dir() -> Path | None:
    """The shipped extension: inside the installed package (a wheel carries it as `mcp_bridge/_extension`) or
    beside the package in a source checkout; None if neither is there."""
    # Here, not at the top: importlib.resources brings tempfile, zipfile and more (~6 ms), and the server
    # imports this module as it starts but looks for the extension only when asked (bridge_status).
    from importlib import resources

    packaged = Path(str(resources.files("mcp_bridge").joinpath("_extension")))
    checkout = Path(__file__).resolve().parent.parent / "extension"
    return next((d for d in (packaged, checkout) if (d / "manifest.json").is_file()), None)


def stable_extension_dir(paths: StatePaths) -> Path:
    """Where install keeps the copy that survives Python upgrades."""
    return paths.data_dir / STABLE_DIR_NAME


def extension_files(source: Path | None = None) -> dict[str, bytes]:
    """The extension's files by '/'-separated relative name: regular files only, no hidden ones."""
    root = source if source is not None else reference_extension_dir()
    if root is None:
        return {}
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith((".", "__")) for part in relative.parts):
            files[relative.as_posix()] = path.read_bytes()
    return files


def configure(files: dict[str, bytes], page_origins: Iterable[str]) -> dict[str, bytes]:
    """The extension as this install sets it up for the pages in `[page_origins]` (mcp_bridge/page_origins.py):
    the browser lets only those connect (`externally_connectable.matches`) and the extension allows them from
    the start (`policy.json`'s `pageOrigins`). The manifest's `key`, hence the ID, is kept. None configured: the
    shipped files unchanged, so no page can connect."""
    origins = sorted(page_origins)
    if not origins or "manifest.json" not in files:
        return files
    manifest = _manifest(files)
    manifest["externally_connectable"] = {"matches": [match_pattern(o) for o in origins]}
    policy = json.loads(files.get("policy.json", b"{}"))
    policy["pageOrigins"] = origins
    return {**files, "manifest.json": (json.dumps(manifest, indent=2) + "\n").encode(),
            "policy.json": (json.dumps(policy, indent=2) + "\n").encode()}


def configured_files(paths: StatePaths) -> dict[str, bytes]:
    """The files `install` and `extension export` write: the shipped ones set up by config.toml; ConfigError
    (naming the setting) when the configuration cannot be used."""
    return configure(extension_files(), load_config(paths.config_file).page_origins)


def _manifest(files: dict[str, bytes]) -> dict[str, Any]:
    data = json.loads(files["manifest.json"]) if "manifest.json" in files else {}
    return data if isinstance(data, dict) else {}


def firefox_addon_id(manifest: dict[str, Any]) -> str | None:
    gecko = manifest.get("browser_specific_settings", {}).get("gecko", {})
    addon = gecko.get("id") if isinstance(gecko, dict) else None
    return addon if isinstance(addon, str) and addon else None


def is_current_copy(directory: Path, files: dict[str, bytes]) -> bool:
    """`directory` holds every one of `files` byte for byte (a stale or partial copy would load an old extension,
    or one set up for other pages)."""

    def same(name: str, data: bytes) -> bool:
        path = directory.joinpath(*name.split("/"))
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data

    return bool(files) and all(same(name, data) for name, data in files.items())


def load_steps(path: Path) -> dict[str, list[str]]:
    """The two steps that load the extension from `path`, per browser family."""
    return {
        "chromium": [
            "open chrome://extensions (edge://extensions, brave://extensions, …) and turn on Developer mode",
            f"click Load unpacked and choose {path}",
        ],
        "firefox": [
            "open about:debugging#/runtime/this-firefox",
            f"click Load Temporary Add-on… and choose {path / 'manifest.json'} (until Firefox restarts; "
            "release Firefox keeps only a signed add-on: see the extension's README.md)",
        ],
    }


def extension_location(paths: StatePaths | None = None) -> dict[str, Any]:
    """Where to load the extension from and how, for `bridge_status`, `doctor` and `extension path`.

    `path` is the stable copy when it is current; otherwise the shipped folder, with `problem` saying why the
    stable copy is not used and what fixes it.
    """
    if paths is None:
        from mcp_bridge.paths import state_paths

        paths = state_paths()
    shipped = reference_extension_dir()
    files = extension_files(shipped)
    stable = stable_extension_dir(paths)
    manifest = _manifest(files)
    problem: str | None = None
    try:
        wanted = configured_files(paths)
    except ConfigError as exc:
        wanted, problem = files, f"{exc}; fix it, then run `compass-bridge install` again"
    if shipped is None:
        path: Path | None = None
        problem = "the package carries no extension files; reinstall compass-bridge"
    elif is_current_copy(stable, wanted):
        path = stable
    else:
        path = shipped
        state = ("is out of date (or set up for other pages than [page_origins] in config.toml)"
                 if stable.exists() else "does not exist yet")
        problem = (f"the copy that survives Python upgrades, {stable}, {state}; run `compass-bridge install` "
                   "(or `compass-bridge extension export DIR` for a folder of your choice) and load that one, or "
                   "reload it if it is loaded")
    return {
        "path": str(path) if path else None,
        "stable": path == stable,
        "version": manifest.get("version"),
        "chromium_id": REFERENCE_EXTENSION_ID,
        "firefox_id": firefox_addon_id(manifest),
        "load_steps": load_steps(path) if path else {},
        "problem": problem,
    }


def how_to_load(path: Path) -> str:
    """`load_steps` as lines to print."""
    steps = load_steps(path)
    return (f"Load the browser extension from {path}:\n"
            f"  Chrome, Chromium, Edge, Brave…: 1. {steps['chromium'][0]}; 2. {steps['chromium'][1]}\n"
            f"  Firefox: 1. {steps['firefox'][0]}; 2. {steps['firefox'][1]}")


def _is_export(manifest: Path, files: dict[str, bytes]) -> bool:
    """`manifest` is this extension's (same `key`): the folder is an earlier export. Reads at most 1 MiB."""
    try:
        if not manifest.is_file() or manifest.stat().st_size > 1 << 20:
            return False
        existing = _manifest({"manifest.json": manifest.read_bytes()})
    except (OSError, ValueError):
        return False
    return existing.get("key") == _manifest(files).get("key")


class ExportError(Exception):
    """The extension cannot be exported there; the message says why and what to do."""


def export_extension(dest: Path, files: dict[str, bytes]) -> tuple[Path, int]:
    """Write the extension's `files` (`configured_files`) into `dest`; return the absolute folder and the number
    of files.

    Refuses a folder that holds anything but an earlier export, so nobody's files are overwritten.
    """
    if not files:
        raise ExportError("this package carries no extension files; reinstall compass-bridge")
    target = dest.expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} is a file; name a new or empty folder")
    if target.is_dir() and any(target.iterdir()) and not _is_export(target / "manifest.json", files):
        raise ExportError(f"{target} is not empty and holds no earlier export of this extension; "
                          "name a new or empty folder")
    for name, data in files.items():
        path = target.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return target, len(files)

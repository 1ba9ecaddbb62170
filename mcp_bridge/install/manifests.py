"""Native-messaging host manifests: build them, merge with what is already installed, and validate them.

Chromium rejects a whole manifest for one malformed `allowed_origins` entry, and users add IDs of their own
(an unpacked or self-built extension), so origins already present are kept, never clobbered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from mcp_bridge.install import HOST_NAME
from mcp_bridge.install.places import Family

EXTENSION_ID = re.compile(r"[a-p]{32}")
ORIGIN = re.compile(r"chrome-extension://([a-p]{32})/")
DESCRIPTION = "compass-bridge: relays between the browser extension and AI agents (MCP)"


class ManifestError(ValueError):
    """An ID or a manifest cannot be used; the message says why and what to do."""


def extension_id_from_key(key_b64: str) -> str:
    """Chromium's ID for an extension whose manifest `key` is this base64 DER public key."""
    digest = hashlib.sha256(base64.b64decode(key_b64)).hexdigest()[:32]
    return "".join("abcdefghijklmnop"[int(c, 16)] for c in digest)


def _packaged_extension_manifest() -> dict[str, Any] | None:
    from mcp_bridge.extension_id import reference_extension_dir

    shipped = reference_extension_dir()
    if shipped is None:
        return None
    data: dict[str, Any] = json.loads((shipped / "manifest.json").read_text(encoding="utf-8"))
    return data


@cache
def reference_extension_id() -> str:
    """The reference extension's ID, derived from the `key` in the manifest shipped with this package."""
    manifest = _packaged_extension_manifest()
    if manifest is None or "key" not in manifest:
        from mcp_bridge.extension_id import REFERENCE_EXTENSION_ID

        return REFERENCE_EXTENSION_ID
    return extension_id_from_key(str(manifest["key"]))


@cache
def reference_firefox_addon_id() -> str | None:
    """The reference extension's Firefox add-on ID (`browser_specific_settings.gecko.id`), when it declares one."""
    from mcp_bridge.extension_id import firefox_addon_id

    return firefox_addon_id(_packaged_extension_manifest() or {})


def validate_extension_id(value: str) -> str:
    """`value` as a bare extension ID; accepts `chrome-extension://ID/` too. Raises ManifestError otherwise."""
    text = value.strip()
    match = ORIGIN.fullmatch(text) or ORIGIN.fullmatch(text + "/")
    candidate = match.group(1) if match else text
    if not EXTENSION_ID.fullmatch(candidate):
        raise ManifestError(
            f"{value!r} is not a Chromium extension ID: an ID is exactly 32 letters from a to p. "
            "Copy it from chrome://extensions (turn on Developer mode to see IDs)"
        )
    return candidate


def origin(extension_id: str) -> str:
    return f"chrome-extension://{extension_id}/"


def merge(wanted: Iterable[str], existing: object, valid: re.Pattern[str] | None) -> tuple[list[str], list[str]]:
    """`wanted` then every entry of `existing` not already listed, without duplicates.

    Returns (merged, dropped): existing entries that do not match `valid` are dropped because the browser
    would reject the whole manifest for them.
    """
    merged: list[str] = []
    dropped: list[str] = []
    olds = existing if isinstance(existing, list) else []
    for entry in [*wanted, *olds]:
        if not isinstance(entry, str) or (valid is not None and not valid.fullmatch(entry)):
            dropped.append(str(entry))
        elif entry not in merged:
            merged.append(entry)
    return merged, dropped


def build(family: Family, launcher: Path, allowed: Sequence[str]) -> dict[str, Any]:
    key = "allowed_origins" if family is Family.CHROMIUM else "allowed_extensions"
    return {"name": HOST_NAME, "description": DESCRIPTION, "path": str(launcher), "type": "stdio", key: list(allowed)}


def render(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def read(path: Path) -> dict[str, Any] | None:
    """The manifest at `path`, or None when there is none. Raises ManifestError when it is not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read it: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: not a JSON object")
    return data


def problems(manifest: dict[str, Any], path: Path, family: Family, *, posix: bool) -> list[str]:
    """Everything that makes a browser refuse this manifest, each worded with the consequence."""
    found: list[str] = []
    if posix and path.name != f"{HOST_NAME}.json":
        found.append(f"the file must be named {HOST_NAME}.json")
    if manifest.get("name") != HOST_NAME:
        found.append(f"`name` is {manifest.get('name')!r}, expected {HOST_NAME!r}")
    if not isinstance(manifest.get("description"), str) or not manifest["description"]:
        found.append("`description` is missing or empty")
    if manifest.get("type") != "stdio":
        found.append(f"`type` is {manifest.get('type')!r}, expected 'stdio'")
    host_path = manifest.get("path")
    if not isinstance(host_path, str) or not host_path:
        found.append("`path` is missing")
    elif not Path(host_path).is_absolute():
        found.append(f"`path` {host_path!r} is relative; it must be absolute")
    if family is Family.CHROMIUM:
        origins = manifest.get("allowed_origins")
        if not isinstance(origins, list) or not origins:
            found.append("`allowed_origins` is missing or empty")
        else:
            bad = [o for o in origins if not isinstance(o, str) or not ORIGIN.fullmatch(o)]
            if bad:
                found.append(f"malformed allowed_origins {bad!r}: each must be chrome-extension://<32 letters "
                             "a-p>/ with the trailing slash, and one bad entry disables the whole manifest")
    else:
        addons = manifest.get("allowed_extensions")
        if not isinstance(addons, list) or not addons or not all(isinstance(a, str) and a for a in addons):
            found.append("`allowed_extensions` must be a non-empty list of add-on IDs")
    return found

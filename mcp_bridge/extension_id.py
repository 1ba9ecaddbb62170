"""The reference extension (`extension/`): its fixed ID and where its files are.

Chromium derives an unpacked extension's ID from the manifest's `key`: sha256 of the DER public key, the
first 32 hex digits, each mapped 0-f → a-p. The installer allows this ID in the native-host manifest.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

REFERENCE_EXTENSION_ID = "lbkpfkbndadjpidhgejmmihcbnjfdllf"


def reference_extension_dir() -> Path | None:
    """The folder to pick in "Load unpacked": inside the installed package (a wheel carries it as
    `mcp_bridge/_extension`) or beside the package in a source checkout; None if neither is there."""
    packaged = Path(str(resources.files("mcp_bridge").joinpath("_extension")))
    checkout = Path(__file__).resolve().parent.parent / "extension"
    return next((d for d in (packaged, checkout) if (d / "manifest.json").is_file()), None)

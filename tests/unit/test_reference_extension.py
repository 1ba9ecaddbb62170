"""The reference extension's files agree with the Python side: ID, host name, tool catalog."""

from __future__ import annotations

import base64
import hashlib
import json
import re

from mcp_bridge.extension_id import REFERENCE_EXTENSION_ID, reference_extension_dir
from mcp_bridge.install import HOST_NAME
from tests.conftest import REPO

EXTENSION = REPO / "extension"


def test_the_id_constant_is_the_one_chromium_derives_from_the_manifest_key() -> None:
    manifest = json.loads((EXTENSION / "manifest.json").read_text())
    digest = hashlib.sha256(base64.b64decode(manifest["key"])).hexdigest()[:32]
    assert "".join("abcdefghijklmnop"[int(c, 16)] for c in digest) == REFERENCE_EXTENSION_ID
    assert manifest["manifest_version"] == 3
    assert {"nativeMessaging", "scripting", "tabs"} <= set(manifest["permissions"])


def test_the_extension_connects_to_the_host_name_the_installer_registers() -> None:
    source = (EXTENSION / "background.js").read_text()
    declared = re.search(r"const HOST_NAME = '([^']+)';", source)
    assert declared is not None and declared[1] == HOST_NAME


def test_the_extension_folder_is_found_for_load_unpacked() -> None:
    found = reference_extension_dir()
    assert found is not None and (found / "manifest.json").is_file()

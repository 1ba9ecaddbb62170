"""The bridge's input schemas for Compass's ten tools: valid JSON Schema accepting and refusing the right calls."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from mcp_bridge.compass.schemas import KNOWN_TOOLS, hints_for_scope
from mcp_bridge.scopes import Scope

TEN = {"queryData", "recallMemory", "listThemes", "listDashboards", "listInstalledSkills", "rememberContext",
       "setTheme", "installSkill", "uninstallSkill", "toggleInstalledSkill"}
READS = {"queryData", "recallMemory", "listThemes", "listDashboards", "listInstalledSkills"}


def _valid(tool: str, args: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(dict(KNOWN_TOOLS[tool].input_schema)).is_valid(args)


def test_the_ten_tools_have_object_schemas_that_are_valid_json_schema() -> None:
    assert set(KNOWN_TOOLS) == TEN
    for name, known in KNOWN_TOOLS.items():
        jsonschema.Draft202012Validator.check_schema(dict(known.input_schema))
        assert known.input_schema["type"] == "object", name
        assert known.description


def test_query_data_offers_exactly_compass_query_types() -> None:
    schema = KNOWN_TOOLS["queryData"].input_schema
    assert schema["properties"]["queryType"]["enum"] == [
        "customers", "vendors", "projects", "invoices", "vendor_bills", "schedule_tasks", "project_operations",
        "project_detail", "customer_detail", "vendor_detail",
    ]
    assert set(schema["properties"]) == {"queryType", "id", "search", "limit"}
    assert schema["required"] == ["queryType"]


@pytest.mark.parametrize(("tool", "args", "ok"), [
    ("queryData", {"queryType": "customers", "search": "acme", "limit": 5}, True),
    ("queryData", {"queryType": "project_detail", "id": "prj_1"}, True),
    ("queryData", {"queryType": "everything"}, False),
    ("queryData", {"search": "acme"}, False),
    ("queryData", {"queryType": "customers", "limit": 0}, False),
    ("recallMemory", {"query": "weekly"}, True),
    ("recallMemory", {}, False),
    ("rememberContext", {"content": "Invoices go out on Fridays", "memoryType": "workflow", "importance": 0.9}, True),
    ("rememberContext", {"content": "x", "memoryType": "opinion"}, False),
    ("rememberContext", {"content": "x", "memoryType": "fact", "importance": 0.1}, False),
    ("setTheme", {"themeId": "mocha"}, True),
    ("setTheme", {}, False),
    ("installSkill", {"source": "cloudflare/skills/wrangler"}, True),
    ("uninstallSkill", {"pluginId": "skill_1"}, True),
    ("toggleInstalledSkill", {"pluginId": "skill_1", "enabled": False}, True),
    ("toggleInstalledSkill", {"pluginId": "skill_1"}, False),
    ("listThemes", {}, True),
    ("listDashboards", {"extra": 1}, False),
])
def test_schemas_accept_and_refuse_the_right_arguments(tool: str, args: dict[str, Any], ok: bool) -> None:
    assert _valid(tool, args) is ok


def test_hints_mark_reads_read_only_and_uninstall_destructive() -> None:
    for name, known in KNOWN_TOOLS.items():
        assert known.hints.read_only is (name in READS), name
    assert KNOWN_TOOLS["uninstallSkill"].hints.destructive
    assert hints_for_scope(Scope.READ).read_only
    assert not hints_for_scope(Scope.WRITE).read_only and hints_for_scope(Scope.WRITE).destructive


def test_importing_the_source_does_not_load_httpx() -> None:
    # The server imports the Compass source before it answers `initialize`; httpx must wait for run().
    code = "import sys, mcp_bridge.compass.source; assert 'httpx' not in sys.modules, 'httpx imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

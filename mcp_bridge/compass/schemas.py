"""What the bridge knows about Compass's ten agent tools: input schemas, descriptions and MCP hints.

Compass may announce a tool without an `inputSchema`; an agent given no schema guesses the arguments,
so these (taken from Compass's own agent tool definitions) fill the gap. Whatever Compass does send
wins, and a tool not listed here appears with Compass's schema and hints derived from its scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import READ_ONLY, Hints


@dataclass(frozen=True)
class KnownTool:
    description: str
    input_schema: Mapping[str, Any]
    hints: Hints


QUERY_TYPES = (
    "customers", "vendors", "projects", "invoices", "vendor_bills", "schedule_tasks", "project_operations",
    "project_detail", "customer_detail", "vendor_detail",
)
MEMORY_TYPES = ("preference", "workflow", "fact", "decision")


def _object(properties: Mapping[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties), "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": description}


_NO_ARGUMENTS = _object({})
_PLUGIN_ID = _string("The plugin ID of the installed skill (listInstalledSkills shows them)")

KNOWN_TOOLS: Mapping[str, KnownTool] = {
    "queryData": KnownTool(
        "Query the Compass database: lists of customers, vendors, projects, invoices, vendor bills, schedule "
        "tasks or project operations, or one customer, vendor or project by id.",
        _object({
            "queryType": {"type": "string", "enum": list(QUERY_TYPES),
                          "description": "What to fetch; the *_detail types return one record and need `id`"},
            "id": _string("Record ID, required for project_detail, customer_detail and vendor_detail"),
            "search": _string("Filter a list by name (customers, vendors, projects) or title (schedule_tasks)"),
            "limit": {"type": "integer", "minimum": 1, "description": "Most rows to return (default 20)"},
        }, ("queryType",)),
        READ_ONLY,
    ),
    "recallMemory": KnownTool(
        "Search the user's persistent Compass memories (preferences, decisions, facts, workflows) by keyword.",
        _object({
            "query": _string("What to search for in the memories"),
            "limit": {"type": "integer", "minimum": 1, "description": "Most memories to return (default 5)"},
        }, ("query",)),
        READ_ONLY,
    ),
    "listThemes": KnownTool("List the visual themes available in Compass (presets and the user's custom themes).",
                            _NO_ARGUMENTS, READ_ONLY),
    "listDashboards": KnownTool("List the user's saved custom Compass dashboards.", _NO_ARGUMENTS, READ_ONLY),
    "listInstalledSkills": KnownTool("List the agent skills installed in Compass, with whether each is enabled.",
                                     _NO_ARGUMENTS, READ_ONLY),
    "rememberContext": KnownTool(
        "Save a preference, decision, fact or workflow to the user's persistent Compass memory.",
        _object({
            "content": _string("What to remember"),
            "memoryType": {"type": "string", "enum": list(MEMORY_TYPES), "description": "Category of the memory"},
            "tags": _string("Comma-separated tags for categorisation"),
            "importance": {"type": "number", "minimum": 0.3, "maximum": 1.0,
                           "description": "Importance weight from 0.3 to 1.0 (default 0.7)"},
        }, ("content", "memoryType")),
        Hints(read_only=False),
    ),
    "setTheme": KnownTool(
        "Switch the user's Compass theme to a preset (e.g. native-compass, corpo, notebook, mocha) or a custom "
        "theme's ID; listThemes shows them.",
        _object({"themeId": _string("The ID of the theme to activate")}, ("themeId",)),
        Hints(read_only=False, idempotent=True),
    ),
    "installSkill": KnownTool(
        "Install an agent skill into Compass from GitHub (skills.sh format). Needs the admin role in Compass. "
        "Confirm with the user which skill before installing.",
        _object({"source": _string("GitHub source: owner/repo or owner/repo/skill-name, "
                                   "e.g. cloudflare/skills/wrangler")}, ("source",)),
        Hints(read_only=False, open_world=True),
    ),
    "uninstallSkill": KnownTool(
        "Remove an installed Compass skill permanently. Needs the admin role in Compass. Confirm with the user "
        "before uninstalling.",
        _object({"pluginId": _PLUGIN_ID}, ("pluginId",)),
        Hints(read_only=False, destructive=True, idempotent=True),
    ),
    "toggleInstalledSkill": KnownTool(
        "Enable or disable an installed Compass skill. Needs the admin role in Compass.",
        _object({"pluginId": _PLUGIN_ID,
                 "enabled": {"type": "boolean", "description": "true to enable, false to disable"}},
                ("pluginId", "enabled")),
        Hints(read_only=False, idempotent=True),
    ),
}

# An MCP tool must have an object schema; this accepts whatever Compass's tool takes.
ANY_ARGUMENTS: Mapping[str, Any] = {"type": "object"}


def hints_for_scope(scope: Scope) -> Hints:
    """Hints for a tool the bridge knows nothing about: MCP's cautious defaults unless it is read-only."""
    return READ_ONLY if scope is Scope.READ else Hints(read_only=False, destructive=True)

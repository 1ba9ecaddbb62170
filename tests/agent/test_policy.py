"""The approval envelope: classification of actions, decisions, and the refusal of an envelope that cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_bridge.agent.policy import NO_ENVELOPE, EnvelopeError, classify, parse_envelope
from mcp_bridge.agent.settings import AgentSettingsError, parse_agent_settings
from mcp_bridge.scopes import Scope

ROOT = Path("/work/proj")
SCOPES = {"read_file": Scope.READ, "write_file": Scope.WRITE, "run_command": Scope.ADMIN}


def act(tool: str, **tool_input: object) -> tuple[str, str]:
    action = classify(tool, tool_input, [ROOT], SCOPES.get)
    return action.category, action.risk


@pytest.mark.parametrize(("tool", "tool_input", "category"), [
    ("Read", {"file_path": "/etc/passwd"}, "read_only"),
    ("Write", {"file_path": "/work/proj/a.txt"}, "file_write_inside_roots"),
    ("Edit", {"file_path": "sub/a.txt"}, "file_write_inside_roots"),
    ("Write", {"file_path": "/work/proj/../other/a.txt"}, "file_write_outside_roots"),
    ("Bash", {"command": "rm -rf build"}, "file_delete"),
    ("Bash", {"command": "git status"}, "git_safe"),
    ("Bash", {"command": "git push --force origin main"}, "git_destructive"),
    ("Bash", {"command": "git reset --hard HEAD~3"}, "git_destructive"),
    ("Bash", {"command": "git status && rm -rf /"}, "git_destructive"),
    ("Bash", {"command": "npm install left-pad"}, "dependency_change"),
    ("Bash", {"command": "pip install requests"}, "dependency_change"),
    ("Bash", {"command": "curl https://example.com"}, "network"),
    ("Bash", {"command": "make all"}, "shell_command"),
    ("WebFetch", {"url": "https://example.com"}, "network"),
    ("mcp__bridge__read_file", {"path": "a"}, "mcp_read"),
    ("mcp__bridge__run_command", {"command": "ls"}, "read_only"),
    ("mcp__other__thing", {}, "unknown"),
    ("AskUserQuestion", {"questions": []}, "question"),
    ("SomethingNew", {}, "unknown"),
])
def test_classification(tool: str, tool_input: dict[str, object], category: str) -> None:
    assert act(tool, **tool_input)[0] == category


def test_no_envelope_reviews_everything_not_read_only() -> None:
    read = classify("Read", {"file_path": "/work/proj/a"}, [ROOT], SCOPES.get)
    write = classify("Write", {"file_path": "/work/proj/a"}, [ROOT], SCOPES.get)
    assert NO_ENVELOPE.decide(read)[0] == "auto_approve"
    decision, why = NO_ENVELOPE.decide(write)
    assert decision == "require_review" and "no approval envelope" in why


def test_envelope_rules_defaults_and_allowlist() -> None:
    envelope = parse_envelope({
        "mode": "envelope",
        "defaults": {"file_write_inside_roots": "auto_approve", "network": "deny"},
        "rules": [{"tool": "mcp__bridge__*", "decision": "require_review"},
                  {"category": "shell_command", "command_prefix": "make", "decision": "auto_approve"}],
        "shell_allowlist": ["pytest"],
    })

    def decide(tool: str, **tool_input: object) -> str:
        return envelope.decide(classify(tool, tool_input, [ROOT], SCOPES.get))[0]

    assert decide("Write", file_path="/work/proj/a") == "auto_approve"
    assert decide("Write", file_path="/tmp/a") == "deny"  # the built-in default for outside the roots
    assert decide("WebFetch", url="https://x") == "deny"
    assert decide("mcp__bridge__read_file", path="a") == "require_review"  # rule 1 comes first
    assert decide("Bash", command="make test") == "auto_approve"
    assert decide("Bash", command="make test; rm -rf ~") == "require_review"  # chaining never matches a prefix
    assert decide("Bash", command="pytest -q") == "auto_approve"
    assert decide("Bash", command="pytestevil") == "require_review"
    assert decide("AskUserQuestion", questions=[]) == "require_review"  # never answered by policy


def test_read_only_mode_denies_the_rest() -> None:
    envelope = parse_envelope({"mode": "read_only"})
    write = classify("Write", {"file_path": "/work/proj/a"}, [ROOT], SCOPES.get)
    assert envelope.decide(write)[0] == "deny"


@pytest.mark.parametrize(("raw", "message"), [
    ({"mode": "yolo"}, "`mode` must be"),
    ({"defaults": {"file_writes": "auto_approve"}}, "unknown category 'file_writes'"),
    ({"defaults": {"network": "allow"}}, "must be auto_approve, deny or require_review"),
    ({"rules": [{"decision": "deny"}]}, "needs at least one of"),
    ({"rules": [{"category": "question", "decision": "auto_approve"}]}, "always reviewed"),
    ({"shell_allowlist": "pytest"}, "list of command prefixes"),
    ({"allow_everything": True}, "unknown setting"),
])
def test_an_unreadable_envelope_is_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        parse_envelope(raw)
    with pytest.raises(AgentSettingsError, match=message):
        parse_agent_settings({"approvals": raw})


def test_settings() -> None:
    settings = parse_agent_settings({"max_concurrent": 3, "max_queued": 0, "run_timeout_s": 10})
    assert settings.concurrency() == 3 and settings.max_queued == 0 and not settings.approvals.configured
    assert parse_agent_settings({}).concurrency() >= 1
    with pytest.raises(AgentSettingsError, match="positive number"):
        parse_agent_settings({"run_timeout_s": 0})
    with pytest.raises(AgentSettingsError, match="unknown setting"):
        parse_agent_settings({"max_runs": 3})

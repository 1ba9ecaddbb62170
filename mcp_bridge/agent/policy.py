"""The approval envelope: what an agent run may do without asking, what it may never do, what a person reviews.

An action (a tool call with its input) is classified into one category with a risk and a plain summary; the
envelope (`[agent.approvals]` in config.toml, or JSON on the APIs) maps categories to `auto_approve`, `deny` or
`require_review`. No envelope means every action that is not read-only requires review; an envelope that cannot
be read is an error (the run service refuses to start), never a silent widening.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcp_bridge.scopes import Scope

Decision = Literal["auto_approve", "deny", "require_review"]
Risk = Literal["none", "low", "medium", "high"]
DECISIONS: tuple[Decision, ...] = ("auto_approve", "deny", "require_review")

# Category → (risk, the default decision once an envelope exists). Read-only work never needs a person.
CATEGORIES: dict[str, tuple[Risk, Decision]] = {
    "read_only": ("none", "auto_approve"),
    "file_write_inside_roots": ("low", "require_review"),
    "file_write_outside_roots": ("high", "deny"),
    "file_delete": ("medium", "require_review"),
    "shell_command": ("medium", "require_review"),
    "git_safe": ("low", "auto_approve"),
    "git_destructive": ("high", "require_review"),
    "dependency_change": ("medium", "require_review"),
    "network": ("medium", "require_review"),
    "mcp_read": ("none", "auto_approve"),
    "mcp_write": ("low", "require_review"),
    "mcp_admin": ("high", "require_review"),
    "question": ("none", "require_review"),
    "unknown": ("medium", "require_review"),
}
# A question to the user is answered by a person or not at all: no envelope may auto-answer or hide it.
_ALWAYS_REVIEWED = frozenset({"question"})
_READ_ONLY_CATEGORIES = frozenset({"read_only", "mcp_read", "git_safe"})

_READ_TOOLS = frozenset({"Read", "Glob", "Grep", "LS", "NotebookRead", "TodoWrite", "TodoRead", "Task",
                         "ExitPlanMode", "BashOutput", "ListMcpResourcesTool", "ReadMcpResourceTool"})
_WRITE_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
_NETWORK_TOOLS = frozenset({"WebFetch", "WebSearch"})
_SHELL_TOOLS = frozenset({"Bash", "run_command", "KillShell", "KillBash"})
QUESTION_TOOL = "AskUserQuestion"

# Git subcommands that only read, or change nothing beyond the local index and history in ways `git` can undo.
_GIT_SAFE = frozenset({"status", "log", "diff", "show", "blame", "rev-parse", "ls-files", "describe", "grep",
                       "shortlog", "fetch", "add", "commit", "switch", "branch", "tag", "stash", "remote"})
_GIT_DESTRUCTIVE_FLAGS = re.compile(r"(^|\s)(--force|-f|-D|--hard|--delete|-d)(\s|$)")
_DEPENDENCY = re.compile(
    r"^(npm|pnpm|yarn|bun)\s+(install|i|add|remove|rm|uninstall|update|upgrade)\b|"
    r"^(pip|pip3|uv pip|poetry|pipenv)\s+(install|uninstall|add|remove)\b|^uv\s+(add|remove|sync)\b|"
    r"^(cargo)\s+(add|remove|install|update)\b|^go\s+(get|install)\b|^gem\s+install\b|^apt(-get)?\s+install\b"
)
_NETWORK_COMMANDS = re.compile(r"^(curl|wget|ssh|scp|rsync|nc|ncat|telnet|ftp)\b")
_DELETE_COMMANDS = re.compile(r"^(rm|rmdir|unlink|shred)\b")
# Commands a shell allowlist may approve: a single command, no chaining, substitution or redirection.
_SHELL_META = re.compile(r"[;&|`$<>\n]")
# `echo`-like commands Claude Code itself auto-allows never reach us; these are read-only when alone.
_READ_COMMANDS = re.compile(r"^(ls|cat|head|tail|wc|pwd|echo|which|file|stat|du|df|grep|rg|find|tree)\b")


class EnvelopeError(ValueError):
    """The envelope cannot be used; the message names the setting and how to fix it."""


@dataclass(frozen=True)
class Action:
    tool: str
    input: Mapping[str, Any]
    category: str
    risk: Risk
    summary: str

    def public(self) -> dict[str, Any]:
        return {"tool": self.tool, "input": dict(self.input), "category": self.category, "risk": self.risk,
                "summary": self.summary}


@dataclass(frozen=True)
class Rule:
    decision: Decision
    category: str | None = None
    tool: str | None = None
    """An exact tool name, or a prefix ending in `*` (e.g. `mcp__bridge__*`)."""
    command_prefix: str | None = None

    def matches(self, action: Action) -> bool:
        if self.category is not None and self.category != action.category:
            return False
        if self.tool is not None:
            if self.tool.endswith("*"):
                if not action.tool.startswith(self.tool[:-1]):
                    return False
            elif self.tool != action.tool:
                return False
        if self.command_prefix is not None:
            command = _command_of(action.input)
            if command is None or _SHELL_META.search(command) or not _has_prefix(command, self.command_prefix):
                return False
        return True


@dataclass(frozen=True)
class Envelope:
    mode: Literal["envelope", "review_all", "read_only"] = "review_all"
    defaults: Mapping[str, Decision] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    shell_allowlist: tuple[str, ...] = ()
    configured: bool = False
    """False for the built-in 'no envelope' value."""

    def decide(self, action: Action) -> tuple[Decision, str]:
        """The decision and why (for the usage log and the driver)."""
        if action.category in _ALWAYS_REVIEWED:
            return "require_review", "a question for the user is always answered by a person"
        read_only = action.category in _READ_ONLY_CATEGORIES
        if not self.configured:
            if read_only:
                return "auto_approve", "read-only"
            return "require_review", ("no approval envelope is configured: every action that is not read-only "
                                      "is reviewed")
        if self.mode == "read_only":
            return ("auto_approve", "read-only") if read_only else (
                "deny", "the envelope's mode is read_only: only read-only actions are allowed")
        if self.mode == "review_all":
            return ("auto_approve", "read-only") if read_only else (
                "require_review", "the envelope's mode is review_all")
        for index, rule in enumerate(self.rules):
            if rule.matches(action):
                return rule.decision, f"rule {index + 1} of the envelope"
        command = _command_of(action.input)
        if action.category == "shell_command" and command is not None and not _SHELL_META.search(command):
            for prefix in self.shell_allowlist:
                if _has_prefix(command, prefix):
                    return "auto_approve", f"the shell allowlist has {prefix!r}"
        if action.category in self.defaults:
            return self.defaults[action.category], f"the envelope's default for {action.category}"
        return CATEGORIES[action.category][1], f"the built-in default for {action.category}"

    def public(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "mode": self.mode,
            "defaults": dict(self.defaults),
            "rules": [{k: v for k, v in (("decision", r.decision), ("category", r.category), ("tool", r.tool),
                                         ("command_prefix", r.command_prefix)) if v is not None} for r in self.rules],
            "shell_allowlist": list(self.shell_allowlist),
        }


NO_ENVELOPE = Envelope()

_STRICTNESS: dict[Decision, int] = {"auto_approve": 0, "require_review": 1, "deny": 2}


def narrowed(configured: Envelope, own: Sequence[Envelope], action: Action) -> tuple[Decision, str]:
    """The decision of the configured envelope, made stricter (auto → review → deny) by a run's own envelopes,
    never looser: a driver may ask for less of its runs than the user allows, not more."""
    decision, why = configured.decide(action)
    for envelope in own:
        stricter, stricter_why = envelope.decide(action)
        if _STRICTNESS[stricter] > _STRICTNESS[decision]:
            decision, why = stricter, f"the run's own envelope: {stricter_why}"
    return decision, why


def parse_envelope(raw: Mapping[str, Any] | None, where: str = "[agent.approvals]") -> Envelope:
    """The envelope from its TOML/JSON shape; None means there is none (review everything not read-only)."""
    if raw is None:
        return NO_ENVELOPE
    if not isinstance(raw, Mapping):
        raise EnvelopeError(f"{where} must be a table/object")
    unknown = set(raw) - {"mode", "defaults", "rules", "shell_allowlist"}
    if unknown:
        raise EnvelopeError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                            "allowed: mode, defaults, rules, shell_allowlist")
    mode = raw.get("mode", "envelope")
    if mode not in ("envelope", "review_all", "read_only"):
        raise EnvelopeError(f"{where}: `mode` must be envelope, review_all or read_only, got {mode!r}")
    defaults_raw = raw.get("defaults", {})
    if not isinstance(defaults_raw, Mapping):
        raise EnvelopeError(f"{where}: `defaults` must map categories to decisions")
    defaults: dict[str, Decision] = {}
    for category, decision in defaults_raw.items():
        _check_category(category, f"{where}.defaults")
        defaults[category] = _check_decision(decision, f"{where}.defaults.{category}")
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, Sequence) or isinstance(rules_raw, str):
        raise EnvelopeError(f"{where}: `rules` must be a list of tables")
    rules = []
    for index, item in enumerate(rules_raw, start=1):
        here = f"{where}.rules[{index}]"
        if not isinstance(item, Mapping):
            raise EnvelopeError(f"{here} must be a table")
        extra = set(item) - {"decision", "category", "tool", "command_prefix"}
        if extra:
            raise EnvelopeError(f"{here}: unknown key(s) {', '.join(sorted(extra))}")
        for name in ("category", "tool", "command_prefix"):
            if name in item and (not isinstance(item[name], str) or not item[name]):
                raise EnvelopeError(f"{here}: `{name}` must be a non-empty string")
        if "category" in item:
            _check_category(item["category"], here)
        if not {"category", "tool", "command_prefix"} & set(item):
            raise EnvelopeError(f"{here}: a rule needs at least one of category, tool, command_prefix")
        if item.get("category") in _ALWAYS_REVIEWED:
            raise EnvelopeError(f"{here}: questions to the user are always reviewed; remove this rule")
        rules.append(Rule(_check_decision(item.get("decision"), f"{here}.decision"), item.get("category"),
                          item.get("tool"), item.get("command_prefix")))
    allow = raw.get("shell_allowlist", [])
    if not isinstance(allow, Sequence) or isinstance(allow, str) or not all(
            isinstance(p, str) and p.strip() for p in allow):
        raise EnvelopeError(f"{where}: `shell_allowlist` must be a list of command prefixes, e.g. [\"pytest\"]")
    return Envelope(mode=mode, defaults=defaults, rules=tuple(rules),
                    shell_allowlist=tuple(p.strip() for p in allow), configured=True)


def _check_category(category: object, where: str) -> None:
    if category not in CATEGORIES or (category in _ALWAYS_REVIEWED and where.endswith(".defaults")):
        raise EnvelopeError(f"{where}: unknown category {category!r}; one of "
                            + ", ".join(c for c in CATEGORIES if c not in _ALWAYS_REVIEWED))


def _check_decision(decision: object, where: str) -> Decision:
    for known in DECISIONS:
        if decision == known:
            return known
    raise EnvelopeError(f"{where}: the decision must be auto_approve, deny or require_review, got {decision!r}")


def _command_of(tool_input: Mapping[str, Any]) -> str | None:
    command = tool_input.get("command")
    return command.strip() if isinstance(command, str) else None


def _has_prefix(command: str, prefix: str) -> bool:
    return command == prefix or command.startswith(prefix.rstrip() + " ")


ScopeOf = Callable[[str], Scope | None]

# The scope a driver must hold for a run to use a tool, whatever the envelope says (docs/AGENT_RUNS.md, "Scopes
# bound runs"): as for the bridge's own tools — reading needs read, changing files needs write, executing
# anything needs admin (like run_command). Fetching the web sends data off the machine, so it needs write.
_READ_SCOPED = _READ_TOOLS | {QUESTION_TOOL}
_WRITE_SCOPED = _WRITE_TOOLS | _NETWORK_TOOLS


def needed_scope(tool: str, scope_of: ScopeOf) -> Scope:
    """The scope `tool` needs: its own for a bridge tool (`scope_of`, by its name without the `mcp__…__`
    prefix), Claude Code's built-ins by what they do; anything else (Bash, an unknown tool) needs admin."""
    if tool in _READ_SCOPED:
        return Scope.READ
    if tool in _WRITE_SCOPED:
        return Scope.WRITE
    known = scope_of(tool.split("__")[-1] if tool.startswith("mcp__") else tool)
    return Scope.ADMIN if known is None else known


def builtins_beyond(scopes: frozenset[Scope]) -> list[str]:
    """Claude Code's built-in tools that `scopes` do not cover, to withhold from the model altogether
    (`--disallowedTools`): the CLI runs some commands it deems read-only without asking, so a denial by policy
    alone would not hold for them."""
    builtins = sorted(_WRITE_SCOPED | {"Bash", "KillShell", "KillBash"})
    return [tool for tool in builtins if needed_scope(tool, lambda _: None) not in scopes]


def classify(tool: str, tool_input: Mapping[str, Any], roots: Sequence[Path], scope_of: ScopeOf) -> Action:
    """Which category an action falls in, its risk and a plain-language summary."""
    category, summary = _categorize(tool, tool_input, roots, scope_of)
    return Action(tool, dict(tool_input), category, CATEGORIES[category][0], summary)


def _categorize(tool: str, tool_input: Mapping[str, Any], roots: Sequence[Path],
                scope_of: ScopeOf) -> tuple[str, str]:
    if tool == QUESTION_TOOL:
        return "question", "the agent asks you a question"
    base = tool.split("__")[-1] if tool.startswith("mcp__") else tool
    command = _command_of(tool_input)
    if base in _SHELL_TOOLS and command is not None:
        return _categorize_command(command), f"run `{_clip(command)}`"
    if tool in _READ_TOOLS:
        return "read_only", f"{tool} {_clip(str(tool_input.get('file_path') or tool_input.get('pattern') or ''))}"
    if tool in _WRITE_TOOLS or base in ("write_file", "edit_file"):
        target = tool_input.get("file_path") or tool_input.get("notebook_path") or tool_input.get("path")
        if not isinstance(target, str):
            return "unknown", f"{tool} without a file path"
        inside = _inside(Path(target), roots)
        what = "edit" if "dit" in tool else "write"
        return ("file_write_inside_roots" if inside else "file_write_outside_roots"), f"{what} {target}"
    if tool in _NETWORK_TOOLS:
        return "network", f"{tool} {_clip(str(tool_input.get('url') or tool_input.get('query') or ''))}"
    if tool.startswith("mcp__") or scope_of(tool) is not None:
        scope = scope_of(base)
        if scope is None:
            return "unknown", f"MCP tool {tool}"
        return f"mcp_{scope}", f"MCP tool {base} (needs '{scope}')"
    return "unknown", f"{tool} (not a tool the envelope knows)"


def _categorize_command(command: str) -> str:
    first = command.lstrip()
    if first.startswith("git "):
        try:
            words = shlex.split(first)[1:]
        except ValueError:
            return "git_destructive"
        sub = next((w for w in words if not w.startswith("-")), "")
        risky = bool(_SHELL_META.search(first) or _GIT_DESTRUCTIVE_FLAGS.search(first))
        return "git_safe" if sub in _GIT_SAFE and not risky else "git_destructive"
    if _DEPENDENCY.search(first):
        return "dependency_change"
    if _NETWORK_COMMANDS.search(first):
        return "network"
    if _DELETE_COMMANDS.search(first):
        return "file_delete"
    if _READ_COMMANDS.search(first) and not _SHELL_META.search(first):
        return "read_only"
    return "shell_command"


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    path = path.expanduser()
    if not path.is_absolute() and roots:  # the tools read a relative path against the first root
        path = roots[0] / path
    resolved = path.resolve(strict=False)
    return any(resolved == root or root in resolved.parents for root in (r.resolve() for r in roots))


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

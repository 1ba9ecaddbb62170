"""Claude Code's configuration as admin tools: agents, skills, rules and CLAUDE.md, under ~/.claude or a
project's .claude/ inside the roots.

The generic file tools may not touch Claude Code's configuration (a run that rewrites it gains what it was
not given); these tools are the sanctioned path, `admin` scope only, every call in the usage log (the call
pipeline's, or the HTTP door's). They reach nothing else: not ~/.claude.json, not settings files (which hold
keys and permission rules), not hidden files — names are plain words, never paths, and no link is followed
out of the configuration directory. Writes are atomic (a temporary file beside the target, then a rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.scopes import Scope
from mcp_bridge.tools.base import (
    READ_ONLY,
    Args,
    CallContext,
    Hints,
    StaticSource,
    Tool,
    ToolFailure,
    ToolOutput,
    arg,
    declared_tool,
)

KINDS = ("agents", "skills", "rules", "claude_md")
MAX_CONTENT_BYTES = 256 * 1024
"""Larger than any real agent, skill or rules file; bounds what one call can make the bridge write or read."""
MAX_LISTED = 500
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class ConfigNotFound(ToolFailure):
    """The named entry does not exist (404 on the HTTP door)."""


class ConfigRefused(ToolFailure):
    """The request names something these tools may not reach (400 on the HTTP door)."""


class Entry(NamedTuple):
    kind: str
    name: str
    path: Path

    def public(self, **extra: Any) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "path": str(self.path), **extra}


def check_name(kind: str, name: str | None) -> str:
    if kind not in KINDS:
        raise ConfigRefused(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "claude_md":
        if name not in (None, "", "CLAUDE.md", "CLAUDE"):
            raise ConfigRefused("claude_md has one file, CLAUDE.md; leave `name` out")
        return "CLAUDE.md"
    if not name:
        raise ConfigRefused(f"{kind} needs a `name` (letters, digits, '-' and '_', e.g. code-reviewer)")
    stem = name.removesuffix(".md")
    if not _NAME.match(stem):
        raise ConfigRefused(f"refused name {name[:80]!r}: a name is 1-64 letters, digits, '-' or '_', starting "
                            "with a letter or digit (no paths, no dots, no hidden files); e.g. code-reviewer")
    return stem


class ClaudeConfig:
    """The configuration directories one caller may reach: ~/.claude, and `<project>/.claude` for projects
    inside the path policy's roots."""

    def __init__(self, policy: PathPolicy | None, home: Path | None = None) -> None:
        self._policy = policy
        self._home = home

    def _base(self, project: str | None) -> Path:
        if not project:
            home = self._home or Path.home()
            return Path(os.path.realpath(home / ".claude"))
        if self._policy is None:
            raise ConfigRefused("no roots are configured, so no project can be named; set `roots` in config.toml")
        real = self._policy.resolve(project, must_exist=True, writing=False)
        if not real.is_dir():
            raise ConfigRefused(f"the project {project!r} is not a directory")
        base = real / ".claude"
        if base.is_symlink():  # a project's own .claude is the project's, not a way out of it
            raise ConfigRefused(f"refused: {base} is a symbolic link; make it a real directory")
        return base

    def entry(self, kind: str, name: str | None, project: str | None) -> Entry:
        stem = check_name(kind, name)
        base = self._base(project)
        if kind == "claude_md":
            return Entry(kind, stem, base / "CLAUDE.md")
        if kind == "skills":
            return Entry(kind, stem, base / "skills" / stem / "SKILL.md")
        return Entry(kind, stem, base / kind / f"{stem}.md")

    @staticmethod
    def _no_links(path: Path, base: Path) -> None:
        """Every existing component between the configuration directory and the file is a real directory or
        file, never a link: a link could lead a write anywhere."""
        current = base
        for part in path.relative_to(base).parts:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                return
            if stat.S_ISLNK(mode):
                raise ConfigRefused(f"refused: {current} is a symbolic link; these tools only write real files "
                                    "inside the configuration directory. Replace the link with a file")

    def list(self, kind: str, project: str | None) -> list[dict[str, Any]]:
        if kind not in KINDS:
            raise ConfigRefused(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        base = self._base(project)
        if kind == "claude_md":
            entry = Entry(kind, "CLAUDE.md", base / "CLAUDE.md")
            return [entry.public(bytes=entry.path.stat().st_size)] if entry.path.is_file() else []
        directory = base / kind
        found: list[dict[str, Any]] = []
        if directory.is_symlink() or not directory.is_dir():
            return found
        for child in sorted(directory.iterdir()):
            if len(found) >= MAX_LISTED:
                break
            stem = child.name if kind == "skills" else child.name.removesuffix(".md")
            if not _NAME.match(stem) or (kind != "skills" and not child.name.endswith(".md")):
                continue
            entry = self.entry(kind, stem, project)
            if entry.path.is_file() and not entry.path.is_symlink():
                found.append(entry.public(bytes=entry.path.stat().st_size))
        return found

    def get(self, kind: str, name: str | None, project: str | None) -> dict[str, Any]:
        entry = self.entry(kind, name, project)
        base = self._base(project)
        self._no_links(entry.path, base)
        try:
            fd = os.open(entry.path, os.O_RDONLY | _O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            raise ConfigNotFound(f"no {kind} entry {entry.name!r} ({entry.path}); list them with "
                                 "claude_config_list") from None
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_CONTENT_BYTES + 1)
        if len(raw) > MAX_CONTENT_BYTES:
            raise ConfigRefused(f"{entry.path} is over {MAX_CONTENT_BYTES} bytes; edit it in an editor")
        return entry.public(content=raw.decode("utf-8", errors="replace"))

    def put(self, kind: str, name: str | None, content: str, project: str | None) -> dict[str, Any]:
        entry = self.entry(kind, name, project)
        data = content.encode("utf-8")
        if len(data) > MAX_CONTENT_BYTES:
            raise ConfigRefused(f"the content is {len(data)} bytes, over the limit of {MAX_CONTENT_BYTES}")
        base = self._base(project)
        self._no_links(entry.path, base)
        entry.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._no_links(entry.path, base)  # nothing swapped a link in while the directories were made
        existed = entry.path.exists()
        import tempfile  # only a write needs it; not loaded while the server starts

        fd, name_ = tempfile.mkstemp(prefix=".cb-", suffix=".tmp", dir=entry.path.parent)
        temp = Path(name_)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            temp.chmod(0o644)
            temp.replace(entry.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return entry.public(bytes=len(data), created=not existed)

    def delete(self, kind: str, name: str | None, project: str | None) -> dict[str, Any]:
        entry = self.entry(kind, name, project)
        base = self._base(project)
        self._no_links(entry.path, base)
        try:
            entry.path.unlink()
        except FileNotFoundError:
            raise ConfigNotFound(f"no {kind} entry {entry.name!r} ({entry.path}); nothing was deleted") from None
        if kind == "skills":
            with contextlib.suppress(OSError):  # only when empty: a skill's other files are the user's
                entry.path.parent.rmdir()
        return entry.public(deleted=True)


# -- the MCP tools -----------------------------------------------------------------------------------

_KIND = "agents, skills, rules or claude_md"
_PROJECT = ("A project directory inside the roots, for its .claude/ directory; leave out for the user's "
            "~/.claude.")


class ListArgs(Args):
    kind: str = arg(description=f"What to list: {_KIND}.")
    project: str | None = arg(None, description=_PROJECT)


class GetArgs(Args):
    kind: str = arg(description=f"What to read: {_KIND}.")
    name: str | None = arg(None, description="The entry's name (e.g. code-reviewer); none for claude_md.")
    project: str | None = arg(None, description=_PROJECT)


class PutArgs(Args):
    kind: str = arg(description=f"What to write: {_KIND}.")
    content: str = arg(description="The whole file's new text (Markdown, with front matter for agents and "
                       "skills).")
    name: str | None = arg(None, description="The entry's name (e.g. code-reviewer); none for claude_md.")
    project: str | None = arg(None, description=_PROJECT)


def _output(result: Any) -> ToolOutput:
    return ToolOutput.text(json.dumps(result, indent=1), {"result": result})


def _blocking(work: Callable[[Any], Any]) -> Callable[[Any, CallContext], ToolOutput]:
    """A handler for `work`, which only touches files: it runs on the server's worker thread as it is."""

    def run(args: Any, call: CallContext) -> ToolOutput:
        return _output(work(args))

    return run


_RESULT_SCHEMA = {"type": "object", "properties": {"result": {}}, "required": ["result"]}
_WHERE = ("Claude Code configuration under ~/.claude or a project's .claude/ (agents/NAME.md, "
          "skills/NAME/SKILL.md, rules/NAME.md, CLAUDE.md); nothing else, never settings or ~/.claude.json.")


def claude_config_tools(config: ClaudeConfig) -> list[Tool]:
    write = Hints(read_only=False, destructive=True, idempotent=True)
    return [
        declared_tool(name="claude_config_list", title="List Claude Code configuration", scope=Scope.ADMIN,
                      hints=READ_ONLY, args=ListArgs, output_schema=_RESULT_SCHEMA,
                      run=_blocking(lambda a: config.list(a.kind, a.project)),
                      description=f"List the entries of one kind. {_WHERE}"),
        declared_tool(name="claude_config_get", title="Read Claude Code configuration", scope=Scope.ADMIN,
                      hints=READ_ONLY, args=GetArgs, output_schema=_RESULT_SCHEMA,
                      run=_blocking(lambda a: config.get(a.kind, a.name, a.project)),
                      description=f"Read one entry's text. {_WHERE}"),
        declared_tool(name="claude_config_put", title="Write Claude Code configuration", scope=Scope.ADMIN,
                      hints=write, args=PutArgs, output_schema=_RESULT_SCHEMA,
                      run=_blocking(lambda a: config.put(a.kind, a.name, a.content, a.project)),
                      description=f"Create or replace one entry, atomically. {_WHERE}"),
        declared_tool(name="claude_config_delete", title="Delete Claude Code configuration", scope=Scope.ADMIN,
                      hints=write, args=GetArgs, output_schema=_RESULT_SCHEMA,
                      run=_blocking(lambda a: config.delete(a.kind, a.name, a.project)),
                      description=f"Delete one entry (a skill's other files stay). {_WHERE}"),
    ]


def claude_config_source(policy: PathPolicy | None) -> StaticSource:
    return StaticSource("claude-config", claude_config_tools(ClaudeConfig(policy)))


"""A plan is the list of actions install or uninstall will take; `--dry-run` prints it, apply carries it out.

Each action knows how to report itself (one line, or JSON) and holds the step that performs it. Steps record
what they did in the install record as they go, so a failure half-way still leaves an accurate record.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from mcp_bridge.install.files import atomic_write, make_dirs, read_text, remove_empty_dirs
from mcp_bridge.install.places import Platform
from mcp_bridge.install.record import Item, Kind, Record
from mcp_bridge.install.registry import Hive, RegistryBackend
from mcp_bridge.keys import KeyStore, KeyStoreError
from mcp_bridge.paths import StatePaths


class Op(StrEnum):
    CREATE = "created"
    UPDATE = "updated"
    UNCHANGED = "unchanged"
    REGISTER = "registered"
    MANUAL = "left to do by hand"
    REMOVE = "removed"
    RESTORE = "restored"
    KEEP = "kept"
    SKIP = "skipped"


# How each operation reads before it has happened (in a dry run).
_PLANNED = {Op.CREATE: "will be created", Op.UPDATE: "will be updated", Op.UNCHANGED: "unchanged",
            Op.REGISTER: "will be registered", Op.MANUAL: "left to do by hand", Op.REMOVE: "will be removed",
            Op.RESTORE: "will be restored", Op.KEEP: "kept", Op.SKIP: "skipped"}


class InstallError(Exception):
    """A step failed; the message says what, why and what to do."""


class Context:
    """What steps act on: the platform, the state dir, the registry, the record, and (lazily) the key store."""

    def __init__(self, platform: Platform, paths: StatePaths, registry: RegistryBackend | None,
                 record: Record, hive: Hive) -> None:
        self.platform = platform
        self.paths = paths
        self.registry = registry
        self.record = record
        self.hive = hive
        self._keys: KeyStore | None = None

    def keys(self) -> KeyStore:
        if self._keys is None:
            self._keys = KeyStore.open(self.paths)
        return self._keys

    def registry_backend(self) -> RegistryBackend:
        if self.registry is None:
            raise InstallError("no Windows registry is available on this system")
        return self.registry

    def close(self) -> None:
        if self._keys is not None:
            self._keys.close()
            self._keys = None


class Step(Protocol):
    def apply(self, ctx: Context) -> str:
        """Carry the action out; return a note for the report ('' for none); raise on failure."""
        ...


@dataclass
class Action:
    section: str
    op: Op
    what: str = ""
    detail: str = ""
    step: Step | None = None
    result: str | None = None
    note: str = ""

    def run(self, ctx: Context) -> None:
        if self.step is None:
            return
        try:
            self.note = self.step.apply(ctx) or self.note
            self.result = "done"
        except Exception as exc:  # one failed step must not stop the others
            self.result = "failed"
            self.note = str(exc) or type(exc).__name__

    def line(self, dry_run: bool) -> str:
        if self.result == "failed":
            status = f"FAILED: {self.note}"
        else:
            status = _PLANNED[self.op] if dry_run else self.op.value
            if self.note:
                status += f"; {self.note}"
        parts = [p for p in (self.what, self.detail) if p]
        return f"{self.section}: {' '.join(parts)} — {status}" if parts else f"{self.section}: {status}"

    def to_json(self) -> dict[str, Any]:
        return {"section": self.section, "op": self.op.value, "what": self.what, "detail": self.detail,
                "result": self.result, "note": self.note}


@dataclass
class Plan:
    verb: str
    record: Record
    hive: Hive
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocked: str | None = None
    """Why the plan cannot be applied as the current user (with the command that can)."""

    @property
    def ok(self) -> bool:
        return self.blocked is None and all(a.result != "failed" for a in self.actions)

    def apply(self, ctx: Context) -> bool:
        if self.blocked:
            return False
        # Directories go last, once the record has let go of them: the record itself may live in one.
        dirs = [a for a in self.actions if isinstance(a.step, UndoDir)]
        try:
            for action in self.actions:
                if action not in dirs:
                    action.run(ctx)
            for action in dirs:
                assert isinstance(action.step, UndoDir)
                ctx.record.forget(action.step.item)
            ctx.record.save()
            for action in dirs:
                action.run(ctx)
        finally:
            ctx.close()
        return self.ok

    def lines(self, dry_run: bool) -> list[str]:
        # A blocked plan was not carried out: say what it would have done, not "created".
        out = [a.line(dry_run or self.blocked is not None) for a in self.actions]
        out += self.notes
        if self.blocked:
            out.append(self.blocked)
        return out

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        return {"command": self.verb, "dry_run": dry_run, "ok": self.ok, "record": str(self.record.path),
                "blocked": self.blocked, "notes": self.notes, "actions": [a.to_json() for a in self.actions]}


# --- Steps shared by install and uninstall -----------------------------------------------------------


@dataclass
class WriteFile:
    path: Path
    text: str
    mode: int
    owners: set[str]
    previous: str | None
    data: dict[str, Any] = field(default_factory=dict)

    def apply(self, ctx: Context) -> str:
        role = {"role": self.data["role"]} if "role" in self.data else None
        for directory in make_dirs(self.path):
            ctx.record.add(Kind.DIR, str(directory), self.owners, data=role)
        for parent in self.path.parents:
            if ctx.record.get(Kind.DIR, str(parent)):
                ctx.record.add(Kind.DIR, str(parent), self.owners)
        current_mode = self.path.stat().st_mode & 0o7777 if self.path.exists() else None
        if read_text(self.path) != self.text or current_mode != self.mode:
            atomic_write(self.path, self.text, self.mode)
        ctx.record.add(Kind.FILE, str(self.path), self.owners, self.previous, self.data)
        return ""


@dataclass
class SetRegistry:
    key: str
    value: str
    owners: set[str]
    previous: str | None

    def apply(self, ctx: Context) -> str:
        ctx.registry_backend().set_default(ctx.hive, self.key, self.value)
        ctx.record.add(Kind.REGISTRY, f"{ctx.hive}\\{self.key}", self.owners, self.previous)
        return ""


@dataclass
class KeepOwners:
    """Uninstall of some owners of a shared item: the item stays for the others."""

    item: Item
    remaining: set[str]

    def apply(self, ctx: Context) -> str:
        self.item.owners = set(self.remaining)
        return ""


@dataclass
class UndoFile:
    item: Item
    also: tuple[Path, ...] = ()
    """Files the installed one produced at run time (the launch log), removed with it."""

    def apply(self, ctx: Context) -> str:
        path = Path(self.item.target)
        if self.item.previous is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, self.item.previous)
        for extra in self.also:
            extra.unlink(missing_ok=True)
        ctx.record.forget(self.item)
        return ""


@dataclass
class UndoDir:
    item: Item

    def apply(self, ctx: Context) -> str:
        path = Path(self.item.target)
        ctx.record.forget(self.item)
        if path.exists() and not remove_empty_dirs([path]):
            return "left in place: something else is in it now"
        return ""


@dataclass
class UndoRegistry:
    item: Item

    def apply(self, ctx: Context) -> str:
        hive_name, _, key = self.item.target.partition("\\")
        backend = ctx.registry_backend()
        if self.item.previous is None:
            backend.delete(Hive(hive_name), key)
        else:
            backend.set_default(Hive(hive_name), key, self.item.previous)
        ctx.record.forget(self.item)
        return ""


@dataclass
class DeleteKey:
    item: Item

    def apply(self, ctx: Context) -> str:
        with contextlib.suppress(KeyStoreError):  # already deleted by hand: nothing left to undo
            ctx.keys().delete(self.item.target)
        ctx.record.forget(self.item)
        return ""

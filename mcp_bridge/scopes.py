"""The scope hierarchy: read ⊂ write ⊂ admin."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Scope(enum.IntEnum):
    """A permission level; a higher level implies every lower one."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    def __str__(self) -> str:
        return self.name.lower()


class ScopeError(ValueError):
    pass


def parse_scope(text: str) -> Scope:
    try:
        return Scope[text.strip().upper()]
    except KeyError:
        raise ScopeError(f"unknown scope {text!r}; use read, write or admin") from None


def parse_scopes(text: str | Iterable[str]) -> frozenset[Scope]:
    """Parse `read,write` (or a list of names) and close it under the hierarchy."""
    names = text.split(",") if isinstance(text, str) else list(text)
    parsed = {parse_scope(n) for n in names if n.strip()}
    if not parsed:
        raise ScopeError("no scopes given; use one or more of read, write, admin")
    return expand(parsed)


def expand(scopes: Iterable[Scope]) -> frozenset[Scope]:
    """Every scope implied by `scopes` (write brings read; admin brings both)."""
    top = max(scopes, default=None)
    return frozenset(s for s in Scope if top is not None and s <= top)


def allows(granted: frozenset[Scope], needed: Scope) -> bool:
    """Whether `granted` includes `needed`, directly or through a higher scope (checked on every call: no sets
    built)."""
    return any(s >= needed for s in granted)


def format_scopes(scopes: Iterable[Scope]) -> str:
    return ",".join(str(s) for s in sorted(scopes)) or "none"

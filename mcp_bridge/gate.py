"""The scope gate: who is calling, and may they use this tool.

The caller is identified again on every call (a revoked or expired key stops working at once, even
in a server that is already running); a tool is shown only to a caller whose scopes include the
tool's scope, and checked again before it runs. Every answer is a `Verdict`: a refusal is a value
that says why and what to do, never an exception, and the key store's own types stay in here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from mcp_bridge.keys import KeyStore, Rejected
from mcp_bridge.scopes import Scope, allows, format_scopes
from mcp_bridge.tools.base import Tool
from mcp_bridge.usage import REJECTED_KEY_NAME

DEFAULT_KEY_NAME = "default"


class Caller(NamedTuple):
    key_id: str | None
    """None for the key-less default identity and for a rejected key."""
    name: str
    scopes: frozenset[Scope]


class Verdict(NamedTuple):
    """Who is calling and whether they may go on: `refusal` is None when allowed, else the reason to show."""

    caller: Caller
    refusal: str | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None


class Gate:
    def __init__(self, keys: KeyStore, presented_key: str | None, default_scopes: frozenset[Scope]) -> None:
        self._keys = keys
        self._key = presented_key
        # The HMAC of a fixed key never changes: compute it once, not per call.
        self._digest = keys.digest(presented_key) if presented_key else None
        self._default = Verdict(Caller(None, DEFAULT_KEY_NAME, default_scopes))

    def identify(self) -> Verdict:
        """The caller behind the presented key (or the default identity); refused if the key does not work."""
        if (broken := self._keys.unavailable()) is not None:
            # A broken store can neither check keys nor record calls: nobody is served, the default included.
            return Verdict(Caller(None, REJECTED_KEY_NAME, frozenset()), f"refused: {broken.explain()}")
        if self._key is None:
            return self._default
        found = self._keys.authenticate(self._key, digest=self._digest)
        if isinstance(found, Rejected):
            return Verdict(Caller(None, REJECTED_KEY_NAME, frozenset()), f"refused: {found.explain()}")
        return Verdict(Caller(found.id, found.name, found.scopes))

    @staticmethod
    def visible(tools: Iterable[Tool], verdict: Verdict) -> list[Tool]:
        if not verdict.allowed:
            return []
        return [t for t in tools if allows(verdict.caller.scopes, t.scope)]

    @staticmethod
    def authorize(tool: Tool, verdict: Verdict) -> Verdict:
        """`verdict` narrowed to this tool: still allowed only if the caller's scopes include the tool's."""
        caller = verdict.caller
        if not verdict.allowed or allows(caller.scopes, tool.scope):
            return verdict
        return Verdict(caller, (
            f"refused: tool '{tool.name}' needs the '{tool.scope}' scope, and the bridge key "
            f"'{caller.name}' has {format_scopes(caller.scopes)}. Ask the user for a key with "
            f"'{tool.scope}' (`compass-bridge keys create --name NAME --scopes {tool.scope}`) "
            "or use a tool this key allows."
        ))

    @staticmethod
    def may_read_resources(verdict: Verdict) -> Verdict:
        caller = verdict.caller
        if not verdict.allowed or Scope.READ in caller.scopes:
            return verdict
        return Verdict(caller, f"refused: reading resources needs the 'read' scope; the bridge key "
                               f"'{caller.name}' has {format_scopes(caller.scopes)}")

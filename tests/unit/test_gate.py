from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.gate import Caller, Gate, Verdict
from mcp_bridge.keys import KeyStore
from mcp_bridge.paths import state_paths
from mcp_bridge.scopes import Scope, parse_scopes
from mcp_bridge.tools.base import READ_ONLY, CallContext, Hints, Tool, ToolOutput


async def _noop(args: Any, call: CallContext) -> ToolOutput:
    return ToolOutput.text("ok")


def _tool(name: str, scope: Scope) -> Tool:
    return Tool(name, "test tool", scope, READ_ONLY if scope is Scope.READ else Hints(read_only=False),
                {"type": "object"}, _noop)


TOOLS = [_tool("look", Scope.READ), _tool("change", Scope.WRITE), _tool("rule", Scope.ADMIN)]


@pytest.fixture
def keys(bridge_home: Path) -> Iterator[KeyStore]:
    store = KeyStore.open(state_paths())
    yield store
    store.close()


def test_no_key_means_default_scopes(keys: KeyStore) -> None:
    verdict = Gate(keys, None, parse_scopes("read")).identify()
    assert verdict == Verdict(Caller(None, "default", parse_scopes("read")))
    assert [t.name for t in Gate.visible(TOOLS, verdict)] == ["look"]


@pytest.mark.parametrize(("scopes", "visible"), [("read", ["look"]), ("write", ["look", "change"]),
                                                 ("admin", ["look", "change", "rule"])])
def test_visible_and_authorize_agree(keys: KeyStore, scopes: str, visible: list[str]) -> None:
    _, key = keys.create("k", parse_scopes(scopes))
    verdict = Gate(keys, key, parse_scopes("read")).identify()
    assert verdict.allowed and verdict.caller.name == "k"
    assert [t.name for t in Gate.visible(TOOLS, verdict)] == visible
    for tool in TOOLS:
        decided = Gate.authorize(tool, verdict)
        assert decided.allowed == (tool.name in visible)
        assert decided.caller == verdict.caller
        if decided.refusal is not None:
            assert tool.name in decided.refusal and f"'{tool.scope}' scope" in decided.refusal
            assert "'k'" in decided.refusal and scopes in decided.refusal and "keys create" in decided.refusal


def test_revocation_is_seen_by_the_same_gate(keys: KeyStore) -> None:
    _, key = keys.create("k", parse_scopes("write"))
    gate = Gate(keys, key, parse_scopes("read"))
    assert gate.identify().allowed
    keys.revoke("k")
    rejected = gate.identify()
    assert not rejected.allowed and rejected.refusal is not None and "revoked" in rejected.refusal
    assert rejected.caller.key_id is None and rejected.caller.scopes == frozenset()
    # A refused identity stays refused whatever the tool, and sees nothing.
    assert Gate.visible(TOOLS, rejected) == []
    assert Gate.authorize(TOOLS[0], rejected) == rejected

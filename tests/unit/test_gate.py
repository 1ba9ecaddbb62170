from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.gate import Caller, Gate
from mcp_bridge.keys import KeyProblem, KeyStore, Rejected
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
    caller = Gate(keys, None, parse_scopes("read")).identify()
    assert caller == Caller(None, "default", parse_scopes("read"))
    assert [t.name for t in Gate.visible(TOOLS, caller)] == ["look"]


@pytest.mark.parametrize(("scopes", "visible"), [("read", ["look"]), ("write", ["look", "change"]),
                                                 ("admin", ["look", "change", "rule"])])
def test_visible_and_check_agree(keys: KeyStore, scopes: str, visible: list[str]) -> None:
    _, key = keys.create("k", parse_scopes(scopes))
    caller = Gate(keys, key, parse_scopes("read")).identify()
    assert isinstance(caller, Caller)
    assert [t.name for t in Gate.visible(TOOLS, caller)] == visible
    for tool in TOOLS:
        refusal = Gate.check(tool, caller)
        assert (refusal is None) == (tool.name in visible)
        if refusal is not None:
            assert tool.name in refusal.reason and f"'{tool.scope}' scope" in refusal.reason
            assert "'k'" in refusal.reason and scopes in refusal.reason


def test_revocation_is_seen_by_the_same_gate(keys: KeyStore) -> None:
    _, key = keys.create("k", parse_scopes("write"))
    gate = Gate(keys, key, parse_scopes("read"))
    assert isinstance(gate.identify(), Caller)
    keys.revoke("k")
    rejected = gate.identify()
    assert isinstance(rejected, Rejected) and rejected.problem is KeyProblem.REVOKED

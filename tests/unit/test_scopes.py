import pytest

from mcp_bridge.scopes import Scope, ScopeError, allows, expand, format_scopes, parse_scopes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read", {Scope.READ}),
        ("write", {Scope.READ, Scope.WRITE}),
        ("admin", {Scope.READ, Scope.WRITE, Scope.ADMIN}),
        ("read,write", {Scope.READ, Scope.WRITE}),
        (" Write , read ", {Scope.READ, Scope.WRITE}),
        ("read,admin", {Scope.READ, Scope.WRITE, Scope.ADMIN}),
    ],
)
def test_parse_closes_under_the_hierarchy(text: str, expected: set[Scope]) -> None:
    assert parse_scopes(text) == expected


@pytest.mark.parametrize("text", ["", ",", "root", "read,superuser", "READ;WRITE"])
def test_parse_refuses_unknown_or_empty(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scopes(text)


@pytest.mark.parametrize(
    ("granted", "needed", "allowed"),
    [
        ("read", Scope.READ, True),
        ("read", Scope.WRITE, False),
        ("read", Scope.ADMIN, False),
        ("write", Scope.READ, True),
        ("write", Scope.WRITE, True),
        ("write", Scope.ADMIN, False),
        ("admin", Scope.READ, True),
        ("admin", Scope.WRITE, True),
        ("admin", Scope.ADMIN, True),
    ],
)
def test_allows_follows_read_within_write_within_admin(granted: str, needed: Scope, allowed: bool) -> None:
    assert allows(parse_scopes(granted), needed) is allowed


def test_allows_expands_a_bare_set() -> None:
    # A set holding only ADMIN (as it might come from elsewhere) still implies READ.
    assert allows(frozenset({Scope.ADMIN}), Scope.READ)
    assert not allows(frozenset(), Scope.READ)


def test_format_orders_by_level() -> None:
    assert format_scopes(expand([Scope.ADMIN])) == "read,write,admin"
    assert format_scopes([]) == "none"

"""`Args`: argument declarations → JSON schema, and validation that names every wrong argument."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from mcp_bridge.tools.base import Args, ToolFailure, arg


class Sample(Args):
    path: str = arg(description="where")
    offset: int = arg(0, ge=0, description="first line")
    ratio: float | None = arg(None, gt=0, le=10)
    tags: list[str] = arg(default_factory=list)
    strict: bool = arg(True)
    pattern: str = arg("*", min_length=1)


def test_the_schema_is_a_strict_object_schema() -> None:
    schema = Sample.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["path"] and schema["additionalProperties"] is False
    assert schema["properties"]["offset"] == {"type": "integer", "minimum": 0, "description": "first line",
                                              "default": 0}
    assert schema["properties"]["ratio"]["anyOf"] == [{"type": "number", "exclusiveMinimum": 0, "maximum": 10},
                                                     {"type": "null"}]
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}, "default": []}


def test_valid_arguments_parse_with_defaults() -> None:
    parsed = Sample.parse({"path": "a.txt", "ratio": 2}, "sample")
    assert (parsed.path, parsed.offset, parsed.ratio, parsed.tags, parsed.strict, parsed.pattern) == (
        "a.txt", 0, 2, [], True, "*")
    assert Sample.parse({"path": "b"}, "sample").tags is not parsed.tags  # a fresh default each call


@pytest.mark.parametrize(("raw", "problems"), [
    ({}, ["path: required"]),
    ({"path": 1}, ["path: must be a string, not the number 1"]),
    ({"path": "a", "offset": -1}, ["offset: must be at least 0"]),
    ({"path": "a", "offset": True}, ["offset: must be an integer, not a boolean"]),
    ({"path": "a", "offset": 1.5}, ["offset: must be an integer"]),
    ({"path": "a", "ratio": 0}, ["ratio: must be greater than 0"]),
    ({"path": "a", "ratio": 11}, ["ratio: must be at most 10"]),
    ({"path": "a", "tags": ["x", 2]}, ["tags: must be a list of strings"]),
    ({"path": "a", "pattern": ""}, ["pattern: must not be empty"]),
    ({"path": "a", "file_path": "b"}, ["file_path: unknown argument (this tool takes offset, path, pattern, "
                                       "ratio, strict, tags)"]),
    ({"offset": "x", "bogus": 1}, ["bogus: unknown argument", "path: required", "offset: must be an integer"]),
])
def test_every_problem_is_named(raw: dict[str, Any], problems: list[str]) -> None:
    with pytest.raises(ToolFailure) as failure:
        Sample.parse(raw, "sample")
    message = str(failure.value)
    assert message.startswith("invalid arguments for sample: ") and "inputSchema" in message
    for problem in problems:
        assert problem in message, message


def test_a_declaration_the_validator_cannot_check_is_refused_at_import() -> None:
    with pytest.raises(TypeError, match="declare as"):
        class Broken(Args):
            when: dict[str, int] = arg()

"""Test-run summaries found in command output."""

from __future__ import annotations

import pytest

from mcp_bridge.agent import testresults
from mcp_bridge.agent.testresults import detect


@pytest.mark.parametrize(("output", "expected"), [
    ("....\n=========== 3 passed, 1 skipped, 2 warnings in 0.52s ===========\n", ("pytest", 3, 0, 1, 4)),
    ("FF\n====== 2 failed, 1 passed, 1 error in 1.00s ======\n", ("pytest", 1, 3, 0, 4)),
    ("\x1b[32m Test Files  2 passed (2)\x1b[0m\n      Tests  7 passed | 1 failed | 2 skipped (10)\n",
     ("vitest", 7, 1, 2, 10)),
    ("Tests:       1 failed, 2 skipped, 5 passed, 8 total\n", ("jest", 5, 1, 2, 8)),
    ("\n  4 passing (12ms)\n  1 failing\n  2 pending\n", ("mocha", 4, 1, 2, 7)),
    ("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out\n"
     "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured\n", ("cargo test", 4, 2, 1, 7)),
    ("=== RUN   TestA\n--- PASS: TestA (0.00s)\n--- FAIL: TestB (0.00s)\nFAIL\nFAIL\tex.com/p\t0.01s\n",
     ("go test", 1, 1, 0, 2)),
    ("ok  \tex.com/a\t0.01s\nok  \tex.com/b\t0.02s\n?   \tex.com/c\t[no test files]\n", ("go test", 2, 0, 1, 3)),
])
def test_detects_each_runner(output: str, expected: tuple[str, int, int, int, int]) -> None:
    found = detect(output, "the command")
    assert found == testresults.TestResult(*expected, command="the command")


def test_nothing_when_there_is_no_summary() -> None:
    assert detect("tests passed, I promise\n3 passed\n") is None
    assert detect("") is None

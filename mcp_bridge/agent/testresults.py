"""Test-run summaries in command output: vitest, pytest, jest, mocha, go test and cargo test.

Only the runner's own summary line is trusted (never per-test lines that a test could print), and the
last summary in the output wins (a watch mode or a re-run prints several).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class TestResult:
    runner: str
    passed: int
    failed: int
    skipped: int
    total: int
    command: str | None = None

    def public(self) -> dict[str, Any]:
        return asdict(self)


def _counts(text: str, names: dict[str, tuple[str, ...]]) -> dict[str, int]:
    found = {key: 0 for key in names}
    for number, word in re.findall(r"(\d+)\s+([a-z]+)", text):
        for key, words in names.items():
            if word in words:
                found[key] += int(number)
    return found


def _pytest(text: str) -> TestResult | None:
    lines = re.findall(r"^=+ (.*?\d+ (?:passed|failed|skipped|error|errors|deselected|xfailed|xpassed|warnings?)"
                       r".*?) in [\d.]+s(?: \([^)]*\))? =+$", text, re.M)
    if not lines:
        return None
    c = _counts(lines[-1], {"passed": ("passed", "xpassed"), "failed": ("failed", "error", "errors"),
                            "skipped": ("skipped", "xfailed", "deselected")})
    return TestResult("pytest", c["passed"], c["failed"], c["skipped"], c["passed"] + c["failed"] + c["skipped"])


def _vitest(text: str) -> TestResult | None:
    lines = re.findall(r"^\s*Tests\s{2,}(.+?\(\d+\))\s*$", text, re.M)
    if not lines:
        return None
    c = _counts(lines[-1], {"passed": ("passed",), "failed": ("failed",), "skipped": ("skipped", "todo")})
    total = int(re.findall(r"\((\d+)\)", lines[-1])[-1])
    return TestResult("vitest", c["passed"], c["failed"], c["skipped"], total)


def _jest(text: str) -> TestResult | None:
    lines = re.findall(r"^Tests:\s+(.*\d+ total)\s*$", text, re.M)
    if not lines:
        return None
    c = _counts(lines[-1], {"passed": ("passed",), "failed": ("failed",), "skipped": ("skipped", "todo"),
                            "total": ("total",)})
    return TestResult("jest", c["passed"], c["failed"], c["skipped"], c["total"])


def _mocha(text: str) -> TestResult | None:
    passing = re.findall(r"^\s+(\d+) passing \(\d+m?s\)\s*$", text, re.M)
    if not passing:
        return None
    tail = text[text.rfind(passing[-1] + " passing"):]
    failed = re.search(r"^\s+(\d+) failing\s*$", tail, re.M)
    pending = re.search(r"^\s+(\d+) pending\s*$", tail, re.M)
    p, f, s = int(passing[-1]), int(failed[1]) if failed else 0, int(pending[1]) if pending else 0
    return TestResult("mocha", p, f, s, p + f + s)


def _cargo(text: str) -> TestResult | None:
    lines = re.findall(r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored;", text, re.M)
    if not lines:
        return None
    p, f, s = (sum(int(line[i]) for line in lines) for i in range(3))
    return TestResult("cargo test", p, f, s, p + f + s)


def _go(text: str) -> TestResult | None:
    packages = re.findall(r"^(ok|FAIL|\?)\s+\S+", text, re.M)
    if not packages:
        return None
    p, f, s = (len(re.findall(rf"^\s*--- {w}: ", text, re.M)) for w in ("PASS", "FAIL", "SKIP"))
    if p + f + s == 0:  # without -v: count packages
        p = sum(1 for k in packages if k == "ok")
        f = sum(1 for k in packages if k == "FAIL")
        s = sum(1 for k in packages if k == "?")
    return TestResult("go test", p, f, s, p + f + s)


_DETECTORS = (_pytest, _vitest, _jest, _mocha, _cargo, _go)


def detect(output: str, command: str | None = None) -> TestResult | None:
    """The summary of a test run in `output`, or None when there is none."""
    text = _ANSI.sub("", output)
    for detector in _DETECTORS:
        found = detector(text)
        if found is not None:
            return TestResult(found.runner, found.passed, found.failed, found.skipped, found.total, command)
    return None

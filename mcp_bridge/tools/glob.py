"""Globs in the search_files (and .gitignore) dialect, matched in time linear in the name for a given pattern.

A glob translated to a backtracking regular expression (`*` → `[^/]*`) takes time exponential in the number of
`*`s on a name that almost matches — seconds for `*a*a*a*a*a*a*a*b` against 40 `a`s — while holding the GIL, so
one such search froze the whole server. Here no regular expression is used: a name is matched against a
segment's tokens with the greedy wildcard algorithm (a `*` only ever resumes from its latest position, so the
work is at most len(name) × len(segment) steps), and a path's components against the segments with the same
algorithm one level up, `**` playing the part of `*`, each (segment, component) pair decided once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from mcp_bridge.tools.failure import ToolFailure

MAX_PATTERN_CHARS = 4096
"""Longer patterns are refused: no real glob is this long, and the matching work grows with the length."""


class _Star:
    """`*` within a name, or `**` across names."""


class _Any:
    """`?`: any one character."""


STAR = _Star()
ANY = _Any()


class _Class(NamedTuple):
    """`[...]`: one character from (or, negated, not from) a set of characters and ranges. A NamedTuple rather than a
    frozen dataclass: `serve` imports this module, and dataclasses would bring in inspect (issue 10)."""

    negated: bool
    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]

    def holds(self, c: str) -> bool:
        # A method, not __contains__: `c in` a tuple would read as a test of its fields.
        found = c in self.chars or any(lo <= c <= hi for lo, hi in self.ranges)
        return found != self.negated


_Token = str | _Class | _Any | _Star


def _class(members: str, negated: bool) -> _Class:
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(members):
        if k + 2 < len(members) and members[k + 1] == "-":
            if members[k] > members[k + 2]:
                raise ValueError(f"the range {members[k]}-{members[k + 2]} runs backwards")
            ranges.append((members[k], members[k + 2]))
            k += 3
        else:
            chars.add(members[k])
            k += 1
    return _Class(negated, frozenset(chars), tuple(ranges))


def _tokens(segment: str) -> tuple[_Token, ...]:
    out: list[_Token] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            if not out or out[-1] is not STAR:  # a run of stars is one star
                out.append(STAR)
        elif c == "?":
            out.append(ANY)
        elif c == "\\" and i + 1 < len(segment):
            i += 1
            out.append(segment[i])
        elif c == "[":
            j = i + 1
            negated = j < len(segment) and segment[j] in "!^"
            j += negated
            if j < len(segment) and segment[j] == "]":
                j += 1  # a leading ] is a member of the class, not its end
            close = segment.find("]", j)
            if close < 0:
                out.append(c)
            else:
                out.append(_class(segment[i + 1 + negated : close], negated))
                i = close
        else:
            out.append(c)
        i += 1
    return tuple(out)


class NameTest(NamedTuple):
    """A plain name pattern as string tests: a name matches when it starts with `head`, ends with `tail` and
    has `least` to `most` characters (`*.py`: "", ".py", 3, any; `.env`: ".env", "", 4, 4)."""

    head: str
    tail: str
    least: int
    most: int


class _Segment:
    """One name's worth of a glob, with shortcuts for the shapes nearly every pattern has."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        stars = [i for i, t in enumerate(self.tokens) if t is STAR]
        plain = all(isinstance(t, str) or t is STAR for t in self.tokens) and len(stars) <= 1
        self.exact = "".join(t for t in self.tokens if isinstance(t, str)) if plain and not stars else None
        # `*.py`, `test_*`, `a*b`: one star among plain characters is a prefix and a suffix test.
        self.ends = ("".join(t for t in self.tokens[: stars[0]] if isinstance(t, str)),
                     "".join(t for t in self.tokens[stars[0] + 1 :] if isinstance(t, str))) \
            if plain and stars else None

    @property
    def plain(self) -> NameTest | None:
        """This segment as string tests when it has no `?`, no class and at most one `*`, else None."""
        if self.exact is not None:
            return NameTest(self.exact, "", len(self.exact), len(self.exact))
        if self.ends is not None:
            head, tail = self.ends
            return NameTest(head, tail, len(head) + len(tail), sys.maxsize)
        return None

    def match(self, name: str, counter: list[int]) -> bool:
        if self.exact is not None:
            return name == self.exact
        if self.ends is not None:
            head, tail = self.ends
            return len(name) >= len(head) + len(tail) and name.startswith(head) and name.endswith(tail)
        return _greedy(self.tokens, name, _char_matches, counter)


def _char_matches(token: object, c: str) -> bool:
    return token is ANY or token == c or (isinstance(token, _Class) and token.holds(c))


def _greedy(tokens: Sequence[object], items: Sequence[str], matches: Callable[[Any, str], bool],
            counter: list[int]) -> bool:
    """Wildcard matching where every token but STAR matches exactly one item: at most len(items) × len(tokens)
    steps, because after a failure only the latest STAR takes one more item and the rest is tried again."""
    t = i = steps = 0
    star, star_i = -1, 0
    n, m = len(items), len(tokens)
    while i < n:
        steps += 1
        if t < m:
            token = tokens[t]
            if token is STAR:
                star, star_i = t, i
                t += 1
                continue
            if matches(token, items[i]):
                t += 1
                i += 1
                continue
        if star < 0:
            counter[0] += steps
            return False
        star_i += 1
        i, t = star_i, star + 1
    counter[0] += steps
    while t < m and tokens[t] is STAR:
        t += 1
    return t == m


class Glob:
    """A compiled glob (the dialect is in search_files' description and docs/TOOLS.md)."""

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ToolFailure(f"the pattern is {len(pattern):,} characters long, more than the {MAX_PATTERN_CHARS:,} "
                              "allowed; give a shorter glob")
        text = pattern
        while text.startswith("./"):
            text = text[2:]
        self.dirs_only = text.endswith("/")
        # A slash at the start or in the middle anchors the pattern at the searched directory, as in .gitignore.
        anchored = "/" in text.rstrip("/")
        names = [s for s in text.split("/") if s]
        if not names:
            raise ToolFailure(f"pattern {pattern!r} names nothing; give a glob such as '*.py' or 'src/**/*.py'")
        if names[-1] == "**":
            names[-1:] = ["*", "**"]  # `dir/**` is everything inside dir, not dir itself
        segments: list[_Segment | _Star] = [STAR] if not anchored else []
        for name in names:
            if name != "**":
                try:
                    segments.append(_Segment(name))
                except ValueError as exc:
                    raise ToolFailure(f"pattern {pattern!r} is not a valid glob ({exc}); check its [...] "
                                      "classes") from None
            elif not segments or segments[-1] is not STAR:
                segments.append(STAR)
        self.segments = tuple(segments)
        stars = [i for i, seg in enumerate(segments) if seg is STAR]
        # Nearly every pattern has at most one `**` (`*.py` is `**/*.py`): then the names before it must match
        # the first names of a path and those after it the last ones — no search for where `**` ends.
        self._simple = len(stars) <= 1
        cut = stars[0] if stars else len(segments)
        self._head = tuple(seg for seg in segments[:cut] if isinstance(seg, _Segment))
        """The names before the first `**`: every match starts with names they match."""
        self._tail = tuple(seg for seg in segments[cut + 1 :] if isinstance(seg, _Segment))
        self._fixed_depth = not stars
        self._min_depth = len(self._head) + len(self._tail)
        self._name_only = self._tail[0] if stars == [0] and len(self._tail) == 1 else None
        """The one segment of a `**/<name>` pattern (`*.py`): only the last name of a path needs matching."""
        self.work = [0]
        """Matching steps taken so far (for tests and budgets: it grows linearly, never explosively)."""

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        return cls(pattern)

    def may_contain(self, rel_dir: str) -> bool:
        """Whether anything inside the directory `rel_dir` can match: a search need not enter it otherwise
        (`src/**/*.py` never looks outside src)."""
        if not self._head:
            return True
        names = rel_dir.split("/")
        if self._fixed_depth and len(names) >= len(self._head):
            return False  # what is inside is deeper than every match
        return all(segment.match(name, self.work) for segment, name in zip(self._head, names, strict=False))

    @property
    def plain_name(self) -> NameTest | None:
        """For a `**/<name>` pattern whose name has no `?`, no class and at most one `*` (`*.py`, `test_*`,
        `.env`): the test of a path's last name, which decides the whole match (with `dirs_only`); else None.
        Nearly every search is such a pattern, and its walk need not build or match whole paths."""
        return self._name_only.plain if self._name_only is not None else None

    @property
    def exact_name(self) -> str | None:
        """The name a `**/<name>` pattern without wildcards matches (`node_modules/`, `.env`), else None: only
        paths ending in that name can match, which lets a set of globs be indexed by name."""
        return self._name_only.exact if self._name_only is not None else None

    def matches(self, rel: str, is_dir: bool) -> bool:
        """Whether the '/'-separated relative path `rel` matches (`is_dir`: it names a directory)."""
        if self.dirs_only and not is_dir:
            return False
        if self._name_only is not None:
            return self._name_only.match(rel[rel.rfind("/") + 1 :], self.work)
        names = rel.split("/")
        if self._simple:
            depth = len(names)
            if depth < self._min_depth or (self._fixed_depth and depth != self._min_depth):
                return False
            # Last name first: it rejects most paths at once (`**/src/*.py` against `a/b/c.txt`).
            k = depth
            for segment in reversed(self._tail):
                k -= 1
                if not segment.match(names[k], self.work):
                    return False
            return all(segment.match(name, self.work) for segment, name in zip(self._head, names, strict=False))
        decided: dict[tuple[int, str], bool] = {}

        def segment_matches(segment: _Segment, name: str) -> bool:
            key = (id(segment), name)
            if key not in decided:
                decided[key] = segment.match(name, self.work)
            return decided[key]

        return _greedy(self.segments, names, segment_matches, self.work)

"""Corpus, class 3 — freezes: what a hostile client or agent can make `serve` spend is bounded, and it keeps serving.

Real `serve` processes. The agent first writes the trap with its own write key (big .gitignore files nested down a
tree, where the search of any later session steps into them), then springs it; other cases are hostile messages
(a million argument keys, deep nesting, numbers JSON cannot hold, thousands of excludes) and a client that never
reads its answers. After each, `bridge_status` must still be answered; memory is read from /proc, never time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from tests.security.test_corpus_support import Home, create_key, make_home, serve, text
from tests.support.stdio_client import MODERN_META, StdioClient

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads the server's memory from /proc")


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _still_serving(client: StdioClient) -> None:
    status = client.call_tool("bridge_status", {})
    assert not status.get("isError") and "roots" in text(status).lower(), status


def _limits(home: Home, **limits: float) -> None:
    config = home.path / ".config/compass-bridge/config.toml"
    config.write_text('default_scopes = "read,write"\n[limits]\n'
                      + "".join(f"{name} = {value}\n" for name, value in limits.items()))


def test_a_gitignore_bomb_planted_by_the_agent_is_refused_with_a_note(tmp_path: Path) -> None:
    """Six nested 1 MiB .gitignore files of 100 000 wildcard rules each: before the rule budget one search of them
    ran for minutes (the time budget was checked once per 256 entries) and took ~460 MiB."""
    home = make_home(tmp_path)
    _limits(home, search_timeout_s=2)
    rules = "".join(f"*q{i}*z\n" for i in range(120_000))[: 1024 * 1024]
    with serve(home, key=create_key(home, "write")) as client:
        where = "project/scratch/trap"
        for _ in range(6):
            for name in (".gitignore", *(f"f{i}.txt" for i in range(20))):
                wrote = client.call_tool("write_file", {"path": f"{where}/{name}", "create_dirs": True,
                                                        "content": rules if name == ".gitignore" else "x\n"})
                assert not wrote.get("isError"), text(wrote)
            where += "/d"
        search = client.request("tools/call", {"name": "search_files",
                                               "arguments": {"path": "project/scratch", "pattern": "*.txt"}})
        _still_serving(client)
        found = client.answer(search)["result"]
        assert "more than 10,000 rules" in text(found) and "respect_gitignore=false" in text(found), text(found)
        without = client.call_tool("search_files", {"path": "project/scratch", "pattern": "*.txt",
                                                    "respect_gitignore": False})
        assert len(without["structuredContent"]["matches"]) == 120, text(without)[-300:]
        assert _peak_mib(client.process.pid) < 250


def test_rules_under_the_budget_still_stop_at_the_time_budget(tmp_path: Path) -> None:
    """9 000 rules against 3 000 names: the clock is read as often as the work demands, not per 256 entries, so
    the walk stops with its note (the search does not finish: that would take ~10 s on 2 cores)."""
    home = make_home(tmp_path)
    _limits(home, search_timeout_s=0.5)
    trap = home.project / "scratch" / "many"
    trap.mkdir()
    (trap / ".gitignore").write_text("".join(f"*q{i}*z\n" for i in range(9000)))
    for i in range(3000):
        (trap / f"n{i:05}.txt").write_text("")
    with serve(home, key=create_key(home, "read")) as client:
        found = client.call_tool("search_files", {"path": "project/scratch/many", "pattern": "*.txt"})
        assert "stopped early" in text(found) and "search_timeout_s" in text(found), text(found)[-300:]
        assert len(found["structuredContent"]["matches"]) < 3000
        _still_serving(client)


def test_hostile_messages_are_answered_and_the_server_goes_on(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    with serve(home, key=create_key(home, "read")) as client:
        cases: list[tuple[str, bytes]] = [
            ("a million argument keys", json.dumps({"jsonrpc": "2.0", "id": 901, "method": "tools/call", "params": {
                "name": "read_file", "arguments": {f"k{i}": 0 for i in range(1_000_000)}}}).encode()),
            ("100 000 levels of nesting", b'{"jsonrpc":"2.0","id":902,"method":"tools/call","params":{"name":'
                                          b'"read_file","arguments":{"path":' + b"[" * 100_000 + b"]" * 100_000
                                          + b"}}}"),
            ("1e999", b'{"jsonrpc":"2.0","id":903,"method":"tools/call","params":{"name":"read_file",'
                      b'"arguments":{"path":"project/main.py","offset":1e999}}}'),
            ("-1e999 as the id", b'{"jsonrpc":"2.0","id":-1e999,"method":"tools/list"}'),
            ("NaN", b'{"jsonrpc":"2.0","id":905,"method":"tools/call","params":{"name":"read_file",'
                    b'"arguments":{"path":"project/main.py","limit":NaN}}}'),
            ("a huge integer", b'{"jsonrpc":"2.0","id":906,"method":"tools/call","params":{"name":"read_file",'
                               b'"arguments":{"path":"project/main.py","limit":' + b"9" * 5000 + b"}}}"),
            ("20 000 excludes", json.dumps({"jsonrpc": "2.0", "id": 907, "method": "tools/call", "params": {
                "name": "search_files", "arguments": {"pattern": "*", "exclude": [f"*q{i}*z" for i in range(20_000)],
                                                      "path": "project"}}}).encode()),
            ("4 million path components", b'{"jsonrpc":"2.0","id":909,"method":"tools/call","params":{"name":'
                                          b'"read_file","arguments":{"path":"' + b"a/" * 4_000_000 + b'x"}}}'),
            ("a 17 MiB line", b'{"jsonrpc":"2.0","id":908,"method":"tools/call","params":{"name":"read_file",'
                              b'"arguments":{"path":"' + b"a" * (17 * 1024 * 1024) + b'"}}}'),
        ]
        for what, line in cases:
            client.send_line(line)
            answer = client.next_message()
            while "method" in answer:  # a notification, not the answer
                answer = client.next_message()
            failed = "error" in answer or answer.get("result", {}).get("isError")
            assert failed, (what, str(answer)[:300])
            _still_serving(client)
        assert _peak_mib(client.process.pid) < 400


def test_a_client_that_never_reads_cannot_make_the_server_grow(tmp_path: Path) -> None:
    """600 reads of a 256 KiB file (~300 MiB of answers), sent without reading a byte of stdout — then all read."""
    home = make_home(tmp_path)
    (home.project / "big.txt").write_text(("x" * 1023 + "\n") * 256)
    env = {**home.env(), "COMPASS_BRIDGE_KEY": create_key(home, "read")}
    process = subprocess.Popen([sys.executable, "-m", "mcp_bridge", "serve", "--root", str(home.path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdin is not None and process.stdout is not None
    try:
        request = {"jsonrpc": "2.0", "method": "tools/call", "params": {
            "name": "read_file", "arguments": {"path": "project/big.txt"}, "_meta": MODERN_META}}
        writer = threading.Thread(target=_send_all, args=(process.stdin, request, 600))
        writer.start()
        # Nothing is read until the server has had every request and stops taking more (its stdout is full and
        # its queue too): its peak memory then shows whether it held the answers back or piled them up.
        writer.join(timeout=60)
        grew_while_unread = _peak_mib(process.pid)
        answered: dict[Any, dict[str, Any]] = {}
        for line in process.stdout:
            answer = json.loads(line)
            answered[answer.get("id")] = answer
            if len(answered) == 601:
                break
        assert set(answered) == {*range(600), "last"}
        done = sum(1 for a in answered.values() if "result" in a and "xxxx" in json.dumps(a["result"]))
        busy = sum(1 for a in answered.values() if a.get("error", {}).get("code") == -32003)
        assert done >= 64 and done + busy + ("result" in answered["last"]) == 601, (done, busy)
        process.stdin.write(json.dumps({**request, "id": "after"}).encode() + b"\n")
        process.stdin.flush()
        after = json.loads(process.stdout.readline())
        assert after["id"] == "after" and "xxxx" in json.dumps(after["result"])
        assert grew_while_unread < 200, f"the server took {grew_while_unread:.0f} MiB"
    finally:
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()


def _send_all(stdin: IO[bytes], request: dict[str, Any], count: int) -> None:
    for n in range(count):
        stdin.write(json.dumps({**request, "id": n}).encode() + b"\n")
        stdin.flush()
    stdin.write(json.dumps({"jsonrpc": "2.0", "id": "last", "method": "tools/call", "params": {
        "name": "bridge_status", "arguments": {}, "_meta": MODERN_META}}).encode() + b"\n")
    stdin.flush()


def test_a_name_that_is_not_utf8_cannot_blind_the_listing_tools(tmp_path: Path) -> None:
    """A write key could create `\\udcfe.txt` (byte 0xfe on disk) and so make every listing and search of that
    directory fail (no answer could be encoded); and lone surrogates in paths or content made tools fail
    "unexpectedly". Now: such paths and texts are refused with the reason, such names listed escaped."""
    home = make_home(tmp_path)
    odd = home.project / "scratch" / b"latin1-caf\xe9.txt".decode("utf-8", "surrogateescape")
    odd.write_text("x\n")
    (home.project / "scratch" / "ok.txt").write_text("ok\n")
    with serve(home, key=create_key(home, "write")) as client:
        for tool, args in (("write_file", {"path": "project/scratch/\udcfe.txt", "content": "x"}),
                           ("write_file", {"path": "project/scratch/\udc68.txt", "content": "x"}),
                           ("read_file", {"path": ".ss\udc68/id_ed25519"}),
                           ("read_file", {"path": "project/scratch/latin1-caf\udce9.txt"}),
                           ("write_file", {"path": "project/scratch/new.txt", "content": "a\ud800b"}),
                           ("edit_file", {"path": "project/scratch/ok.txt", "old_text": "ok",
                                          "new_text": "\udcff", "dry_run": True})):
            answer = client.call("tools/call", {"name": tool, "arguments": args})
            assert "result" in answer, (tool, answer)
            said = text(answer["result"])
            assert answer["result"]["isError"] and "surrogate" in said and "unexpectedly" not in said, (tool, said)
        listed = client.call_tool("list_directory", {"path": "project/scratch"})
        names = {e["name"] for e in listed["structuredContent"]["entries"]}
        assert {"latin1-caf\\xe9.txt", "ok.txt"} <= names, names
        found = client.call_tool("search_files", {"path": "project/scratch", "pattern": "*.txt"})
        assert "latin1-caf\\xe9.txt" in found["structuredContent"]["matches"], text(found)
        _still_serving(client)
    assert sorted(p.name for p in odd.parent.iterdir()) == sorted([odd.name, "ok.txt"])
    assert (home.project / "scratch" / "ok.txt").read_text() == "ok\n"

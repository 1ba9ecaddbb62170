"""`serve` answers `initialize` before the MCP SDK loads; the answer must be exactly the SDK's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from mcp_bridge.early_initialize import BRIDGE, HANDSHAKE_VERSIONS, initialize_answer


def test_versions_match_the_sdk() -> None:
    assert tuple(HANDSHAKE_PROTOCOL_VERSIONS) == HANDSHAKE_VERSIONS


def _initialize(version: Any, request_id: Any = 1, client_info: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                       "clientInfo": client_info if client_info is not None else {"name": "t", "version": "1"}}}


@pytest.mark.parametrize("line", [
    b"", b"not json\n", b"[]\n", b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n',
    json.dumps({**_initialize("2025-06-18"), "jsonrpc": "1.0"}).encode(),
    json.dumps(_initialize("2025-06-18", request_id=True)).encode(),
    json.dumps(_initialize(20250618)).encode(),
    json.dumps(_initialize("2025-06-18", client_info="me")).encode(),
])
def test_anything_but_a_well_formed_initialize_is_left_to_the_sdk(line: bytes) -> None:
    assert initialize_answer(line, BRIDGE) is None


def _serve(home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mcp_bridge", "serve", "--root", str(home)],
                            env={**os.environ, "COMPASS_BRIDGE_HOME": str(home)},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.close()
    try:
        assert proc.wait(30) == 0, "serve did not exit on stdin EOF"
    finally:
        proc.kill()  # no-op once it has exited; stops a hung server from outliving the test
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize(("asked", "answered"), [
    *((v, v) for v in HANDSHAKE_PROTOCOL_VERSIONS), ("1999-01-01", HANDSHAKE_PROTOCOL_VERSIONS[-1]),
])
def test_early_answer_equals_the_sdks_and_nothing_after_it_is_lost(bridge_home: Path, asked: str,
                                                                   answered: str) -> None:
    proc = _serve(bridge_home)
    assert proc.stdin is not None and proc.stdout is not None
    # One write holding three messages: the byte-wise first read must leave the other two for the SDK.
    proc.stdin.write((json.dumps(_initialize(asked, request_id="init-1")) + "\n"
                      + '{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
                      + '{"jsonrpc":"2.0","id":2,"method":"tools/list"}\n').encode())
    proc.stdin.flush()
    init = json.loads(proc.stdout.readline())
    tools = json.loads(proc.stdout.readline())
    _finish(proc)
    assert init["id"] == "init-1" and init["result"]["protocolVersion"] == answered
    assert init["result"]["serverInfo"] == {"name": "compass-bridge", "version": BRIDGE.version}
    assert tools["id"] == 2 and "read_file" in {t["name"] for t in tools["result"]["tools"]}
    # The SDK's own answer was compared with the early one and dropped: no second answer, no mismatch.
    log = (bridge_home / "logs" / "serve.log").read_text()
    assert "differed" not in log


def test_a_malformed_initialize_gets_the_sdks_error(bridge_home: Path) -> None:
    proc = _serve(bridge_home)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((json.dumps(_initialize("2025-06-18", client_info="me")) + "\n").encode())
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    _finish(proc)
    assert answer["id"] == 1 and "error" in answer


def test_client_leaving_before_a_word_exits_cleanly(bridge_home: Path) -> None:
    _finish(_serve(bridge_home))

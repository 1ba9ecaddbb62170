"""What `serve` loads before its first answers: none of the event-loop, TLS or HTTP stacks, nor the installer, nor
dataclasses and the inspect it imports (~1.1 MiB private per server: issue 10).

A server that only lists tools and reads files never needs asyncio, anyio, ssl or httpx (they load when a
coroutine tool or source first runs: mcp_bridge.aio), nor the installer's code beyond its facts. Each module
below is built the way `serve` builds it, in a fresh interpreter, and what it imported is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NEVER_AT_START = ("asyncio", "anyio", "sniffio", "ssl", "concurrent.futures", "httpx", "typing_extensions",
                  "logging.handlers", "importlib.resources", "tomllib", "mcp_bridge.install.layouts",
                  "mcp_bridge.install.clients", "mcp_bridge.install.config_docs", "mcp_bridge.install.jsonc",
                  "mcp_bridge.compass.client", "mcp_bridge.compass.schemas", "native_host.unix_channel",
                  "dataclasses", "inspect")

START = """
import json, os, sys
from pathlib import Path
home = Path(sys.argv[1])
from mcp_bridge import extension_id, logs
from mcp_bridge.compass.source import CompassSource
from mcp_bridge.config import Config, load_config
from mcp_bridge.paths import StatePaths
from mcp_bridge.pathpolicy import PathPolicy
from mcp_bridge.protected import ANYWHERE, Protection, builtin
from mcp_bridge.tools.claude_config import claude_config_source
from mcp_bridge.tools.commands import command_tools
from native_host.client import discover_hosts

paths = StatePaths(home / "config", home / "data", home / "logs", home / "run")
config = load_config(paths.config_file)  # there is none: every default
Protection(builtin(home, [(paths.data_dir, "state")], {}), ANYWHERE)
logs.configure(paths.log_dir, "serve", config.log_level)
compass = CompassSource.from_environment(paths, config.compass, {})
policy = PathPolicy([home])
sources = [compass, claude_config_source(policy)]
tools = [*command_tools(policy, config.limits), *(t for s in sources for t in s.tools())]
discover_hosts(paths.run_dir)
print(json.dumps({"modules": sorted(sys.modules), "needs_running": compass.needs_running(),
                  "tools": len(tools)}))
"""


def test_building_what_serve_starts_with_loads_no_event_loop_tls_http_or_installer(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", START, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(done.stdout)
    loaded = set(result["modules"])
    assert result["tools"] == 5 and result["needs_running"] is False  # run_command and claude_config_*
    assert "mcp_bridge.install.places" in loaded  # the installer's facts, for the protected paths
    assert sorted(loaded.intersection(NEVER_AT_START)) == []


def test_a_real_serve_answers_its_first_calls_without_loading_any_of_them(tmp_path: Path) -> None:
    """The whole server, as a client starts it: handshake, tools/list, read_file and list_directory answered, then
    stdin closed; `-X importtime` lists every module the process imported on the way."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("hello\n")
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "read_file",
                                                                        "arguments": {"path": "notes.txt"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "list_directory",
                                                                        "arguments": {"path": "."}}},
    ]
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "mcp_bridge", "serve", "--root", str(root)],
                          input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                           "COMPASS_BRIDGE_HOME": str(tmp_path / "state")}, cwd=root)
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert answers[3]["result"]["content"][0]["text"] == "hello\n" and not answers[4]["result"]["isError"]
    loaded = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "mcp_bridge.protocol.frontend" in loaded and "sqlite3" in loaded  # the listing is real
    assert sorted(loaded.intersection(NEVER_AT_START)) == []

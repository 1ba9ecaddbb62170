"""Spawn `compass-bridge serve` as a subprocess and talk to it the way Claude Code does (legacy mode)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, StdioServerParameters


def serve_params(home: Path, *, key: str | None = None, roots: Sequence[Path] = (), cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> StdioServerParameters:
    args = ["-m", "mcp_bridge", "serve"]
    for root in roots:
        args += ["--root", str(root)]
    full_env = {"COMPASS_BRIDGE_HOME": str(home), **(env or {})}
    if key is not None:
        full_env["COMPASS_BRIDGE_KEY"] = key
    return StdioServerParameters(command=sys.executable, args=args, env=full_env, cwd=cwd)


@asynccontextmanager
async def bridge_client(home: Path, *, key: str | None = None, roots: Sequence[Path] = (),
                        cwd: Path | None = None, env: dict[str, str] | None = None,
                        message_handler: Any = None) -> AsyncIterator[Client]:
    params = serve_params(home, key=key, roots=roots, cwd=cwd, env=env)
    async with Client(params, mode="legacy", cache=None, read_timeout_seconds=60,
                      message_handler=message_handler) as client:
        yield client


def create_key(home: Path, name: str, scopes: str, *extra: str) -> dict[str, Any]:
    """Create a bridge key through the real CLI and return its JSON (including the key)."""
    out = subprocess.run(
        [sys.executable, "-m", "mcp_bridge", "keys", "create", "--name", name, "--scopes", scopes, "--json", *extra],
        env={**os.environ, "COMPASS_BRIDGE_HOME": str(home)}, capture_output=True, text=True, check=True,
    )
    created: dict[str, Any] = json.loads(out.stdout)
    return created


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_bridge", *args],
                          env={**os.environ, "COMPASS_BRIDGE_HOME": str(home)},
                          capture_output=True, text=True, check=check)


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def wait_for_tool(client: Client, name: str, limit_s: float) -> None:
    """Wait for a tool that the server adds later, announcing it with tools/list_changed (browser tools
    appear once the server has connected to a host); the limit only turns a hang into a failure."""
    with anyio.fail_after(limit_s):
        while name not in await tool_names(client):
            await anyio.sleep(0.1)


def usage_rows(home: Path) -> list[dict[str, Any]]:
    """The usage log of the bridge in `home`, oldest first."""
    conn = sqlite3.connect(home / "data" / "bridge.sqlite3")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM usage ORDER BY id")]
    conn.close()
    return rows

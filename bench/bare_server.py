"""The reference row: the smallest server the `mcp` SDK makes (MCPServer, one tool), run as a script."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare", version="1")


@server.tool()
async def echo(text: str) -> str:
    """Return `text`."""
    return text


if __name__ == "__main__":
    server.run()

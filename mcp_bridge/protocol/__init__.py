"""The MCP serving core: JSON-RPC over stdio in both protocol eras, standard library only.

`wire` turns lines into messages (and refuses what is malformed or too big), `eras` knows the two
protocol eras (the 2025 `initialize` handshake and the stateless 2026-07-28 envelope), `frontend`
answers each request in its era and hands tools and resources to the application (`mcp_bridge.server`).
"""

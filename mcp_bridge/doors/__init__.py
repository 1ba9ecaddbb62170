"""Loopback doors onto the run service for clients that already exist (docs/DOORS.md).

`compass_ws`: the Compass bridge-daemon WebSocket, wire-compatible; `http_api`: an HTTP/SSE run API for
orchestrators. Both are off by default, listen on loopback only, and reach runs through the run service's
client (mcp_bridge/agent/client.py), never around it. `loopback` holds the checks both share.
"""

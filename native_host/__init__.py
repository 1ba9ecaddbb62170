"""The Chrome native-messaging host of compass-bridge.

Started by the browser, so it imports only the standard library on its start-up path (`mcp_bridge/__init__.py`,
the one place the version is written, imports nothing).
"""

from mcp_bridge import __version__ as __version__

PROTOCOL_VERSION = 1

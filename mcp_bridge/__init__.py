"""compass-bridge: an MCP server that lets AI agents use Compass, local files and the browser, safely."""

__version__ = "0.1.0"

"""compass-bridge: an MCP server that lets AI agents use Compass, local files and the browser, safely."""

# The one place the version is written: the package metadata (hatch's dynamic version) is read from here, and
# tests/unit/test_version.py checks every other place that states it (extension manifest, CHANGELOG).
__version__ = "0.1.0"

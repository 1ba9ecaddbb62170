"""Installer and doctor: native-host manifests, launchers, Windows registry keys and MCP client entries.

Everything here takes an explicit `Platform` (OS, home, environment, filesystem root) so the macOS and
Windows layouts can be exercised on Linux against real files in a temporary home.
"""

HOST_NAME = "com.compass_bridge.host"

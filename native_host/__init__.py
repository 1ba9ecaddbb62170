"""The Chrome native-messaging host of compass-bridge.

Started by the browser, so it imports only the standard library on its start-up path.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

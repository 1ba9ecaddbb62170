"""`compass-bridge-native-host` / `python -m native_host`: started by the browser, never by hand.

Chrome runs it as `<path> chrome-extension://<id>/` (on Windows adding `--parent-window=<hwnd>`), Firefox as
`<path> <manifest path> <add-on id>`. Those arguments are only logged; `--transport unix|ws` picks how agents
connect.
"""

from __future__ import annotations

import os
import sys

from mcp_bridge.selfguard import blank_secret_environ
from native_host import PROTOCOL_VERSION, __version__
from native_host.host import run
from native_host.log import Log

USAGE = f"""\
compass-bridge-native-host {__version__} (protocol v{PROTOCOL_VERSION})

The browser starts this program when the compass-bridge extension connects; it relays between the extension
(frames on stdin/stdout) and agent sessions (a socket in the runtime dir). Running it by hand is only useful
for debugging.

usage: compass-bridge-native-host [chrome-extension://<id>/] [--transport unix|ws]
  --transport unix   a Unix socket <runtime dir>/<pid>.sock (the default where the OS has them)
  --transport ws     a loopback WebSocket described in <runtime dir>/<pid>.ws.json (the default on Windows)
"""

TRANSPORTS = ("unix", "ws")


def default_transport() -> str:
    return "ws" if sys.platform == "win32" else "unix"


def parse_args(argv: list[str]) -> tuple[str, str | None]:
    """(transport, error). Anything but --transport, --help and --version is the browser's and is ignored."""
    transport = default_transport()
    rest = iter(argv)
    for arg in rest:
        if arg == "--transport":
            transport = next(rest, "")
        elif arg.startswith("--transport="):
            transport = arg.partition("=")[2]
        else:
            continue
        if transport not in TRANSPORTS:
            return transport, f"--transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}"
    if transport == "unix" and default_transport() != "unix":
        return transport, "--transport unix needs Unix sockets, which this platform lacks; use --transport ws"
    return transport, None


def claim_stdio() -> tuple[int, int]:
    """The browser's frame channels as raw fds. Afterwards fd 1 and sys.stdout lead to stderr, so a stray print,
    a C library or a child process cannot write into the frame stream (one stray byte and Chrome drops the port)."""
    if sys.platform == "win32":
        import msvcrt

        # Text mode would turn every \\n byte of a length header or payload into \\r\\n.
        msvcrt.setmode(0, os.O_BINARY)
        msvcrt.setmode(1, os.O_BINARY)
    stdout_fd = os.dup(1)
    try:
        os.dup2(2, 1)
    except OSError:  # no usable stderr: then nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    sys.stdout = sys.stderr
    return 0, stdout_fd


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--help" in args or "-h" in args:
        print(USAGE, end="")
        return 0
    if "--version" in args:
        print(f"compass-bridge-native-host {__version__} (protocol v{PROTOCOL_VERSION})")
        return 0
    transport, error = parse_args(args)
    # The browser's environment is the user's: no other process of theirs should read a key in it from our /proc.
    blank_secret_environ()
    stdin_fd, stdout_fd = claim_stdio()
    log = Log.open()
    log(f"started (version {__version__}, transport {transport}) with arguments {args}")
    if error:
        log(f"cannot start: {error}")
        sys.stderr.write(f"compass-bridge-native-host: {error}\n")
        return 2
    try:
        return run(transport, log, stdin_fd, stdout_fd)
    finally:
        log("exited")
        log.close()


if __name__ == "__main__":
    sys.exit(main())

"""Agent runs through the host (docs/PROTOCOL.md, "Agent runs"): the browser's `run_*` messages go to the one
client that declared `runs: true` in its hello (the run service's browser link), and that client's `run_*`
messages go to the browser.

The host does not interpret runs; it only routes, bounds and splits:
- when the browser asks for a run and no link is connected, the link is started (detached, so a browser restart
  does not end runs: they live in the run service) and the browser's messages wait for it, bounded;
- a message for the browser over Chrome's 1 MiB limit is cut into `run_part` frames the extension joins again.
"""

from __future__ import annotations

import os
import sys

from native_host.framing import TO_BROWSER_MAX, Bytes
from native_host.protocol import HOST_UNAVAILABLE, TOO_LARGE, dumps, parse

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see host.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from native_host.host import ClientConn, Host
    from native_host.loop import Cancellable

PREFIX = "run_"
MAX_WAITING = 64
"""Browser run messages held while the link starts; past it they are refused."""
MAX_WAITING_BYTES = 8 * 1024 * 1024
LINK_START_S = 30.0
"""How long held messages wait for the link before they are answered with an error."""
PART_CHARS = TO_BROWSER_MAX // 8
"""Characters of a too-large message per `run_part`: even if every one became a 6-byte `\\uXXXX` escape, the
part stays under the browser's limit."""
LINK_COMMAND_ENV = "COMPASS_BRIDGE_RUN_LINK"
"""Overrides the command that starts the link (a path to an executable); for tests and unusual installs."""


def link_command() -> list[str]:
    """How the host starts the run service's browser link: this interpreter, which has mcp_bridge next to us."""
    override = os.environ.get(LINK_COMMAND_ENV)
    base = [override] if override else [sys.executable, "-m", "mcp_bridge.agent.browser_link"]
    return [*base, "--host-pid", str(os.getpid())]


class RunRelay:
    def __init__(self, host: Host, spawn: Callable[[list[str]], object] | None = None) -> None:
        self.host = host
        self.link: ClientConn | None = None
        self._waiting: list[bytes] = []
        self._waiting_bytes = 0
        self._timer: Cancellable | None = None
        self._spawn = spawn or _spawn_detached
        self._part_ids = 0

    # ---- hooks called by Host ------------------------------------------------------------------------------

    def hello(self, conn: ClientConn, info: dict[str, Any]) -> None:
        """A client said hello; one that declares `runs: true` becomes the link if there is none yet."""
        if info.get("runs") is not True or self.link is conn:
            return
        if self.link is not None:
            self.host.send(conn, dumps({"type": "error", "code": "conflict", "message": (
                f"{self.link.describe()} already serves agent runs for this browser; this connection stays a "
                "plain client. Stop the other link first")}))
            return
        self.link = conn
        self.host.log(f"{conn.describe()} serves agent runs")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting, self._waiting_bytes = self._waiting, [], 0
        for payload in waiting:
            self.host.send(conn, payload)
        self.host._to_browser(dumps({"type": "run_service", "connected": True, "link": conn.id}))

    def gone(self, conn: ClientConn) -> None:
        if conn is self.link:
            self.link = None
            self.host.log(f"{conn.describe()} no longer serves agent runs")
            self.host._to_browser(dumps({"type": "run_service", "connected": False, "message": (
                "the run service's link left; it is started again with the next run message")}))

    def from_browser(self, kind: str, message: dict[str, Any], payload: Bytes) -> bool:
        """Route a browser message; False when it is not a run message."""
        if not kind.startswith(PREFIX):
            return False
        if self.link is not None:
            self.host.send(self.link, payload)
            return True
        data = bytes(payload)
        if len(self._waiting) >= MAX_WAITING or self._waiting_bytes + len(data) > MAX_WAITING_BYTES:
            self._fail(message, HOST_UNAVAILABLE, f"{len(self._waiting)} run messages already wait for the run "
                       "service to start; retry when the status shows it connected")
            return True
        self._waiting.append(data)
        self._waiting_bytes += len(data)
        if self._timer is None:
            self._start_link()
        return True

    def from_client(self, conn: ClientConn, kind: str, payload: Bytes) -> bool:
        """Route a client message; False when it is not a run message."""
        if not kind.startswith(PREFIX):
            return False
        if conn is not self.link:
            self.host.send(conn, dumps({"type": "error", "code": "bad_request", "message": (
                f"{kind} comes only from the client that serves agent runs (hello with client.runs = true)")}))
            return True
        if len(payload) <= TO_BROWSER_MAX:
            self.host._to_browser(payload)
        else:
            self._split(payload)
        return True

    # ---- internals -----------------------------------------------------------------------------------------

    def _start_link(self) -> None:
        if sys.platform == "win32":
            self._fail_waiting("agent runs from the browser need the run service, which needs Unix sockets; "
                               "Windows is not supported yet (docs/SIDE_PANEL.md)")
            return
        command = link_command()
        try:
            self._spawn(command)
        except OSError as exc:
            self._fail_waiting(f"cannot start the run service link ({command[0]}): {exc}; run "
                               "`compass-bridge doctor`")
            return
        self.host.log(f"started the run service link: {' '.join(command)}")
        self._timer = self.host.loop.call_later(LINK_START_S, self._link_late)

    def _link_late(self) -> None:
        self._timer = None
        self._fail_waiting(f"the run service did not connect within {LINK_START_S:g} s; see the log "
                           "agent-service.out in the bridge's log directory, or run `compass-bridge doctor`")

    def _fail_waiting(self, why: str) -> None:
        waiting, self._waiting, self._waiting_bytes = self._waiting, [], 0
        for payload in waiting:
            self._fail(parse(payload), HOST_UNAVAILABLE, why)

    def _fail(self, message: dict[str, Any], code: str, why: str) -> None:
        reply: dict[str, Any] = {"type": "run_error", "code": code, "message": why}
        for key in ("rid", "run_id"):
            if key in message:
                reply[key] = message[key]
        self.host._to_browser(dumps(reply))

    def _split(self, payload: Bytes) -> None:
        try:
            text = str(payload, "utf-8")
        except UnicodeDecodeError:
            self.host.log(f"dropping a {len(payload)}-byte run message from the link: not UTF-8")
            return
        self._part_ids += 1
        count = -(-len(text) // PART_CHARS)
        if count > 512:
            self.host._to_browser(dumps({"type": "run_error", "code": TOO_LARGE, "message": (
                f"a run message of {len(payload)} bytes is too large to relay even in parts")}))
            return
        for index in range(count):
            self.host._to_browser(dumps({"type": "run_part", "part_of": self._part_ids, "index": index,
                                        "count": count, "data": text[index * PART_CHARS:(index + 1) * PART_CHARS]}))


def _spawn_detached(command: list[str]) -> object:
    import subprocess

    # The link may start the run service, which starts the engines: it gets their pass-through and no other
    # secret of the browser's environment (imported here: the host's own start-up stays stdlib-only).
    from mcp_bridge.childenv import for_engine

    # Its own session, no stdio of ours (stdout is the browser's frame channel): it outlives a browser restart.
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, env=for_engine())

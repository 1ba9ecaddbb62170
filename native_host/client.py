"""The asyncio client of a native host: what the MCP server, the tests and the benchmark use to reach a browser.

Standard library only (websockets is imported for WebSocket hosts alone). Many requests may be in flight on one
connection at once; each waits for the response carrying its own id. asyncio is imported where a connection is
made, not with this module: the MCP server imports it as it starts, to look for hosts (`discover_hosts`), and a
server that never connects to one never loads asyncio.

    hosts = discover_hosts()
    client = await HostClient.connect(hosts[0], name="my-agent", version="1.0")
    text = await client.request("get_page_text", {}, timeout=10)
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from native_host import PROTOCOL_VERSION
from native_host.framing import FROM_CLIENT_MAX, TO_CLIENT_MAX
from native_host.protocol import CANCELLED, HOST_UNAVAILABLE, TIMEOUT, TOO_LARGE, TOOL_ERROR, encode
from native_host.runtime_dir import check_private_dir, host_files, owned_by_me, pid_alive, runtime_dir

if TYPE_CHECKING:
    import asyncio

    from websockets.asyncio.client import ClientConnection

    from native_host.unix_channel import UnixChannel
    from native_host.ws import QueuedSender

__all__ = ["HostAddress", "HostClient", "RelayError", "discover_hosts"]


class HostAddress(NamedTuple):
    """One live host found in the runtime dir. A NamedTuple, not a frozen dataclass: `serve` imports this module, and
    dataclasses would bring in inspect (~1.1 MiB private per server: issue 10)."""

    pid: int
    kind: Literal["unix", "ws"]
    path: Path
    """The `.sock` or `.ws.json` file."""


def discover_hosts(run_dir: Path | None = None) -> list[HostAddress]:
    """The hosts whose process is alive, sorted by pid. Raises UnsafeRuntimeDir for a directory others could
    have planted sockets in; an absent directory just means no host has run yet."""
    directory = runtime_dir() if run_dir is None else run_dir
    try:
        check_private_dir(directory)
        files = host_files(directory)
    except FileNotFoundError:
        return []
    found = [
        HostAddress(pid, "unix" if kind == "unix" else "ws", path)
        for pid, kind, path in files
        if owned_by_me(path, socket=kind == "unix") and pid_alive(pid)
    ]
    return sorted(found, key=lambda a: (a.pid, a.kind))


class RelayError(Exception):
    """A request (or the connection) failed. `code` is one of protocol v1's error codes, e.g. bad_request,
    too_large, timeout, cancelled, browser_disconnected, tool_error, host_unavailable, unauthorized — or another
    code chosen by the extension."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class HostClient:
    """One connection to one host. Create it with `await HostClient.connect(...)`."""

    host: dict[str, Any]
    """From welcome: {version, pid, protocol}."""
    extension: dict[str, Any] | None
    """{name, version} of the connected extension; None until it has said hello."""
    tools: list[dict[str, Any]]
    """The extension's catalog, kept up to date by `tools` messages."""

    def __init__(self, address: HostAddress) -> None:
        self.address = address
        self.host = {}
        self.extension = None
        self.tools = []
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._channel: UnixChannel | _WsChannel | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._welcome: asyncio.Future[None] = self._loop.create_future()
        self._closed = False
        self._on_tools: list[Callable[[list[dict[str, Any]]], None]] = []
        self._on_event: list[Callable[[str, Any], None]] = []
        self._on_close: list[Callable[[], None]] = []

    @classmethod
    async def connect(
        cls,
        address: HostAddress,
        *,
        name: str,
        version: str,
        pid: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - callers pass one number; the handshake is several steps
    ) -> HostClient:
        """Connect and say hello. Raises RelayError (host_unavailable, unauthorized) if the host cannot be used."""
        import asyncio

        from native_host.unix_channel import UnixChannel

        client = cls(address)
        me = {"name": name, "version": version, "pid": os.getpid() if pid is None else pid}
        hello: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL_VERSION, "client": me}
        try:
            async with asyncio.timeout(timeout):
                if address.kind == "ws":
                    client._channel, hello["auth"] = await _WsChannel.open(address, client)
                else:
                    client._channel = await UnixChannel.open(address, client)
                client._channel.send(encode(hello))
                await client._welcome
        except TimeoutError:
            await client._abandon()
            raise RelayError(HOST_UNAVAILABLE, f"the native host at {address.path} did not answer within "
                             f"{timeout:g} s; it may be stuck — close the browser window or restart the browser"
                             ) from None
        except RelayError:
            await client._abandon()
            raise
        except OSError as exc:
            await client._abandon()
            raise RelayError(HOST_UNAVAILABLE, f"cannot connect to the native host at {address.path}: "
                             f"{exc.strerror or exc}; it has probably exited — look for hosts again") from None
        return client

    async def _abandon(self) -> None:
        self._closed = True
        if self._channel is not None:
            await self._channel.aclose()

    # ---- callbacks -------------------------------------------------------------------------------------------

    def on_tools(self, callback: Callable[[list[dict[str, Any]]], None]) -> None:
        """Call `callback(tools)` whenever the extension announces a new catalog."""
        self._on_tools.append(callback)

    def on_event(self, callback: Callable[[str, Any], None]) -> None:
        """Call `callback(name, data)` for every event the extension broadcasts."""
        self._on_event.append(callback)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once when the host goes away (not after our own close())."""
        self._on_close.append(callback)

    def _notify(self, callbacks: list[Callable[..., None]], *args: Any) -> None:
        for callback in callbacks:
            try:
                callback(*args)
            except Exception as exc:  # one broken subscriber must not stop the messages for everyone
                self._loop.call_exception_handler({"message": "HostClient callback failed", "exception": exc})

    # ---- calls -----------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    async def request(self, tool: str, args: dict[str, Any], *, timeout: float = 30.0) -> Any:  # noqa: ASYNC109
        """The tool's `result`. Raises RelayError; on timeout the request is cancelled in the extension. If the
        awaiting task is cancelled, the request is cancelled in the extension too."""
        import asyncio

        if self._closed or self._channel is None:
            raise RelayError(HOST_UNAVAILABLE, f"the connection to the native host at {self.address.path} is closed")
        request_id = next(self._ids)
        data = encode({"type": "request", "id": request_id, "tool": tool, "args": args})
        if len(data) - 4 > FROM_CLIENT_MAX:
            raise RelayError(TOO_LARGE, f"the request to {tool} is {len(data) - 4} bytes; the browser accepts at "
                             "most 1 MiB in one message, so send less")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[request_id] = future
        try:
            self._channel.send(data)
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            self._withdraw(request_id)
            raise RelayError(TIMEOUT, f"{tool} did not answer within {timeout:g} s, so it was cancelled") from None
        except asyncio.CancelledError:
            self._withdraw(request_id)
            raise
        finally:
            self._pending.pop(request_id, None)

    def _withdraw(self, request_id: int) -> None:
        if self._pending.pop(request_id, None) is not None and not self._closed and self._channel is not None:
            self._channel.send(encode({"type": "cancel", "id": request_id}))

    async def ping(self, timeout: float = 5.0) -> float:  # noqa: ASYNC109
        """Seconds for a ping to reach the host and its pong to come back."""
        import asyncio

        if self._closed or self._channel is None:
            raise RelayError(HOST_UNAVAILABLE, f"the connection to the native host at {self.address.path} is closed")
        ping_id = next(self._ids)
        future: asyncio.Future[None] = self._loop.create_future()
        self._pings[ping_id] = future
        started = time.perf_counter()
        try:
            self._channel.send(encode({"type": "ping", "id": ping_id}))
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise RelayError(TIMEOUT, f"the native host did not answer a ping within {timeout:g} s") from None
        finally:
            self._pings.pop(ping_id, None)
        return time.perf_counter() - started

    async def close(self) -> None:
        if self._closed:
            return
        self._lost(CANCELLED, "the client closed the connection", notify=False)
        if self._channel is not None:
            await self._channel.aclose()

    # ---- from the host ---------------------------------------------------------------------------------------

    def _frame(self, payload: bytes) -> None:
        try:
            message = json.loads(payload)
            kind = message["type"]
        except (ValueError, TypeError, KeyError, RecursionError):
            self._lost(HOST_UNAVAILABLE, "the native host sent a frame that is not a protocol message")
            if self._channel is not None:
                self._channel.abort()
            return
        if kind == "response":
            request_id = message.get("id")
            future = self._pending.pop(request_id, None) if type(request_id) is int else None
            if future is not None and not future.done():
                error = message.get("error")
                if error is None:
                    future.set_result(message.get("result"))
                else:
                    future.set_exception(_relay_error(error))
        elif kind == "event":
            self._notify(self._on_event, message.get("name"), message.get("data"))
        elif kind == "tools":
            self.tools = message.get("tools") or []
            self.extension = message.get("extension")
            self._notify(self._on_tools, self.tools)
        elif kind == "pong":
            ping_id = message.get("id")
            pong = self._pings.get(ping_id) if type(ping_id) is int else None
            if pong is not None and not pong.done():
                pong.set_result(None)
        elif kind == "welcome" and not self._welcome.done():
            self.host = message.get("host") or {}
            self.extension = message.get("extension")
            self.tools = message.get("tools") or []
            self._welcome.set_result(None)
        elif kind == "error" and not self._welcome.done():
            self._welcome.set_exception(_relay_error(message))
        # Anything else — errors about messages this client never sends, or types from newer hosts — is ignored.

    def _lost(self, code: str, message: str, *, notify: bool = True) -> None:
        """The connection is over: fail everything still waiting, once."""
        if self._closed:
            return
        self._closed = True
        error = RelayError(code, message)
        for future in [*self._pending.values(), *self._pings.values(), self._welcome]:
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved: a caller may already have stopped waiting
        self._pending.clear()
        if notify:
            self._notify(self._on_close)


def _relay_error(error: Any) -> RelayError:
    if not isinstance(error, dict):
        return RelayError(TOOL_ERROR, str(error))
    code, message = error.get("code"), error.get("message")
    return RelayError(code if isinstance(code, str) else TOOL_ERROR,
                      message if isinstance(message, str) else json.dumps(error))


HOST_LEFT = ("the native host closed the connection: the browser closed it, or it was stopped; "
              "look for hosts again (the extension starts a new one when it reconnects)")


class _WsChannel:
    def __init__(self, ws: ClientConnection, sender: QueuedSender, client: HostClient) -> None:
        self._ws = ws
        self._sender = sender
        self._client = client
        import asyncio

        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, address: HostAddress, client: HostClient) -> tuple[_WsChannel, str]:
        """The channel, and the answer to the host's challenge for the hello."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import WebSocketException

        from native_host.ws import QueuedSender, answer_challenge

        try:
            info = json.loads(address.path.read_bytes())
            port, secret = int(info["port"]), str(info["secret"])
        except (ValueError, TypeError, KeyError) as exc:
            raise RelayError(HOST_UNAVAILABLE, f"{address.path} is not a host description ({exc}); the host may "
                             "still be starting — look for hosts again") from None
        try:
            ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, max_size=TO_CLIENT_MAX,
                               ping_interval=None, close_timeout=1, user_agent_header=None)
            challenge = json.loads(await ws.recv())
        except (WebSocketException, ValueError) as exc:
            raise RelayError(HOST_UNAVAILABLE, f"the native host at 127.0.0.1:{port} refused the connection: "
                             f"{exc}") from None
        nonce = challenge.get("nonce") if isinstance(challenge, dict) else None
        if not isinstance(nonce, str):
            await ws.close()
            raise RelayError(HOST_UNAVAILABLE, f"the service at 127.0.0.1:{port} did not send a challenge; it is "
                             "not a compass-bridge native host")
        return cls(ws, QueuedSender(ws), client), answer_challenge(secret, nonce)

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                self._client._frame(await self._ws.recv(decode=False))
        except ConnectionClosed:
            self._client._lost(HOST_UNAVAILABLE, HOST_LEFT)
        finally:
            self._sender.stop()

    def send(self, data: bytes) -> None:
        self._sender.send(data)

    def abort(self) -> None:
        self._sender.abort()

    async def aclose(self) -> None:
        import asyncio

        self._sender.close()
        await self._sender.wait_closed()
        await asyncio.wait([self._reader])

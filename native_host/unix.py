"""Clients over a Unix socket `<run dir>/<pid>.sock`, with the same frames as the browser's stdio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
from pathlib import Path

from native_host.framing import FROM_CLIENT_MAX, MIB, FrameDecoder, FrameTooLarge
from native_host.host import ClientConn, Host, HostStartError
from native_host.protocol import TOO_LARGE, encode
from native_host.runtime_dir import socket_path

assert sys.platform != "win32", "Unix sockets: the host uses the WebSocket transport on Windows"

SEND_BUFFER = 2 * MIB

# sun_path holds 108 bytes on Linux and 104 on macOS, each including the terminating NUL.
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


class UnixListener:
    def __init__(self, server: asyncio.Server, path: Path) -> None:
        self._server = server
        self._path = path

    @property
    def address(self) -> str:
        return str(self._path)

    async def aclose(self) -> None:
        self._path.unlink(missing_ok=True)
        self._server.close()


async def start_unix(host: Host, run_dir: Path) -> UnixListener:
    path = socket_path(run_dir, os.getpid())
    # Bound under a temporary name and renamed once listening, so a client never finds a socket that refuses it.
    partial = path.with_name(path.name + ".tmp")
    if len(os.fsencode(partial)) > _MAX_SOCKET_PATH:
        raise HostStartError(
            f"the socket path {partial} is {len(os.fsencode(partial))} bytes, longer than the {_MAX_SOCKET_PATH} "
            "this OS allows; set COMPASS_BRIDGE_HOME (or XDG_RUNTIME_DIR) to a shorter directory"
        )
    partial.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the socket 0600 from the moment it exists; the chmod makes sure of it.
    previous = os.umask(0o177)
    try:
        sock.bind(str(partial))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    partial.chmod(0o600)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: UnixConn(host), sock=sock, backlog=128)
    partial.replace(path)
    return UnixListener(server, path)


def peer_credentials(sock: socket.socket) -> tuple[int | None, int | None]:
    """(uid, pid) of the process at the other end, where the OS tells; (None, None) where it does not."""
    if sys.platform.startswith("linux"):
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return uid, pid
    if sys.platform == "darwin":
        sol_local, local_peercred, local_peerpid = 0, 0x001, 0x002
        # struct xucred: u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16].
        _version, uid = struct.unpack_from("=II", sock.getsockopt(sol_local, local_peercred, 76))
        try:  # the pid is only for the `clients` list, and older macOS lacks LOCAL_PEERPID
            (pid,) = struct.unpack("=i", sock.getsockopt(sol_local, local_peerpid, 4))
        except OSError:
            return uid, None
        return uid, pid
    return None, None


class UnixConn(ClientConn, asyncio.BufferedProtocol):
    """One client. A BufferedProtocol, so each read lands in the decoder's reused buffer instead of a fresh
    256 KiB `bytes` (see FrameDecoder)."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(FROM_CLIENT_MAX)
        self._closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        try:
            uid, self.pid = peer_credentials(transport.get_extra_info("socket"))
        except OSError as exc:
            self.host.log(f"refusing a client whose credentials cannot be read: {exc}")
            self._refuse()
            return
        if uid is not None and uid != os.getuid():
            self.host.log(f"refusing a client of uid {uid} (pid {self.pid}): only uid {os.getuid()} may connect")
            self._refuse()
            return
        # A bigger send buffer lets a large result leave in one write instead of many wake-ups of the client.
        # The kernel caps it at net.core.wmem_max, which is fine.
        with contextlib.suppress(OSError):
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.host.client_connected(self)

    def _refuse(self) -> None:
        self.gone = True  # never registered, so nothing to withdraw
        assert self._transport is not None
        self._transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            frames = self._decoder.buffer_updated(nbytes)
        except FrameTooLarge as exc:
            self.host.send(self, encode({"type": "error", "code": TOO_LARGE, "message": (
                f"frame of {exc.size} bytes is over the {exc.limit}-byte limit for client frames; closing the "
                "connection (no request may be that large: the browser accepts at most 1 MiB)")}))
            self.close()
            return
        for payload in frames:
            if self.gone:
                return
            self.host.client_frame(self, payload)

    def eof_received(self) -> bool:
        return False  # a client that stops sending has left; close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.host.client_gone(self)
        if not self._closed.done():
            self._closed.set_result(None)

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def backlog(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def pause_reading(self) -> None:
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing() and not self._transport.is_reading():
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

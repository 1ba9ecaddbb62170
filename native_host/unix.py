"""Clients over a Unix socket `<run dir>/<pid>.sock`, with the same frames as the browser's stdio."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import time

from native_host.framing import FROM_CLIENT_MAX, KIB, MIB, Bytes, FrameDecoder, FrameTooLarge, frame
from native_host.host import ClientConn, Host, HostStartError
from native_host.outbox import Outbox
from native_host.protocol import HOST_UNAVAILABLE, TOO_LARGE, dumps
from native_host.runtime_dir import socket_path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, ~2 ms of the start-up the browser waits for
if TYPE_CHECKING:
    from collections.abc import Callable

    from native_host.loop import Loop

assert sys.platform != "win32", "Unix sockets: the host uses the WebSocket transport on Windows"

SEND_BUFFER = 2 * MIB
CLIENT_READ_SIZE = 64 * KIB
"""A client's read buffer between frames (a longer frame gets room for itself as its header arrives): requests are
small, and sixteen idle clients should not hold 256 KiB each."""
ACCEPTS_PER_WAKEUP = 16
"""Connections taken per wake-up of the listening socket, so a flood of them cannot starve the connected clients."""
MAX_REFUSED = 16
REFUSED_LINGER = 1.0
"""Connections over the cap wait (at most this many, this many seconds) for the client to read its `error`."""

# sun_path holds 108 bytes on Linux and 104 on macOS, each including the terminating NUL.
_MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103


class UnixListener:
    def __init__(self, host: Host, loop: Loop, sock: socket.socket, path: str) -> None:
        self._host = host
        self._loop = loop
        self._sock = sock
        self._path = path
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    @property
    def address(self) -> str:
        return self._path

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, _address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: refuse this one, keep listening
                self._host.log.refusal("accept", f"cannot accept a client: {exc}")
                return
            UnixConn.accept(self._host, self._loop, sock)


def start_unix(host: Host, loop: Loop, run_dir: str) -> UnixListener:
    path = socket_path(run_dir, os.getpid())
    # Bound under a temporary name and renamed once listening, so a client never finds a socket that refuses it.
    partial = path + ".tmp"
    if len(os.fsencode(partial)) > _MAX_SOCKET_PATH:
        raise HostStartError(
            f"the socket path {partial} is {len(os.fsencode(partial))} bytes, longer than the {_MAX_SOCKET_PATH} "
            "this OS allows; set COMPASS_BRIDGE_HOME (or XDG_RUNTIME_DIR) to a shorter directory"
        )
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the socket 0600 from the moment it exists; the chmod makes sure of it.
    previous = os.umask(0o177)
    try:
        sock.bind(partial)
        os.chmod(partial, 0o600)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    os.replace(partial, path)
    return UnixListener(host, loop, sock, path)


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


class UnixConn(ClientConn):
    """One client: a non-blocking socket watched by the loop. Reads land in the decoder's reused buffer; a frame
    is sent with one `sendmsg` of its pieces, and only what the socket does not take at once is copied and queued
    (its size is the client's backlog)."""

    @classmethod
    def accept(cls, host: Host, loop: Loop, sock: socket.socket) -> None:
        """Take a new connection, or refuse it with a reason: another user, or the connection cap."""
        try:
            uid, pid = peer_credentials(sock)
        except OSError as exc:
            host.log.refusal("credentials", f"refusing a client whose credentials cannot be read: {exc}")
            sock.close()
            return
        if uid is not None and uid != os.getuid():
            host.log.refusal("uid", f"refusing a client of uid {uid} (pid {pid}): only uid {os.getuid()} may connect")
            sock.close()
            return
        full = host.room_for_client()
        if full is not None:
            host.log.refusal("connections", f"refusing a client (pid {pid}): {full}")
            _Refused(loop, sock, dumps({"type": "error", "code": HOST_UNAVAILABLE, "message": full}))
            return
        conn = cls(host, loop, sock)
        conn.pid = pid
        host.client_connected(conn)

    def __init__(self, host: Host, loop: Loop, sock: socket.socket) -> None:
        super().__init__(host)
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._decoder = FrameDecoder(FROM_CLIENT_MAX, CLIENT_READ_SIZE)
        self._out = Outbox(loop, self._fd, sock.sendmsg, sock.send, lambda _exc: self._lost(), self._drained)
        self._reading = False
        self._closing = False
        sock.setblocking(False)
        # A bigger send buffer lets a large result leave in one write instead of many wake-ups of the client.
        # The kernel caps it at net.core.wmem_max, which is fine.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.resume_reading()

    # ---- in -------------------------------------------------------------------------------------------------

    def _readable(self) -> None:
        decoder = self._decoder
        try:
            with decoder.get_buffer() as space:
                nbytes = self._sock.recv_into(space)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost()
            return
        if nbytes == 0:
            self._lost()  # a client that stops sending has left; close our side too
            return
        try:
            frames = decoder.views_updated(nbytes)
        except FrameTooLarge as exc:
            self.host.log.refusal("too_large", f"{self.describe()} announced a frame of {exc.size} bytes, over the "
                                  f"{exc.limit}-byte limit; closing the connection")
            self.refuse(dumps({"type": "error", "code": TOO_LARGE, "message": (
                f"frame of {exc.size} bytes is over the {exc.limit}-byte limit for client frames; closing the "
                "connection (no request may be that large: the browser accepts at most 1 MiB)")}))
            return
        for payload in frames:
            if self.gone or self._closing:
                return
            self.host.client_frame(self, payload)
        if not decoder.buffered:
            self.partial_since = 0.0
            return
        if frames or not self.partial_since:
            self.partial_since = time.monotonic()  # a new frame began in this read
        self.host.check_partial(self)

    def partial(self) -> int:
        return self._decoder.capacity if self._decoder.buffered else 0

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing and not self.gone:
            self._reading = True
            self._loop.add_reader(self._fd, self._readable)

    # ---- out -------------------------------------------------------------------------------------------------

    def send_frame(self, *parts: Bytes) -> int:
        return 0 if self.gone else self._out.send(parts)

    def _drained(self) -> None:
        if self._closing:
            self._lost()

    def backlog(self) -> int:
        return self._out.queued

    # ---- end ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        self.pause_reading()
        self._closing = True
        if not self._out.queued:
            self._lost()

    def abort(self) -> None:
        self._lost()

    def refuse(self, payload: bytes) -> None:
        if self._out.queued:  # the error waits its turn behind what is queued
            super().refuse(payload)
            return
        # Hand the socket to a _Refused, which sends the error and reads away the rest of the client's input:
        # closed with unread input, the connection would be reset and the error lost.
        self._lost(then=lambda sock: _Refused(self._loop, sock, payload))

    def _lost(self, then: Callable[[socket.socket], object] | None = None) -> None:
        """Close the socket (or hand it to `then`), free the buffers, and tell the host (once)."""
        if self._fd >= 0:
            self.pause_reading()
            self._out.clear()
            self._fd = -1
            if then is None:
                self._sock.close()
            else:
                then(self._sock)
            self._decoder.release()
            self.partial_since = 0.0
        self.host.client_gone(self)


class _Refused:
    """A connection turned away with an `error`: the error is sent, then whatever the client sends is read and
    dropped until it hangs up (at most REFUSED_LINGER seconds). Closing at once would throw away the error: a Unix
    socket closed with unread input (the client's hello) resets the connection, and the client's pending read
    fails without the data. At most MAX_REFUSED linger at once; past that they are closed at once."""

    lingering = 0

    def __init__(self, loop: Loop, sock: socket.socket, payload: bytes) -> None:
        self._loop = loop
        self._sock = sock
        with contextlib.suppress(OSError):  # a best effort: the new socket's buffer is empty, so it fits
            sock.setblocking(False)
            sock.send(frame(payload))
            sock.shutdown(socket.SHUT_WR)
        if _Refused.lingering >= MAX_REFUSED:
            sock.close()
            return
        _Refused.lingering += 1
        self._fd = sock.fileno()
        loop.add_reader(self._fd, self._readable)
        self._timer = loop.call_later(REFUSED_LINGER, self._close)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(CLIENT_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close()

    def _close(self) -> None:
        if self._fd < 0:
            return
        self._timer.cancel()
        self._loop.remove_reader(self._fd)
        self._fd = -1
        self._sock.close()
        _Refused.lingering -= 1

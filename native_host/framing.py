"""Frames of a 4-byte little-endian length followed by that many bytes of UTF-8 JSON.

Chrome's native messaging uses this framing on stdin/stdout (native byte order, which is little-endian on every
desktop the browsers ship for); the host's Unix socket uses it too, so one codec serves both.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("<I")

KIB = 1024
MIB = 1024 * KIB

TO_BROWSER_MAX = 1 * MIB
"""Chrome closes the whole port (every agent's requests) when the host sends a longer frame."""
FROM_BROWSER_MAX = 64 * MIB
"""Chrome refuses to serialize a longer extension message, so nothing longer can be genuine."""
FROM_CLIENT_MAX = 16 * MIB
"""A client frame is read whole before its request can be refused as too large for the browser; past this size
the host does not read it at all but closes the connection."""
TO_CLIENT_MAX = FROM_BROWSER_MAX + 1 * MIB
"""A browser frame re-addressed to a client: the browser's limit plus room for the client's own id."""


class FrameTooLarge(Exception):
    """A length header announced more bytes than the peer is allowed to send."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes is over the {limit}-byte limit")
        self.size = size
        self.limit = limit


def frame(*parts: bytes | memoryview) -> bytes:
    """One frame whose payload is `parts` joined, built in a single copy."""
    return b"".join((HEADER.pack(sum(len(p) for p in parts)), *parts))


class FrameDecoder:
    """Turns a byte stream, cut anywhere, back into frame payloads.

    Raises FrameTooLarge as soon as a header announces more than `max_size`, before any of the body arrives, so a
    bad peer cannot make us buffer it. After that the stream has no reliable frame boundary: drop the connection.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        start = 0
        end_of_data = len(buf)
        with memoryview(buf) as view:
            while end_of_data - start >= HEADER.size:
                (size,) = HEADER.unpack_from(buf, start)
                if size > self.max_size:
                    raise FrameTooLarge(size, self.max_size)
                end = start + HEADER.size + size
                if end > end_of_data:
                    break
                # One copy out of the buffer; slicing the bytearray first would make two.
                frames.append(view[start + HEADER.size : end].tobytes())
                start = end
        # bytearray drops a prefix without moving what stays, so a long frame arriving in pieces costs no copies.
        del buf[:start]
        return frames

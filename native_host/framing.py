"""Frames of a 4-byte little-endian length followed by that many bytes of UTF-8 JSON.

Chrome's native messaging uses this framing on stdin/stdout (native byte order, which is little-endian on every
desktop the browsers ship for); the host's Unix socket uses it too, so one codec serves both.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("<I")
_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from

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


Bytes = bytes | bytearray | memoryview


def frame(*parts: Bytes) -> bytes:
    """One frame whose payload is `parts` joined, built in a single copy."""
    return b"".join((HEADER.pack(sum(len(p) for p in parts)), *parts))


READ_SIZE = 256 * KIB
"""Free space offered to each read when no long frame is under way: what asyncio's own transports read at once."""
KEEP = TO_BROWSER_MAX + 64 * KIB
"""Buffer capacity kept between frames, and the most reserved ahead for a frame on the word of its header alone.
Frames up to this size (nearly every one; Chrome takes no longer frame from the host) land in place, read after read,
and are copied once. Past it, the buffer grows as the body arrives and is let go after the frame."""


class FrameDecoder:
    """Turns a byte stream, cut anywhere, back into frame payloads.

    Raises FrameTooLarge as soon as a header announces more than `max_size`, before any of the body arrives, so a
    bad peer cannot make us buffer it. After that the stream has no reliable frame boundary: drop the connection.

    The bytes are read straight into one reused buffer: `get_buffer()` gives its free space to a read (asyncio's
    BufferedProtocol, `os.readv`), `buffer_updated(n)` takes the `n` bytes read and returns the frames they
    complete. Reading into fresh `bytes` instead costs an allocation of the whole read size on every read, which
    glibc serves with mmap and munmap (~12 µs a read on the relay's round trip). `feed()` serves callers that
    already hold the bytes.
    """

    def __init__(self, max_size: int, read_size: int = READ_SIZE) -> None:
        self.max_size = max_size
        self.read_size = read_size
        self._buf = bytearray(read_size)
        self._start = 0  # the bytes not yet returned as frames are self._buf[self._start : self._end]
        self._end = 0

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return self._end - self._start

    @property
    def capacity(self) -> int:
        """Bytes of memory the buffer holds now, received or reserved for what the frame under way announced."""
        return len(self._buf)

    def release(self) -> None:
        """Let go of the buffer (the connection is over); the decoder is not used afterwards."""
        self._buf = bytearray()
        self._start = self._end = 0

    def _missing(self) -> int:
        """Bytes still to come of the frame under way, as far as its header tells (0 before the header is in)."""
        held = self._end - self._start
        if held < HEADER.size:
            return 0
        (size,) = HEADER.unpack_from(self._buf, self._start)
        if size > self.max_size:  # already refused by buffer_updated; reserve nothing for it
            return 0
        missing: int = HEADER.size + size - held
        return missing

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Free space for the next read: at least `read_size` bytes, or the rest of the frame under way (up to
        KEEP) so that it arrives in place. `sizehint` (asyncio's) is ignored. The view must be released before the
        next call."""
        if not self._end and self._buf:
            # Nothing held (the usual case between messages): the whole buffer, which is then at least read_size
            # and at most KEEP (views_updated lets a longer one go as it empties). Empty only once released.
            return memoryview(self._buf)
        held = self._end - self._start
        missing = self._missing()
        want = max(self.read_size, min(missing, KEEP))
        capacity = len(self._buf)
        if held + want > capacity:
            # Grow: geometrically past KEEP, so a long frame costs O(its size) in copies, never past the frame.
            self._reallocate(max(held + want, min(2 * capacity, held + missing)))
        elif capacity > KEEP and held + want <= KEEP:
            # A long frame is done with: do not keep its memory for the life of the connection.
            self._reallocate(max(self.read_size, held + want))
        elif capacity - self._end < want:
            # Move the start of a partial frame to the front (at most one frame's bytes, usually a few).
            self._buf[:held] = self._buf[self._start : self._end]
            self._start, self._end = 0, held
        return memoryview(self._buf)[self._end :]

    def _reallocate(self, capacity: int) -> None:
        new = bytearray(capacity)
        with memoryview(self._buf) as old:
            new[: self._end - self._start] = old[self._start : self._end]
        self._buf = new
        self._start, self._end = 0, self._end - self._start

    def buffer_updated(self, nbytes: int) -> list[bytes]:
        """Take `nbytes` just read into the last `get_buffer()`; the payloads of the frames now complete."""
        return [view.tobytes() for view in self.views_updated(nbytes)]

    def views_updated(self, nbytes: int) -> list[memoryview]:
        """Like `buffer_updated`, but the payloads are views of the buffer, without a copy: they are valid only
        until the next `get_buffer()`, whose read may overwrite them. Whoever keeps a payload longer copies it."""
        buf = self._buf
        if not self._end and nbytes >= _HEADER_SIZE:
            # The usual read on the relay: exactly one whole frame, at the front of an empty buffer. Taken without
            # the general loop below (same checks, same result): this runs twice per relayed round trip. The buffer
            # stays as it is: an empty one is never over KEEP (the loop below lets a longer one go as it empties).
            (size,) = _unpack_header(buf, 0)
            if size + _HEADER_SIZE == nbytes and size <= self.max_size:
                return [memoryview(buf)[_HEADER_SIZE:nbytes]]
        self._end += nbytes
        frames: list[memoryview] = []
        start = self._start
        end_of_data = self._end
        view = memoryview(buf)
        max_size = self.max_size
        while end_of_data - start >= _HEADER_SIZE:
            (size,) = _unpack_header(buf, start)
            if size > max_size:
                self._start = start
                raise FrameTooLarge(size, max_size)
            end = start + _HEADER_SIZE + size
            if end > end_of_data:
                break
            frames.append(view[start + _HEADER_SIZE : end])
            start = end
        if start == end_of_data:
            start = self._end = 0  # all consumed: the next read lands at the front again, no move needed
            if len(buf) > KEEP:
                # A long frame is done with: let its memory go now, not at the next read, which may never come.
                # The views handed out keep the old buffer alive as long as they are used.
                self._buf = bytearray(self.read_size)
        self._start = start
        return frames

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """The payloads of the frames completed by `data`, for callers that hold the bytes already."""
        frames: list[bytes] = []
        with memoryview(data) as rest:
            at = 0
            while at < len(rest):
                with self.get_buffer() as space:
                    n = min(len(space), len(rest) - at)
                    space[:n] = rest[at : at + n]
                frames += self.buffer_updated(n)
                at += n
        return frames

"""The browser extension, simulated on a native host's stdin/stdout — the same program for both hosts.

    python bench/extsim.py ours|peer      (stdin: the host's stdout; stdout: the host's stdin)

It greets the host (ours: protocol v1 `hello` with one tool; both: a `ping`), waits for the `pong`, writes
`ready` on stderr, then answers every `tool_request` at once with a `tool_response` whose result carries
`args.size` bytes of base64-like text and echoes `args.tag` (so the harness can tell whose answer it got).
Replies to the requests that arrived together are sent in shuffled order, so a host must route by id — the order
of arrival proves nothing. The only differences between the two modes are where the arguments sit in the
request and that ours echoes the request `id` (the peer's protocol has none):

    ours: {"type":"tool_response","id":<id>,"result":{"tag":…,"content":[{"type":"text","text":"…"}]}}
    peer: {"type":"tool_response","result":{"tag":…,"content":[{"type":"text","text":"…"}]}}

Standard library only, blocking I/O, one thread: it is the same cost on both sides.
"""

from __future__ import annotations

import base64
import json
import os
import random
import struct
import sys

assert sys.platform != "win32", "the simulated extension reads its stdin with os.readv (POSIX)"

HEADER = struct.Struct("<I")
MAX_TEXT = 2_000_000
_TEXT = base64.b64encode(random.Random(6).randbytes(MAX_TEXT)).decode()[:MAX_TEXT].encode()


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Frames:
    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        self.buf += data
        out = []
        start = 0
        while len(self.buf) - start >= 4:
            (size,) = HEADER.unpack_from(self.buf, start)
            if len(self.buf) - start - 4 < size:
                break
            out.append(bytes(self.buf[start + 4 : start + 4 + size]))
            start += 4 + size
        del self.buf[:start]
        return out


def main() -> int:
    mode = sys.argv[1]
    if mode not in ("ours", "peer"):
        sys.exit("usage: extsim.py ours|peer")
    shuffle = random.Random(7).shuffle
    bodies: dict[int, tuple[bytes, bytes]] = {}
    frames = Frames()
    if mode == "ours":
        write_all(1, frame(json.dumps({
            "type": "hello", "protocol": 1, "extension": {"name": "bench-extension", "version": "1"},
            "tools": [{"name": "bench_echo", "description": "echo a payload of args.size bytes",
                       "inputSchema": {"type": "object"}}],
        }, separators=(",", ":")).encode()))
    write_all(1, frame(b'{"type":"ping"}'))
    ready = False
    chunk = bytearray(1 << 20)  # reused: a fresh 1 MiB bytes per read would cost an mmap and munmap each time
    view = memoryview(chunk)
    while got := os.readv(0, [chunk]):
        replies = []
        for payload in frames.feed(view[:got]):
            message = json.loads(payload)
            kind = message.get("type")
            if kind == "pong" and not ready:
                ready = True
                os.write(2, b"ready\n")
                continue
            if kind != "tool_request":
                continue  # clients, mcp_connected, tool_cancel, ...
            args = message["args"] if mode == "ours" else message["params"]["args"]
            size = min(int(args["size"]), MAX_TEXT)
            if size not in bodies:
                bodies[size] = (b'{"tag":', b',"content":[{"type":"text","text":"' + _TEXT[:size] + b'"}]}}')
            before, after = bodies[size]
            tag = json.dumps(args["tag"]).encode()
            head = b'{"type":"tool_response","id":%d,"result":' % message["id"] if mode == "ours" \
                else b'{"type":"tool_response","result":'
            replies.append(frame(b"".join((head, before, tag, after))))
        if replies:
            shuffle(replies)
            write_all(1, b"".join(replies))
    return 0


if __name__ == "__main__":
    sys.exit(main())

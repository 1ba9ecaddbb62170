"""Corpus, class 7 — the native host against hostile local clients: frames of the right length holding the wrong
things. Each is sent on a connection of its own; the host must answer or refuse it, keep that connection (or close
it with an error said first), and go on serving everyone else.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from tests.security import test_host_limits
from tests.support.native_host_harness import Browser, RawClient, address_of, client_of

browser = test_host_limits.browser  # the fixture: a host with a fake browser, in conftest's short `host_home`

pytestmark = pytest.mark.anyio

PAYLOADS: dict[str, bytes] = {
    "200 000 levels of nesting": b'{"type":"request","id":1,"tool":"echo","args":{"x":' + b"[" * 200_000
                                 + b"]" * 200_000 + b"}}",
    "a lone surrogate": b'{"type":"request","id":1,"tool":"echo","args":{"x":"\\ud800"}}',
    "an empty frame": b"",
    "a JSON array": b"[1,2,3]",
    "a JSON string": b'"request"',
    "null": b"null",
    "an object as type": b'{"type":{"a":1},"id":1}',
    "an object as id": b'{"type":"request","id":{"a":[1]},"tool":"echo","args":{}}',
    "a list as id": b'{"type":"request","id":[1],"tool":"echo","args":{}}',
    "a 1e300 id": b'{"type":"request","id":1e300,"tool":"echo","args":{}}',
    "a number as tool": b'{"type":"request","id":1,"tool":7,"args":{}}',
    "a list as args": b'{"type":"request","id":1,"tool":"echo","args":[1]}',
    "a second hello": b'{"type":"hello","client":{"name":"again","version":"0","pid":1}}',
    "a hello with a huge pid": b'{"type":"hello","client":{"name":"x","version":"0","pid":' + b"9" * 400 + b"}}",
    "a cancel of nothing": b'{"type":"cancel","id":{"x":1}}',
    "duplicate keys": b'{"type":"request","type":"ping","id":1,"id":2}',
    "an unknown type": b'{"type":"run_start","id":1}',
    "bad UTF-8": b'{"type":"request","id":1,"tool":"echo","args":{"x":"\xff\xfe"}}',
}


async def _after(raw: RawClient) -> list[Any]:
    """What the host says after the hostile frame, up to the answer to a ping (or the end of the connection)."""
    said: list[Any] = []
    await raw.send({"type": "ping", "id": "after"})
    while True:
        message = await raw.receive()
        if message is None or message == {"type": "pong", "id": "after"}:
            return [*said, message]
        said.append(message)


@pytest.mark.parametrize("what", list(PAYLOADS))
async def test_a_hostile_frame_harms_no_one_else(browser: Browser, what: str) -> None:
    address = await address_of(browser)
    bystander = await client_of(browser, "bystander")
    raw = await RawClient.connect(address.path)
    payload = PAYLOADS[what]
    await raw.send_raw(struct.pack("<I", len(payload)) + payload)
    said = await _after(raw)
    if said[-1] is None:  # closed: only after saying why
        assert any(isinstance(m, dict) and m.get("type") == "error" and m.get("message") for m in said), said
    await raw.close()
    assert (await bystander.request("echo", {"still": what}))["echo"] == {"still": what}
    await bystander.close()

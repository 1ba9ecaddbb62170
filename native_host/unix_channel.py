"""The client's channel to a host's Unix socket: an asyncio protocol, in a module of its own.

It must subclass `asyncio.BufferedProtocol`, which would make importing `native_host.client` import asyncio;
the MCP server imports that as it starts (to look for hosts), and loads this only to connect to one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from native_host.client import HOST_LEFT
from native_host.framing import TO_CLIENT_MAX, FrameDecoder, FrameTooLarge
from native_host.protocol import HOST_UNAVAILABLE

if TYPE_CHECKING:
    from native_host.client import HostAddress, HostClient


class UnixChannel(asyncio.BufferedProtocol):
    """A BufferedProtocol, so each read lands in the decoder's reused buffer instead of a fresh 256 KiB `bytes`."""

    def __init__(self, client: HostClient) -> None:
        self._client = client
        self._decoder = FrameDecoder(TO_CLIENT_MAX)
        self._transport: asyncio.Transport | None = None
        self._lost = client._loop.create_future()

    @classmethod
    async def open(cls, address: HostAddress, client: HostClient) -> UnixChannel:
        _, channel = await client._loop.create_unix_connection(lambda: cls(client), str(address.path))
        return channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            frames = self._decoder.buffer_updated(nbytes)
        except FrameTooLarge as exc:
            self._client._lost(HOST_UNAVAILABLE, f"the native host sent a frame of {exc.size} bytes, over the "
                               f"{exc.limit}-byte limit")
            self.abort()
            return
        for payload in frames:
            self._client._frame(payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(HOST_UNAVAILABLE, HOST_LEFT)
        if not self._lost.done():
            self._lost.set_result(None)

    def send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self) -> None:
        if self._transport is not None:
            self._transport.close()
            await asyncio.shield(self._lost)

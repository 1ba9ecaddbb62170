"""A small DevTools-protocol client for driving a real headless Chromium's pages from tests: open a tab (a web
page or an extension page such as the side panel), evaluate JavaScript in it, take a screenshot."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class CdpError(Exception):
    pass


class Cdp:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, profile: Path, limit_s: float = 30) -> Cdp:
        """Connect to the browser started with --remote-debugging-port=0 on `profile`."""
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(limit_s):
            while not port_file.exists() or len(port_file.read_text().split()) < 2:
                await asyncio.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        return cls(await connect(f"ws://127.0.0.1:{port}{path}", max_size=2**28))

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self._ws:
                message = json.loads(raw)
                future = self._waiting.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)

    async def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
                   limit_s: float = 60) -> dict[str, Any]:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        message: dict[str, Any] = {"id": request_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send(json.dumps(message))
        async with asyncio.timeout(limit_s):
            reply = await future
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def open_tab(self, url: str) -> Tab:
        target = (await self.call("Target.createTarget", {"url": url}))["targetId"]
        session = (await self.call("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        tab = Tab(self, target, session)
        # A new target shows about:blank first: wait for the URL asked for, loaded.
        await tab.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")
        return tab

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(Exception):
            await self._ws.close()


class Tab:
    def __init__(self, cdp: Cdp, target: str, session: str) -> None:
        self.cdp = cdp
        self.target = target
        self.session = session

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of `expression` (promises awaited); a thrown exception fails the test with its text."""
        reply = await self.cdp.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                         "returnByValue": True}, self.session)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise CdpError(f"{expression[:80]!r} threw: {details.get('exception', {}).get('description', details)}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, limit_s: float = 60) -> Any:
        """Poll `expression` until it is truthy; returns its value. The limit only turns a hang into a failure."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while True:
            with contextlib.suppress(CdpError):
                value = await self.evaluate(expression)
                if value:
                    return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gave up waiting {limit_s:g} s for {expression!r}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path, width: int = 420, height: int = 900) -> None:
        await self.cdp.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                                   "deviceScaleFactor": 1, "mobile": False},
                            self.session)
        await self.cdp.call("Page.bringToFront", {}, self.session)  # a hidden tab is not painted
        shot = await self.cdp.call("Page.captureScreenshot", {"format": "png"}, self.session)
        path.write_bytes(base64.b64decode(shot["data"]))

    async def navigate(self, url: str) -> None:
        await self.cdp.call("Page.navigate", {"url": url}, self.session)
        await asyncio.sleep(0.2)
        await self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    async def close(self) -> None:
        with contextlib.suppress(CdpError):
            await self.cdp.call("Target.closeTarget", {"targetId": self.target})

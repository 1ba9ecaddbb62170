"""A web page's runs get its origin's scopes (`[page_origins]`, mcp_bridge/page_origins.py), not the bridge's
`default_scopes`.

The run service knows a driver only by the key it presents (none = `default_scopes`). So for each run request a
page makes, the browser link mints a short-lived bridge key named after the origin with the origin's scopes,
presents it, and deletes it once the request is answered: the run service takes the driver's scopes for the
run's own key at that moment, rate-limits by the key's name (one bucket per origin), and records the name and
scopes with the run (`compass-bridge runs list`). The key lives only in this process's memory and the HMAC in
the store; an origin not configured is refused — no configuration never means more authority.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator

from mcp_bridge.agent.client import AgentError
from mcp_bridge.config import ConfigError, load_config
from mcp_bridge.keys import KeyStore, KeyStoreError
from mcp_bridge.paths import StatePaths
from mcp_bridge.store import StoreError

KEY_TTL_S = 120.0
"""A page key expires on its own if this process dies between minting and deleting it."""
NAME_PREFIX = "page "
NAME_MAX = 64
"""The key store's limit on a key name."""


def key_name(origin: str) -> str:
    """`page <origin>`, shortened with a digest when too long for a key name (one name per origin)."""
    name = NAME_PREFIX + origin
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(origin.encode()).hexdigest()[:10]
    return f"{name[:NAME_MAX - len(digest) - 1]}~{digest}"


class PageKeys:
    def __init__(self, paths: StatePaths) -> None:
        self._paths = paths
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def key_for(self, origin: str) -> AsyncIterator[str]:
        """A key with `origin`'s configured scopes, valid while the block runs; AgentError if it has none."""
        try:
            scopes = load_config(self._paths.config_file).page_origins.get(origin)
        except ConfigError as exc:
            raise AgentError("unauthorized", f"runs from web pages are refused while config.toml cannot be used: "
                             f"{exc}") from None
        if scopes is None:
            raise AgentError("unauthorized", f"the page origin {origin} may not start runs: it is not in "
                             f"[page_origins] of config.toml. Add it with the scopes its runs get (\"{origin}\" = "
                             "\"read\"), run `compass-bridge install` (or `extension export`) again and reload the "
                             "extension")
        name = key_name(origin)
        # One request per origin at a time: the name is the origin's rate-limit bucket and must be unique.
        async with self._locks.setdefault(name, asyncio.Lock()):
            try:
                store = KeyStore.open(self._paths)
            except StoreError as exc:
                raise AgentError("unavailable", f"cannot give the page's run its scopes: {exc}") from None
            try:
                with contextlib.suppress(KeyStoreError):
                    store.delete(name)  # left by a link that died mid-request (it has expired anyway)
                try:
                    record, key = store.create(name, scopes, expires_at=time.time() + KEY_TTL_S)
                except (KeyStoreError, StoreError) as exc:
                    raise AgentError("unavailable", f"cannot give the page's run its scopes: {exc}") from None
                try:
                    yield key
                finally:
                    with contextlib.suppress(KeyStoreError, StoreError):
                        store.delete(record.id)
            finally:
                store.close()

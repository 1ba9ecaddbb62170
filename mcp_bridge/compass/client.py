"""The Compass REST client: `register()` and `call_tool()`, with errors a user can act on.

The contract is docs/COMPASS_API.md. Every failure becomes a `CompassError` whose message says what
failed, why, and what to do — and never holds the API key: the key travels only in the Authorization
header, and any text quoted from Compass or the network stack is scrubbed of it first.

httpx is imported when a client is created, not with this module: the MCP server imports the Compass
source on its way to answering `initialize`, and the HTTP stack is not needed until after that.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from mcp_bridge import __version__
from mcp_bridge.compass.credentials import NEW_KEY_HINT, ApiKey, is_loopback
from mcp_bridge.config import CompassSettings
from mcp_bridge.scopes import Scope, ScopeError, expand, parse_scope

if TYPE_CHECKING:
    import httpx

REGISTER_PATH = "/api/bridge/register"
TOOLS_PATH = "/api/bridge/tools"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Far above any real answer; stops a broken or hostile server from filling memory."""
_QUOTE_MAX = 500

REJECTED = "Compass rejected the API key (revoked or expired?)"
LOGIN = "run `compass-bridge compass login`"


class CompassError(Exception):
    """Compass could not be used; the message says what, why and what to do, and never holds the key."""

    transient = False
    """True when trying again soon may work (Compass unreachable, overloaded, too slow)."""


class KeyRejected(CompassError):
    """HTTP 401: the key is unknown, revoked or expired."""


class ScopeRefused(CompassError):
    """HTTP 403: the key lacks the scope, or the user the role, that the request needs."""


class CompassUnavailable(CompassError):
    """Compass could not be reached or did not answer in time."""

    transient = True

    def __init__(self, message: str, *, may_have_run: bool) -> None:
        super().__init__(message)
        self.may_have_run = may_have_run
        """False only when the request certainly never reached Compass (no connection was made)."""


class CompassFailed(CompassError):
    """Compass answered, with an error or with something the bridge cannot use."""


@dataclass(frozen=True)
class CompassUser:
    id: str
    name: str
    role: str


@dataclass(frozen=True)
class AnnouncedTool:
    name: str
    description: str
    scope: str
    """As Compass declared it; the source decides what to do with a scope it does not know."""
    input_schema: Mapping[str, Any] | None


@dataclass(frozen=True)
class Registration:
    user: CompassUser
    scopes: frozenset[Scope]
    """The Compass key's scopes, closed under read ⊂ write ⊂ admin; names the bridge does not know are ignored."""
    tools: tuple[AnnouncedTool, ...]
    memories: tuple[Any, ...]
    dashboards: tuple[Any, ...]
    installed_skills: tuple[Any, ...]


def parse_registration(body: Mapping[str, Any]) -> Registration:
    """Raises ValueError naming the fields that do not fit the contract."""
    # pydantic only here, when Compass answers: it stays off the server's start-up path (~50 ms).
    from pydantic import ValidationError

    from mcp_bridge.compass.contract import RegistrationBody

    try:
        parsed = RegistrationBody.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ValueError(problems) from None
    known: list[Scope] = []
    for name in parsed.scopes:
        try:
            known.append(parse_scope(name))
        except ScopeError:
            continue  # a newer Compass may grant scopes this bridge has no tools for
    user = parsed.user
    return Registration(
        user=CompassUser(str(user.id), user.name, user.role),
        scopes=expand(known),
        tools=tuple(AnnouncedTool(t.name, t.description, t.scope, t.input_schema) for t in parsed.tools),
        memories=tuple(parsed.context.memories),
        dashboards=tuple(parsed.context.dashboards),
        installed_skills=tuple(parsed.context.installed_skills),
    )


class CompassClient:
    """One connection pool to one Compass, authenticated with one key. Use `async with` or `aclose()`."""

    def __init__(self, url: str, key: ApiKey, settings: CompassSettings) -> None:
        import httpx

        self.url = url
        self._key = key
        self._connect_timeout_s = settings.connect_timeout_s
        self._timeout_s = settings.timeout_s
        loopback = is_loopback(urlsplit(url).hostname or "")
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            verify=True,
            # A redirect would have to carry the key somewhere the user never named; refuse instead.
            follow_redirects=False,
            headers={"User-Agent": f"compass-bridge/{__version__}", "Accept": "application/json"},
            # An environment proxy is fine for HTTPS (it only tunnels), but a loopback Compass may be
            # plain HTTP and a proxy would then read the key: loopback always goes direct.
            mounts={"all://": None} if loopback else None,
        )

    async def __aenter__(self) -> CompassClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"CompassClient({self.url!r}, {self._key!r})"

    async def register(self) -> Registration:
        what = f"registering with Compass at {self.url}"
        body = await self._post(REGISTER_PATH, {"client": {"name": "compass-bridge", "version": __version__}}, what)
        try:
            return parse_registration(body)
        except ValueError as exc:
            raise CompassFailed(f"{what}: the answer does not match the bridge API ({self._scrub(str(exc))}); "
                                "check that the URL is your Compass and that it is up to date") from None

    async def call_tool(self, tool: str, args: Mapping[str, Any]) -> Any:
        """Compass's `result` for the call; a `{success: false}` answer raises CompassFailed with its error."""
        what = f"Compass tool '{tool}'"
        body = await self._post(TOOLS_PATH, {"tool": tool, "args": dict(args)}, what)
        success = body.get("success")
        if success is True:
            return body.get("result")
        if success is False:
            reason = self._quote(body.get("error")) or "no reason given"
            raise CompassFailed(f"{what} failed in Compass: {reason}")
        raise CompassFailed(f"{what}: Compass's answer has no `success` field, so the outcome is unknown; "
                            "check that Compass is up to date")

    # -- one request -------------------------------------------------------------------------

    async def _post(self, path: str, payload: Mapping[str, Any], what: str) -> dict[str, Any]:
        import httpx

        try:
            # httpx's time-outs are per phase (connect, each read); this bounds the whole exchange.
            with anyio.fail_after(self._timeout_s):
                response, raw = await self._send(path, payload)
        except TimeoutError:
            raise self._too_slow(what) from None
        except httpx.ConnectTimeout:
            raise CompassUnavailable(
                f"{what}: no connection within {self._connect_timeout_s:g} s (connect_timeout_s in the [compass] "
                "section of config.toml); Compass may be down or the address wrong", may_have_run=False) from None
        except httpx.ConnectError as exc:
            raise CompassUnavailable(self._connect_failure(what, exc), may_have_run=False) from None
        except httpx.TimeoutException:
            raise self._too_slow(what) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            raise CompassUnavailable(f"{what}: Compass closed the connection before answering; "
                                     "it may be restarting — try again shortly", may_have_run=True) from None
        except httpx.TransportError as exc:
            raise CompassUnavailable(f"{what}: network failure ({self._scrub(str(exc)) or type(exc).__name__})",
                                     may_have_run=True) from None
        return self._body(response, raw, path, what)

    async def _send(self, path: str, payload: Mapping[str, Any]) -> tuple[httpx.Response, bytes]:
        request = self._http.build_request("POST", self.url + path, json=payload,
                                           headers={"Authorization": f"Bearer {self._key.reveal()}"})
        response = await self._http.send(request, stream=True)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise CompassFailed(f"Compass sent more than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB; "
                                        "ask for less (e.g. a smaller `limit`)")
                chunks.append(chunk)
        finally:
            await response.aclose()
        return response, b"".join(chunks)

    def _body(self, response: httpx.Response, raw: bytes, path: str, what: str) -> dict[str, Any]:
        status = response.status_code
        if 200 <= status < 300:
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = None
            if not isinstance(body, dict):
                raise CompassFailed(f"{what}: Compass answered HTTP {status} but not with a JSON object; "
                                    "check that the URL is your Compass (not a login page or a proxy)")
            return body
        said = self._error_text(raw)
        because = f" ({said})" if said else ""
        if status == 401:
            raise KeyRejected(f"{REJECTED}{'; Compass says: ' + said if said else ''} — {LOGIN} with a new key")
        if status == 403:
            said = said or "the Compass API key lacks the scope, or the Compass user the role, that this needs"
            raise ScopeRefused(f"{what}: Compass refused it: {said}. Check the key's scopes and the user's role in "
                               f"Compass; for a key with more scopes, {NEW_KEY_HINT} and {LOGIN}")
        if status in (502, 503, 504):
            raise CompassUnavailable(f"{what}: Compass is unavailable (HTTP {status}{because}); it may be "
                                     "restarting or overloaded — try again shortly", may_have_run=status != 503)
        if 300 <= status < 400:
            where = response.headers.get("location", "elsewhere")
            raise CompassFailed(f"{what}: Compass redirects to {self._scrub(where)} (HTTP {status}); the bridge "
                                "does not follow redirects with the API key. Log in with the final address: "
                                "`compass-bridge compass login --url https://…`")
        if status == 404 and path == REGISTER_PATH:
            raise CompassFailed(f"{what}: there is no bridge API at {self.url}{REGISTER_PATH} (HTTP 404); check "
                                "the URL, and that this Compass offers API keys for the bridge")
        if status == 429:
            wait = response.headers.get("retry-after")
            raise CompassFailed(f"{what}: Compass is limiting the request rate (HTTP 429{because}); "
                                f"wait {wait + ' s ' if wait else ''}and try again")
        raise CompassFailed(f"{what}: Compass answered HTTP {status}{because}")

    def _too_slow(self, what: str) -> CompassUnavailable:
        return CompassUnavailable(
            f"{what}: Compass did not answer within {self._timeout_s:g} s (timeout_s in the [compass] section of "
            "config.toml); it may be overloaded — try again, or ask for less", may_have_run=True)

    def _connect_failure(self, what: str, exc: Exception) -> str:
        reason = self._scrub(_connect_reason(exc))
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
            return (f"{what}: the TLS certificate could not be verified ({reason}). The bridge always verifies "
                    "certificates: fix Compass's certificate, or for a private certificate authority point "
                    "SSL_CERT_FILE at its CA bundle")
        return f"{what}: cannot connect ({reason}); check the URL and the network — Compass may be down"

    def _error_text(self, raw: bytes) -> str:
        """What Compass said about an error: its JSON `error`/`message`, or the start of the body."""
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._quote(raw.decode("utf-8", "replace"))
        if isinstance(body, dict):
            return self._quote(body.get("error") or body.get("message"))
        return ""

    def _quote(self, said: object) -> str:
        if said is None or said == "":
            return ""
        text = said if isinstance(said, str) else json.dumps(said, default=str)
        text = " ".join(self._scrub(text).split())
        return text if len(text) <= _QUOTE_MAX else text[:_QUOTE_MAX] + "…"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key.reveal(), self._key.hint)


def _connect_reason(exc: BaseException) -> str:
    """The cause worth showing: httpx reports a refused connection as "All connection attempts failed"."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"host name not found: {cause.strerror}"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__

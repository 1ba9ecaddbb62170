"""Where the Compass URL and API key come from, and how `compass login` keeps them.

The key is a bearer secret for the user's Compass account. It is kept only in a 0600 file written
atomically (or given in the environment), and carried around inside `ApiKey`, whose repr and str
show a short hint, so a log line, a status dump or an exception message cannot carry it by accident.

The stored URL is bound to the stored key: the file carries an HMAC over both under the bridge's private
secret (`data/key-secret`), and a file whose URL (or key) was changed by anything but `compass login` is
refused, so whoever can edit the file cannot redirect the key to a server of their choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from mcp_bridge.config import CompassSettings
from mcp_bridge.keys import load_secret
from mcp_bridge.paths import StatePaths
from mcp_bridge.store import StoreError

URL_ENV = "COMPASS_URL"
KEY_ENV = "COMPASS_API_KEY"

_KEY_FORMAT = re.compile(r"ck_[0-9a-f]{40}")
_HINT_CHARS = 7  # "ck_" + 4 hex: enough to tell keys apart in Compass's key list, useless to an attacker

LOGIN_HINT = "run `compass-bridge compass login --url https://YOUR-COMPASS` (or set COMPASS_URL and COMPASS_API_KEY)"
NEW_KEY_HINT = "create an API key in Compass (Settings → API keys)"


class CredentialsError(Exception):
    """The Compass settings cannot be used; the message says which and how to fix it (never the key)."""


class ApiKey:
    """A Compass API key (`ck_` + 40 lowercase hex). Only `reveal()` gives the secret back."""

    __slots__ = ("_secret",)

    def __init__(self, text: str, *, source: str = "the key") -> None:
        text = text.strip()
        if not _KEY_FORMAT.fullmatch(text):
            # The text is not echoed: it may be the real key with a stray character.
            raise CredentialsError(
                f"{source} is not a Compass API key: expected `ck_` followed by 40 lowercase hexadecimal "
                f"characters. Copy the whole key, or {NEW_KEY_HINT}"
            )
        self._secret = text

    def reveal(self) -> str:
        return self._secret

    @property
    def hint(self) -> str:
        return self._secret[:_HINT_CHARS] + "…"

    def __repr__(self) -> str:
        return f"ApiKey({self.hint})"

    __str__ = __repr__


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, source: str = "the Compass URL") -> str:
    """The base URL without a trailing slash; HTTPS is required unless the host is a loopback address."""
    parts = urlsplit(url.strip())
    if parts.username is not None or parts.password is not None:
        # Not echoed: the user part may hold a password.
        raise CredentialsError(f"{source} must not contain a user name or password; the API key is the credential")
    example = "e.g. https://compass.example.com"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CredentialsError(f"{source} {url!r} is not an http(s) address; give the address you open Compass at, "
                               f"{example}")
    try:
        parts.port  # noqa: B018 — urlsplit validates the port only when it is read
    except ValueError:
        raise CredentialsError(f"{source} {url!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise CredentialsError(f"{source} {url!r} must not have a query or fragment; give the base address, {example}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise CredentialsError(
            f"{source} {url!r} uses plain HTTP, which would send the API key across the network unencrypted; "
            "use https:// (plain http is accepted only for loopback addresses: localhost, 127.0.0.0/8, ::1)"
        )
    return urlunsplit((parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


class CompassCredentials(NamedTuple):
    url: str
    key: ApiKey
    origin: str
    """Where they came from, for `bridge_status` and `compass status`: the environment or the file."""


def load_credentials(paths: StatePaths, settings: CompassSettings,
                     environ: Mapping[str, str] | None = None) -> CompassCredentials | None:
    """The credentials to use, or None when Compass is not configured at all.

    COMPASS_API_KEY wins over the stored key; its URL is COMPASS_URL, else the config's `[compass] url`.
    A stored key goes only to the URL it was stored with: a different COMPASS_URL is an error rather than
    a reason to send the key to a server it was not created for.
    """
    env = os.environ if environ is None else environ
    env_url = env.get(URL_ENV, "").strip()
    env_key = env.get(KEY_ENV, "").strip()
    if env_key:
        url = env_url or settings.url
        if not url:
            raise CredentialsError(f"{KEY_ENV} is set but no Compass URL is: set {URL_ENV} (e.g. "
                                   "https://compass.example.com) or `url` in the [compass] section of config.toml")
        source = URL_ENV if env_url else "the [compass] url in config.toml"
        return CompassCredentials(check_url(url, source=source), ApiKey(env_key, source=KEY_ENV),
                                  f"environment ({KEY_ENV})")
    stored = read_stored(paths)
    if stored is None:
        return None
    if env_url and check_url(env_url, source=URL_ENV) != stored.url:
        raise CredentialsError(
            f"{URL_ENV} is {env_url} but the stored Compass key was saved for {stored.url}; the bridge does not send "
            f"a key to a Compass it was not created for. Run `compass-bridge compass login --url {env_url}`, "
            f"set {KEY_ENV} as well, or unset {URL_ENV}"
        )
    return stored


_BINDING_CONTEXT = b"compass-bridge compass credentials v1\0"


def _binding(secret: bytes, url: str, key: ApiKey) -> str:
    """HMAC-SHA256 over the URL and the key under the bridge's secret (its own context, apart from key digests)."""
    message = _BINDING_CONTEXT + url.encode() + b"\0" + key.reveal().encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def read_stored(paths: StatePaths) -> CompassCredentials | None:
    """The credentials `compass login` saved, or None if there are none."""
    path = paths.compass_credentials
    again = "run `compass-bridge compass login` again"
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if sys.platform != "win32" and stat.S_IMODE(st.st_mode) & 0o077:
        raise CredentialsError(
            f"{path} holds the Compass API key but other users may read it "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`, and if others could have read it, "
            f"revoke the key in Compass and {again}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        url, key, binding = data["url"], data["key"], data.get("binding")
        if not isinstance(url, str) or not isinstance(key, str):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise CredentialsError(f"{path} is not a readable Compass credentials file; {again}") from None
    credentials = CompassCredentials(check_url(url, source=f"the URL in {path}"),
                                     ApiKey(key, source=f"the key in {path}"), str(path))
    try:
        secret = load_secret(paths.secret_file)
    except StoreError as exc:
        raise CredentialsError(f"the stored Compass key cannot be checked: {exc}") from None
    expected = _binding(secret, url, credentials.key)  # over the URL exactly as stored
    if not isinstance(binding, str) or not hmac.compare_digest(binding, expected):
        # Not told apart: a file from before URL binding, one edited by hand, or one an agent rewrote.
        raise CredentialsError(
            f"the Compass URL in {path} ({credentials.url}) is not the one its key was stored for by "
            "`compass-bridge compass login` (the file was changed since, or saved by an older version), so the "
            "key is not used: it must not go to a server it was not given for. Fix: run `compass-bridge compass "
            "login --url https://YOUR-COMPASS`; if you did not change the file yourself, revoke the key in "
            "Compass (Settings → API keys) first"
        )
    return credentials


def save_credentials(paths: StatePaths, url: str, key: ApiKey) -> None:
    """Write the file atomically (temp file, fsync, rename) and private (0600) from the first byte, with the
    URL bound to the key. `StoreError` if the bridge's secret is unusable (its message says how to fix it)."""
    import tempfile  # only `compass login` writes the file; `serve` reads it

    path = paths.compass_credentials
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"url": url, "key": key.reveal(), "saved_at": int(time.time()),
                       "binding": _binding(load_secret(paths.secret_file), url, key)}, indent=2) + "\n"
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mkstemp: 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def delete_credentials(path: Path) -> bool:
    """Remove the stored credentials; False if there were none."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable across a crash; directories cannot be opened this way on Windows.
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

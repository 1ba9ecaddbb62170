"""`compass-bridge doctor`: check every link between an agent, the bridge and the browser, and say what to do.

Each failure is reported with what the user actually sees (the browser's error string) and the fix. The
live self-test starts the launcher exactly as the browser does — argv[1] is the extension origin, the working
directory is the launcher's, stdin/stdout are pipes, and the environment is the bare one a browser started
from the macOS Dock passes on — and exchanges a framed ping.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

from mcp_bridge import __version__, key_refs
from mcp_bridge.childenv import scrubbed
from mcp_bridge.install import HOST_NAME, manifests
from mcp_bridge.install.clients import (
    CLAUDE_CODE,
    CLIENT_LABELS,
    HOME_ENV,
    KEY_ENV,
    ClaudeCode,
    CliClient,
    ClientError,
    ConfigFileClient,
    ManualClient,
    ServerEntry,
    make_client,
)
from mcp_bridge.install.installer import Installer, Scope, ephemeral_environment
from mcp_bridge.install.launcher import LOG_NAME, pinned_python
from mcp_bridge.install.layouts import browser_layouts, sandboxed_browsers
from mcp_bridge.install.places import OS, Family, Platform
from mcp_bridge.install.record import Kind, Record, RecordError
from mcp_bridge.install.registry import RegistryBackend
from mcp_bridge.logs import log_location
from mcp_bridge.paths import StatePaths
from mcp_bridge.store import StoreError

SELF_TEST_TIMEOUT_S = 15.0
"""Generous: a cold Python start on a loaded machine. A healthy host answers in about 0.1 s."""
EXIT_TIMEOUT_S = 5.0
"""Chrome kills a host 2 s after closing its stdin; ours should be gone well before we give up."""
DOCK_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
NO_ANSWER = "no answer to a ping"

NOT_FOUND = "the extension sees “Specified native messaging host not found.”"
EXITED = "the extension sees “Native host has exited.”"
FORBIDDEN = "the extension sees “Access to the specified native messaging host is forbidden.”"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    area: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {"area": self.area, "status": self.status.value, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class Manifest:
    path: Path
    family: Family


class Doctor:
    def __init__(self, platform: Platform, paths: StatePaths, registry: RegistryBackend | None = None) -> None:
        self.platform = platform
        self.paths = paths
        self.installer = Installer(platform, paths, registry)
        self.posix = platform.os is not OS.WINDOWS

    def _show(self, path: Path | str) -> str:
        return self.platform.display(Path(path))

    def run(self) -> list[Check]:
        checks = list(self._package())
        records = list(self._records(checks))
        manifest_checks, launchers = self._manifests(records)
        checks += manifest_checks
        checks += self._sandboxed()
        checks += self._extension()
        checks += self._registry(records)
        checks += self._launchers(launchers, records)
        checks += self._runtime_dir()
        checks += self._live_hosts()
        checks += self._clients(records)
        checks.append(Check("logs", Status.OK, log_location(self.paths)))
        checks += self._store()
        checks += self._keys(records)
        checks += self._compass()
        checks += self._agent()
        return checks

    def _agent(self) -> Iterator[Check]:
        from mcp_bridge.agent.health import findings

        for area, status, detail, fix in findings(self.paths):
            yield Check(area, Status(status), detail, fix)

    # --- package --------------------------------------------------------------------------------------

    def _package(self) -> Iterator[Check]:
        import importlib.util

        where = f"compass-bridge {__version__} on Python {sys.version.split()[0]} ({sys.executable})"
        if importlib.util.find_spec("native_host.__main__") is None:
            yield Check("package", Status.FAIL, f"{where}: the native host module is missing",
                        "reinstall the package: installers/install.sh (or install.ps1) from the release")
        else:
            yield Check("package", Status.OK, where)

    def _records(self, checks: list[Check]) -> Iterator[tuple[Scope, Record]]:
        found = False
        for system in (False, True):
            scope = self.installer.scope(system)
            try:
                record = Record.load(scope.record_file)
            except RecordError as exc:
                checks.append(Check("install", Status.FAIL, str(exc), "delete it and run `compass-bridge install`"))
                continue
            if record.items:
                found = True
                what = "machine-wide" if system else "for this user"
                checks.append(Check("install", Status.OK, f"installed {what} (record {self._show(record.path)})"))
                yield scope, record
        if not found:
            checks.append(Check("install", Status.WARN, "compass-bridge install has not been run for this user",
                                "run `compass-bridge install`"))

    # --- manifests and registry -----------------------------------------------------------------------

    def _manifest_candidates(self, records: list[tuple[Scope, Record]]) -> list[Manifest]:
        found: dict[Path, Manifest] = {}
        for _, record in records:
            for item in record.of_kind(Kind.FILE):
                if item.data.get("role") == "manifest":
                    path = Path(item.target)
                    found[path] = Manifest(path, Family(item.data.get("family", "chromium")))
        for layout in browser_layouts(self.platform):
            if not layout.installed:
                continue
            for directory in (*layout.user_manifest_dirs, *layout.system_manifest_dirs):
                path = directory / f"{HOST_NAME}.json"
                if path.exists() and path not in found:
                    found[path] = Manifest(path, layout.family)
        return list(found.values())

    def _manifests(self, records: list[tuple[Scope, Record]]) -> tuple[list[Check], set[Path]]:
        checks: list[Check] = []
        launchers: set[Path] = set()
        reference = manifests.origin(manifests.reference_extension_id())
        for candidate in self._manifest_candidates(records):
            area = f"manifest {self._show(candidate.path)}"
            try:
                data = manifests.read(candidate.path)
            except manifests.ManifestError as exc:
                checks.append(Check(area, Status.FAIL, f"{exc}; {NOT_FOUND}", "run `compass-bridge install`"))
                continue
            if data is None:
                checks.append(Check(area, Status.FAIL, f"missing, although install wrote it; {NOT_FOUND}",
                                    "run `compass-bridge install` to write it again"))
                continue
            problems = manifests.problems(data, candidate.path, candidate.family, posix=self.posix)
            if problems:
                checks.append(Check(area, Status.FAIL, "; ".join(problems) + f"; {NOT_FOUND}",
                                    "run `compass-bridge install` to rewrite it"))
                continue
            launcher = Path(data["path"])
            if candidate.family is Family.CHROMIUM and reference not in data["allowed_origins"]:
                checks.append(Check(area, Status.FAIL, f"allowed_origins does not include the reference "
                                    f"extension {reference}; {FORBIDDEN}",
                                    "run `compass-bridge install` (it adds the reference ID and keeps yours); "
                                    "for your own build also pass --extension-id ID"))
            else:
                allowed = data.get("allowed_origins") or data.get("allowed_extensions") or []
                checks.append(Check(area, Status.OK, f"allows {len(allowed)} extension(s); host "
                                    f"{self._show(launcher)}"))
            launchers.add(launcher)
        if self.posix:
            checks += self._browsers_without_manifest()
        return checks, launchers

    def _browsers_without_manifest(self) -> Iterator[Check]:
        for layout in browser_layouts(self.platform):
            if not layout.installed:  # Firefox too: the reference add-on is allowed by default now
                continue
            dirs = (*layout.user_manifest_dirs, *layout.system_manifest_dirs)
            if not any((d / f"{HOST_NAME}.json").exists() for d in dirs):
                yield Check(layout.name, Status.WARN,
                            f"installed, but no host manifest in {self._show(dirs[0])}; {NOT_FOUND}",
                            f"run `compass-bridge install --browser {layout.key}`")

    def _sandboxed(self) -> Iterator[Check]:
        """Snap and Flatpak browsers: whether they can reach the host at all, and whether they will."""
        for found in sandboxed_browsers(self.platform):
            spec = found.spec
            state = found.state(self.platform)
            if spec.reads is None:
                yield Check(spec.name, Status.WARN, f"{state}; it {spec.how}", spec.instead)
                continue
            reads = next(layout for layout in browser_layouts(self.platform) if layout.key == spec.reads)
            dirs = reads.user_manifest_dirs
            if any((d / f"{HOST_NAME}.json").exists() for d in dirs):
                yield Check(spec.name, Status.OK, f"{state}; it {spec.how}, where the host manifest is")
            else:
                yield Check(spec.name, Status.WARN, f"{state}; it {spec.how}, but there is no host manifest in "
                            f"{self._show(dirs[0])}; {NOT_FOUND}", f"run `compass-bridge install --browser {spec.key}`")

    def _extension(self) -> Iterator[Check]:
        from mcp_bridge.extension_id import extension_location, how_to_load

        where = extension_location(self.paths)
        if where["path"] is None:
            yield Check("extension", Status.FAIL, where["problem"], "reinstall compass-bridge")
        elif where["problem"]:
            yield Check("extension", Status.WARN, f"only inside the package, {where['path']}, a path that moves "
                        "when the Python does", "run `compass-bridge install`, which keeps a copy in the data "
                        "directory; load that copy")
        else:
            yield Check("extension", Status.OK, how_to_load(Path(where["path"])))

    def _registry(self, records: list[tuple[Scope, Record]]) -> Iterator[Check]:
        backend = self.installer.registry
        if self.platform.os is not OS.WINDOWS or backend is None:
            return
        for scope, record in records:
            for item in record.of_kind(Kind.REGISTRY):
                _, _, key = item.target.partition("\\")
                value = backend.get_default(scope.hive, key)
                area = f"registry {item.target}"
                if value is None:
                    yield Check(area, Status.FAIL, f"missing; {NOT_FOUND}", "run `compass-bridge install`")
                elif not Path(value).is_file():
                    yield Check(area, Status.FAIL, f"points at {value}, which does not exist; {NOT_FOUND}",
                                "run `compass-bridge install`")
                else:
                    yield Check(area, Status.OK, f"points at {value}")

    # --- launcher and live self-test ------------------------------------------------------------------

    def _launch_log(self, records: list[tuple[Scope, Record]]) -> Path:
        for _, record in records:
            for item in record.of_kind(Kind.FILE):
                if item.data.get("role") == "launcher" and item.data.get("log"):
                    return Path(item.data["log"])
        return self.paths.log_dir / LOG_NAME

    def _launchers(self, launchers: set[Path], records: list[tuple[Scope, Record]]) -> Iterator[Check]:
        log = self._launch_log(records)
        for launcher in sorted(launchers):
            area = f"launcher {self._show(launcher)}"
            if not launcher.is_file():
                yield Check(area, Status.FAIL, f"missing; {NOT_FOUND}", "run `compass-bridge install`")
                continue
            if self.posix and not os.access(launcher, os.X_OK):
                yield Check(area, Status.FAIL, f"not executable; {EXITED} (the browser log says “Error when "
                            "writing to Native Messaging host”)", f"run `chmod +x {launcher}` or "
                            "`compass-bridge install`")
                continue
            python = pinned_python(launcher.read_text(encoding="utf-8", errors="replace"), self.platform.os)
            if python and not Path(python).exists():
                yield Check(area, Status.FAIL, f"starts {python}, which no longer exists; {EXITED}",
                            "run `compass-bridge install` from the environment compass-bridge is installed in")
                continue
            vanishing = ephemeral_environment(Path(python), self.platform) if python else None
            if vanishing:
                yield Check(area, Status.WARN, f"starts {python}, in {vanishing}; once it is deleted, {EXITED}",
                            "install compass-bridge with `uv tool install` or `pipx install`, then run "
                            "`compass-bridge install` from there")
            # Same directory, same environment: `python` and `python3` in one venv are the same interpreter.
            if python and Path(python).absolute().parent != Path(sys.executable).absolute().parent:
                yield Check(area, Status.WARN, f"starts {python}, but this compass-bridge runs from "
                            f"{sys.executable}", "run `compass-bridge install` to point it at this one")
            # For a Firefox-only launcher too: the host ignores what the browser passes, so one test serves both.
            yield self._self_test(launcher, log)

    def _self_test(self, launcher: Path, log: Path) -> Check:
        origin = manifests.origin(manifests.reference_extension_id())
        outcome = self_test(launcher, origin, browser_env(self.platform))
        if outcome.ok:
            return Check(f"self-test {self._show(launcher)}", Status.OK, outcome.detail)
        tail = _tail(log)
        detail = outcome.detail + (f"\nlast lines of {self._show(log)}:\n{tail}" if tail else "")
        return Check(f"self-test {self._show(launcher)}", Status.FAIL, detail,
                     f"read {self._show(log)} for the host's own error; then `compass-bridge install`")

    # --- runtime dir and live hosts -------------------------------------------------------------------

    def _runtime_dir(self) -> Iterator[Check]:
        from native_host.runtime_dir import UnsafeRuntimeDir, check_private_dir, runtime_dir

        path = runtime_dir()
        if not path.exists():
            yield Check("runtime dir", Status.OK, f"{self._show(path)} (created by the first host)")
            return
        try:
            check_private_dir(path)
        except UnsafeRuntimeDir as exc:
            yield Check("runtime dir", Status.FAIL, f"{exc}; the host refuses to start there, so {EXITED}",
                        f"`chmod 700 {path}` if it is yours; otherwise remove it")
            return
        yield Check("runtime dir", Status.OK, f"{self._show(path)} (yours, mode 0700)")

    def _live_hosts(self) -> Iterator[Check]:
        import asyncio

        from native_host.client import discover_hosts
        from native_host.runtime_dir import UnsafeRuntimeDir

        try:
            hosts = discover_hosts()
        except UnsafeRuntimeDir:
            return  # the runtime dir check has said why
        if not hosts:
            yield Check("live hosts", Status.SKIP, "none running: a browser starts one when the extension "
                        "connects (is the browser open with the extension enabled?)")
        for address in hosts:
            yield asyncio.run(_probe_host(address))

    # --- MCP clients and keys -------------------------------------------------------------------------

    def _client_items(self, records: list[tuple[Scope, Record]]) -> dict[str, dict[str, Any]]:
        return {item.target: item.data for _, record in records for item in record.of_kind(Kind.CLIENT)}

    def _clients(self, records: list[tuple[Scope, Record]]) -> Iterator[Check]:
        recorded = self._client_items(records)
        yield self._cli_client(ClaudeCode(self.platform), recorded.get(CLAUDE_CODE))
        for name, data in recorded.items():
            if name == CLAUDE_CODE:
                continue
            client = make_client(name, self.platform)
            if isinstance(client, CliClient):
                yield self._cli_client(client, data)
            elif isinstance(client, ManualClient):
                yield Check(client.label, Status.SKIP, "configured in the IDE's settings, which doctor cannot read",
                            "check that the `compass` server there runs "
                            f"`{data.get('command')} serve --key-ref {data.get('key_ref')}`")
            else:
                yield self._file_client(client, data)

    def _cli_client(self, client: CliClient, data: dict[str, Any] | None) -> Check:
        area = client.label
        if client.exe is None:
            status = Status.WARN if data is not None else Status.SKIP
            return Check(area, status, f"`{client.program}` is not on PATH", f"install {client.label}, then run "
                         "`compass-bridge install` to register the server" if data is not None else "")
        try:
            registration = client.get()
        except ClientError as exc:
            return Check(area, Status.FAIL, str(exc), f"check that `{client.program} --version` works")
        if registration is None:
            status = Status.FAIL if data is not None and data.get("state") == "registered" else Status.WARN
            return Check(area, status, "no `compass` MCP server is registered",
                         f"run `compass-bridge install --client {client.key}`")
        problem = self._entry_problem(registration.entry)
        if problem:
            return Check(area, Status.FAIL, f"the `compass` server: {problem}",
                         f"run `compass-bridge install --client {client.key}` to issue a new key and re-register")
        if isinstance(client, ClaudeCode) and not registration.connected:
            return Check(area, Status.FAIL, f"`claude mcp get compass` reports {registration.status!r}",
                         f"run `{registration.entry.command} {' '.join(registration.entry.args)}` to see its error")
        return Check(area, Status.OK, f"`compass` registered ({registration.status})")

    def _file_client(self, client: ConfigFileClient, data: dict[str, Any]) -> Check:
        area, name = client.label, client.key
        # Install could not edit the file and printed the entry to add by hand: not done yet, not broken.
        by_hand = data.get("state") == "manual"
        try:
            entry = client.current() if client.path and client.path.exists() else None
        except ClientError as exc:
            return Check(area, Status.WARN if by_hand else Status.FAIL, str(exc),
                         f"fix the file, then run `compass-bridge install --client {name}`")
        if entry is None and by_hand:
            return Check(area, Status.WARN, f"no `compass` entry in {data.get('path')} yet",
                         f"add the entry install printed, or run `compass-bridge install --client {name}`")
        if entry is None:
            return Check(area, Status.FAIL, f"the `compass` entry install wrote to {data.get('path')} is gone",
                         f"run `compass-bridge install --client {name}`")
        problem = self._entry_problem(entry)
        if problem:
            return Check(area, Status.FAIL, f"the `compass` entry: {problem}",
                         f"run `compass-bridge install --client {name}` to issue a new key")
        if not Path(entry.command).exists():
            return Check(area, Status.FAIL, f"starts {entry.command}, which does not exist",
                         f"run `compass-bridge install --client {name}`")
        return Check(area, Status.OK, f"`compass` in {self._show(client.path or '')}")

    def _entry_problem(self, entry: ServerEntry) -> str | None:
        if entry.key and entry.key_ref is None:
            return "it holds the bridge key itself, in a file any tool that reads it can leak; install replaces it " \
                "with a key reference" if self.posix else None
        if not entry.key_ref:
            return None  # no key: the config's default scopes apply, which is allowed
        if entry.env.get(HOME_ENV, self.platform.env.get(HOME_ENV)) != self.platform.env.get(HOME_ENV):
            return None  # another state dir's key store: not ours to judge
        try:
            key = key_refs.load(self.paths, entry.key_ref)
        except key_refs.KeyRefError as exc:
            return str(exc)
        return self._key_problem(key)

    def _key_problem(self, key: str) -> str | None:
        from mcp_bridge.keys import KeyProblem, KeyStore, Rejected

        if not (self.paths.keys_database.exists() or self.paths.database.exists()):
            return "the key store does not exist yet"  # (bridge.sqlite3: an earlier version's, moved on open)
        try:
            store = KeyStore.open(self.paths)
        except StoreError:
            return "the key store cannot be used (see the 'key store', 'bridge database' and 'key secret' checks)"
        try:
            found = store.authenticate(key)
        finally:
            store.close()
        if not isinstance(found, Rejected):
            return None
        if found.record is None:
            return ("it is not a compass-bridge key" if found.problem is KeyProblem.MALFORMED
                    else "it is not in this installation's key store")
        return f"key '{found.record.name}' ({found.record.prefix}…) is {found.problem.value}"

    def _store(self) -> Iterator[Check]:
        """The key secret and both databases can be used, and no usage rows were lost (mcp_bridge.store_health)."""
        from mcp_bridge import store_health

        for finding in store_health.check(self.paths):
            yield Check(finding.area, Status(finding.status), finding.detail, finding.fix)

    def _keys(self, records: list[tuple[Scope, Record]]) -> Iterator[Check]:
        from mcp_bridge.keys import KeyStore, KeyStoreError, Rejected

        items = [item for _, record in records for item in record.of_kind(Kind.KEY)]
        env_key = self.platform.env.get(KEY_ENV, "").strip()
        if not items and not env_key:
            return
        if not (self.paths.keys_database.exists() or self.paths.database.exists()):
            yield Check("keys", Status.FAIL, f"the key store {self._show(self.paths.keys_database)} is missing",
                        "run `compass-bridge install` to create keys again")
            return
        try:
            store = KeyStore.open(self.paths)
        except StoreError:
            return  # the store check above says what is wrong and how to fix it
        try:
            for item in items:
                users = ", ".join(CLIENT_LABELS.get(o.partition(":")[2], o) for o in sorted(item.owners))
                area = f"key '{item.data.get('name', item.target)}'"
                try:
                    key = store.find(item.target)
                except KeyStoreError:
                    yield Check(area, Status.FAIL, f"{item.target} (for {users}) was deleted",
                                "run `compass-bridge install` to issue a new one")
                    continue
                state = key.state()
                if state == "active":
                    yield Check(area, Status.OK, f"{key.id} ({key.prefix}…) for {users}: active")
                else:
                    yield Check(area, Status.FAIL, f"{key.id} ({key.prefix}…) for {users} is {state}: every call "
                                "from that client is refused", "run `compass-bridge install` to issue a new key")
            if env_key:
                found = store.authenticate(env_key)
                if isinstance(found, Rejected):
                    yield Check(f"{KEY_ENV}", Status.FAIL, found.explain())
                else:
                    yield Check(f"{KEY_ENV}", Status.OK, f"key '{found.name}' ({found.prefix}…): active")
        finally:
            store.close()

    # --- Compass --------------------------------------------------------------------------------------

    def _compass(self) -> Iterator[Check]:
        from mcp_bridge.compass.credentials import CredentialsError, load_credentials
        from mcp_bridge.config import ConfigError, load_config

        try:
            settings = load_config(self.paths.config_file).compass
            credentials = load_credentials(self.paths, settings, self.platform.env)
        except (ConfigError, CredentialsError) as exc:
            yield Check("Compass", Status.FAIL, str(exc))
            return
        if credentials is None:
            yield Check("Compass", Status.SKIP, "not configured (`compass-bridge compass login` to connect one)")
            return
        import anyio

        from mcp_bridge.compass.client import CompassClient, CompassError

        async def probe() -> str:
            async with CompassClient(credentials.url, credentials.key, settings) as client:
                registration = await client.register()
            return (f"{credentials.url} as {registration.user.name} (key {credentials.key.hint} from "
                    f"{credentials.origin}; {len(registration.tools)} tools)")

        try:
            yield Check("Compass", Status.OK, anyio.run(probe))
        except CompassError as exc:
            yield Check("Compass", Status.FAIL, str(exc))


async def _probe_host(address: Any) -> Check:
    """Connect to one live host as a client would, and ping it."""
    from native_host.client import HostClient, RelayError

    area = f"live host pid {address.pid}"
    try:
        client = await HostClient.connect(address, name="compass-bridge doctor", version=__version__)
    except RelayError as exc:
        return Check(area, Status.FAIL, exc.message, "close and reopen the browser window that runs the extension")
    try:
        rtt = await client.ping()
    except RelayError as exc:
        return Check(area, Status.FAIL, exc.message, "restart the browser")
    finally:
        await client.close()
    if client.extension is None:
        return Check(area, Status.WARN, f"answers (ping {rtt * 1000:.1f} ms), but no extension has said hello",
                     "reload the extension in chrome://extensions")
    extension = f"{client.extension.get('name')} {client.extension.get('version')}"
    return Check(area, Status.OK, f"{extension} with {len(client.tools)} tools; ping {rtt * 1000:.1f} ms")


# --- the self-test itself -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfTest:
    ok: bool
    detail: str


def browser_env(platform: Platform) -> dict[str, str]:
    """The environment a browser gives a host: none of our variables or secrets, and on macOS/Linux the Dock's
    PATH."""
    dropped = {HOME_ENV, "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    env = scrubbed(environ={k: v for k, v in platform.env.items() if k not in dropped})
    if platform.os is not OS.WINDOWS:
        env["PATH"] = DOCK_PATH
    return env


def self_test(launcher: Path, origin: str, env: dict[str, str], timeout: float = SELF_TEST_TIMEOUT_S) -> SelfTest:
    """Start `launcher` as the browser would, send a framed ping, expect a pong, close stdin, expect an exit."""
    from native_host.framing import frame

    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr:
        try:
            proc = subprocess.Popen([str(launcher), origin], cwd=launcher.parent, env=env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr)
        except OSError as exc:
            return SelfTest(False, f"cannot start it: {exc}; {EXITED}")
        assert proc.stdin is not None and proc.stdout is not None
        replies: queue.Queue[dict[str, Any] | str] = queue.Queue()
        threading.Thread(target=_read_frames, args=(proc.stdout, replies), daemon=True).start()
        try:
            # A host that died at once has closed its stdin: what it wrote to stderr says why.
            with contextlib.suppress(OSError):
                proc.stdin.write(frame(b'{"type":"ping","id":"doctor"}'))
                proc.stdin.flush()
            reply = _await_pong(replies, started + timeout, timeout)
            elapsed_ms = (time.monotonic() - started) * 1000
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                code: int | None = proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                code = None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        stderr.seek(0)
        errors = stderr.read().decode("utf-8", "replace").strip()
    if isinstance(reply, dict):
        if code is None:
            return SelfTest(False, f"answered, but did not exit within {EXIT_TIMEOUT_S:g} s of its stdin closing "
                            "(the browser would kill it)")
        return SelfTest(True, f"ping, pong in {elapsed_ms:.0f} ms; exited with status {code} when stdin closed")
    said = f"; its stderr: {errors[-1500:]}" if errors else ""
    if reply.startswith(NO_ANSWER):
        # It kept running but said nothing: the extension's messages would go unanswered.
        return SelfTest(False, f"{reply}; it exited with status {code} once stdin closed{said}")
    return SelfTest(False, f"{reply} (exit status {code}); {EXITED}{said}")


def _read_frames(stream: BinaryIO, out: queue.Queue[dict[str, Any] | str]) -> None:
    from native_host.framing import TO_BROWSER_MAX, FrameDecoder, FrameTooLarge

    decoder = FrameDecoder(TO_BROWSER_MAX)
    try:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            for payload in decoder.feed(chunk):
                try:
                    message = json.loads(payload)
                except ValueError:
                    out.put(f"it sent a frame that is not JSON: {payload[:200]!r}")
                    continue
                out.put(message if isinstance(message, dict) else f"it sent {message!r}")
    except FrameTooLarge as exc:
        out.put(f"it wrote something that is not a message ({exc}), i.e. stray output on stdout; the extension "
                "sees “Error when communicating with the native messaging host.”")
    except (OSError, ValueError) as exc:  # the pipe torn down under us: report it rather than hang
        out.put(f"reading its answer failed: {exc}")
    out.put("it closed stdout without answering")


def _await_pong(replies: queue.Queue[dict[str, Any] | str], deadline: float, timeout: float) -> dict[str, Any] | str:
    """The pong; else the error the host reported, or why no answer came."""
    while True:
        try:
            reply = replies.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return f"{NO_ANSWER} within {timeout:g} s"
        if isinstance(reply, str):
            return reply
        if reply.get("type") == "error":
            return f"the host refused to start: {reply.get('message')}"
        if reply.get("type") == "pong":
            return reply


def _tail(log: Path, lines: int = 12) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])

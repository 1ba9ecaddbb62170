"""Build the install and uninstall plans.

Install registers, for the current user (or, with `--system`, the machine): a launcher; a host manifest for
each selected browser (on Windows, one manifest per family plus the registry keys browsers read); and the MCP
server with Claude Code and any other selected client, each with a bridge key of its own. Uninstall undoes
what the install record lists for the selected owners, and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from mcp_bridge import key_refs
from mcp_bridge.config import ConfigError
from mcp_bridge.extension_id import configured_files, how_to_load, is_current_copy, stable_extension_dir
from mcp_bridge.install import HOST_NAME, manifests
from mcp_bridge.install.clients import (
    CLAUDE_CODE,
    CLIENT_KEYS,
    CLIENT_LABELS,
    CODEX,
    HOME_ENV,
    JETBRAINS,
    ClaudeCode,
    CliClient,
    Client,
    ClientError,
    ManualClient,
    Registration,
    ServerEntry,
    bridge_entry,
    cli_command,
    make_client,
    quote_command,
)
from mcp_bridge.install.files import atomic_write, make_dirs, missing_parents, read_text
from mcp_bridge.install.launcher import LOG_NAME, LauncherSpec, launcher_name, render
from mcp_bridge.install.layouts import (
    SANDBOXED,
    BrowserLayout,
    resolve,
    sandboxed_browsers,
    sandboxed_layout,
)
from mcp_bridge.install.places import BROWSER_KEYS, BROWSERS, OS, Family, Platform
from mcp_bridge.install.plan import (
    Action,
    Context,
    DeleteKey,
    InstallError,
    KeepOwners,
    Op,
    Plan,
    SetRegistry,
    UndoDir,
    UndoFile,
    UndoRegistry,
    WriteFile,
)
from mcp_bridge.install.record import Item, Kind, Record
from mcp_bridge.install.registry import Hive, RegistryBackend, default_backend
from mcp_bridge.keys import KeyRecord, KeyStore, KeyStoreError
from mcp_bridge.paths import StatePaths
from mcp_bridge.scopes import parse_scopes

CLIENT_SCOPES = "read,write"
RECORD_NAME = "install-record.json"
FIREFOX_ADDON_ID = re.compile(r"[A-Za-z0-9._+-]*@[A-Za-z0-9._-]+|\{[0-9a-fA-F-]{36}\}")
_NAMES = {**{spec.key: spec.name for spec in BROWSERS}, **{spec.key: spec.name for spec in SANDBOXED}}
SANDBOXED_KEYS = frozenset(spec.key for spec in SANDBOXED)


@dataclass(frozen=True)
class Selection:
    """What install or uninstall acts on; empty tuples mean "the default" (detected browsers, everything)."""

    browsers: tuple[str, ...] = ()
    profile_dirs: tuple[Path, ...] = ()
    extension_ids: tuple[str, ...] = ()
    firefox_extension_ids: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    no_clients: bool = False
    system: bool = False
    argv: tuple[str, ...] = ()
    """The command line, to print again with `sudo` when --system is not elevated."""

    def validated(self) -> Selection:
        """This selection with IDs normalised; InstallError names the first bad value and how to fix it."""
        for name in self.browsers:
            if name not in _NAMES:
                raise InstallError(f"unknown browser {name!r}; choose from {', '.join(BROWSER_KEYS)} "
                                   f"(snap and Flatpak builds: {', '.join(s.key for s in SANDBOXED)})")
        for name in self.clients:
            if name not in CLIENT_KEYS:
                raise InstallError(f"unknown client {name!r}; choose from {', '.join(CLIENT_KEYS)}")
        if self.profile_dirs and self.browsers == ("firefox",):
            raise InstallError("--profile-dir is for Chromium-family browsers; Firefox has no per-profile hosts")
        if self.system and self.profile_dirs:
            raise InstallError("--profile-dir and --system cannot be combined: a profile belongs to one user")
        for addon in self.firefox_extension_ids:
            if not FIREFOX_ADDON_ID.fullmatch(addon):
                raise InstallError(f"{addon!r} is not a Firefox add-on ID (name@domain or a {{GUID}}); "
                                   "see about:debugging#/runtime/this-firefox")
        try:
            ids = tuple(manifests.validate_extension_id(i) for i in self.extension_ids)
        except manifests.ManifestError as exc:
            raise InstallError(str(exc)) from None
        profiles = tuple(Path(p).expanduser().absolute() for p in self.profile_dirs)
        return replace(self, extension_ids=ids, profile_dirs=profiles)

    def owners(self) -> set[str] | None:
        """The record owners uninstall acts on; None for all of them."""
        chosen = {f"browser:{b}" for b in self.browsers} | {f"profile:{p}" for p in self.profile_dirs}
        chosen |= {f"client:{c}" for c in self.clients}
        return chosen or None


@dataclass(frozen=True)
class Scope:
    system: bool
    own_dir: Path
    """Where the launcher (and on Windows the manifests) go."""
    record_file: Path
    log_file: Path | None
    hive: Hive


def _owner_label(owner: str) -> str:
    kind, _, name = owner.partition(":")
    if kind == "browser":
        return _NAMES.get(name, name)
    if kind == "profile":
        return f"Profile {name}"
    return CLIENT_LABELS.get(name, name)


class Installer:
    def __init__(self, platform: Platform, paths: StatePaths, registry: RegistryBackend | None = None) -> None:
        self.platform = platform
        self.paths = paths
        self.registry = registry if registry is not None else (
            default_backend() if platform.os is OS.WINDOWS else None)
        self.python = Path(sys.executable).absolute()
        """The interpreter launchers pin: the one running this install."""

    # --- shared ---------------------------------------------------------------------------------------

    def scope(self, system: bool) -> Scope:
        if system:
            own = self.platform.system_own_dir()
            return Scope(True, own, own / RECORD_NAME, None, Hive.LOCAL_MACHINE)
        return Scope(False, self.paths.data_dir / "native-host", self.paths.data_dir / RECORD_NAME,
                     self.paths.log_dir / LOG_NAME, Hive.CURRENT_USER)

    def _show(self, path: Path) -> str:
        return self.platform.display(path)

    def _elevation(self, selection: Selection) -> str | None:
        if not selection.system or self.platform.elevated:
            return None
        argv = [*cli_command(), *selection.argv]
        if self.platform.os is OS.WINDOWS:
            args = ", ".join("'" + a.replace("'", "''") + "'" for a in argv[1:])
            command = f"Start-Process -Verb RunAs -FilePath '{argv[0]}' -ArgumentList {args}"
        else:
            command = "sudo " + shlex.join(argv)
        return f"--system writes machine-wide locations and needs administrator rights; run:\n  {command}"

    def _ephemeral(self) -> str | None:
        """Why nothing may be pinned to this interpreter (it lives in a cache that will be deleted), or None."""
        why = ephemeral_environment(self.python, self.platform)
        if why is None:
            return None
        return (f"this compass-bridge runs from {self.python}, in {why}. A launcher or client entry pinned to it "
                "would break once it is deleted (the browser would say “Native host has exited.”), so nothing was "
                "installed. Install compass-bridge for good first: `uv tool install compass-bridge` or "
                "`pipx install compass-bridge` (from a wheel or a checkout: `uv tool install PATH`), then run "
                "`compass-bridge install` from there.")

    def _in_temp_dir(self) -> bool:
        # Only compared with, never written to.
        temp = {Path(tempfile.gettempdir()).absolute(), self.platform.system_path("/tmp"),  # noqa: S108
                self.platform.system_path("/var/tmp")}  # noqa: S108
        return any(t in self.python.parents for t in temp)

    def apply(self, plan: Plan) -> bool:
        if plan.record.path.parent == self.paths.data_dir and plan.blocked is None:
            self.paths.ensure()
        return plan.apply(Context(self.platform, self.paths, self.registry, plan.record, plan.hive))

    # --- install --------------------------------------------------------------------------------------

    def plan_install(self, selection: Selection) -> Plan:
        sel = selection.validated()
        scope = self.scope(sel.system)
        record = Record.load(scope.record_file)
        plan = Plan("install", record, scope.hive, blocked=self._elevation(sel) or self._ephemeral())
        if plan.blocked is None and self._in_temp_dir():
            plan.notes.append(f"Warning: this compass-bridge runs from {self.python}, in a temporary directory that "
                              "the system may clear; install it for good (`uv tool install` or `pipx install`) and "
                              "run `compass-bridge install` from there if this was not meant to be temporary.")
        launcher = scope.own_dir / launcher_name(self.platform.os)
        launcher_owners: set[str] = set()
        launcher_action = self._launcher_action(scope, launcher, launcher_owners, record)
        plan.actions.append(launcher_action)
        builder = _TargetBuilder(self, plan, record, scope, launcher, sel)
        for layout, owner, dirs in self._browser_targets(sel, scope, plan):
            builder.add(layout, owner, dirs)
            launcher_owners.add(owner)
        if not launcher_owners:
            plan.actions[0] = Action("Launcher", Op.SKIP, detail="no browser to connect")
        if sel.system:
            plan.notes.append("MCP clients are registered per user: run `compass-bridge install` without --system "
                              "as each user who wants them.")
        elif launcher_owners:
            # The copy belongs to the browsers, like the launcher: it goes when the last of them is uninstalled.
            plan.actions.append(self._extension_action(record, launcher_owners))
            if plan.blocked is None:
                plan.notes.append(how_to_load(stable_extension_dir(self.paths)))
        if not sel.system and not sel.no_clients:
            for client in dict.fromkeys((CLAUDE_CODE, *sel.clients)):
                plan.actions.append(self._client_action(client, record))
        return plan

    def _launcher_action(self, scope: Scope, launcher: Path, owners: set[str], record: Record) -> Action:
        # A machine-wide launcher must not pin one user's state dir; a per-user one must, because the
        # browser does not pass COMPASS_BRIDGE_HOME on to the host.
        home = self.platform.env.get(HOME_ENV)
        env = {HOME_ENV: str(Path(home).expanduser().absolute())} if home and not scope.system else {}
        python = str(self.python)
        text = render(LauncherSpec(python, scope.log_file, env), self.platform.os)
        current = read_text(launcher)
        op = Op.CREATE if current is None else Op.UNCHANGED if current == text and _executable(launcher) \
            else Op.UPDATE
        previous = _previous(record, launcher, current)
        data = {"role": "launcher", "log": str(scope.log_file) if scope.log_file else None}
        return Action("Launcher", op, self._show(launcher), f"(pins {python})",
                      WriteFile(launcher, text, 0o755, owners, previous, data))

    def _browser_targets(self, sel: Selection, scope: Scope,
                         plan: Plan) -> Iterator[tuple[BrowserLayout, str, tuple[Path, ...]]]:
        """(browser, record owner, manifest dirs) for each browser to write; skips are added to the plan."""
        windows = self.platform.os is OS.WINDOWS
        if sel.profile_dirs and windows:
            plan.notes.append("--profile-dir: on Windows every profile finds the host through the registry, so the "
                              "browser's own registration below covers it.")
        elif sel.profile_dirs:
            # The profile's browser only labels the output; any Chromium-family browser reads this dir.
            first = sel.browsers[0] if sel.browsers else "chromium"
            layout = resolve(next(s for s in BROWSERS if s.key == first), self.platform)
            for profile in sel.profile_dirs:
                yield layout, f"profile:{profile}", (profile / "NativeMessagingHosts",)
            return
        for spec in BROWSERS:
            layout = resolve(spec, self.platform)
            named = spec.key in sel.browsers
            if sel.browsers and not named:
                continue
            if not layout.supported:
                if named:
                    plan.actions.append(Action(spec.name, Op.SKIP,
                                               detail=f"not made for {self.platform.os.value}"))
                continue
            assert layout.data_dir is not None
            if layout.family is Family.FIREFOX and not self._firefox_addons(sel):
                plan.actions.append(Action(spec.name, Op.SKIP, detail=(
                    "no Firefox add-on to allow (the packaged extension declares no gecko ID); "
                    "pass --firefox-extension-id ID for your own add-on")))
                continue
            if sel.system:
                dirs = () if windows else layout.system_manifest_dirs
                if not windows and not dirs:
                    plan.actions.append(Action(spec.name, Op.SKIP, detail="no known machine-wide location"))
                    continue
            else:
                # A browser that was never started has no user-data dir yet, but reads the manifest once it runs.
                if not layout.installed and not layout.never_started and not named:
                    plan.actions.append(Action(spec.name, Op.SKIP,
                                               detail=f"not installed (no {self._show(layout.data_dir)})"))
                    continue
                dirs = layout.user_manifest_dirs
            yield layout, f"browser:{spec.key}", dirs
        if not sel.system:
            yield from self._sandboxed_targets(sel, plan)

    def _sandboxed_targets(self, sel: Selection,
                           plan: Plan) -> Iterator[tuple[BrowserLayout, str, tuple[Path, ...]]]:
        """Snap and Flatpak browsers: the manifest dirs of the browser they read, or a skip saying why not."""
        present = sandboxed_browsers(self.platform)
        for key in sel.browsers:
            if key in SANDBOXED_KEYS and all(found.spec.key != key for found in present):
                plan.actions.append(Action(_NAMES[key], Op.SKIP, detail="not found on this machine"))
        for found in present:
            spec = found.spec
            if sel.browsers and spec.key not in sel.browsers and spec.reads not in sel.browsers:
                continue
            if spec.reads is None:
                plan.actions.append(Action(spec.name, Op.SKIP, detail=(
                    f"{found.state(self.platform)}, but it {spec.how}; {spec.instead}")))
                continue
            reads = resolve(next(s for s in BROWSERS if s.key == spec.reads), self.platform)
            if reads.family is Family.FIREFOX and not self._firefox_addons(sel):
                continue  # the browser it reads has said why already
            yield sandboxed_layout(found, reads), f"browser:{spec.key}", reads.user_manifest_dirs

    def _extension_action(self, record: Record, owners: set[str]) -> Action:
        """Keep a copy of the extension in the data dir, where it outlives this Python (see extension_id)."""
        target = stable_extension_dir(self.paths)
        try:
            files = configured_files(self.paths)  # set up for the web pages in [page_origins]
        except ConfigError as exc:
            return Action("Extension", Op.SKIP, detail=f"{exc}; fix it and run install again")
        if not files:
            return Action("Extension", Op.SKIP, detail="this package carries no extension files; reinstall it")
        op = Op.UNCHANGED if is_current_copy(target, files) else Op.UPDATE if target.exists() else Op.CREATE
        names = {str(target.joinpath(*name.split("/"))) for name in files}
        stale = [i for i in record.of_kind(Kind.FILE) if i.data.get("role") == "extension" and i.target not in names]
        manifest = json.loads(files["manifest.json"]) if "manifest.json" in files else {}
        version = manifest.get("version", "?") if isinstance(manifest, dict) else "?"
        return Action("Extension", op, f"copy {self._show(target)}", f"(version {version})",
                      CopyExtension(target, files, owners, stale))

    def _firefox_addons(self, sel: Selection) -> list[str]:
        reference = manifests.reference_firefox_addon_id()
        return list(dict.fromkeys([*([reference] if reference else []), *sel.firefox_extension_ids]))

    def _client_action(self, name: str, record: Record) -> Action:
        owner = f"client:{name}"
        recorded = record.get(Kind.CLIENT, name)
        ours = recorded is not None
        key_ids = [i.target for i in record.of_kind(Kind.KEY) if owner in i.owners]
        # The key reference install made earlier, while its key is still active: kept, not re-issued.
        ref = recorded.data.get("key_ref") if recorded else None
        live_ref = ref if isinstance(ref, str) and self._ref_key_id(ref) in key_ids else None
        client = make_client(name, self.platform)
        registration = None
        if isinstance(client, ManualClient):
            return Action(client.label, Op.MANUAL, self._describe(Item(Kind.CLIENT, client.key, set())),
                          step=RegisterClient(client, live_ref, key_ids, ours, None))
        if isinstance(client, CliClient):
            what = self._describe(Item(Kind.CLIENT, client.key, set()))
            if client.exe is None:
                return Action(client.label, Op.MANUAL, what, f"(`{client.program}` is not on PATH)",
                              RegisterClient(client, live_ref, key_ids, ours, None))
            try:
                registration = client.get()
            except ClientError as exc:
                return Action(client.label, Op.REGISTER, what, result="failed", note=str(exc))
            current = registration.entry if registration and registration.user_scope else None
            if registration and not registration.user_scope:
                return Action(client.label, Op.SKIP, detail=(
                    "a `compass` server in another scope (local or project) takes precedence; remove it with "
                    "`claude mcp remove compass`, then run install again"))
        else:
            reason = client.unavailable()
            if reason:
                return Action(client.label, Op.SKIP, detail=reason)
            assert client.path is not None
            what = f"server `compass` in {self._show(client.path)}"
            try:
                current = client.current()
            except ClientError as exc:
                # A key is still issued, so that the entry printed to add by hand works as it is.
                return Action(client.label, Op.MANUAL, what,
                              step=RegisterClient(client, live_ref, key_ids, ours, None, unreadable=str(exc)))
        if current is None:
            return Action(client.label, Op.REGISTER, what,
                          step=RegisterClient(client, None, key_ids, ours, None))
        if not ours:
            return Action(client.label, Op.SKIP, what, detail=(
                "already has a `compass` server that compass-bridge install did not create; left alone"))
        reuse = live_ref if live_ref and current.key_ref == live_ref else None
        unchanged = reuse is not None and current.same_launch(bridge_entry(self.platform, reuse))
        return Action(client.label, Op.UNCHANGED if unchanged else Op.UPDATE, what,
                      step=RegisterClient(client, reuse, key_ids, ours, registration if unchanged else None))

    def _ref_key_id(self, ref: str) -> str | None:
        """The id of the active bridge key stored under `ref`, or None (no such ref, unknown, revoked, expired)."""
        if not (self.paths.keys_database.exists() or self.paths.database.exists()):
            return None
        try:
            key = key_refs.load(self.paths, ref)
        except key_refs.KeyRefError:
            return None
        store = KeyStore.open(self.paths)
        try:
            found = store.authenticate(key)
        finally:
            store.close()
        return found.id if isinstance(found, KeyRecord) else None

    # --- uninstall ------------------------------------------------------------------------------------

    def plan_uninstall(self, selection: Selection) -> Plan:
        sel = selection.validated()
        scope = self.scope(sel.system)
        record = Record.load(scope.record_file)
        plan = Plan("uninstall", record, scope.hive)
        if not record.items:
            plan.notes.append(f"Nothing to remove: no install record at {self._show(record.path)} "
                              "(install was not run with these settings, or everything is already removed).")
            return plan
        plan.blocked = self._elevation(sel)
        chosen = sel.owners()
        for kind in (Kind.CLIENT, Kind.KEY, Kind.REGISTRY, Kind.FILE, Kind.DIR):
            items = record.of_kind(kind)
            if kind is Kind.DIR:
                items.sort(key=lambda i: len(Path(i.target).parts), reverse=True)
            for item in items:
                remaining = set() if chosen is None else item.owners - chosen
                if remaining == item.owners:
                    continue
                section = ", ".join(sorted({_owner_label(o) for o in item.owners - remaining}))
                if item.data.get("role") in ("launcher", "extension"):
                    section = str(item.data["role"]).capitalize()
                what = self._describe(item)
                if remaining:
                    users = ", ".join(sorted(_owner_label(o) for o in remaining))
                    plan.actions.append(Action(section, Op.KEEP, what, f"(still used by {users})",
                                               KeepOwners(item, remaining)))
                else:
                    plan.actions.append(self._undo_action(section, what, item, record))
        if chosen is not None and not plan.actions:
            plan.notes.append("Nothing recorded for that selection; `compass-bridge uninstall` with no options "
                              "removes everything install created.")
        return plan

    def _describe(self, item: Item) -> str:
        if item.kind is Kind.FILE:
            return f"{item.data.get('role', 'file')} {self._show(Path(item.target))}"
        if item.kind is Kind.DIR:
            return f"directory {self._show(Path(item.target))}"
        if item.kind is Kind.REGISTRY:
            return f"registry key {item.target}"
        if item.kind is Kind.KEY:
            return f"bridge key '{item.data.get('name', '?')}' ({item.target})"
        path = item.data.get("path")
        if path:
            return f"server `compass` in {self._show(Path(path))}"
        return {CODEX: "server `compass` in Codex's config.toml",
                JETBRAINS: "server `compass` in the IDE's settings"}.get(item.target, "server `compass` at user scope")

    def _undo_action(self, section: str, what: str, item: Item, record: Record) -> Action:
        if item.kind is Kind.FILE:
            log = item.data.get("log")
            also = (Path(log), Path(f"{log}.1")) if log else ()
            op = Op.REMOVE if item.previous is None else Op.RESTORE
            return Action(section, op, what, step=UndoFile(item, also))
        if item.kind is Kind.DIR:
            return Action(section, Op.REMOVE, what, step=UndoDir(item))
        if item.kind is Kind.REGISTRY:
            return Action(section, Op.REMOVE if item.previous is None else Op.RESTORE, what,
                          step=UndoRegistry(item))
        if item.kind is Kind.KEY:
            return Action(section, Op.REMOVE, what, step=DeleteKey(item))
        return Action(section, Op.REMOVE, what, step=UnregisterClient(item, make_client(item.target, self.platform)))


_UV_CACHE_BUCKETS = {"archive-v0", "builds-v0"}
"""Where uv's cache keeps the environments of `uvx` and `uv run --with` (whatever UV_CACHE_DIR says)."""
_CACHE_NAMES = {".cache", "cache", "caches"}


def ephemeral_environment(python: Path, platform: Platform) -> str | None:
    """Why the environment `python` belongs to will be deleted (it is in uv's or pipx's cache), or None.

    Judged by the interpreter's path, not resolved: a `uv tool` or pipx venv's python is a symlink to a lasting
    interpreter, and it is the venv, with compass-bridge in it, that must last.
    """
    parents = [p.name.lower() for p in python.parents]
    uv_cache = platform.env.get("UV_CACHE_DIR")
    if _UV_CACHE_BUCKETS & set(parents) or (uv_cache and Path(uv_cache).absolute() in python.parents):
        return "uv's cache (a `uvx` or `uv run --with` environment), which `uv cache clean` deletes"
    pipx_home = platform.env.get("PIPX_HOME")
    if _CACHE_NAMES & set(parents) or (pipx_home and Path(pipx_home, ".cache").absolute() in python.parents):
        return "a cache directory (a `pipx run` environment, for one), whose contents may be deleted at any time"
    return None


def _executable(path: Path) -> bool:
    return os.access(path, os.X_OK) or os.name == "nt"


def _previous(record: Record, path: Path, current: str | None) -> str | None:
    """What to restore at uninstall: the content before the first install, not our own earlier version."""
    item = record.get(Kind.FILE, str(path))
    return item.previous if item else current


class _TargetBuilder:
    """Turns (browser, manifest dirs) into manifest and registry actions, sharing targets between browsers."""

    def __init__(self, installer: Installer, plan: Plan, record: Record, scope: Scope, launcher: Path,
                 sel: Selection) -> None:
        self.installer = installer
        self.platform = installer.platform
        self.plan = plan
        self.record = record
        self.scope = scope
        self.launcher = launcher
        ids = [manifests.reference_extension_id(), *sel.extension_ids]
        self.allowed = {Family.CHROMIUM: [manifests.origin(i) for i in dict.fromkeys(ids)],
                        Family.FIREFOX: installer._firefox_addons(sel)}
        self.shared: dict[str, tuple[Action, set[str]]] = {}

    def add(self, layout: BrowserLayout, owner: str, dirs: tuple[Path, ...]) -> None:
        section = layout.name if owner.startswith("browser:") else _owner_label(owner)
        if self.platform.os is OS.WINDOWS:
            suffix = "" if layout.family is Family.CHROMIUM else f".{layout.family.value}"
            manifest = self.scope.own_dir / f"{HOST_NAME}{suffix}.json"
            self._share(str(manifest), section, owner, self._manifest_factory(section, manifest, layout.family))
            for key in layout.registry_keys:
                self._share(f"{self.scope.hive}\\{key}", section, owner,
                            self._registry_factory(section, key, manifest))
            return
        if layout.never_started and owner.startswith("browser:") and not self.scope.system:
            self.plan.notes.append(f"{layout.name}: installed but never started; the host manifest is in place for "
                                   "its first start.")
        elif not layout.installed and owner.startswith("browser:") and not self.scope.system:
            assert layout.data_dir is not None
            self.plan.notes.append(f"{layout.name}: not detected (no {self.platform.display(layout.data_dir)}); "
                                   "installed anyway as asked.")
        for directory in dirs:
            manifest = directory / f"{HOST_NAME}.json"
            self._share(str(manifest), section, owner, self._manifest_factory(section, manifest, layout.family))

    def _manifest_factory(self, section: str, path: Path, family: Family) -> Callable[[set[str]], Action]:
        return lambda owners: self._manifest(section, path, family, owners)

    def _registry_factory(self, section: str, key: str, manifest: Path) -> Callable[[set[str]], Action]:
        return lambda owners: self._registry(section, key, manifest, owners)

    def _share(self, target: str, section: str, owner: str, make: Callable[[set[str]], Action]) -> None:
        if target in self.shared:
            action, owners = self.shared[target]
            owners.add(owner)
            action.detail = (action.detail + f" (also for {section})").strip()
            return
        owners = {owner}
        action = make(owners)
        self.shared[target] = (action, owners)
        self.plan.actions.append(action)

    def _manifest(self, section: str, path: Path, family: Family, owners: set[str]) -> Action:
        notes: list[str] = []
        existing = None
        try:
            existing = manifests.read(path)
        except manifests.ManifestError as exc:
            notes.append(f"replacing a broken file: {exc}")
        field = "allowed_origins" if family is Family.CHROMIUM else "allowed_extensions"
        wanted = self.allowed[family]
        merged, dropped = manifests.merge(wanted, (existing or {}).get(field),
                                          manifests.ORIGIN if family is Family.CHROMIUM else None)
        if len(merged) > len(wanted):
            notes.append(f"kept {len(merged) - len(wanted)} extension(s) already allowed")
        if dropped:
            notes.append(f"dropped malformed entries {dropped}")
        text = manifests.render(manifests.build(family, self.launcher, merged))
        current = read_text(path)
        op = Op.CREATE if current is None else Op.UNCHANGED if current == text else Op.UPDATE
        label = "manifest" if family is Family.CHROMIUM else "Firefox manifest"
        return Action(section, op, f"{label} {self.platform.display(path)}", "; ".join(notes),
                      WriteFile(path, text, 0o644, owners, _previous(self.record, path, current),
                                {"role": "manifest", "family": family.value}))

    def _registry(self, section: str, key: str, manifest: Path, owners: set[str]) -> Action:
        backend = self.installer.registry
        if backend is None:
            raise InstallError("the Windows layout needs a registry backend")
        current = backend.get_default(self.scope.hive, key)
        value = str(manifest)
        op = Op.CREATE if current is None else Op.UNCHANGED if current == value else Op.UPDATE
        recorded = self.record.get(Kind.REGISTRY, f"{self.scope.hive}\\{key}")
        return Action(section, op, f"registry {self.scope.hive}\\{key}", "",
                      SetRegistry(key, value, owners, recorded.previous if recorded else current))


@dataclass
class CopyExtension:
    """Write the extension's files into its stable folder, recording each so uninstall removes exactly them."""

    target: Path
    files: dict[str, bytes]
    owners: set[str]
    stale: list[Item]
    """Files an earlier version had that this one no longer ships."""

    def apply(self, ctx: Context) -> str:
        owners = self.owners
        role = {"role": "extension"}
        for item in self.stale:
            Path(item.target).unlink(missing_ok=True)
            ctx.record.forget(item)
        for name, data in self.files.items():
            path = self.target.joinpath(*name.split("/"))
            for directory in make_dirs(path):
                ctx.record.add(Kind.DIR, str(directory), owners, data=role)
            if not is_current_copy(self.target, {name: data}):
                atomic_write(path, data, 0o644)
            ctx.record.add(Kind.FILE, str(path), owners, data=role)
        return ""


# --- client steps -------------------------------------------------------------------------------------


@dataclass
class RegisterClient:
    client: Client
    reuse_ref: str | None
    """The key reference already in the client's entry when it is ours and its key is still active; else a
    new key and reference are made."""
    old_key_ids: list[str]
    ours: bool
    """The client entry is one install made earlier (so it may be replaced)."""
    unchanged: Registration | None
    """For a CLI client when nothing changes: what its `mcp get` reported, to confirm the health."""
    unreadable: str | None = None
    """Why the client's config cannot be edited: the entry is printed to add by hand instead."""

    def apply(self, ctx: Context) -> str:
        owner = f"client:{self.client.key}"
        ref = self.reuse_ref or self._new_key(ctx, owner)
        entry = bridge_entry(ctx.platform, ref)
        data: dict[str, object] = {"command": entry.command, "key_ref": ref}
        if isinstance(self.client, ManualClient):
            ctx.record.add(Kind.CLIENT, self.client.key, {owner}, data={**data, "state": "manual"})
            return self.client.manual_hint(entry)
        if isinstance(self.client, CliClient):
            return self._cli(ctx, self.client, entry, owner, data)
        recorded = ctx.record.get(Kind.CLIENT, self.client.key)
        if self.unreadable:
            if not recorded:
                ctx.record.add(Kind.CLIENT, self.client.key, {owner}, data={
                    **data, "path": str(self.client.path), "created_file": False, "state": "manual"})
            raise InstallError(f"{self.unreadable}; {self.client.manual_hint(entry)}")
        assert self.client.path is not None
        for directory in missing_parents(self.client.path):  # e.g. Kiro's settings/: removed again with it
            ctx.record.add(Kind.DIR, str(directory), {owner})
        created, note = self.client.write(entry, back_up=not self.ours)
        data |= {"path": str(self.client.path), "state": "written",
                 "created_file": bool(recorded.data.get("created_file")) if recorded else created}
        ctx.record.add(Kind.CLIENT, self.client.key, {owner}, data=data)
        return "; ".join(n for n in (note, "" if self.reuse_ref else "with a new bridge key") if n)

    def _new_key(self, ctx: Context, owner: str) -> str:
        """Issue a key for this client and store it under a reference of the same name; return the name."""
        store = ctx.keys()
        for old in self.old_key_ids:
            # Keys install made earlier for this client and that no longer work (revoked, expired, replaced).
            with contextlib.suppress(KeyStoreError):
                store.delete(old)
            item = ctx.record.get(Kind.KEY, old)
            if item:
                ctx.record.forget(item)
        name = next(n for n in _key_names(self.client.key) if not _key_exists(store, n))
        record, key = store.create(name, parse_scopes(CLIENT_SCOPES))
        ctx.record.add(Kind.KEY, record.id, {owner}, data={"name": record.name, "prefix": record.prefix})
        for directory in missing_parents(key_refs.ref_path(ctx.paths, name)):
            ctx.record.add(Kind.DIR, str(directory), {owner})
        path = key_refs.save(ctx.paths, name, key)
        ctx.record.add(Kind.FILE, str(path), {owner}, data={"role": "key reference"})
        return name

    def _cli(self, ctx: Context, client: CliClient, entry: ServerEntry, owner: str,
             data: dict[str, object]) -> str:
        if client.exe is None:
            ctx.record.add(Kind.CLIENT, client.key, {owner}, data={**data, "state": "pending"})
            return (f"once {client.label} is installed, run:\n    "
                    + quote_command(client.add_argv(entry), ctx.platform))
        registration = self.unchanged
        if registration is None:
            if self.ours:
                # If it is gone already (removed by hand), adding is all that is left to do.
                with contextlib.suppress(ClientError):
                    client.remove()
            client.add(entry)
            ctx.record.add(Kind.CLIENT, client.key, {owner}, data={**data, "state": "registered"})
            registration = client.get()
        else:
            ctx.record.add(Kind.CLIENT, client.key, {owner}, data={**data, "state": "registered"})
        get = quote_command([client.program, *client.get_argv()[1:]], ctx.platform)
        if not isinstance(client, ClaudeCode):
            if registration is None or not registration.entry.same_launch(entry):
                raise InstallError(f"registered, but `{get}` does not show the entry written; "
                                   "run `compass-bridge doctor` to find out why")
            return f"verified: `{get}` shows it"
        if registration is None or not registration.connected:
            status = registration.status if registration else "no such server"
            raise InstallError(f"registered, but `{get}` reports {status!r}; "
                               "run `compass-bridge doctor` to find out why")
        return f"verified: `{get}` reports Connected"


def _key_names(base: str) -> Iterator[str]:
    yield base
    n = 2
    while True:
        yield f"{base}-{n}"
        n += 1


def _key_exists(store: KeyStore, name: str) -> bool:
    try:
        store.find(name)
    except KeyStoreError:
        return False
    return True


def recorded_as_ours(data: dict[str, object], entry: ServerEntry | None) -> bool:
    """Whether `entry` is the one install wrote, as its record item's data describes it."""
    if entry is None or entry.command != data.get("command"):
        return False
    if data.get("key_ref"):
        return entry.key_ref == data["key_ref"]
    prefix = data.get("key_prefix")  # written before key references: the key was inline
    return isinstance(prefix, str) and bool(prefix) and (entry.key or "").startswith(prefix)


@dataclass
class UnregisterClient:
    item: Item
    client: Client

    def apply(self, ctx: Context) -> str:
        note = self._undo(ctx)
        ctx.record.forget(self.item)
        return note

    def _undo(self, ctx: Context) -> str:
        client = self.client
        state = self.item.data.get("state")
        if isinstance(client, ManualClient):
            return "remove the `compass` server in the IDE's settings by hand (its key is deleted now)"
        if isinstance(client, CliClient):
            if state == "pending":
                return "it was never registered"
            if client.exe is None:
                raise InstallError(f"`{client.program}` is not on PATH; remove the server by hand: "
                                   + quote_command(client.remove_argv(), ctx.platform))
            registration = client.get()
            if registration is None:
                return "already gone"
            if not (registration.user_scope and recorded_as_ours(self.item.data, registration.entry)):
                return "left alone: the `compass` server there now was not written by install"
            client.remove()
            return ""
        if client.path is None or not client.path.exists():
            return "already gone"
        try:
            current = client.current()
        except ClientError as exc:
            if state == "manual":
                return "left alone: install never wrote to it (it could not be read)"
            raise InstallError(f"{exc}; remove the `compass` entry by hand") from None
        if not recorded_as_ours(self.item.data, current):
            client.backup.unlink(missing_ok=True)
            return "left alone: the `compass` entry there now was not written by install"
        return client.remove(bool(self.item.data.get("created_file")))

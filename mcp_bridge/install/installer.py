"""Build the install and uninstall plans.

Install registers, for the current user (or, with `--system`, the machine): a launcher; a host manifest for
each selected browser (on Windows, one manifest per family plus the registry keys browsers read); and the MCP
server with Claude Code and any other selected client, each with a bridge key of its own. Uninstall undoes
what the install record lists for the selected owners, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from mcp_bridge.install import HOST_NAME, manifests
from mcp_bridge.install.clients import (
    CLAUDE_CODE,
    CLIENT_KEYS,
    CLIENT_LABELS,
    HOME_ENV,
    ClaudeCode,
    ClaudeRegistration,
    ClientError,
    ConfigFileClient,
    ServerEntry,
    bridge_entry,
    cli_command,
    file_client,
    quote_command,
)
from mcp_bridge.install.files import read_text
from mcp_bridge.install.launcher import LOG_NAME, LauncherSpec, launcher_name, render
from mcp_bridge.install.layouts import BROWSER_KEYS, BROWSERS, OS, BrowserLayout, Family, Platform, resolve
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
_NAMES = {spec.key: spec.name for spec in BROWSERS}


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
            if name not in BROWSER_KEYS:
                raise InstallError(f"unknown browser {name!r}; choose from {', '.join(BROWSER_KEYS)}")
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

    def apply(self, plan: Plan) -> bool:
        if plan.record.path.parent == self.paths.data_dir and plan.blocked is None:
            self.paths.ensure()
        return plan.apply(Context(self.platform, self.paths, self.registry, plan.record, plan.hive))

    # --- install --------------------------------------------------------------------------------------

    def plan_install(self, selection: Selection) -> Plan:
        sel = selection.validated()
        scope = self.scope(sel.system)
        record = Record.load(scope.record_file)
        plan = Plan("install", record, scope.hive, blocked=self._elevation(sel))
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
        elif not sel.no_clients:
            for client in dict.fromkeys((CLAUDE_CODE, *sel.clients)):
                plan.actions.append(self._client_action(client, record))
        return plan

    def _launcher_action(self, scope: Scope, launcher: Path, owners: set[str], record: Record) -> Action:
        # A machine-wide launcher must not pin one user's state dir; a per-user one must, because the
        # browser does not pass COMPASS_BRIDGE_HOME on to the host.
        home = self.platform.env.get(HOME_ENV)
        env = {HOME_ENV: str(Path(home).expanduser().absolute())} if home and not scope.system else {}
        python = str(Path(sys.executable).absolute())
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
                    "no Firefox add-on to allow (the reference extension is Chromium-only); "
                    "pass --firefox-extension-id ID for your own add-on")))
                continue
            if sel.system:
                dirs = () if windows else layout.system_manifest_dirs
                if not windows and not dirs:
                    plan.actions.append(Action(spec.name, Op.SKIP, detail="no known machine-wide location"))
                    continue
            else:
                if not layout.installed and not named:
                    plan.actions.append(Action(spec.name, Op.SKIP,
                                               detail=f"not installed (no {self._show(layout.data_dir)})"))
                    continue
                dirs = layout.user_manifest_dirs
            yield layout, f"browser:{spec.key}", dirs

    def _firefox_addons(self, sel: Selection) -> list[str]:
        reference = manifests.reference_firefox_addon_id()
        return list(dict.fromkeys([*([reference] if reference else []), *sel.firefox_extension_ids]))

    def _client_action(self, name: str, record: Record) -> Action:
        owner = f"client:{name}"
        ours = record.get(Kind.CLIENT, name) is not None
        key_ids = [i.target for i in record.of_kind(Kind.KEY) if owner in i.owners]
        client: ClaudeCode | ConfigFileClient
        if name == CLAUDE_CODE:
            client = ClaudeCode(self.platform)
            what = "server `compass` at user scope"
            if client.exe is None:
                return Action(client.label, Op.MANUAL, what, "(`claude` is not on PATH)",
                              RegisterClient(client, None, key_ids, ours, None))
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
            client = file_client(name, self.platform)
            registration = None
            reason = client.unavailable()
            if reason:
                return Action(client.label, Op.SKIP, detail=reason)
            assert client.path is not None
            what = f"server `compass` in {self._show(client.path)}"
            try:
                current = client.current()
            except ClientError as exc:
                return Action(client.label, Op.REGISTER, what, result="failed", note=str(exc))
        if current is None:
            return Action(client.label, Op.REGISTER, what, step=RegisterClient(client, None, key_ids, ours, None))
        if not ours:
            return Action(client.label, Op.SKIP, what, detail=(
                "already has a `compass` server that compass-bridge install did not create; left alone"))
        reuse = current.key if current.key and self._active_key_id(current.key) in key_ids else None
        unchanged = reuse is not None and current.same_launch(bridge_entry(self.platform, reuse))
        return Action(client.label, Op.UNCHANGED if unchanged else Op.UPDATE, what,
                      step=RegisterClient(client, reuse, key_ids, ours, registration if unchanged else None))

    def _active_key_id(self, key: str) -> str | None:
        """The id of the active bridge key `key`, or None (unknown, revoked, expired, or no store yet)."""
        if not self.paths.database.exists():
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
                if item.data.get("role") == "launcher":
                    section = "Launcher"
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
        return f"server `compass` in {self._show(Path(path))}" if path else "server `compass` at user scope"

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
        client: ClaudeCode | ConfigFileClient = (
            ClaudeCode(self.platform) if item.target == CLAUDE_CODE else file_client(item.target, self.platform))
        return Action(section, Op.REMOVE, what, step=UnregisterClient(item, client))


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
        if not layout.installed and owner.startswith("browser:") and not self.scope.system:
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


# --- client steps -------------------------------------------------------------------------------------


@dataclass
class RegisterClient:
    client: ClaudeCode | ConfigFileClient
    reuse_key: str | None
    """The key already in the client's entry when it is ours and still active; else a new one is made."""
    old_key_ids: list[str]
    ours: bool
    """The client entry is one install made earlier (so it may be replaced)."""
    unchanged: ClaudeRegistration | None
    """For Claude Code when nothing changes: what `claude mcp get` reported, to confirm the health."""

    def apply(self, ctx: Context) -> str:
        owner = f"client:{self.client.key}"
        key = self.reuse_key or self._new_key(ctx, owner)
        entry = bridge_entry(ctx.platform, key)
        data: dict[str, object] = {"command": entry.command, "key_prefix": key[:8]}
        if isinstance(self.client, ClaudeCode):
            return self._claude(ctx, self.client, entry, owner, data)
        recorded = ctx.record.get(Kind.CLIENT, self.client.key)
        created = self.client.write(entry, back_up=not self.ours)
        data |= {"path": str(self.client.path),
                 "created_file": bool(recorded.data.get("created_file")) if recorded else created}
        ctx.record.add(Kind.CLIENT, self.client.key, {owner}, data=data)
        return "" if self.reuse_key else "with a new bridge key"

    def _new_key(self, ctx: Context, owner: str) -> str:
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
        return key

    def _claude(self, ctx: Context, client: ClaudeCode, entry: ServerEntry, owner: str,
                data: dict[str, object]) -> str:
        if client.exe is None:
            ctx.record.add(Kind.CLIENT, client.key, {owner}, data={**data, "state": "pending"})
            return ("once Claude Code is installed, run:\n    "
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
        if registration is None or not registration.connected:
            status = registration.status if registration else "no such server"
            raise InstallError(f"registered, but `claude mcp get compass` reports {status!r}; "
                               "run `compass-bridge doctor` to find out why")
        return "verified: `claude mcp get compass` reports Connected"


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


@dataclass
class UnregisterClient:
    item: Item
    client: ClaudeCode | ConfigFileClient

    def _ours(self, entry: ServerEntry | None) -> bool:
        prefix = self.item.data.get("key_prefix")
        return bool(entry and entry.command == self.item.data.get("command") and prefix
                    and (entry.key or "").startswith(prefix))

    def apply(self, ctx: Context) -> str:
        note = self._undo(ctx)
        ctx.record.forget(self.item)
        return note

    def _undo(self, ctx: Context) -> str:
        client = self.client
        if isinstance(client, ClaudeCode):
            if self.item.data.get("state") == "pending":
                return "it was never registered"
            if client.exe is None:
                raise InstallError("`claude` is not on PATH; remove the server by hand: "
                                   + quote_command(client.remove_argv(), ctx.platform))
            registration = client.get()
            if registration is None:
                return "already gone"
            if not (registration.user_scope and self._ours(registration.entry)):
                return "left alone: the `compass` server there now was not written by install"
            client.remove()
            return ""
        if client.path is None or not client.path.exists():
            return "already gone"
        if not self._ours(client.current()):
            client.backup.unlink(missing_ok=True)
            return "left alone: the `compass` entry there now was not written by install"
        return client.remove(bool(self.item.data.get("created_file")))

"""Each browser's places resolved for one platform: its user-data and manifest dirs, registry keys and program.

The facts (which browsers, where each keeps what) are `mcp_bridge.install.places`, which the protected paths
read too; this adds what only the installer and doctor need: looking for the browser's program, the Windows
registry keys, and the Snap and Flatpak builds. The facts and their sources are in docs/INSTALL.md.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mcp_bridge.install import HOST_NAME
from mcp_bridge.install.places import BROWSERS, OS, BrowserSpec, Family, Platform, browser_dirs


@dataclass(frozen=True)
class BrowserLayout:
    """One browser's locations resolved for one platform."""

    key: str
    name: str
    family: Family
    data_dir: Path | None
    user_manifest_dirs: tuple[Path, ...]
    system_manifest_dirs: tuple[Path, ...]
    registry_keys: tuple[str, ...]
    program: Path | None = None
    """The browser's program when one was found (it may never have been started)."""

    @property
    def supported(self) -> bool:
        return self.data_dir is not None

    @property
    def installed(self) -> bool:
        """Used on this machine: its user-data dir exists."""
        return self.data_dir is not None and self.data_dir.is_dir()

    @property
    def never_started(self) -> bool:
        """Installed (its program is there) but never run by this user, so it has no user-data dir yet."""
        return self.program is not None and not self.installed


def registry_key(vendor: str) -> str:
    return f"Software\\{vendor}\\NativeMessagingHosts\\{HOST_NAME}"


def _find_program(spec: BrowserSpec, platform: Platform) -> Path | None:
    names = spec.programs.get(platform.os, ())
    if platform.os is OS.MACOS:
        dirs = (platform.system_path("/Applications"), platform.home / "Applications")
        return next((d / n for n in names for d in dirs if (d / n).is_dir()), None)
    if platform.os is OS.LINUX:
        snap_bin = platform.system_path("/snap/bin")
        for name in names:
            found = shutil.which(name, path=platform.env.get("PATH", ""))
            # A snap's command is its sandboxed build, reported by `sandboxed_browsers` instead.
            if found and Path(found).parent != snap_bin:
                return Path(found)
    return None


def resolve(spec: BrowserSpec, platform: Platform) -> BrowserLayout:
    dirs = browser_dirs(spec, platform)
    windows = platform.os is OS.WINDOWS
    return BrowserLayout(
        key=spec.key,
        name=spec.name,
        family=spec.family,
        data_dir=dirs.data,
        user_manifest_dirs=dirs.user_manifests,
        system_manifest_dirs=dirs.system_manifests,
        registry_keys=tuple(registry_key(v) for v in spec.registry) if windows and dirs.data else (),
        program=_find_program(spec, platform) if dirs.data else None,
    )


def browser_layouts(platform: Platform) -> list[BrowserLayout]:
    return [resolve(spec, platform) for spec in BROWSERS]


# --- Snap and Flatpak builds (Linux) -------------------------------------------------------------------


class Sandbox(StrEnum):
    SNAP = "snap"
    FLATPAK = "flatpak"


class Presence(StrEnum):
    NEVER_STARTED = "installed, never started"
    USED = "installed and used"


@dataclass(frozen=True)
class SandboxedSpec:
    key: str
    name: str
    sandbox: Sandbox
    app: str
    """The snap's name or the Flatpak app ID."""
    reads: str | None
    """The key of the browser whose host manifest this build reads (it can reach our host), else None."""
    how: str
    """How it reaches a native host, or why it cannot."""
    instead: str = ""
    """What to do when it cannot."""


_SNAP_WORKS = ("reaches native hosts through the WebExtensions portal (Ubuntu 22.04 and later), which reads "
               "~/.mozilla/native-messaging-hosts")
_SNAP_CANNOT = ("cannot start a native host: the snap runs it inside its sandbox, where this installation's "
                "Python does not exist")
_FLATPAK_CANNOT = ("cannot start a native host: a Flatpak browser runs it inside its sandbox, where this "
                   "installation's Python and the bridge's socket directory are not visible")
_INSTEAD = ("use the browser from your distribution's or its vendor's packages (.deb/.rpm), or Firefox, whose snap "
            "works; then `compass-bridge install`")

SANDBOXED: tuple[SandboxedSpec, ...] = (
    SandboxedSpec("firefox-snap", "Firefox (snap)", Sandbox.SNAP, "firefox", "firefox", _SNAP_WORKS),
    SandboxedSpec("chromium-snap", "Chromium (snap)", Sandbox.SNAP, "chromium", None, _SNAP_CANNOT, _INSTEAD),
    SandboxedSpec("brave-snap", "Brave (snap)", Sandbox.SNAP, "brave", None, _SNAP_CANNOT, _INSTEAD),
    *(SandboxedSpec(f"{key}-flatpak", f"{name} (Flatpak)", Sandbox.FLATPAK, app, None, _FLATPAK_CANNOT, _INSTEAD)
      for key, name, app in (("firefox", "Firefox", "org.mozilla.firefox"),
                             ("chromium", "Chromium", "org.chromium.Chromium"),
                             ("chrome", "Google Chrome", "com.google.Chrome"),
                             ("brave", "Brave", "com.brave.Browser"),
                             ("edge", "Microsoft Edge", "com.microsoft.Edge"),
                             ("vivaldi", "Vivaldi", "com.vivaldi.Vivaldi"),
                             ("librewolf", "LibreWolf", "io.gitlab.librewolf-community"),
                             ("waterfox", "Waterfox", "net.waterfox.waterfox"),
                             ("floorp", "Floorp", "one.ablaze.floorp"))),
)


@dataclass(frozen=True)
class SandboxedBrowser:
    spec: SandboxedSpec
    presence: Presence
    user_dir: Path
    """`~/snap/<name>` or `~/.var/app/<id>`: created at the first start."""
    program: Path | None
    """The snap's command or the Flatpak's app dir, when found."""

    def state(self, platform: Platform) -> str:
        used = f" ({platform.display(self.user_dir)})" if self.presence is Presence.USED else ""
        return f"{self.presence.value}{used}"


def _sandboxed(spec: SandboxedSpec, platform: Platform) -> SandboxedBrowser | None:
    if spec.sandbox is Sandbox.SNAP:
        user_dir = platform.home / "snap" / spec.app
        programs = [platform.system_path(f"/snap/bin/{spec.app}")]
    else:
        user_dir = platform.home / ".var" / "app" / spec.app
        programs = [platform.system_path(f"/var/lib/flatpak/app/{spec.app}"),
                    platform.data_home() / "flatpak" / "app" / spec.app]
    program = next((p for p in programs if p.exists()), None)
    if user_dir.is_dir():
        return SandboxedBrowser(spec, Presence.USED, user_dir, program)
    if program is not None:
        return SandboxedBrowser(spec, Presence.NEVER_STARTED, user_dir, program)
    return None


def sandboxed_layout(found: SandboxedBrowser, reads: BrowserLayout) -> BrowserLayout:
    """A sandboxed browser that reads another browser's manifest dirs (the Firefox snap reads ~/.mozilla's)."""
    return BrowserLayout(key=found.spec.key, name=found.spec.name, family=reads.family, data_dir=found.user_dir,
                         user_manifest_dirs=reads.user_manifest_dirs, system_manifest_dirs=(), registry_keys=(),
                         program=found.program)


def sandboxed_browsers(platform: Platform) -> list[SandboxedBrowser]:
    """The snap and Flatpak browsers on this machine (Linux only), whether or not they can reach the host."""
    if platform.os is not OS.LINUX:
        return []
    return [found for spec in SANDBOXED if (found := _sandboxed(spec, platform)) is not None]

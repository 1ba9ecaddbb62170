"""Where each browser keeps its user data and reads native-messaging host manifests, on each OS.

The layout is computed from an explicit `Platform` rather than from the running OS, so the macOS and Windows
layouts can be installed into (and uninstalled from) a temporary home on Linux. The facts and their sources
are in docs/INSTALL.md.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path

from mcp_bridge.install import HOST_NAME


class OS(StrEnum):
    LINUX = "linux"
    MACOS = "macos"
    WINDOWS = "windows"


class Family(StrEnum):
    CHROMIUM = "chromium"
    FIREFOX = "firefox"


class Base(Enum):
    """A per-user directory that browser locations are relative to."""

    HOME = "~"
    CONFIG = "$XDG_CONFIG_HOME"
    CHROME_CONFIG = "$CHROME_CONFIG_HOME"
    APP_SUPPORT = "~/Library/Application Support"
    APPDATA = "%APPDATA%"
    LOCAL_APPDATA = "%LOCALAPPDATA%"


def _is_elevated() -> bool:
    if sys.platform == "win32":
        import ctypes

        return bool(ctypes.windll.shell32.IsUserAnAdmin())
    return os.geteuid() == 0


@dataclass(frozen=True)
class Platform:
    """The OS, the user's home and environment, and the filesystem root that machine-wide paths live under."""

    os: OS
    home: Path
    env: Mapping[str, str] = field(default_factory=dict)
    root: Path = Path("/")
    elevated: bool = False

    @classmethod
    def current(cls) -> Platform:
        name = OS.WINDOWS if sys.platform == "win32" else OS.MACOS if sys.platform == "darwin" else OS.LINUX
        return cls(os=name, home=Path.home(), env=dict(os.environ),
                   root=Path(os.sep).absolute(), elevated=_is_elevated())

    def _env_dir(self, name: str, default: Path) -> Path:
        value = self.env.get(name, "")
        # Both XDG and Chrome ignore a relative value, as the spec asks; so do we.
        return Path(value) if value and Path(value).is_absolute() else default

    def base(self, base: Base) -> Path:
        config = self._env_dir("XDG_CONFIG_HOME", self.home / ".config")
        return {
            Base.HOME: self.home,
            Base.CONFIG: config,
            Base.CHROME_CONFIG: self._env_dir("CHROME_CONFIG_HOME", config),
            Base.APP_SUPPORT: self.home / "Library" / "Application Support",
            Base.APPDATA: self._env_dir("APPDATA", self.home / "AppData" / "Roaming"),
            Base.LOCAL_APPDATA: self._env_dir("LOCALAPPDATA", self.home / "AppData" / "Local"),
        }[base]

    def system_path(self, absolute: str) -> Path:
        """A machine-wide POSIX path such as `/etc/opt/chrome`, under this platform's root."""
        return self.root.joinpath(*absolute.strip("/").split("/"))

    @property
    def program_data(self) -> Path:
        return self._env_dir("PROGRAMDATA", self.root / "ProgramData")

    def system_own_dir(self) -> Path:
        """Where a machine-wide install keeps its launcher (and, on Windows, its manifests)."""
        if self.os is OS.WINDOWS:
            return self.program_data / "compass-bridge"
        if self.os is OS.MACOS:
            return self.system_path("/Library/Application Support/compass-bridge")
        return self.system_path("/usr/local/lib/compass-bridge")

    def display(self, path: Path) -> str:
        """`path` with the home directory shown as `~`, as people read it."""
        try:
            return str(Path("~") / path.relative_to(self.home))
        except ValueError:
            return str(path)


@dataclass(frozen=True)
class Loc:
    base: Base
    rel: str  # '/'-separated, so one table serves every OS

    def resolve(self, platform: Platform) -> Path:
        return platform.base(self.base).joinpath(*self.rel.split("/"))


@dataclass(frozen=True)
class BrowserSpec:
    key: str
    name: str
    family: Family
    data: Mapping[OS, Loc]
    """The browser's user-data dir, whose presence means "installed"; an OS missing here has no such browser."""
    manifests: Mapping[OS, tuple[Loc, ...]] = field(default_factory=dict)
    """User-level manifest dirs, when not just `<user-data dir>/NativeMessagingHosts` (macOS/Linux only)."""
    system: Mapping[OS, str] = field(default_factory=dict)
    """Machine-wide manifest dir (macOS/Linux)."""
    registry: tuple[str, ...] = ()
    """Vendor keys under `Software\\` that the browser reads on Windows."""
    programs: Mapping[OS, tuple[str, ...]] = field(default_factory=dict)
    """How to tell the browser is installed before it has ever run (no user-data dir yet): command names on
    PATH (Linux) or app bundles in /Applications or ~/Applications (macOS)."""


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


_CHROME = "Google\\Chrome"
_NMH = "NativeMessagingHosts"


def _programs(linux: tuple[str, ...], app: str | None) -> dict[OS, tuple[str, ...]]:
    found: dict[OS, tuple[str, ...]] = {OS.LINUX: linux} if linux else {}
    if app:
        found[OS.MACOS] = (f"{app}.app",)
    return found


def _chromium(key: str, name: str, *, linux: Loc | None, macos: Loc | None, windows: Loc | None,
              system: Mapping[OS, str] | None = None, registry: tuple[str, ...] = (_CHROME,),
              macos_also: tuple[Loc, ...] = (), commands: tuple[str, ...] = (), app: str | None = None
              ) -> BrowserSpec:
    data = {os_: loc for os_, loc in ((OS.LINUX, linux), (OS.MACOS, macos), (OS.WINDOWS, windows)) if loc}
    manifests = {OS.MACOS: (Loc(macos.base, f"{macos.rel}/{_NMH}"), *macos_also)} if macos and macos_also else {}
    return BrowserSpec(key, name, Family.CHROMIUM, data, manifests, system or {}, registry,
                       _programs(commands if linux else (), app if macos else None))


# Chrome's channels share one machine-wide dir and one registry key; they differ only in their data dirs.
# (suffix, label, Linux data dir = Linux command, Windows folder)
_CHROME_CHANNELS = (("", "", "google-chrome", "Chrome"),
                    ("-beta", " Beta", "google-chrome-beta", "Chrome Beta"),
                    ("-dev", " Dev", "google-chrome-unstable", "Chrome Dev"),
                    ("-canary", " Canary", "google-chrome-canary", "Chrome SxS"))
_EDGE_CHANNELS = (("", "", "microsoft-edge", "Edge"),
                  ("-beta", " Beta", "microsoft-edge-beta", "Edge Beta"),
                  ("-dev", " Dev", "microsoft-edge-dev", "Edge Dev"),
                  ("-canary", " Canary", None, "Edge SxS"))
_BRAVE_CHANNELS = (("", "", "Brave-Browser", "brave-browser"),
                   ("-beta", " Beta", "Brave-Browser-Beta", "brave-browser-beta"),
                   ("-nightly", " Nightly", "Brave-Browser-Nightly", "brave-browser-nightly"))


def _gecko(key: str, name: str, *, linux: str, macos: str) -> BrowserSpec:
    """A Firefox fork that keeps Firefox's layout under its own name: `~/.<linux>/native-messaging-hosts` and
    `~/Library/Application Support/<macos>/NativeMessagingHosts` (sources in docs/INSTALL.md)."""
    return BrowserSpec(
        key, name, Family.FIREFOX,
        data={OS.LINUX: Loc(Base.HOME, f".{linux}"), OS.MACOS: Loc(Base.APP_SUPPORT, macos)},
        manifests={OS.LINUX: (Loc(Base.HOME, f".{linux}/native-messaging-hosts"),),
                   OS.MACOS: (Loc(Base.APP_SUPPORT, f"{macos}/{_NMH}"),)},
        programs=_programs((linux,), macos))


BROWSERS: tuple[BrowserSpec, ...] = (
    *(_chromium(f"chrome{suffix}", f"Google Chrome{label}",
                linux=Loc(Base.CHROME_CONFIG, linux), macos=Loc(Base.APP_SUPPORT, f"Google/Chrome{label}"),
                windows=Loc(Base.LOCAL_APPDATA, f"Google/{windows}/User Data"),
                system={OS.LINUX: "/etc/opt/chrome/native-messaging-hosts",
                        OS.MACOS: "/Library/Google/Chrome/NativeMessagingHosts"},
                commands=(linux, "google-chrome-stable") if not suffix else (linux,), app=f"Google Chrome{label}")
      for suffix, label, linux, windows in _CHROME_CHANNELS),
    _chromium("chromium", "Chromium", linux=Loc(Base.CHROME_CONFIG, "chromium"),
              macos=Loc(Base.APP_SUPPORT, "Chromium"), windows=Loc(Base.LOCAL_APPDATA, "Chromium/User Data"),
              system={OS.LINUX: "/etc/chromium/native-messaging-hosts",
                      OS.MACOS: "/Library/Application Support/Chromium/NativeMessagingHosts"},
              registry=("Chromium",), commands=("chromium", "chromium-browser"), app="Chromium"),
    *(_chromium(f"edge{suffix}", f"Microsoft Edge{label}",
                linux=Loc(Base.CONFIG, linux) if linux else None,
                macos=Loc(Base.APP_SUPPORT, f"Microsoft Edge{label}"),
                windows=Loc(Base.LOCAL_APPDATA, f"Microsoft/{windows}/User Data"),
                system={OS.LINUX: "/etc/opt/edge/native-messaging-hosts",
                        OS.MACOS: "/Library/Microsoft/Edge/NativeMessagingHosts"},
                registry=("Microsoft\\Edge",), commands=(linux,) if linux else (), app=f"Microsoft Edge{label}")
      for suffix, label, linux, windows in _EDGE_CHANNELS),
    # Brave on macOS is reported to read Chrome's manifest dir, and on Windows Chrome's key, so write both.
    *(_chromium(f"brave{suffix}", f"Brave{label}",
                linux=Loc(Base.CONFIG, f"BraveSoftware/{folder}"),
                macos=Loc(Base.APP_SUPPORT, f"BraveSoftware/{folder}"),
                windows=Loc(Base.LOCAL_APPDATA, f"BraveSoftware/{folder}/User Data"),
                system={OS.LINUX: "/etc/opt/brave/native-messaging-hosts",
                        OS.MACOS: "/Library/Application Support/BraveSoftware/Brave-Browser/NativeMessagingHosts"},
                registry=("BraveSoftware\\Brave-Browser", _CHROME),
                macos_also=(Loc(Base.APP_SUPPORT, f"Google/Chrome/{_NMH}"),),
                commands=(command,), app=f"Brave Browser{label}")
      for suffix, label, folder, command in _BRAVE_CHANNELS),
    _chromium("vivaldi", "Vivaldi", linux=Loc(Base.CONFIG, "vivaldi"), macos=Loc(Base.APP_SUPPORT, "Vivaldi"),
              windows=Loc(Base.LOCAL_APPDATA, "Vivaldi/User Data"),
              system={OS.LINUX: "/etc/opt/vivaldi/native-messaging-hosts",
                      OS.MACOS: "/Library/Application Support/Vivaldi/NativeMessagingHosts"},
              registry=("Vivaldi", _CHROME), commands=("vivaldi", "vivaldi-stable"), app="Vivaldi"),
    _chromium("opera", "Opera", linux=Loc(Base.CONFIG, "opera"),
              macos=Loc(Base.APP_SUPPORT, "com.operasoftware.Opera"),
              windows=Loc(Base.APPDATA, "Opera Software/Opera Stable"),
              registry=("Opera Software", _CHROME), commands=("opera",), app="Opera"),
    _chromium("arc", "Arc", linux=None, macos=Loc(Base.APP_SUPPORT, "Arc/User Data"), windows=None, app="Arc"),
    BrowserSpec(
        "firefox", "Firefox", Family.FIREFOX,
        data={OS.LINUX: Loc(Base.HOME, ".mozilla"), OS.MACOS: Loc(Base.APP_SUPPORT, "Firefox"),
              OS.WINDOWS: Loc(Base.APPDATA, "Mozilla/Firefox")},
        manifests={OS.LINUX: (Loc(Base.HOME, ".mozilla/native-messaging-hosts"),),
                   OS.MACOS: (Loc(Base.APP_SUPPORT, "Mozilla/NativeMessagingHosts"),)},
        system={OS.LINUX: "/usr/lib/mozilla/native-messaging-hosts",
                OS.MACOS: "/Library/Application Support/Mozilla/NativeMessagingHosts"},
        registry=("Mozilla",),
        programs=_programs(("firefox", "firefox-esr"), "Firefox"),
    ),
    _gecko("librewolf", "LibreWolf", linux="librewolf", macos="LibreWolf"),
    _gecko("waterfox", "Waterfox", linux="waterfox", macos="Waterfox"),
    _gecko("floorp", "Floorp", linux="floorp", macos="Floorp"),
)

BROWSER_KEYS: tuple[str, ...] = tuple(spec.key for spec in BROWSERS)


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
    loc = spec.data.get(platform.os)
    data_dir = loc.resolve(platform) if loc else None
    windows = platform.os is OS.WINDOWS
    if data_dir is None or windows:
        user_dirs: tuple[Path, ...] = ()
    elif platform.os in spec.manifests:
        user_dirs = tuple(m.resolve(platform) for m in spec.manifests[platform.os])
    else:
        user_dirs = (data_dir / _NMH,)
    system = spec.system.get(platform.os)
    return BrowserLayout(
        key=spec.key,
        name=spec.name,
        family=spec.family,
        data_dir=data_dir,
        user_manifest_dirs=user_dirs,
        system_manifest_dirs=(platform.system_path(system),) if system and data_dir and not windows else (),
        registry_keys=tuple(registry_key(v) for v in spec.registry) if windows and data_dir else (),
        program=_find_program(spec, platform) if data_dir else None,
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
        data = platform._env_dir("XDG_DATA_HOME", platform.home / ".local" / "share")
        programs = [platform.system_path(f"/var/lib/flatpak/app/{spec.app}"), data / "flatpak" / "app" / spec.app]
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

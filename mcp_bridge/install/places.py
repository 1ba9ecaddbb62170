"""Where browsers and MCP clients keep what the installer writes: the installer's facts, and nothing else.

Two readers: the installer and doctor (`layouts`, `clients`) install into these places, and the file tools'
protected paths (`mcp_bridge.protected`) keep every agent out of them. Every `serve` reads them as it starts,
so this module holds plain tables and path arithmetic only — no parsing, no program look-ups, no dataclasses
(NamedTuples cost a fraction to create) — and imports nothing the server would not load anyway.

Everything takes an explicit `Platform` (OS, home, environment, filesystem root), so the macOS and Windows
places can be computed, installed into and checked on Linux against a temporary home. The facts and their
sources are in docs/INSTALL.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from enum import Enum, StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

_NOTHING: Mapping[Any, Any] = MappingProxyType({})
"""The default of the mapping fields below: shared, so it must be (and is) read-only."""


class OS(StrEnum):
    LINUX = "linux"
    MACOS = "macos"
    WINDOWS = "windows"


class Family(StrEnum):
    CHROMIUM = "chromium"
    FIREFOX = "firefox"


class Base(Enum):
    """A per-user directory that browser and client locations are relative to."""

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


class Platform(NamedTuple):
    """The OS, the user's home and environment, and the filesystem root that machine-wide paths live under."""

    os: OS
    home: Path
    env: Mapping[str, str] = _NOTHING
    root: Path = Path("/")
    elevated: bool = False

    @classmethod
    def current(cls) -> Platform:
        return cls.for_user(Path.home(), elevated=_is_elevated())

    @classmethod
    def for_user(cls, home: Path, env: Mapping[str, str] | None = None, *, elevated: bool = False) -> Platform:
        """This machine's OS and root, for the user `home` with the environment `env` (default: this process's)."""
        name = OS.WINDOWS if sys.platform == "win32" else OS.MACOS if sys.platform == "darwin" else OS.LINUX
        return cls(os=name, home=home, env=dict(os.environ if env is None else env),
                   root=Path(os.sep).absolute(), elevated=elevated)

    def _env_dir(self, name: str, default: Path) -> Path:
        value = self.env.get(name, "")
        # Both XDG and Chrome ignore a relative value, as the spec asks; so do we.
        return Path(value) if value and Path(value).is_absolute() else default

    def base(self, base: Base) -> Path:
        if base is Base.HOME:
            return self.home
        if base is Base.APP_SUPPORT:
            return self.home / "Library" / "Application Support"
        if base is Base.APPDATA:
            return self._env_dir("APPDATA", self.home / "AppData" / "Roaming")
        if base is Base.LOCAL_APPDATA:
            return self._env_dir("LOCALAPPDATA", self.home / "AppData" / "Local")
        config = self._env_dir("XDG_CONFIG_HOME", self.home / ".config")
        return self._env_dir("CHROME_CONFIG_HOME", config) if base is Base.CHROME_CONFIG else config

    def data_home(self) -> Path:
        """$XDG_DATA_HOME, else ~/.local/share."""
        return self._env_dir("XDG_DATA_HOME", self.home / ".local" / "share")

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


class Loc(NamedTuple):
    base: Base
    rel: str  # '/'-separated, so one table serves every OS

    def resolve(self, platform: Platform) -> Path:
        return platform.base(self.base).joinpath(*self.rel.split("/"))


# --- Browsers -------------------------------------------------------------------------------------------


class BrowserSpec(NamedTuple):
    key: str
    name: str
    family: Family
    data: Mapping[OS, Loc]
    """The browser's user-data dir, whose presence means "installed"; an OS missing here has no such browser."""
    manifests: Mapping[OS, tuple[Loc, ...]] = _NOTHING
    """User-level manifest dirs, when not just `<user-data dir>/NativeMessagingHosts` (macOS/Linux only)."""
    system: Mapping[OS, str] = _NOTHING
    """Machine-wide manifest dir (macOS/Linux)."""
    registry: tuple[str, ...] = ()
    """Vendor keys under `Software\\` that the browser reads on Windows."""
    programs: Mapping[OS, tuple[str, ...]] = _NOTHING
    """How to tell the browser is installed before it has ever run (no user-data dir yet): command names on
    PATH (Linux) or app bundles in /Applications or ~/Applications (macOS)."""


class BrowserDirs(NamedTuple):
    """One browser's directories on one platform."""

    data: Path | None
    """Its user-data dir; None when the browser does not exist for this OS."""
    user_manifests: tuple[Path, ...]
    """Where it reads the user's native-host manifests (none on Windows, where the registry names them)."""
    system_manifests: tuple[Path, ...]
    """Where it reads machine-wide manifests (none on Windows)."""


_NMH = "NativeMessagingHosts"
_CHROME = "Google\\Chrome"


def browser_dirs(spec: BrowserSpec, platform: Platform) -> BrowserDirs:
    loc = spec.data.get(platform.os)
    if loc is None:
        return BrowserDirs(None, (), ())
    data_dir = loc.resolve(platform)
    if platform.os is OS.WINDOWS:
        return BrowserDirs(data_dir, (), ())
    if platform.os in spec.manifests:
        user_dirs = tuple(m.resolve(platform) for m in spec.manifests[platform.os])
    else:
        user_dirs = (data_dir / _NMH,)
    system = spec.system.get(platform.os)
    return BrowserDirs(data_dir, user_dirs, (platform.system_path(system),) if system else ())


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


# --- MCP clients with a config file -----------------------------------------------------------------------


class Format(StrEnum):
    JSON = "json"
    """JSON, read and written as JSONC: comments and trailing commas are kept."""
    YAML = "yaml"


class Shape(StrEnum):
    STANDARD = "standard"
    """`{command, args, env}`, plus fields of the client's own: most clients."""
    OPENCODE = "opencode"
    """`{type: local, command: [program, args...], environment}`."""
    GOOSE = "goose"
    """`{name, type: stdio, cmd, args, envs, enabled, timeout}`."""


class FileClientSpec(NamedTuple):
    key: str
    label: str
    dirs: Mapping[OS, Loc]
    """The client's own directory; the config is written only when it exists (the client is installed)."""
    files: tuple[str, ...]
    """The config file relative to that directory ('/'-separated); the first that exists is edited, else
    the first is created."""
    servers: tuple[str, ...] = ("mcpServers",)
    """Where the servers object is in the document."""
    shape: Shape = Shape.STANDARD
    extra: Mapping[str, Any] = _NOTHING
    """Fields the client wants in each server entry besides command, args and env."""
    fmt: Format = Format.JSON


def _every_os(loc: Loc) -> dict[OS, Loc]:
    return {os_: loc for os_ in OS}


def _vscode_user(folder: str, below: str = "") -> dict[OS, Loc]:
    """A VS Code build's user dir (`Code`, `Code - Insiders`, `VSCodium`), or a folder below it."""
    rel = f"{folder}/User{below}"
    return {OS.LINUX: Loc(Base.CONFIG, rel), OS.MACOS: Loc(Base.APP_SUPPORT, rel), OS.WINDOWS: Loc(Base.APPDATA, rel)}


def _vscode_storage(extension: str) -> dict[OS, Loc]:
    """An extension's global storage in VS Code's user dir (Cline, Roo Code)."""
    return _vscode_user("Code", f"/globalStorage/{extension}")


FILE_CLIENTS: tuple[FileClientSpec, ...] = (
    FileClientSpec("claude-desktop", "Claude Desktop",
                   {OS.LINUX: Loc(Base.CONFIG, "Claude"), OS.MACOS: Loc(Base.APP_SUPPORT, "Claude"),
                    OS.WINDOWS: Loc(Base.APPDATA, "Claude")},
                   ("claude_desktop_config.json",)),
    FileClientSpec("cursor", "Cursor", _every_os(Loc(Base.HOME, ".cursor")), ("mcp.json",)),
    *(FileClientSpec(key, label, _vscode_user(folder), ("mcp.json",), servers=("servers",), extra={"type": "stdio"})
      for key, label, folder in (("vscode", "VS Code", "Code"), ("vscode-insiders", "VS Code Insiders",
                                                                 "Code - Insiders"),
                                 ("vscodium", "VSCodium", "VSCodium"))),
    FileClientSpec("windsurf", "Windsurf", _every_os(Loc(Base.HOME, ".codeium/windsurf")), ("mcp_config.json",)),
    FileClientSpec("gemini", "Gemini CLI", _every_os(Loc(Base.HOME, ".gemini")), ("settings.json",)),
    FileClientSpec("copilot", "GitHub Copilot CLI", _every_os(Loc(Base.HOME, ".copilot")), ("mcp-config.json",),
                   extra={"type": "local", "tools": ["*"]}),
    # OpenCode uses XDG paths on every OS.
    FileClientSpec("opencode", "OpenCode", _every_os(Loc(Base.CONFIG, "opencode")),
                   ("opencode.jsonc", "opencode.json"), servers=("mcp",), shape=Shape.OPENCODE),
    FileClientSpec("zed", "Zed",
                   {OS.LINUX: Loc(Base.CONFIG, "zed"), OS.MACOS: Loc(Base.HOME, ".config/zed"),
                    OS.WINDOWS: Loc(Base.APPDATA, "Zed")},
                   ("settings.json",), servers=("context_servers",)),
    FileClientSpec("cline", "Cline", _vscode_storage("saoudrizwan.claude-dev"),
                   ("settings/cline_mcp_settings.json",), extra={"disabled": False}),
    FileClientSpec("roo-code", "Roo Code", _vscode_storage("rooveterinaryinc.roo-cline"),
                   ("settings/mcp_settings.json",), extra={"disabled": False}),
    FileClientSpec("goose", "Goose",
                   {OS.LINUX: Loc(Base.CONFIG, "goose"), OS.MACOS: Loc(Base.HOME, ".config/goose"),
                    OS.WINDOWS: Loc(Base.APPDATA, "Block/goose/config")},
                   ("config.yaml",), servers=("extensions",), shape=Shape.GOOSE, fmt=Format.YAML),
    FileClientSpec("junie", "JetBrains Junie", _every_os(Loc(Base.HOME, ".junie")), ("mcp/mcp.json",)),
    FileClientSpec("kiro", "Kiro", _every_os(Loc(Base.HOME, ".kiro")), ("settings/mcp.json",),
                   extra={"disabled": False}),
)

BACKUP_SUFFIX = ".compass-bridge-backup"
"""Beside a client config the installer changed: the original, restored when the bridge is uninstalled."""


def config_file_candidates(spec: FileClientSpec, platform: Platform) -> list[Path]:
    """The client's possible config files on this platform, in `spec.files` order; none for an OS it lacks."""
    loc = spec.dirs.get(platform.os)
    return [] if loc is None else [loc.resolve(platform).joinpath(*name.split("/")) for name in spec.files]


def known_config_paths(home: Path, env: Mapping[str, str] | None = None) -> list[Path]:
    """Every MCP client config file the installer knows on this OS for the user `home` (whether it exists or
    not), with the backups the installer keeps beside them: they may hold bridge keys or launch commands, so
    the file tools protect them. `env` (default: this process's) supplies XDG_CONFIG_HOME, APPDATA and the like."""
    platform = Platform.for_user(home, env)
    codex_home = Path(platform.env["CODEX_HOME"]) if platform.env.get("CODEX_HOME") else home / ".codex"
    # Claude Code's user and local scopes live in ~/.claude.json; Codex's in config.toml.
    paths = [home / ".claude.json", home / ".claude" / "settings.json", codex_home / "config.toml"]
    for spec in FILE_CLIENTS:
        for path in config_file_candidates(spec, platform):
            paths += [path, path.with_name(path.name + BACKUP_SUFFIX)]
    return paths

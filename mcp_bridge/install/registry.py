"""The Windows registry values that tell browsers where the host manifest is.

Each browser reads `<hive>\\Software\\<vendor>\\NativeMessagingHosts\\<host name>`, whose default value is the
absolute path of the manifest. The installer talks to a `RegistryBackend` so that the same code runs against
the real registry on Windows and an in-memory one in tests on any OS.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Protocol


class Hive(StrEnum):
    CURRENT_USER = "HKCU"
    LOCAL_MACHINE = "HKLM"


class RegistryError(Exception):
    """A registry operation failed; the message names the key."""


class RegistryBackend(Protocol):
    def get_default(self, hive: Hive, key: str) -> str | None:
        """The key's default (unnamed) string value, or None when the key does not exist."""
        ...

    def set_default(self, hive: Hive, key: str, value: str) -> None:
        """Create the key if needed and set its default value."""
        ...

    def delete(self, hive: Hive, key: str) -> None:
        """Delete the key (it has no subkeys); nothing happens when it is already gone."""
        ...


class MemoryRegistry:
    """A registry that lives in a dict, with the real one's case-insensitive key names."""

    def __init__(self) -> None:
        self.values: dict[tuple[Hive, str], str] = {}

    def get_default(self, hive: Hive, key: str) -> str | None:
        return self.values.get((hive, key.lower()))

    def set_default(self, hive: Hive, key: str, value: str) -> None:
        self.values[(hive, key.lower())] = value

    def delete(self, hive: Hive, key: str) -> None:
        self.values.pop((hive, key.lower()), None)


if sys.platform == "win32":
    import winreg

    class WindowsRegistry:
        """The real registry, through `winreg`. HKCU\\Software is shared by the 32- and 64-bit views, so the
        default view is right there; under HKLM browsers look in both views."""

        @staticmethod
        def _hive(hive: Hive) -> int:
            return winreg.HKEY_CURRENT_USER if hive is Hive.CURRENT_USER else winreg.HKEY_LOCAL_MACHINE

        def get_default(self, hive: Hive, key: str) -> str | None:
            try:
                with winreg.OpenKey(self._hive(hive), key) as handle:
                    value, kind = winreg.QueryValueEx(handle, "")
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise RegistryError(f"cannot read {hive}\\{key}: {exc}") from exc
            return value if kind == winreg.REG_SZ and isinstance(value, str) else None

        def set_default(self, hive: Hive, key: str, value: str) -> None:
            try:
                with winreg.CreateKeyEx(self._hive(hive), key, 0, winreg.KEY_SET_VALUE) as handle:
                    winreg.SetValueEx(handle, "", 0, winreg.REG_SZ, value)
            except OSError as exc:
                raise RegistryError(f"cannot write {hive}\\{key}: {exc}") from exc

        def delete(self, hive: Hive, key: str) -> None:
            try:
                winreg.DeleteKey(self._hive(hive), key)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise RegistryError(f"cannot delete {hive}\\{key}: {exc}") from exc


def default_backend() -> RegistryBackend | None:
    """The real registry on Windows; None elsewhere, where nothing reads one."""
    if sys.platform == "win32":
        return WindowsRegistry()
    return None

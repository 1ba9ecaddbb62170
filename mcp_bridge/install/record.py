"""The install record: everything `compass-bridge install` created or changed, so uninstall can undo exactly that.

Each item names its owners (`browser:chrome`, `profile:/abs/dir`, `client:cursor`). An item several owners
share (the launcher, Chrome's registry key that Brave also reads) stays until its last owner is uninstalled.
For a file or registry value that existed before, the record keeps the previous content to put back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from mcp_bridge import __version__
from mcp_bridge.install.files import atomic_write, make_dirs

RECORD_VERSION = 1


class Kind(StrEnum):
    FILE = "file"
    DIR = "dir"
    REGISTRY = "registry"
    CLIENT = "client"
    KEY = "key"


@dataclass
class Item:
    kind: Kind
    target: str
    owners: set[str]
    previous: str | None = None
    """Content (file) or value (registry) before install; None when there was none."""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "target": self.target, "owners": sorted(self.owners),
                "previous": self.previous, "data": self.data}


class RecordError(Exception):
    """The install record cannot be read; the message says where it is."""


class Record:
    def __init__(self, path: Path, items: list[Item] | None = None) -> None:
        self.path = path
        self.items: dict[tuple[Kind, str], Item] = {(i.kind, i.target): i for i in items or []}

    @classmethod
    def load(cls, path: Path) -> Record:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise RecordError(f"cannot read the install record {path}: {exc}") from exc
        items = [Item(Kind(i["kind"]), i["target"], set(i["owners"]), i.get("previous"), i.get("data", {}))
                 for i in data.get("items", [])]
        return cls(path, items)

    def get(self, kind: Kind, target: str) -> Item | None:
        return self.items.get((kind, target))

    def add(self, kind: Kind, target: str, owners: set[str], previous: str | None = None,
            data: dict[str, Any] | None = None) -> Item:
        """Record `target` as ours; an item already recorded keeps its original `previous`."""
        item = self.items.get((kind, target))
        if item is None:
            item = self.items[(kind, target)] = Item(kind, target, set(), previous)
        item.owners |= owners
        if data:
            item.data.update(data)
        return item

    def forget(self, item: Item) -> None:
        self.items.pop((item.kind, item.target), None)

    def of_kind(self, kind: Kind) -> list[Item]:
        return [i for i in self.items.values() if i.kind is kind]

    def save(self) -> None:
        """Write the record, or delete it once nothing is left in it."""
        if not self.items:
            self.path.unlink(missing_ok=True)
            return
        make_dirs(self.path)
        body = {"version": RECORD_VERSION, "written_by": f"compass-bridge {__version__}",
                "items": [i.to_json() for i in self.items.values()]}
        atomic_write(self.path, json.dumps(body, indent=2) + "\n", 0o600)

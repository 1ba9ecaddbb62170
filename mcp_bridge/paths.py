"""Where compass-bridge keeps its state.

Everything lives under platformdirs' per-user directories, or under one directory when
`COMPASS_BRIDGE_HOME` is set (tests and users with several set-ups rely on that).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from native_host.runtime_dir import HOME_ENV, ensure_private_dir, runtime_dir

APP_NAME = "compass-bridge"
KEYS_DATABASE_NAME = "keys.sqlite3"


# NamedTuple, not a frozen dataclass: `serve` imports this module first, and dataclasses would bring in inspect
# (with ast, dis, tokenize...): ~1.1 MiB private per server and ~8 ms of start-up (issue 10).
class StatePaths(NamedTuple):
    config_dir: Path
    data_dir: Path
    log_dir: Path
    run_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def database(self) -> Path:
        """SQLite file holding the usage log and the agent runs (and the keys of an earlier version, until moved)."""
        return self.data_dir / "bridge.sqlite3"

    @property
    def keys_database(self) -> Path:
        """SQLite file holding only the bridge keys. Apart from the usage log on purpose: the key check on every call
        re-reads a key only when this file changed, and usage rows are committed every 50 ms (mcp_bridge/store.py)."""
        return self.data_dir / KEYS_DATABASE_NAME

    @property
    def secret_file(self) -> Path:
        """The per-install HMAC secret that keys are stored under."""
        return self.data_dir / "key-secret"

    @property
    def compass_credentials(self) -> Path:
        return self.config_dir / "compass-credentials.json"

    def ensure(self) -> StatePaths:
        """Create the private directories (0700) that state is written to."""
        for d in (self.config_dir, self.data_dir, self.log_dir):
            ensure_private_dir(d)
        return self


def state_paths() -> StatePaths:
    home = os.environ.get(HOME_ENV)
    if home:
        root = Path(home).expanduser().absolute()
        return StatePaths(root / "config", root / "data", root / "logs", runtime_dir())
    import platformdirs

    dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
    return StatePaths(
        Path(dirs.user_config_dir), Path(dirs.user_data_dir), Path(dirs.user_log_dir), runtime_dir()
    )

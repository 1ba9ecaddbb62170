"""The package as users get it: build the sdist and the wheel (the wheel from the sdist, as a release does),
install the wheel with `uv tool install` and with `pipx install` into fresh throwaway homes, and run the
installed commands: `--version`, `doctor --json`, `extension path`, and a `serve` session (initialize,
tools/list, one read_file) over stdio.

One build per test session; the installs reuse a uv cache under `.cache/uv` so they need the package registry
only for what that cache does not hold yet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

from mcp_bridge import __version__
from tests.conftest import REPO, require

pytestmark = pytest.mark.e2e

UV_CACHE = REPO / ".cache" / "uv"
LIMIT_S = 120.0
"""Only turns a hang into a failure: a cold install may have to fetch the dependencies first."""


def _tool(name: str) -> Path | None:
    """A packaging tool from this virtualenv (the dev extra installs them), else from PATH."""
    local = Path(sys.executable).parent / name
    found = local if local.exists() else shutil.which(name)
    return Path(found) if found else None


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    uv = _tool("uv")
    require(uv is not None, "uv", "`pip install uv` (it is in the dev extra)")
    assert uv is not None
    out = tmp_path_factory.mktemp("dist")
    # `uv build` builds the sdist, then the wheel from the sdist: a file missing from the sdist fails here.
    built = subprocess.run([str(uv), "build", "--out-dir", str(out), "--python", sys.executable, str(REPO)],
                           env={**os.environ, "UV_CACHE_DIR": str(UV_CACHE)}, capture_output=True, text=True,
                           timeout=LIMIT_S)
    assert built.returncode == 0, built.stderr
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return Dist(wheel, sdist)


def test_the_wheel_and_sdist_carry_the_license_the_extension_and_one_version(dist: Dist) -> None:
    assert dist.wheel.name == f"compass_bridge-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        info = f"compass_bridge-{__version__}.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
        manifest = json.loads(wheel.read("mcp_bridge/_extension/manifest.json"))
    assert f"{info}/licenses/LICENSE" in names
    assert {"mcp_bridge/_extension/background.js", "native_host/__main__.py"} <= names
    assert f"Version: {__version__}\n" in metadata and "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata and "Classifier: Programming Language :: Python :: 3.11" in metadata
    assert manifest["version"] == __version__
    with tarfile.open(dist.sdist) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"LICENSE", "CHANGELOG.md", "extension/manifest.json", "pyproject.toml"} <= members


@dataclass(frozen=True)
class Installed:
    bin_dir: Path
    env: dict[str, str]

    def command(self, name: str = "compass-bridge") -> Path:
        return self.bin_dir / name

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.command()), *args], env=self.env, capture_output=True, text=True,
                              timeout=LIMIT_S)


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    """A throwaway home and state dir, no virtualenv of ours, and the shared uv cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "COMPASS_BRIDGE_HOME")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), COMPASS_BRIDGE_HOME=str(tmp_path / "bridge"), UV_CACHE_DIR=str(UV_CACHE),
               UV_PYTHON_DOWNLOADS="never", XDG_RUNTIME_DIR=str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    return env


@pytest.fixture(params=["uv", "pipx"])
def installed(request: pytest.FixtureRequest, dist: Dist, tmp_path: Path) -> Iterator[Installed]:
    tool = _tool(str(request.param))
    require(tool is not None, str(request.param), f"`pip install {request.param}` (it is in the dev extra)")
    assert tool is not None
    env = _fresh_env(tmp_path)
    bin_dir = tmp_path / "bin"
    if request.param == "uv":
        env.update(UV_TOOL_DIR=str(tmp_path / "tools"), UV_TOOL_BIN_DIR=str(bin_dir))
        argv = [str(tool), "tool", "install", "--python", sys.executable, str(dist.wheel)]
    else:
        env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(bin_dir),
                   PIPX_MAN_DIR=str(tmp_path / "man"))
        argv = [str(tool), "install", "--python", sys.executable, str(dist.wheel)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=LIMIT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    yield Installed(bin_dir, env)


def test_the_installed_commands_run_from_their_own_environment(installed: Installed, tmp_path: Path) -> None:
    assert installed.run("--version").stdout.strip() == f"compass-bridge {__version__}"
    host = subprocess.run([str(installed.command("compass-bridge-native-host")), "--version"],
                          env=installed.env, capture_output=True, text=True)
    assert host.stdout.startswith(f"compass-bridge-native-host {__version__} ")

    doctor = installed.run("doctor", "--json")
    report = json.loads(doctor.stdout)
    package = next(c for c in report["checks"] if c["area"] == "package")
    # It runs from the tool's environment, not from this checkout's virtualenv.
    assert package["status"] == "ok" and str(tmp_path) in package["detail"], package
    assert not [c for c in report["checks"] if c["status"] == "fail"], report

    # The extension ships in the wheel: before `install` it is found inside the tool's environment.
    where = json.loads(installed.run("extension", "path", "--json").stdout)
    assert where["path"].startswith(str(tmp_path)) and Path(where["path"], "manifest.json").is_file()
    assert where["version"] == __version__ and not where["stable"]


@pytest.mark.anyio
async def test_a_serve_session_from_the_installed_command(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "notes.txt").write_text("installed from a wheel\n")
    params = StdioServerParameters(command=str(installed.command()), args=["serve", "--root", str(root)],
                                   env=installed.env, cwd=root)
    with anyio.fail_after(LIMIT_S):
        async with Client(params, mode="legacy", cache=None, read_timeout_seconds=60) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"bridge_status", "read_file", "write_file"} <= names
            result = await client.call_tool("read_file", {"path": "notes.txt"})
    assert not result.is_error
    text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
    assert "installed from a wheel" in text


@pytest.mark.parametrize("runner", ["uvx", "pipx run"])
def test_install_from_an_ephemeral_environment_pins_nothing(runner: str, dist: Dist, tmp_path: Path) -> None:
    tool = _tool(runner.split()[0] if runner != "uvx" else "uv")
    require(tool is not None, runner, "`pip install uv pipx` (they are in the dev extra)")
    assert tool is not None
    env = _fresh_env(tmp_path)
    home = Path(env["HOME"])
    (home / ".config" / "chromium").mkdir(parents=True)  # a browser install would write for
    if runner == "uvx":
        argv = [str(tool), "tool", "run", "--python", sys.executable, "--from", str(dist.wheel), "compass-bridge"]
    else:
        env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"),
                   PIPX_MAN_DIR=str(tmp_path / "man"))
        argv = [str(tool), "run", "--python", sys.executable, "--spec", str(dist.wheel), "compass-bridge"]
    done = subprocess.run([*argv, "install", "--no-clients"], env=env, capture_output=True, text=True,
                          timeout=LIMIT_S)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nothing was installed" in done.stdout and "uv tool install" in done.stdout, done.stdout
    assert "Chromium: manifest ~/.config/chromium/NativeMessagingHosts/com.compass_bridge.host.json — will be " \
        "created" in done.stdout
    # (uv and pipx keep their own state under HOME; nothing of ours may be there.)
    assert not list(home.rglob("com.compass_bridge.host.json"))
    assert not Path(env["COMPASS_BRIDGE_HOME"], "data").exists()

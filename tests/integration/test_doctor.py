"""`compass-bridge doctor` on a real install in an isolated home: all green, then each planted fault is found
and named — and nothing else is reported broken."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.install import HOST_NAME, manifests

REF = manifests.origin(manifests.reference_extension_id())
CHROMIUM = Path(".config/chromium/NativeMessagingHosts") / f"{HOST_NAME}.json"
CHROME = Path(".config/google-chrome/NativeMessagingHosts") / f"{HOST_NAME}.json"


class Machine:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.bridge = tmp / "bridge"
        for d in (self.home / ".config/chromium", self.home / ".config/google-chrome", tmp / "bin"):
            d.mkdir(parents=True)
        # No `claude` on this PATH: the Claude Code check is a warning here (the e2e test has the real CLI).
        self.env = {"HOME": str(self.home), "COMPASS_BRIDGE_HOME": str(self.bridge), "PATH": str(tmp / "bin")}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mcp_bridge", *args], env=self.env, capture_output=True,
                              text=True, cwd=self.tmp)

    def doctor(self) -> tuple[int, list[dict[str, str]]]:
        done = self.cli("doctor", "--json")
        report = json.loads(done.stdout)
        assert report["ok"] is (done.returncode == 0)
        checks: list[dict[str, str]] = report["checks"]
        return done.returncode, checks

    @property
    def launcher(self) -> Path:
        return self.bridge / "data" / "native-host" / "compass-bridge-host"


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    found = Machine(tmp_path)
    done = found.cli("install")
    assert done.returncode == 0, done.stdout + done.stderr
    return found


def failures(checks: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {c["area"]: c for c in checks if c["status"] == "fail"}


def test_a_fresh_install_is_all_green(machine: Machine) -> None:
    code, checks = machine.doctor()
    assert failures(checks) == {} and code == 0
    by_area = {c["area"]: c for c in checks}
    assert by_area[f"manifest ~/{CHROMIUM}"]["status"] == "ok"
    assert by_area[f"manifest ~/{CHROME}"]["status"] == "ok"
    self_test = by_area[f"self-test {machine.launcher}"]
    assert self_test["status"] == "ok" and "pong" in self_test["detail"]
    assert by_area["runtime dir"]["status"] == "ok"
    assert by_area["key 'claude-code'"]["status"] == "ok"
    assert by_area["Claude Code"]["status"] == "warn"  # not on PATH here: a warning, not a failure
    # The human form says the same.
    text = machine.cli("doctor")
    assert text.returncode == 0 and "[ok]   self-test" in text.stdout


def _remove_manifest(m: Machine) -> None:
    (m.home / CHROMIUM).unlink()


def _launcher_not_executable(m: Machine) -> None:
    m.launcher.chmod(0o644)


def _origin_of_another_extension(m: Machine) -> None:
    path = m.home / CHROMIUM
    data = json.loads(path.read_text())
    data["allowed_origins"] = [manifests.origin("b" * 32)]
    path.write_text(json.dumps(data))


def _malformed_origin(m: Machine) -> None:
    path = m.home / CHROME
    data = json.loads(path.read_text())
    data["allowed_origins"].append("chrome-extension://" + "b" * 32)  # no trailing slash
    path.write_text(json.dumps(data))


def _runtime_dir_open_to_others(m: Machine) -> None:
    run = m.bridge / "run"
    run.mkdir(exist_ok=True)
    run.chmod(0o755)


def _key_revoked(m: Machine) -> None:
    assert m.cli("keys", "revoke", "claude-code").returncode == 0


Plant = Callable[[Machine], None]


@pytest.mark.parametrize(("plant", "expected"), [
    (_remove_manifest, {f"manifest ~/{CHROMIUM}": "missing, although install wrote it"}),
    (_launcher_not_executable, {"launcher {launcher}": "not executable"}),
    (_origin_of_another_extension, {f"manifest ~/{CHROMIUM}": f"does not include the reference extension {REF}"}),
    (_malformed_origin, {f"manifest ~/{CHROME}": "malformed allowed_origins"}),
    # The host refuses such a directory, so the live self-test fails too, and says why.
    (_runtime_dir_open_to_others, {"runtime dir": "mode 0755, expected 0700",
                                   "self-test {launcher}": "mode 0755"}),
    (_key_revoked, {"key 'claude-code'": "is revoked"}),
], ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_doctor_names_each_planted_fault(machine: Machine, plant: Plant, expected: dict[str, str]) -> None:
    plant(machine)
    code, checks = machine.doctor()
    found = failures(checks)
    wanted = {area.format(launcher=machine.launcher): text for area, text in expected.items()}
    assert set(found) == set(wanted), json.dumps(checks, indent=1)
    for area, text in wanted.items():
        assert text in found[area]["detail"], found[area]
        assert found[area]["fix"] or area.startswith("self-test"), found[area]
    assert code == 1


def test_reinstall_repairs_what_doctor_found(machine: Machine) -> None:
    for plant in (_remove_manifest, _launcher_not_executable, _malformed_origin, _key_revoked):
        plant(machine)
    assert machine.doctor()[0] == 1
    assert machine.cli("install").returncode == 0
    code, checks = machine.doctor()
    assert failures(checks) == {} and code == 0


def test_doctor_without_an_install_says_what_to_run(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    code, checks = machine.doctor()
    by_area: dict[str, Any] = {c["area"]: c for c in checks}
    assert by_area["install"]["status"] == "warn" and by_area["install"]["fix"] == "run `compass-bridge install`"
    assert by_area["Google Chrome"]["status"] == "warn" and "--browser chrome" in by_area["Google Chrome"]["fix"]
    assert code == 0


def test_doctor_says_where_the_logs_are(machine: Machine) -> None:
    _, checks = machine.doctor()
    logs = next(c for c in checks if c["area"] == "logs")
    assert logs["status"] == "ok" and logs["detail"].startswith(f"{machine.bridge / 'logs'} (one file per process")


def _cursor_config(m: Machine) -> Path:
    return m.home / ".cursor/mcp.json"


def _key_reference_deleted(m: Machine) -> None:
    (m.bridge / "data/key-refs/cursor").unlink()


def _key_written_into_the_config(m: Machine) -> None:
    data = json.loads(_cursor_config(m).read_text())
    entry = data["mcpServers"]["compass"]
    entry["env"] = {"COMPASS_BRIDGE_KEY": (m.bridge / "data/key-refs/cursor").read_text().strip()}
    entry["args"] = entry["args"][:-2]
    _cursor_config(m).write_text(json.dumps(data))


def _entry_removed(m: Machine) -> None:
    _cursor_config(m).write_text('{"mcpServers": {}}')


@pytest.mark.parametrize(("plant", "expected"), [
    (_key_reference_deleted, "no such key reference"),
    (_key_written_into_the_config, "holds the bridge key itself"),
    (_entry_removed, "is gone"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_doctor_checks_each_registered_client(tmp_path: Path, plant: Plant, expected: str) -> None:
    machine = Machine(tmp_path)
    (machine.home / ".cursor").mkdir()
    done = machine.cli("install", "--client", "cursor")
    assert done.returncode == 0, done.stdout + done.stderr
    code, checks = machine.doctor()
    assert next(c for c in checks if c["area"] == "Cursor")["status"] == "ok" and code == 0
    plant(machine)
    code, checks = machine.doctor()
    found = failures(checks)
    assert set(found) == {"Cursor"} and expected in found["Cursor"]["detail"], json.dumps(checks, indent=1)
    assert "compass-bridge install --client cursor" in found["Cursor"]["fix"] and code == 1
    assert machine.cli("install", "--client", "cursor").returncode == 0  # and install repairs it
    assert failures(machine.doctor()[1]) == {}


def test_an_entry_left_to_add_by_hand_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    machine = Machine(tmp_path)
    _cursor_config(machine).parent.mkdir()
    _cursor_config(machine).write_text('{"mcpServers": ')
    done = machine.cli("install", "--client", "cursor")
    assert done.returncode == 1 and "by hand:" in done.stdout
    code, checks = machine.doctor()
    cursor = next(c for c in checks if c["area"] == "Cursor")
    assert cursor["status"] == "warn" and "not JSON or JSONC" in cursor["detail"] and code == 0
    _cursor_config(machine).write_text("{}")
    cursor = next(c for c in machine.doctor()[1] if c["area"] == "Cursor")
    assert cursor["status"] == "warn" and "add the entry install printed" in cursor["fix"]

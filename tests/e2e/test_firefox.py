"""A real headless Firefox ESR runs the reference extension, which starts the real native host.

The same extension source that Chromium loads unpacked is packed into an XPI and installed into a fresh
profile as an unsigned add-on (ESR, Developer Edition and Nightly allow that with
`xpinstall.signatures.required=false`; release Firefox needs a signed one: extension/README.md). Firefox finds
the host through `~/.mozilla/native-messaging-hosts/com.compass_bridge.host.json`, written by the real
`compass-bridge install` into a throwaway HOME, so this is the path a user's Firefox takes. An agent then uses
all 7 browser tools through `compass-bridge serve` against a page on loopback.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mcp_types as types
import pytest

from mcp_bridge import __version__
from mcp_bridge.install import HOST_NAME, manifests
from native_host.client import HostAddress, discover_hosts
from tests.conftest import REPO, require
from tests.support import leftovers
from tests.support.bridge import bridge_client, create_key, text_of, wait_for_tool
from tests.support.chromium import LIMIT_S, QuietHandler, browser_env, serve_http, stop, wait_for
from tests.support.processes import alive

pytestmark = [pytest.mark.e2e]

PAGE = ("<!doctype html><title>Firefox form</title><p>The river is called Amberwell.</p><input id=q>"
        "<button id=go onclick=\"document.getElementById('out').textContent="
        "'sent:'+document.getElementById('q').value\">Go</button><p id=out></p>")

# Only what a test profile needs: unsigned add-ons from the profile allowed and enabled, and no first-run
# pages or background network (this machine has none, and waiting on it only slows the start).
PREFS = {
    "xpinstall.signatures.required": False,
    "extensions.autoDisableScopes": 0,
    "extensions.enabledScopes": 15,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "browser.safebrowsing.update.enabled": False,
    "network.captive-portal-service.enabled": False,
    "extensions.getAddons.cache.enabled": False,
}


def firefox() -> Path | None:
    found = os.environ.get("FIREFOX") or shutil.which("firefox-esr") or shutil.which("firefox")
    return Path(found) if found else None


def addon_id() -> str:
    found = manifests.reference_firefox_addon_id()
    assert found, "extension/manifest.json declares no browser_specific_settings.gecko.id"
    return found


def write_profile(profile: Path) -> None:
    """A fresh profile with the reference extension installed from this checkout's files."""
    extensions = profile / "extensions"
    extensions.mkdir(parents=True)
    with zipfile.ZipFile(extensions / f"{addon_id()}.xpi", "w") as xpi:
        for path in sorted((REPO / "extension").iterdir()):
            if path.name != "policy.json":
                xpi.write(path, path.name)
        # The test drives its loopback page as an agent; the extension acts only on shared sites
        # (extension/consent.js), so share loopback the way an administrator would.
        xpi.writestr("policy.json", json.dumps({"grantedSites": ["http://127.0.0.1:*"], "pageOrigins": []}))
    (profile / "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                                             for k, v in PREFS.items()))


class _Page(QuietHandler):
    def do_GET(self) -> None:
        if self.path != "/":
            self.send_error(404)
            return
        self.send_html(PAGE.encode())


@dataclass
class Firefox:
    home: Path
    bridge_home: Path
    url: str
    hosts: list[HostAddress]


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_bridge", *args], env=env, capture_output=True, text=True)


@pytest.fixture
def firefox_with_extension(tmp_path: Path, bridge_home: Path) -> Iterator[Firefox]:
    binary = firefox()
    require(binary is not None, "Firefox ESR",
            "install it (`apt-get install -y firefox-esr`) or point FIREFOX at a Firefox binary")
    assert binary is not None
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "COMPASS_BRIDGE_HOME": str(bridge_home)}
    installed = _run_cli(env, "install", "--browser", "firefox", "--no-clients")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    written = manifests.read(home / ".mozilla" / "native-messaging-hosts" / f"{HOST_NAME}.json")
    # Install allows the reference add-on by default: no --firefox-extension-id needed.
    assert written is not None and written["allowed_extensions"] == [addon_id()]

    profile = tmp_path / "profile"
    write_profile(profile)
    scratch = Path(tempfile.mkdtemp(prefix="cb-ff-"))
    browser = {**browser_env(tmp_path, scratch), "HOME": str(home), "MOZ_HEADLESS": "1"}
    run_dir = bridge_home / "run"
    seen: set[int] = set()

    def hosts() -> list[HostAddress]:
        found = discover_hosts(run_dir)
        seen.update(h.pid for h in found)
        return found

    with serve_http(_Page) as base_url, (tmp_path / "firefox.log").open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "--headless", "--no-remote", "--profile", str(profile), f"{base_url}/"],
            stdout=log, stderr=subprocess.STDOUT, env=browser, start_new_session=True)
        try:
            def started() -> bool:
                assert process.poll() is None, f"Firefox exited with {process.returncode}; see {log.name}"
                return bool(hosts())

            wait_for(started, "Firefox's extension to start the native host")
            yield Firefox(home, bridge_home, base_url, hosts())
            hosts()
        finally:
            stop(process)
            shutil.rmtree(scratch, ignore_errors=True)
            wait_for(lambda: not any(alive(pid) for pid in seen), "the native hosts to exit")
            # The extension asks for the run service's status at start: the host's link starts one, detached.
            leftovers.stop_run_service(bridge_home, run_dir)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.anyio
async def test_firefox_runs_all_seven_browser_tools_for_an_agent(firefox_with_extension: Firefox) -> None:
    ff = firefox_with_extension
    [host] = ff.hosts
    key = create_key(ff.bridge_home, "firefox-e2e", "admin")["key"]
    async with bridge_client(ff.bridge_home, key=key) as client:
        await wait_for_tool(client, "browser_evaluate", LIMIT_S)

        async def call(name: str, args: dict[str, object]) -> types.CallToolResult:
            result = await client.call_tool(name, args)
            assert not result.is_error, f"{name}: {text_of(result)}"
            return result

        tabs = json.loads(text_of(await call("browser_tabs_list", {})))["tabs"]
        assert any(t["url"] == f"{ff.url}/" for t in tabs), tabs
        loaded = json.loads(text_of(await call("browser_navigate", {"url": f"{ff.url}/"})))
        assert loaded["title"] == "Firefox form" and loaded["status"] == "complete"
        page = json.loads(text_of(await call("browser_get_page_text", {})))
        assert "The river is called Amberwell." in page["text"]
        typed = json.loads(text_of(await call("browser_type_text", {"selector": "#q", "text": "otter"})))
        assert typed["value"] == "otter"
        clicked = json.loads(text_of(await call("browser_click", {"selector": "#go"})))
        assert clicked["tag"] == "button"
        evaluated = await call("browser_evaluate", {"expression": "document.getElementById('out').textContent"})
        assert json.loads(text_of(evaluated))["value"] == "sent:otter"
        shot = await call("browser_screenshot", {})
        [image] = [c for c in shot.content if isinstance(c, types.ImageContent)]
        width, height = _png_size(base64.b64decode(image.data))
        assert width > 100 and height > 100

    # Firefox started the host with the manifest's path and the add-on ID (Chromium passes an origin).
    log = (ff.bridge_home / "logs" / "native-host.log").read_text()
    assert "started (version" in log and repr(addon_id()) in log
    assert f"[{host.pid}] extension 'compass-bridge'" in log and "says hello with 7 tools" in log

    # doctor sees the Firefox manifest, the extension's copy and the live host with its extension.
    env = {**os.environ, "HOME": str(ff.home), "COMPASS_BRIDGE_HOME": str(ff.bridge_home)}
    report = json.loads(_run_cli(env, "doctor", "--json").stdout)
    by_area = {c["area"]: c for c in report["checks"]}
    assert not [c for c in report["checks"] if c["status"] == "fail"], report
    assert by_area[f"manifest ~/.mozilla/native-messaging-hosts/{HOST_NAME}.json"]["status"] == "ok"
    assert by_area["extension"]["status"] == "ok" and "about:debugging" in by_area["extension"]["detail"]
    assert f"compass-bridge {__version__} with 7 tools" in by_area[f"live host pid {host.pid}"]["detail"]

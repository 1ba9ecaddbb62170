"""The browser drives agent runs (docs/SIDE_PANEL.md), in real headless Chromium with the reference extension:
the side panel (opened as chrome-extension://ID/sidepanel.html in a tab, driven through its DOM over the DevTools
protocol), a web page on an allowlisted origin starting runs through externally_connectable, consent for browser
tools, the stop switch. Runs are real: the run service with the real Claude Code CLI, offline against the
scripted Messages API. One browser and one run service for the whole module. The side panel's screenshots are
taken every run; with COMPASS_UPDATE_SCREENSHOTS=1 they also replace docs/side-panel-*.png (docs/SIDE_PANEL.md shows
them), as test_usage_html.py does for the usage report.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcp_bridge.extension_id import REFERENCE_EXTENSION_ID
from native_host.client import HostClient, RelayError, discover_hosts
from tests.agent.harness import Harness, check_chunks
from tests.conftest import REPO, chromium, require
from tests.support.cdp import Cdp, Tab
from tests.support.chromium import FLAGS, QuietHandler, browser_env, serve_http, stop, wait_for
from tests.support.claude_code import CURRENT, ClaudeCode
from tests.support.messages_api import MessagesApi
from tests.support.processes import alive

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

HOST_NAME = "com.compass_bridge.host"
PANEL = f"chrome-extension://{REFERENCE_EXTENSION_ID}/sidepanel.html"
DOCS = REPO / "docs"


async def screenshot(panel: Tab, out: Path, name: str) -> None:
    """The side panel as docs/SIDE_PANEL.md shows it, into `out`; into docs/ too when asked to update them (a test
    run leaves the checkout as it found it)."""
    shot = out / name
    await panel.screenshot(shot)
    assert shot.stat().st_size > 0
    if os.environ.get("COMPASS_UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, DOCS / name)

def write(path: Path) -> str:
    """A directive for Claude Code's Write: reviewed (a write inside the roots), within a `write` page's scopes."""
    return "@@tool Write " + json.dumps({"file_path": str(path), "content": "made"}) + "@@"

# The test page: connects to the extension with page-client.js and keeps what it receives in window.seen.
PAGE = f"""<!doctype html><title>Runs page</title><script src="/page-client.js"></script>
<p>A page that starts local agent runs.</p><script>
window.seen = []; window.outcome = null;
window.bridge = new CompassBridge.Client({json.dumps(REFERENCE_EXTENSION_ID)});
window.bridge.on((m) => window.seen.push(m));
window.connected = window.bridge.connect()
  .then((user) => ({{ok: true, user}}), (e) => ({{ok: false, error: e.message}}));
</script>"""
PLAIN = "<!doctype html><title>Plain page</title><p>The plain page says heliotrope.</p>"


class _Pages(QuietHandler):
    release: threading.Event

    def do_GET(self) -> None:
        if self.path == "/page-client.js":
            data = (REPO / "extension" / "page-client.js").read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/slow":
            self.release.wait()
            self.send_html(b"<title>slow</title>")
        elif self.path in ("/", "/plain"):
            self.send_html((PAGE if self.path == "/" else PLAIN).encode())
        else:
            self.send_error(404)


@dataclass
class World:
    harness: Harness
    base: str
    """http://127.0.0.1:PORT: in [page_origins] with the scope `read`, so allowed from the start."""
    other: str
    """http://localhost:PORT: not configured, so not in externally_connectable either."""
    profile: Path
    home: Path

    @asynccontextmanager
    async def cdp(self) -> AsyncIterator[Cdp]:
        cdp = await Cdp.open(self.profile)
        try:
            yield cdp
        finally:
            await cdp.close()

    @asynccontextmanager
    async def agent(self) -> AsyncIterator[HostClient]:
        """A protocol client of the browser's host, as an agent's `serve` would be."""
        [address] = [h for h in discover_hosts(self.home / "run") if h.kind == "unix"]
        client = await HostClient.connect(address, name="e2e agent", version="1")
        try:
            yield client
        finally:
            await client.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    binary = chromium()
    require(binary is not None, "Chromium", "install it (`apt-get install -y chromium`) or set CHROMIUM")
    assert binary is not None
    claude = ClaudeCode(CURRENT).binary
    root = Path(tempfile.mkdtemp(prefix="cb-sp-"))  # socket paths must stay short
    release = threading.Event()
    try:
        with MessagesApi() as api, serve_http(type("Pages", (_Pages,), {"release": release})) as base:
            # Runs from the browser work in the first root (a page never names a directory).
            project = root / "h" / "home" / "project"
            # The test page's origin may start runs, write-scoped; `extension export` sets the extension up for it.
            harness = Harness(root / "h", api.url, f'roots = ["{project}"]\n[agent]\nreview_timeout_s = 120\n'
                              f'[page_origins]\n"{base}" = "write"\n', claude)
            harness.start()
            profile = root / "profile"
            (profile / "NativeMessagingHosts").mkdir(parents=True)
            launcher = root / "host.sh"
            launcher.write_text(f"#!/bin/sh\nCOMPASS_BRIDGE_HOME='{harness.bridge_home}' exec '{sys.executable}' "
                                "-m native_host \"$@\"\n")
            launcher.chmod(0o755)
            (profile / "NativeMessagingHosts" / f"{HOST_NAME}.json").write_text(json.dumps({
                "name": HOST_NAME, "description": "e2e", "path": str(launcher), "type": "stdio",
                "allowed_origins": [f"chrome-extension://{REFERENCE_EXTENSION_ID}/"]}))
            extension = root / "extension"
            exported = harness.cli("extension", "export", str(extension))
            assert exported.returncode == 0, exported.stderr
            scratch = root / "tmp"
            scratch.mkdir()
            log = (root / "chromium.log").open("wb")
            process = subprocess.Popen(
                [str(binary), *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                 f"--load-extension={extension}", f"--disable-extensions-except={extension}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, env=browser_env(root, scratch), start_new_session=True)
            hosts: set[int] = set()
            try:
                def host_up() -> bool:
                    assert process.poll() is None, (root / "chromium.log").read_text()[-2000:]
                    hosts.update(h.pid for h in discover_hosts(harness.bridge_home / "run"))
                    return bool(hosts)

                wait_for(host_up, "the extension to start the native host")
                port = base.rsplit(":", 1)[1]
                yield World(harness, base, f"http://localhost:{port}", profile, harness.bridge_home)
            finally:
                release.set()
                stop(process)
                log.close()
                wait_for(lambda: not any(alive(pid) for pid in hosts), "the native hosts to exit")
                harness.stop()
                harness.stop_detached()  # one the host's link started after a test stopped the first
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def panel_of(cdp: Cdp) -> Tab:
    panel = await cdp.open_tab(PANEL)
    await panel.wait_for("document.querySelector('#status-host').className === 'ok'")
    return panel


def origin_item(world: World) -> str:
    return f"#page-origins li[data-origin='{world.base}']"


async def allow_page(cdp: Cdp, world: World) -> Tab:
    """The test page's (configured) origin is allowed: unblocked in the side panel if a test blocked it; returns
    the panel."""
    panel = await panel_of(cdp)
    item = json.dumps(origin_item(world))
    if await panel.wait_for(f"document.querySelector({item})?.dataset.state") == "blocked":
        await click(panel, origin_item(world) + " button")
        await panel.wait_for(f"document.querySelector({item}).dataset.state === 'allowed'")
    return panel


async def click(tab: Tab, selector: str) -> None:
    await tab.wait_for(f"!!document.querySelector({json.dumps(selector)})")
    await tab.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


async def page_messages(page: Tab, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate(f"window.seen.filter((m) => m.type === {json.dumps(kind)})")
    return found


async def test_1_status_allowlist_and_a_refused_origin(world: World, tmp_path: Path) -> None:
    async with world.cdp() as cdp:
        panel = await panel_of(cdp)
        assert await panel.evaluate("document.querySelector('#status-host .state').textContent") == "connected"

        # Not in [page_origins]: the exported extension does not list it in externally_connectable, so the
        # browser does not even let the page connect.
        other = await cdp.open_tab(f"{world.other}/")
        verdict = await other.evaluate("window.connected")
        assert verdict["ok"] is False and "externally_connectable" in verdict["error"], verdict

        # The configured origin is allowed from the start. The user can block it in the side panel: its open page
        # hears auth_error and is disconnected, a new one is refused; and allow it again.
        item = json.dumps(origin_item(world))
        assert await panel.wait_for(f"document.querySelector({item})?.dataset.state") == "allowed"
        page = await cdp.open_tab(f"{world.base}/")
        assert (await page.evaluate("window.connected"))["ok"]
        await click(panel, origin_item(world) + " button")
        await panel.wait_for(f"document.querySelector({item}).dataset.state === 'blocked'")
        cut = await page.wait_for("window.seen.find((m) => m.type === 'auth_error')")
        assert f"blocked {world.base}" in cut["message"], cut
        await page.wait_for("window.bridge.port === null")
        await page.navigate(f"{world.base}/")
        verdict = await page.evaluate("window.connected")
        assert verdict["ok"] is False and "blocked it in the side panel" in verdict["error"], verdict
        await page.close()
        await panel.close()
        panel = await allow_page(cdp, world)
        page = await cdp.open_tab(f"{world.base}/")
        verdict = await page.evaluate("window.connected")
        assert verdict == {"ok": True, "user": {"id": "local", "name": "compass-bridge", "role": "user"}}
        # The run service comes up with the first run; the status then shows it and Compass's state.
        await screenshot(panel, tmp_path, "side-panel-status.png")
        await other.close()
        await page.close()
        await panel.close()


async def test_2_a_page_run_reviewed_in_the_side_panel_then_resumed(world: World, tmp_path: Path) -> None:
    async with world.cdp() as cdp:
        panel = await allow_page(cdp, world)
        page = await cdp.open_tab(f"{world.base}/")
        assert (await page.evaluate("window.connected"))["ok"]
        target = world.harness.project / "from-page.txt"
        prompt = "make it " + write(target)
        run_id = await page.evaluate(
            "window.bridge.send({messages: [{role: 'user', parts: [{type: 'text', text: " + json.dumps(prompt) +
            "}]}]}).then((r) => { window.run = r; (async () => { window.chunks = []; try { for await (const c of "
            "r.chunks) window.chunks.push(c); window.outcome = 'done'; } catch (e) { window.outcome = e.message; } "
            "})(); return r.runId; })")
        assert isinstance(run_id, str) and run_id.startswith("r_")

        # The review shows in the side panel (tool, summary, risk, input) and badges the action.
        review = await panel.wait_for("(() => { const r = document.querySelector('.review'); return r && "
                                      "{id: r.dataset.approvalId, tool: r.querySelector('.tool').textContent, "
                                      "summary: r.querySelector('.summary').textContent, "
                                      "input: r.querySelector('textarea').value}; })()")
        assert review["tool"] == "Write" and str(target) in review["summary"], review
        assert json.loads(review["input"])["file_path"] == str(target)
        await screenshot(panel, tmp_path, "side-panel-review.png")

        # The page sees only the review's state, nothing to answer it with — and cannot answer it.
        requested = await page.wait_for("window.chunks && window.chunks.find((c) => c.type === 'data-permission')")
        assert requested["data"]["state"] == "requested" and "approvalId" not in requested["data"], requested
        await page.evaluate("window.bridge.post({type: 'run_answer', approval_id: " + json.dumps(review["id"]) +
                            ", decision: 'allow'})")
        refusal = await page.wait_for("window.seen.find((m) => m.type === 'chat.error' && !m.runId)")
        assert "answered only in the compass-bridge side panel" in refusal["error"]
        assert not target.exists()

        await click(panel, f".review[data-approval-id='{review['id']}'] .allow")
        assert await page.wait_for("window.outcome", limit_s=120) == "done"
        chunks = await page.evaluate("window.chunks")
        check_chunks([chunks], tmp_path / "page")
        states = [c["data"]["state"] for c in chunks if c["type"] == "data-permission"]
        assert states[0] == "requested" and states[-1] == "allowed", states
        assert target.read_text() == "made"
        await panel.wait_for("document.querySelectorAll('.review').length === 0")
        await panel.wait_for("document.querySelector('#transcript .msg-tool') !== null")
        await screenshot(panel, tmp_path, "side-panel-chat.png")

        # Reopen the page: it resumes the run by id and gets the same stream again, to chat.done.
        await page.navigate(f"{world.base}/")
        assert (await page.evaluate("window.connected"))["ok"]
        await page.evaluate("(async () => { window.again = []; for await (const c of window.bridge.resume(" +
                            json.dumps(run_id) + ", 0)) window.again.push(c); window.outcome = 'resumed'; })()")
        assert await page.wait_for("window.outcome") == "resumed"
        assert await page.evaluate("window.again") == chunks
        await page.close()
        await panel.close()


async def test_3_a_review_answered_from_the_terminal(world: World, tmp_path: Path) -> None:
    async with world.cdp() as cdp:
        await (await allow_page(cdp, world)).close()
        page = await cdp.open_tab(f"{world.base}/")
        assert (await page.evaluate("window.connected"))["ok"]
        target = world.harness.project / "from-cli.txt"
        prompt = "again " + write(target)
        await page.evaluate(
            "window.bridge.send({messages: [{role: 'user', content: " + json.dumps(prompt) + "}]}).then((r) => {"
            " window.chunks = []; (async () => { try { for await (const c of r.chunks) window.chunks.push(c);"
            " window.outcome = 'done'; } catch (e) { window.outcome = e.message; } })(); })")
        await page.wait_for("window.chunks && window.chunks.some((c) => c.type === 'data-permission')")
        listed = json.loads(world.harness.cli("approvals", "list", "--json").stdout)
        [review] = listed if isinstance(listed, list) else listed["approvals"]
        answered = world.harness.cli("approvals", "allow", review["id"])
        assert answered.returncode == 0, answered.stderr
        assert await page.wait_for("window.outcome", limit_s=120) == "done"
        check_chunks([await page.evaluate("window.chunks")], tmp_path / "cli")
        assert target.read_text() == "made"
        await page.close()


async def test_4_consent_for_browser_tools_and_the_stop_switch(world: World) -> None:
    async with world.cdp() as cdp, world.agent() as agent:
        plain = await cdp.open_tab(f"{world.base}/plain")
        listed = await agent.request("tabs_list", {})
        assert listed["tabs"] == [] and listed["hidden"] >= 1 and "Share tab" in listed["how"], listed

        panel = await panel_of(cdp)
        tab_id = int(await panel.wait_for(
            f"[...document.querySelectorAll('#tabs li')].find((li) => li.querySelector('.title').title === "
            f"{json.dumps(world.base + '/plain')})?.dataset.tabId"))
        with pytest.raises(RelayError) as refused:
            await agent.request("get_page_text", {"tabId": tab_id})
        assert "is not shared with agents" in refused.value.message and "Share site" in refused.value.message

        # The user shares the site: the same call works.
        await click(panel, f"#tabs li[data-tab-id='{tab_id}'] .share-site")
        await panel.wait_for(f"!!document.querySelector(\"#sites [data-site='{world.base}']\")")
        text = await agent.request("get_page_text", {"tabId": tab_id})
        assert "heliotrope" in text["text"]

        # The stop switch ends an action under way (a page that never loads) and refuses new ones until it is off.
        pending = asyncio.create_task(agent.request("navigate", {"tabId": tab_id, "url": f"{world.base}/slow"},
                                                    timeout=120))
        # The tab an agent acts on says so on the toolbar icon.
        badge = f"chrome.action.getBadgeText({{tabId: {tab_id}}})"
        assert await panel.wait_for(f"{badge}.then((text) => text === 'AI')")
        assert not pending.done()
        await click(panel, "#stop-switch")
        with pytest.raises(RelayError) as stopped:
            await pending
        assert stopped.value.code == "stopped" and "Stop all browser actions" in stopped.value.message
        assert await panel.evaluate(badge) != "AI"
        with pytest.raises(RelayError) as still:
            await agent.request("get_page_text", {"tabId": tab_id})
        assert "stopped all browser actions" in still.value.message
        await click(panel, "#stop-switch")
        await panel.wait_for("!document.querySelector('#stop-switch').checked")
        assert "heliotrope" in (await agent.request("get_page_text", {"tabId": tab_id}))["text"]
        await plain.close()
        await panel.close()


async def test_5_the_side_panel_chat_starts_follows_up_and_stops_a_run(world: World) -> None:
    async with world.cdp() as cdp:
        panel = await panel_of(cdp)
        await click(panel, "#new-run")

        async def say(prompt: str) -> None:
            await panel.evaluate(f"document.querySelector('#prompt').value = {json.dumps(prompt)}")
            await click(panel, "#send")

        await say("hello from the panel")
        assert await panel.wait_for("document.querySelector('#run-state').textContent === 'done' && "
                                    "document.querySelector('#transcript').textContent.includes('ECHO:')", 120)
        run_id = (await panel.evaluate("document.querySelector('#run-id').textContent")).removeprefix("run ")
        # A follow-up continues the same run; Stop aborts it while it streams.
        await say("slowly @@slow 200@@")
        await panel.wait_for("document.querySelector('#transcript').textContent.includes('tick 2')", 120)
        assert await panel.evaluate("document.querySelector('#run-id').textContent") == f"run {run_id}"
        await click(panel, "#stop-run")
        assert await panel.wait_for("document.querySelector('#run-state').textContent === 'aborted'", 60)
        shown = await world.harness.client()
        try:
            assert (await shown.request("show", run_id=run_id))["run"]["state"] == "aborted"
        finally:
            await shown.close()
        await panel.close()


async def test_6_a_page_run_gets_only_its_origins_scopes(world: World) -> None:
    """The origin is configured `write`: its run's key cannot execute, so Claude Code's Bash is not even offered
    to the model (and a call of it would be denied by policy, never put to a person) — nothing runs."""
    async with world.cdp() as cdp:
        await (await allow_page(cdp, world)).close()
        page = await cdp.open_tab(f"{world.base}/")
        assert (await page.evaluate("window.connected"))["ok"]
        target = world.harness.project / "from-write-page"
        prompt = "run @@tool Bash " + json.dumps({"command": f"mkdir {target}", "description": "t"}) + "@@"
        run_id = await page.evaluate(
            "window.bridge.send({messages: [{role: 'user', content: " + json.dumps(prompt) + "}]}).then((r) => {"
            " window.chunks = []; window.outcome = null; (async () => { try { for await (const c of r.chunks) "
            "window.chunks.push(c); window.outcome = 'done'; } catch (e) { window.outcome = e.message; } })(); "
            "return r.runId; })")
        assert await page.wait_for("window.outcome", limit_s=120) == "done"
        chunks = await page.evaluate("window.chunks")
        assert not [c for c in chunks if c["type"] == "data-permission"]
        text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
        assert text.startswith("NO-TOOL Bash in") and '"Write"' in text, text
        assert not target.exists()
        runs = json.loads(world.harness.cli("runs", "list", "--json").stdout)
        [run] = [r for r in runs if r["id"] == run_id]
        assert run["key"] == f"page {world.base}" and run["scopes"] == "read,write", run
        # The page's key lived only for the request that started the run.
        keys = json.loads(world.harness.cli("keys", "list", "--json").stdout)
        assert not [k for k in keys if k["name"].startswith("page ")], keys
        await page.close()

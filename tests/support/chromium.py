"""A real headless Chromium with the reference extension, for the end-to-end tests.

`headless_chromium` starts the browser on a profile whose native-messaging host manifest the test has already
written (by hand or through `compass-bridge install`), waits until the extension has started the native host,
and on the way out stops the browser and everything it started, then waits for the hosts to exit with it.
`serve_http` gives the browser a loopback page to open.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from native_host.client import HostAddress, discover_hosts
from tests.conftest import REPO, chromium, require
from tests.support.processes import alive

LIMIT_S = 60.0
"""Only turns a hang into a failure: a fresh profile's first start plus the host's, on a loaded machine."""

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync")


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = LIMIT_S) -> None:
    """Poll for something another process does; the limit only turns a hang into a failure."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting {limit_s:g} s for {what}")
        time.sleep(0.05)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that does not log to stderr, with a helper to answer with an HTML page."""

    def send_html(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def serve_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free loopback port; yields the base URL (no trailing slash)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Chromium:
    """A running browser and the native hosts it has started (found in `run_dir`)."""

    process: subprocess.Popen[bytes]
    log: Path
    run_dir: Path
    host_pids: set[int] = field(default_factory=set)
    """Every host seen so far: each must have exited once the browser is stopped."""

    def hosts(self) -> list[HostAddress]:
        """The live hosts in `run_dir` (and remember them, see `host_pids`)."""
        found = discover_hosts(self.run_dir)
        self.host_pids.update(h.pid for h in found)
        return found

    def _host_started(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Chromium exited with {self.process.returncode} before it started the native "
                                 f"host; see {self.log}")
        return bool(self.hosts())


def browser_env(tmp_path: Path, scratch: Path) -> dict[str, str]:
    """This environment, minus COMPASS_BRIDGE_HOME (a browser does not have it: the launcher must supply it),
    with the XDG directories under `tmp_path` and TMPDIR at `scratch`."""
    env = dict(os.environ)
    env.pop("COMPASS_BRIDGE_HOME", None)
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        env[var] = str(tmp_path / var.lower())
        Path(env[var]).mkdir(mode=0o700, exist_ok=True)
    env["TMPDIR"] = str(scratch)
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop Chromium and everything it started: its own process group only (start_new_session)."""
    if sys.platform == "win32":
        raise NotImplementedError("Chromium is stopped by its process group, and Windows has none")
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def headless_chromium(profile: Path, url: str, run_dir: Path, tmp_path: Path) -> Iterator[Chromium]:
    """Run headless Chromium on `profile` with a copy of the reference extension, opening `url`.

    Yields once a native host has appeared in `run_dir` (the bridge home's run dir); the browser's output
    goes to `tmp_path/chromium.log`. Skips (fails under CI=true) when no Chromium is installed.
    """
    binary = chromium()
    require(binary is not None, "Chromium",
            "install it (`apt-get install -y chromium`) or point CHROMIUM at a Chromium/Chrome binary")
    assert binary is not None

    extension = tmp_path / "extension"
    shutil.copytree(REPO / "extension", extension)
    # These tests drive their own loopback pages as an agent would; the extension acts only on shared sites
    # (extension/consent.js), so share loopback the way an administrator would, in policy.json.
    (extension / "policy.json").write_text(json.dumps({"grantedSites": ["http://127.0.0.1:*"], "pageOrigins": []}))
    # Chromium puts its singleton socket under TMPDIR, and a Unix socket path may not exceed 107 bytes:
    # pytest's tmp_path is too deep for it, so this one folder lives directly in the system temp dir.
    scratch = Path(tempfile.mkdtemp(prefix="cb-e2e-"))
    log_path = tmp_path / "chromium.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), *FLAGS, f"--user-data-dir={profile}", f"--load-extension={extension}",
             f"--disable-extensions-except={extension}", url],
            stdout=log, stderr=subprocess.STDOUT, env=browser_env(tmp_path, scratch), start_new_session=True)
        browser = Chromium(process, log_path, run_dir)
        try:
            wait_for(browser._host_started, "the extension to start the native host")
            yield browser
            browser.hosts()
        finally:
            stop(process)
            shutil.rmtree(scratch, ignore_errors=True)
            # The host exits when the browser closes its stdin; make sure none outlives the test.
            wait_for(lambda: not any(alive(pid) for pid in browser.host_pids), "the native hosts to exit")

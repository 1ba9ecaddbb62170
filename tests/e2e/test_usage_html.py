"""`usage --html` rendered by a real headless Chromium: the screenshot must be a real PNG showing the charts.

With COMPASS_UPDATE_SCREENSHOTS=1 the screenshot also replaces docs/usage-report.png (the README shows it).
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from contextlib import suppress
from pathlib import Path

import pytest

from tests.conftest import REPO, chromium, require
from tests.unit.test_usage_report import write_sample_log

if sys.platform == "win32":
    pytest.skip("Chromium runs in a process group of its own (POSIX)", allow_module_level=True)

pytestmark = pytest.mark.e2e

WIDTH, HEIGHT = 1000, 1500
CHART_BLUE = (0x25, 0x63, 0xEB)  # the first series' colour in mcp_bridge/usage_report.py
REFUSED_AMBER = (0xD9, 0x77, 0x06)


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and unfiltered rows of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = previous[x], previous[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        previous = line
    return width, height, rows


def screenshot(page: Path, out: Path, profile: Path) -> None:
    binary = chromium()
    require(binary is not None, "Chromium", "install it (`apt-get install -y chromium`) or set CHROMIUM")
    assert binary is not None
    scratch = Path(tempfile.mkdtemp(prefix="cb-shot-"))  # Chromium's socket path must stay short
    env = {**os.environ, "TMPDIR": str(scratch), "HOME": str(profile)}
    process = subprocess.Popen(
        [str(binary), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
         f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={out}", page.as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        process.wait(timeout=120)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def _near(pixel: tuple[int, int, int], colour: tuple[int, int, int]) -> bool:
    return all(abs(p - c) <= 24 for p, c in zip(pixel, colour, strict=True))


def test_the_html_report_renders_with_its_charts(bridge_home: Path, tmp_path: Path) -> None:
    write_sample_log(bridge_home)
    page = tmp_path / "usage.html"
    done = subprocess.run([sys.executable, "-m", "mcp_bridge", "usage", "--since", "3d", "--html", str(page)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    png = tmp_path / "usage.png"
    screenshot(page, png, tmp_path / "profile")
    assert png.exists(), "Chromium wrote no screenshot"
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    pixels = [(row[i], row[i + 1], row[i + 2]) for row in rows[::3] for i in range(0, len(row), 9)]
    inked = sum(1 for p in pixels if sum(p) < 3 * 235)
    assert inked > len(pixels) // 50, f"only {inked} of {len(pixels)} sampled pixels are not blank"
    assert any(_near(p, CHART_BLUE) for p in pixels), "no chart line in the screenshot"
    assert any(_near(p, REFUSED_AMBER) for p in pixels), "no refusal bars"
    if os.environ.get("COMPASS_UPDATE_SCREENSHOTS"):
        shutil.copyfile(png, REPO / "docs" / "usage-report.png")

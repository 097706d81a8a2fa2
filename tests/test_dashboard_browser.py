"""The dashboard in a real headless Chromium (Debian's chromium package; .ci/run installs it).

A pool on MariaDB runs slow jobs of four priorities and one failing job, serving the dashboard
with a bearer token. Chromium opens ``/?token=...`` (the token becomes a cookie), runs the page's
JavaScript and: ``--dump-dom`` gives the DOM the script built (the SVG charts with their data
points, the share bars and limits, the failed job), ``--screenshot`` the picture, whose pixels
are checked for the charts' colours. Every host but 127.0.0.1 resolves to nothing, so the page
works offline or not at all. Without a browser the test fails: it never skips.
"""
from __future__ import annotations

import html.parser
import json
import os
import secrets
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_http import PoolRun, wait_for

import fastsched

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1280, 900)  # pixels
BROWSER_TIMEOUT = 60  # seconds one Chromium run may take
COLORS = {  # fastsched/static/dashboard.js
    "CRITICAL": (0xD6, 0x27, 0x28),
    "HIGH": (0xFF, 0x7F, 0x0E),
    "MEDIUM": (0x1F, 0x77, 0xB4),
    "LOW": (0x2C, 0xA0, 0x2C),
    "NEGLIGIBLE": (0x7F, 0x7F, 0x7F),
}
LEGEND_PIXELS = 2 * 10 * 10  # two legends of 10x10 swatches per priority
CHART_ROWS = 720  # the screenshot's rows that hold the charts and the share bars (decoding is slow)


@pytest.fixture(scope="module")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (as .ci/run does)", pytrace=False)
    return CHROMIUM


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Callable[..., PoolRun]]:
    started: list[PoolRun] = []

    def start(dsn: str, *args: str) -> PoolRun:
        started.append(PoolRun(dsn, tmp_path, *args))
        return started[-1]

    yield start
    for run in started:
        run.close()


@pytest.fixture
def profile() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fschrome")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def browse(chromium: str, profile: str, url: str, *mode: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=5000",
        *mode, url,
    ]
    os.makedirs(profile, exist_ok=True)
    result = subprocess.run(command, capture_output=True, timeout=BROWSER_TIMEOUT, check=False, cwd=profile)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


class Elements(html.parser.HTMLParser):
    """Every start tag with its attributes and the id of its nearest ancestor that has one."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, Any]] = []
        self._stack: list[tuple[str, str | None]] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        scope = attributes.get("id") or next((i for _, i in reversed(self._stack) if i), None)
        self.found.append({"tag": tag, "scope": scope, **attributes})
        if tag not in ("meta", "link", "br", "img", "input"):
            self._stack.append((tag, scope))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._text).split())

    def select(self, tag: str, scope: str, **attrs: str) -> list[dict[str, Any]]:
        return [e for e in self.found if e["tag"] == tag and e["scope"] == scope
                and all(e.get(k) == v for k, v in attrs.items())]


def dom(chromium: str, profile: str, url: str) -> Elements:
    parser = Elements()
    parser.feed(browse(chromium, profile, url, "--dump-dom").stdout.decode())
    return parser


def png_pixels(path: Path, rows: int | None = None) -> tuple[int, int, Counter[tuple[int, int, int]]]:
    """Width, height and a count of every RGB colour of an 8-bit RGB or RGBA PNG (no interlace),
    over its first ``rows`` rows (all by default)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        position += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    channels = 3 if color == 2 else 4
    stride = width * channels
    raw = zlib.decompress(b"".join(idat))
    previous = bytearray(stride)
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in range(height if rows is None else min(rows, height)):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, previous))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        counts.update(zip(line[0::channels], line[1::channels], line[2::channels]))
        previous = line
    return width, height, counts


def test_the_dashboard_renders_its_charts_in_chromium(chromium, profile, mysql_dsn, tmp_path, pool):
    token = "tok-" + secrets.token_hex(8)
    q = fastsched.connect(mysql_dsn)
    priorities = [fastsched.Priority.HIGH, fastsched.Priority.MEDIUM, fastsched.Priority.LOW,
                  fastsched.Priority.NEGLIGIBLE]
    failing = q.add(fastsched.Priority.HIGH, "fail", str(tmp_path / "rec"), "the <b>mailbox</b> is full")
    q.add_many([(priorities[i % 4], "Sleep", 0.5 + i / 1000) for i in range(120)])  # 20 s of work for 3
    q.add({"queue": "mail", "delay": 3600}, "Sleep", 1)  # a second queue, deferred
    run = pool(mysql_dsn, "--workers", "3", "--retry-limit", "0", "--http", "127.0.0.1:0", "--http-token", token)
    headers = {"Authorization": f"Bearer {token}"}

    def samples() -> bool:
        code, _, body = run.get("/history.json", headers)
        return code == 200 and len(json.loads(body)["samples"]) >= 3

    wait_for(samples, what="three history samples")
    page = run.url + "?token=" + token

    # The screenshot first, while the workers are busy: the share bars are drawn.
    shot = tmp_path / "dashboard.png"
    browse(chromium, profile, page, f"--screenshot={shot}")
    width, height, counts = png_pixels(shot, rows=CHART_ROWS)
    assert (width, height) == WINDOW
    assert shot.stat().st_size > 20_000  # a drawn page, not a blank one
    white = counts[(255, 255, 255)] + counts[(0xF6, 0xF7, 0xF9)]
    assert white < 0.95 * width * CHART_ROWS
    for name, rgb in COLORS.items():
        assert counts[rgb] >= LEGEND_PIXELS * 0.9, f"{name}: {counts[rgb]} pixels of {rgb}"
    drawn = sum(counts[rgb] for rgb in COLORS.values()) - len(COLORS) * LEGEND_PIXELS
    assert drawn > 500, "no chart lines or share bars in the screenshot"

    # Without the token: the server says so, and nothing of the queue shows.
    refused = dom(chromium, str(tmp_path / "profile-refused"), run.url)
    assert "a bearer token is required" in refused.text

    found = dom(chromium, profile, page)
    assert found.select("span", "connection")[0]["data-state"] == "live", found.text[:500]
    depth = found.select("path", "chart-depth", **{"class": "series"})
    assert sorted(p["data-priority"] for p in depth) == sorted(COLORS)
    assert all(int(p["data-points"]) >= 3 for p in depth)
    assert all(p["d"].startswith("M") and p["d"].count("L") >= 2 for p in depth)
    assert max(float(p["data-max"]) for p in depth) > 0  # the backlog was seen
    throughput = found.select("path", "chart-throughput", **{"class": "series"})
    assert len(throughput) == 5 and all(int(p["data-points"]) >= 2 for p in throughput)
    bars = found.select("rect", "chart-share", **{"class": "bar"})
    assert [b["data-priority"] for b in bars] == list(COLORS)
    assert sum(int(b["data-workers"]) for b in bars) >= 1
    limits = found.select("line", "chart-share", **{"class": "limit"})
    assert limits and all(int(line["data-limit"]) >= 1 for line in limits)
    failed_rows = found.select("tr", "failed", **{"class": "failed-job"})
    assert [row["data-id"] for row in failed_rows] == [str(failing)]
    assert "RuntimeError: the <b>mailbox</b> is full" in found.text  # shown as text, never as markup
    assert not [e for e in found.found if e["tag"] == "b"]
    assert len(found.select("tr", "priorities")) == 1 + 5  # the header and one row per priority
    assert [row["data-queue"] for row in found.select("tr", "queues") if "data-queue" in row] == ["default", "mail"]
    assert found.select("li", "hosts", **{"class": "master"})
    assert "active workers" in found.text

    run.stop()

"""The HTML report rendered by a real headless Chromium (Debian's package): what an operator sees.

The CLI writes the report for a journal built from the known scenario. A probe script
appended to a copy of the file asks the browser what it laid out: which element is on
top at each mark's centre (so nothing is hidden or off the chart), its computed colour,
its position against the time axis, the visible text, and whether anything was fetched.
A screenshot at the same size is decoded and its pixels checked under those marks.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.report_scenario import GPU1_UUID, H, build_scenario, write_html_report

WINDOW_SIZE = (1400, 1800)
PROBE = """
<script>
(() => {
  const svg = document.getElementById('timeline');
  const start = +svg.dataset.start, end = +svg.dataset.end;
  const box = (el) => { const r = el.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const onTop = (el, x, y) => {
    const hit = document.elementFromPoint(x, y);
    return !!hit && (hit === el || el.contains(hit));
  };
  const shape = (el) => {
    const b = box(el), cx = b.x + b.w / 2, cy = b.y + b.h / 2;
    return {lane: el.closest('g.lane').dataset.lane, kind: el.dataset.kind || el.dataset.state,
            ts: +(el.dataset.ts || el.dataset.start), end: +(el.dataset.end || 0), box: b, cx, cy,
            on_top: onTop(el, cx, cy), corner_on_top: onTop(el, b.x + 1.5, b.y + 1.5),
            fill: getComputedStyle(el).fill};
  };
  const lanes = [...document.querySelectorAll('g.lane')].map((g) => ({
    name: g.dataset.lane, scope: g.dataset.scope, band: box(g.querySelector('rect.lane-bg')),
    label: g.querySelector('text').textContent, label_fill: getComputedStyle(g.querySelector('text')).fill}));
  document.body.setAttribute('data-probe', JSON.stringify({
    start, end, plot: box(svg.querySelector('rect.lane-bg')), svg: box(svg), lanes,
    marks: [...svg.querySelectorAll('.mark')].map(shape),
    episodes: [...svg.querySelectorAll('.episode')].map(shape),
    text: document.body.innerText, title: document.title,
    fetched: performance.getEntriesByType('resource').map((r) => r.name)}));
})();
</script>
"""

BLUE, WHITE, BLACK = (31, 119, 180), (255, 255, 255), (17, 17, 17)
RED, DARK_RED, PURPLE, ORANGE, BROWN = (214, 39, 40), (127, 0, 0), (148, 103, 189), (255, 127, 14), (140, 86, 75)


def chromium() -> str:
    found = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    assert found, "no headless chromium: run scripts/ensure-chromium.sh (make test does)"
    return found


def run_browser(page: Path, *args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # root in CI; the page is a local file we just wrote
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, bytes per pixel and raw rows of an 8-bit, non-interlaced RGB/RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * bpp
    out = bytearray(height * stride)
    previous = bytearray(stride)
    for row in range(height):
        filt, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, up_left = previous[i], previous[i - bpp] if i >= bpp else 0
            if filt == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filt == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        out[row * stride : (row + 1) * stride] = line
        previous = line
    return width, height, bpp, bytes(out)


def rgb(fill: str) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in re.findall(r"\d+", fill)[:3])
    return r, g, b


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    t0 = time.time() - 6 * H + 120  # the whole scenario inside `--since 6h`
    build_scenario(tmp, t0).close()
    report = tmp / "report.html"
    write_html_report(tmp, "6h", report)
    probed = tmp / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_browser(probed, "--dump-dom", profile=tmp / "profile-dom").stdout
    found = re.search(r'<body data-probe="([^"]*)"', dom)
    assert found, "the probe script did not run: " + dom[:500]
    shot = tmp / "shot.png"
    run_browser(report, f"--screenshot={shot}", profile=tmp / "profile-shot")
    return {"t0": t0, "probe": json.loads(html.unescape(found.group(1))), "png": decode_png(shot.read_bytes())}


def pixel(png: tuple[int, int, int, bytes], x: float, y: float) -> tuple[int, int, int]:
    width, _, bpp, data = png
    at = int(y) * width * bpp + int(x) * bpp
    return data[at], data[at + 1], data[at + 2]


def near(a: tuple[int, int, int], b: tuple[int, int, int], slack: int = 12) -> bool:
    return all(abs(x - y) <= slack for x, y in zip(a, b, strict=True))


def test_the_browser_shows_every_lane_and_the_summary(rendered: dict[str, Any]) -> None:
    probe = rendered["probe"]
    assert probe["fetched"] == []  # self-contained: the browser loaded nothing else
    assert probe["title"].startswith("gpu-watchdog restart report")
    assert [(lane["scope"], lane["name"]) for lane in probe["lanes"]] == [
        ("container", "embed-1"),
        ("container", "llm-0"),
        ("container", "llm-1"),
        ("gpu", "0"),
        ("gpu", "1"),
        ("gpu", GPU1_UUID),
        ("host", "host"),
    ]
    unstable = [lane for lane in probe["lanes"] if lane["label"].endswith("UNSTABLE")]
    assert [lane["name"] for lane in unstable] == ["llm-0"] and rgb(unstable[0]["label_fill"])[0] > 180
    text = probe["text"]
    for shown in ("9\nrestarts", "1\nunstable containers", "1\ngave up", "llm-0 UNSTABLE", "endpoint-failing 1"):
        assert shown in text, shown
    assert probe["svg"]["w"] <= WINDOW_SIZE[0] and probe["svg"]["y"] + probe["svg"]["h"] <= WINDOW_SIZE[1]


def test_every_mark_is_visible_in_its_lane_at_its_time(rendered: dict[str, Any]) -> None:
    probe = rendered["probe"]
    plot, start, end = probe["plot"], probe["start"], probe["end"]
    bands = {lane["name"]: lane["band"] for lane in probe["lanes"]}
    marks = sorted(probe["marks"], key=lambda m: (m["ts"], m["kind"]))
    by_lane: dict[str, list[str]] = {}
    for mark in marks:
        by_lane.setdefault(mark["lane"], []).append(mark["kind"])
        band = bands[mark["lane"]]
        assert band["y"] <= mark["cy"] <= band["y"] + band["h"], mark  # in its own row
        expected_x = plot["x"] + (mark["ts"] - start) / (end - start) * plot["w"]
        assert abs(mark["cx"] - expected_x) < 2.0, (mark, expected_x)  # at its time on the axis
        # On top at its centre (an Xid drawn over its GPU's quarantine square: that one shows at its corner).
        assert mark["on_top"] or mark["corner_on_top"], mark
    assert by_lane == {
        "llm-0": ["restart"] * 6,
        "llm-1": ["restart", "dry-run", "restart"],
        "embed-1": ["restart", "give-up"],
        "0": ["restart"] * 6,
        "1": ["restart", "restart", "restart", "give-up"],
        GPU1_UUID: ["xid", "gpu-mark"],  # the quarantine a second after the Xid
        "host": ["driver"],
    }
    colours = {m["kind"]: rgb(m["fill"]) for m in marks}
    assert colours == {
        "restart": BLUE,
        "dry-run": WHITE,
        "give-up": BLACK,
        "xid": PURPLE,
        "gpu-mark": ORANGE,
        "driver": BROWN,
    }
    llm0 = [m["cx"] for m in marks if m["lane"] == "llm-0"]
    assert llm0 == sorted(llm0) and all(b - a > 20 for a, b in itertools.pairwise(llm0))


def test_fault_episodes_show_as_bars(rendered: dict[str, Any]) -> None:
    probe = rendered["probe"]
    plot = probe["plot"]
    episodes = probe["episodes"]
    llm0 = [e for e in episodes if e["lane"] == "llm-0"]
    assert [e["kind"] for e in llm0] == ["closed"] * 6 and all(e["on_top"] for e in llm0)
    assert all(rgb(e["fill"]) == RED for e in llm0)
    (still_down,) = [e for e in episodes if e["lane"] == "embed-1"]
    assert still_down["kind"] == "open" and rgb(still_down["fill"]) == DARK_RED and still_down["on_top"]
    right_edge = still_down["box"]["x"] + still_down["box"]["w"]
    assert abs(right_edge - (plot["x"] + plot["w"])) < 1.5  # down to the end of the window
    assert still_down["box"]["w"] > plot["w"] / 6 * 0.9  # about the last hour of six


def test_the_screenshot_has_those_colours_under_those_marks(rendered: dict[str, Any]) -> None:
    probe, png = rendered["probe"], rendered["png"]
    assert (png[0], png[1]) == WINDOW_SIZE
    checked = 0
    for mark in probe["marks"]:
        if not mark["on_top"] or mark["kind"] == "dry-run":  # a hollow triangle is white inside
            continue
        colour = pixel(png, mark["cx"], mark["cy"] + (2 if "triangle" in mark["kind"] else 0))
        assert near(colour, rgb(mark["fill"])), (mark, colour)
        checked += 1
    for episode in probe["episodes"]:
        assert near(pixel(png, episode["cx"], episode["cy"]), rgb(episode["fill"])), episode
        checked += 1
    assert checked >= 25
    background = pixel(png, probe["plot"]["x"] + probe["plot"]["w"] - 3, probe["lanes"][1]["band"]["y"] + 3)
    assert near(background, (250, 250, 250), 6)  # an empty stretch of llm-0's lane is not red or blue

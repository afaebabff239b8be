"""Pictures of a rendered report, taken by a real browser (headless Chromium).

    python scripts/report_picture.py report/report.html --picture docs/report-quick.png
    python scripts/report_picture.py report/report.html --first-screen first-screen.png

``--picture`` is the README's picture: the report itself, with the browser's own layout and the
report's own styles, cut to its headline, its main table and its t-SNE figure, then scaled and
reduced to a palette so it stays small. ``--first-screen`` is what a reader sees on opening the
report: the top 1000 px of a 1280 px wide window, unchanged. Both print where each heading and
table of the report lies on the page (``layout``), so what the first screen holds is read from the
browser, not guessed.

Needs Chromium (Debian: ``apt-get install chromium``; or set ``CHROMIUM`` to its path).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from bs4 import BeautifulSoup
from PIL import Image

WIDTH, FIRST_SCREEN = 1280, 1000
PICTURE_WIDTH = 1000  # the README picture's width in pixels, after scaling
PICTURE_COLOURS = 256  # a palette PNG: the report is flat colours, text and scatter points
# Chromium started for one page and nothing else: no first-run, sync or network services, which a
# closed network refuses one by one (and which would slow every start)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1"]
# Sets the positions of the page's headings, tables and figures (CSS px from the page's top) as
# JSON into <pre id="simpleclr-layout"> once the page has laid out, for --dump-dom to carry out.
LAYOUT_SCRIPT = """
<script>
window.addEventListener("load", () => {
  const items = [];
  for (const el of document.querySelectorAll("h1, h2, h3, table, img")) {
    const r = el.getBoundingClientRect();
    const cap = el.tagName === "TABLE" && el.caption ? el.caption.textContent : "";
    items.push({tag: el.tagName.toLowerCase(), top: Math.round(r.top + window.scrollY),
                height: Math.round(r.height), text: (cap || el.textContent || el.alt || "").trim().slice(0, 90)});
  }
  const out = document.createElement("pre");
  out.id = "simpleclr-layout";
  out.textContent = JSON.stringify(items);
  document.body.appendChild(out);
});
</script>
"""


def chromium() -> str:
    """The Chromium binary: ``$CHROMIUM``, else the first of the usual names on the PATH."""
    found = os.environ.get("CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not found:
        raise SystemExit("report_picture: no Chromium found: install it (Debian: apt-get install chromium) "
                         "or set CHROMIUM to its path")
    return found


def browse(page: Path, *args: str, timeout: float = 120) -> str:
    """Run headless Chromium on ``page`` with ``args``; its standard output (the DOM for --dump-dom)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed on {page} ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def screenshot(page: Path, png: Path, width: int = WIDTH, height: int = FIRST_SCREEN) -> Path:
    """The top ``height`` px of ``page`` in a ``width`` px wide window, as the browser draws it."""
    png.parent.mkdir(parents=True, exist_ok=True)
    browse(page, f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
           "--virtual-time-budget=10000")
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {page}")
    return png


def layout(page: Path, width: int = WIDTH) -> list[dict]:
    """Where the browser lays out each heading, table and image of ``page``: a list of
    ``{"tag", "top", "height", "text"}`` in page order, ``top`` in px from the page's top."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / page.name
        html = page.read_text(encoding="utf-8")
        at = html.rfind("</body>")
        probe.write_text(html[:at] + LAYOUT_SCRIPT + html[at:] if at >= 0 else html + LAYOUT_SCRIPT,
                         encoding="utf-8")
        dom = browse(probe, "--dump-dom", f"--window-size={width},{FIRST_SCREEN}", "--virtual-time-budget=10000")
    found = BeautifulSoup(dom, "html.parser").find(id="simpleclr-layout")
    if found is None:
        raise RuntimeError(f"the browser did not lay out {page}: no layout came back")
    return json.loads(found.get_text())


def cells(soup: BeautifulSoup) -> list:
    """The report's notebook cells in page order (nbconvert's lab template: ``div.jp-Cell``)."""
    return soup.select("div.jp-Cell")


def trimmed(html: str) -> str:
    """The report with only its headline, its main table and its t-SNE figure left, each in the
    report's own markup and styles: the README's picture is cut from this page."""
    soup = BeautifulSoup(html, "html.parser")
    keep, section = [], None
    for cell in cells(soup):
        heading = cell.find(["h1", "h2"])
        if heading is not None and heading.name == "h2":
            section = heading.get_text(" ", strip=True)
        if cell.find("h1") is not None and not keep:  # the headline: title and verdict
            keep.append(cell)
        elif section and section.startswith("Main table") and (heading is not None or cell.find("table")):
            keep.append(cell)
        elif section and section.startswith("t-SNE") and (heading is not None or cell.find("img")):
            keep.append(cell)
    kinds = {"table": any(c.find("table") for c in keep), "img": any(c.find("img") for c in keep)}
    missing = [k for k, ok in kinds.items() if not ok]
    if missing:
        raise SystemExit(f"report_picture: the report has no {' or '.join(missing)} under its main table "
                         "or t-SNE headings: render the report of a plan whose runs have finished")
    for cell in cells(soup):
        if cell not in keep:
            cell.decompose()
    return str(soup)


def content_height(image: Image.Image, background: int = 250) -> int:
    """The height down to the last row holding anything darker than near-white."""
    grey = image.convert("L")
    rows = [max(grey.crop((0, y, grey.width, y + 1)).getextrema()[0] < background, 0) for y in range(grey.height)]
    return max((y for y, dark in enumerate(rows) if dark), default=grey.height - 1) + 1


def picture(report: Path, png: Path, width: int = WIDTH) -> Path:
    """The README's picture of ``report``: headline, main table and t-SNE figure, drawn by the
    browser, scaled to PICTURE_WIDTH and saved as a palette PNG."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "picture.html"
        page.write_text(trimmed(report.read_text(encoding="utf-8")), encoding="utf-8")
        items = layout(page, width)
        bottom = max(i["top"] + i["height"] for i in items)
        shot = screenshot(page, Path(tmp) / "shot.png", width, bottom + 40)
        image = Image.open(shot).convert("RGB")
    image = image.crop((0, 0, image.width, min(image.height, content_height(image) + 12)))
    scale = PICTURE_WIDTH / image.width
    image = image.resize((PICTURE_WIDTH, round(image.height * scale)), Image.LANCZOS)
    png.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(PICTURE_COLOURS, method=Image.Quantize.FASTOCTREE).save(png, optimize=True)
    return png


def describe(items: list[dict], height: int = FIRST_SCREEN) -> str:
    """What lies in the first ``height`` px: one line per heading, table and image."""
    return "\n".join(f"{i['top']:5d} px  {i['tag']:<5} {i['text']}" for i in items if i["top"] < height)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a rendered report (report/report.html)")
    ap.add_argument("--picture", type=Path, help="write the README's picture here (PNG)")
    ap.add_argument("--first-screen", type=Path, help="write the first 1000 px as a reader sees them (PNG)")
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"report_picture: no report at {args.report}: run `make report` first", file=sys.stderr)
        return 2
    if args.picture:
        out = picture(args.report, args.picture)
        print(f"{out}: {Image.open(out).size[0]}x{Image.open(out).size[1]} px, {out.stat().st_size:,} bytes")
    if args.first_screen:
        screenshot(args.report, args.first_screen)
        print(f"{args.first_screen}: the first {FIRST_SCREEN} px at {WIDTH} px wide")
    print(f"In the first {FIRST_SCREEN} px at {WIDTH} px wide:")
    print(describe(layout(args.report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

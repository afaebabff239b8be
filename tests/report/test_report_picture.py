"""scripts/report_picture.py: the README's picture is cut from the report's own cells, and the
browser's layout says what the report's first screen holds. The browser tests need Chromium and
skip without it; the smoke plan's real report is checked in tests/study/test_pipeline.py."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
HAS_CHROMIUM = any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))


def script():
    spec = importlib.util.spec_from_file_location("report_picture", ROOT / "scripts" / "report_picture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cell(body: str) -> str:
    return f'<div class="jp-Cell">{body}</div>\n'


# A report as nbconvert's lab template lays it out: one div.jp-Cell per notebook cell
REPORT = ("<html><head><title>r</title></head><body>\n"
          + cell("<h1>SimCLR vs supervised</h1><p>Best top-1: super.</p><p>Plan <code>quick</code>: 15 of 15 "
                 "runs finished; report written 2026-12-06 22:00.</p>")
          + cell("<h2>Main table</h2>")
          + cell("<table><caption>Main table: CIFAR-100</caption><tr><td>selfsuper</td></tr></table>")
          + cell("<p>What the columns mean.</p>")
          + cell("<h2>t-SNE of CIFAR-100 test features</h2>")
          + cell('<img src="data:image/png;base64,iVBORw0KGgo=" alt="t-SNE panels">')
          + cell("<h2>Pretraining-set size</h2>")
          + cell("<table><caption>Size study</caption></table>")
          + cell("<h2>Provenance</h2><table><caption>Runs</caption></table>")
          + "</body></html>\n")


def test_the_picture_keeps_the_headline_the_main_table_and_the_tsne_figure_only():
    kept = script().trimmed(REPORT)
    assert "SimCLR vs supervised" in kept and "Best top-1" in kept
    assert "Main table: CIFAR-100" in kept and "t-SNE panels" in kept
    assert "15 of 15 runs finished; report written 2026-12-06" in kept  # how complete, and when
    for gone in ("What the columns mean", "Size study", "Provenance"):
        assert gone not in kept, gone


def test_a_report_without_a_main_table_or_tsne_is_refused_in_one_line():
    with pytest.raises(SystemExit, match="no table or img under its main table or t-SNE headings"):
        script().trimmed("<html><body>" + cell("<h1>t</h1>") + cell("<h2>Main table</h2>") + "</body></html>")


@pytest.mark.skipif(not HAS_CHROMIUM, reason="needs Chromium (apt-get install chromium)")
def test_the_browser_lays_out_the_report_and_draws_its_first_screen(tmp_path):
    mod = script()
    page = tmp_path / "report.html"
    page.write_text(REPORT.replace("<h2>Main table</h2>", "<h2>Main table</h2>" + "<p>x</p>" * 60))
    items = mod.layout(page)
    heads = [(i["tag"], i["text"]) for i in items if i["tag"] in ("h1", "h2")]
    assert heads[:3] == [("h1", "SimCLR vs supervised"), ("h2", "Main table"),
                         ("h2", "t-SNE of CIFAR-100 test features")]
    tops = [i["top"] for i in items]
    assert tops == sorted(tops) and tops[0] < 100
    table = next(i for i in items if i["tag"] == "table")
    assert table["top"] > 60 * 15  # pushed down by the 60 paragraphs: a real layout, not a guess
    assert "Main table" in mod.describe(items) and "Provenance" not in mod.describe(items)
    shot = mod.screenshot(page, tmp_path / "first.png")
    assert Image.open(shot).size == (mod.WIDTH, mod.FIRST_SCREEN)

"""The README's first screen and the pages under docs/: every link resolves, the plan table matches
plans/, every time in it says whether it was measured or estimated, and plan headers stay short."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
PLANS = sorted((ROOT / "plans").glob("*.yaml"))

README_MAX_LINES = 150
HEADER_MAX_LINES = 10
PICTURE_MAX_BYTES = 300_000

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def links(page: Path) -> list[str]:
    """The targets of a markdown page's links and images, code spans and blocks left out."""
    return LINK.findall(CODE.sub("", page.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def plan_table(text: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, rows of cells) of the README's table under "Which plan fits your machine"."""
    section = text.split("## Which plan fits your machine", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    return cells[0], [r for r in cells[2:]]


def footnotes(text: str) -> dict[str, str]:
    """Footnote mark -> its text, from the list after the plan table: "- (m1) measured ..."."""
    section = text.split("## Which plan fits your machine", 1)[1].split("\n## ", 1)[0]
    notes: dict[str, str] = {}
    for item in re.split(r"\n- ", section)[1:]:
        m = re.match(r"\((\w+)\) (.*)", item, flags=re.S)
        if m:
            notes[m.group(1)] = " ".join(m.group(2).split())
    return notes


def header(plan: Path) -> list[str]:
    lines = plan.read_text().splitlines()
    return lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # an address on the web: not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.name}: " + ", ".join(broken)


def test_the_link_checker_catches_a_broken_link_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.md").write_text("# Top part\n[ok](b.md#the-end) [bad](c.md) [gone](b.md#nowhere)\n"
                                   "`[in code](d.md)`\n")
    (tmp_path / "b.md").write_text("## The end\n")
    assert links(tmp_path / "a.md") == ["b.md#the-end", "c.md", "b.md#nowhere"]
    assert anchors(tmp_path / "b.md") == {"the-end"}
    assert slug("CPUs, GPUs, Apple laptops and precision") == "cpus-gpus-apple-laptops-and-precision"
    assert slug("The full plan's estimate") == "the-full-plans-estimate"


def test_readme_is_short_and_shows_the_report_the_commands_and_the_plans():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    first_screen = text.split("## Which plan fits your machine")[0]
    pictures = [t for t in links(README) if t.endswith(".png")]
    assert pictures and pictures[0] in first_screen
    picture = ROOT / pictures[0]
    assert picture.stat().st_size <= PICTURE_MAX_BYTES, f"{picture.name} is {picture.stat().st_size} bytes"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "make report" in first_screen and "make test" in first_screen


def test_the_plan_table_lists_every_shipped_plan_and_only_those():
    cols, rows = plan_table(README.read_text())
    assert cols[0] == "plan" and len(cols) == 5
    assert all(len(r) == len(cols) for r in rows)
    in_table = [r[0].strip("`") for r in rows]
    shipped = [p.stem for p in PLANS]
    assert sorted(in_table) == sorted(shipped), (
        f"not in the README's plan table: {sorted(set(shipped) - set(in_table))}; "
        f"in the table but not in plans/: {sorted(set(in_table) - set(shipped))}")
    assert len(set(in_table)) == len(in_table)


def test_every_time_in_the_plan_table_says_measured_or_estimated_and_from_what():
    text = README.read_text()
    cols, rows = plan_table(text)
    notes = footnotes(text)
    unmarked, undefined = [], []
    for row in rows:
        for col, cell in zip(cols[2:], row[2:]):
            marks = re.findall(r"\((\w+)\)", cell)
            if not marks:
                unmarked.append(f"{row[0]} / {col}: {cell!r}")
            undefined += [m for m in marks if m not in notes]
    assert not unmarked and not undefined, (unmarked, undefined)
    for mark, note in notes.items():
        if mark.startswith("m"):  # measured: when, and at which commit (or that it was not recorded)
            assert note.startswith("measured") and re.search(r"\b20\d\d-\d\d-\d\d\b", note), note
            assert re.search(r"\b[0-9a-f]{7,40}\b|commit not recorded|commits listed", note), note
            assert re.search(r"AVX2|AVX512-BF16", note), f"({mark}) names no CPU class: {note}"
        elif mark.startswith("t"):  # a plan added since the table was measured: says so, and when
            assert note.startswith("to be filled") and re.search(r"\b20\d\d-\d\d-\d\d\b", note), note
        else:  # estimated: from what
            assert mark.startswith("e") and re.match(r"(not )?estimated", note), note
            assert re.search(r"\bfrom\b|\bat\b|\bsized\b", note), note


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.stem)
def test_plan_headers_are_short_and_say_their_time_and_where_the_evidence_is(plan):
    lines = header(plan)
    assert 0 < len(lines) <= HEADER_MAX_LINES, f"{plan.name}: {len(lines)} header lines"
    text = " ".join(lines)
    assert re.search(r"\b\d+(\.\d+)? ?(min|minutes|h|hours)\b", text), f"{plan.name}'s header gives no time"
    assert re.search(r"measured|estimate", text, re.I), f"{plan.name}'s header does not say measured or estimated"
    assert re.search(r"docs/\S+\.md", text), f"{plan.name}'s header points at no page of docs/ for its evidence"

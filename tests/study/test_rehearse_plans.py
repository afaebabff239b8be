"""The executed rehearsal of every shipped plan (``simpleclr plan rehearse``) on generated
stand-ins of CIFAR-100 and Tiny ImageNet: every run through its notebook with the plan's config,
cut short, then the report. About 17 minutes on an idle 2-core AVX2 CPU (the real-data rehearsals'
wall times, docs/rehearsal-full.md), over make test's budget, so it runs with ``--rehearsals``
(``make test-rehearsals``); make test checks every shipped plan's cut configs, its runs' images
against the real datasets' counts and its report's sections."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.standins import write_official_standins
from simpleclr.runs.rundir import RunDir
from simpleclr.study import rehearse
from simpleclr.study.planfile import find_plan_file

pytestmark = pytest.mark.rehearsal
SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "plans").glob("*.yaml"))


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin-data")
    return root, write_official_standins(root)


@pytest.mark.timeout(2400)  # the full plan's 94 runs: 7-9 min idle, over the suite's 15 on a busy machine
@pytest.mark.parametrize("name", SHIPPED)
def test_every_run_of_a_shipped_plan_rehearses_on_stand_ins_and_its_report_renders(name, standins, tmp_path,
                                                                                   monkeypatch):
    root, checksums = standins
    monkeypatch.setenv("SIMPLECLR_DATA", str(root))
    monkeypatch.setenv("SIMPLECLR_ACCEPT_CHECKSUM", ",".join(checksums))
    monkeypatch.setenv("SIMPLECLR_PARTIAL_DATA", "*")  # the stand-ins are far smaller than the real sets
    monkeypatch.chdir(tmp_path)
    code = rehearse.rehearse_plan(find_plan_file(name), outputs=tmp_path / "rehearsal", images=8,
                                  measure=False, progress=False)
    folder = tmp_path / "rehearsal" / name
    record = rehearse.load_record(folder / "rehearsal.json")
    assert code == 0 and record["failed"] == []
    assert all(r["state"] == "done" for r in record["runs"])
    for r in record["runs"]:
        assert RunDir(folder / r["name"]).read_config()["config"]["rehearsal"] == 8
    assert (folder / "report" / "report.html").stat().st_size > 100_000

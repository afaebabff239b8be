"""The smoke plan end to end through papermill with a real kernel, then the report it renders.

One module-scoped run of the whole plan on two CPU workers (one thread each, a few minutes on 2
cores) is shared by the checks: the report's content, the same runs on one worker giving the same
results, a second run that re-uses every finished run, and a copy of the plan with runs made to
fail.
"""
from __future__ import annotations

import html as htmllib
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.curves import read_curves
from helpers.plankit import plan_env
from simpleclr.runs.rundir import RunDir
from simpleclr.study import planfile, plans
from simpleclr.report import model as study


pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    with plan_env(tmp_path_factory.mktemp("pipeline")) as root:
        code = plans.run_plan("smoke", outputs=root / "outputs", report_dir=root / "report", progress=False,
                              execution=plans.Execution(devices=["cpu", "cpu"]))
        yield {"root": root, "code": code,
               "html": (root / "report" / "report.html").read_text()}


def _row(html: str, name: str) -> dict:
    """The main table's row whose first cell starts with ``name —``, as {header: text}."""
    table = html.split("Main table: CIFAR-100 test accuracy")[1].split("</table>")[0]
    text = lambda c: htmllib.unescape(re.sub(r"<[^>]+>", "", c)).strip()  # noqa: E731
    header = [text(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", table, flags=re.S)]
    for tr in re.findall(r"<tr>.*?</tr>", table, flags=re.S):
        cells = [text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)]
        if cells and cells[0].startswith(f"{name} —"):
            return dict(zip(header, cells))
    raise AssertionError(f"no main-table row {name}")


def _acc(cell: str) -> tuple[float, float, float]:
    """``"3.4 [2.1, 5.4]"`` or ``"3.4 ± 0.2 [2.1, 5.4]"`` -> (3.4, 2.1, 5.4)."""
    m = re.fullmatch(r"([\d.]+)(?: ± [\d.]+)? \[([\d.]+), ([\d.]+)\]", cell)
    assert m, f"no accuracy with a 95% interval in {cell!r}"
    return float(m[1]), float(m[2]), float(m[3])


def test_smoke_plan_finishes_and_reports_every_row(smoke):
    assert smoke["code"] == 0
    html = smoke["html"]
    for name in study.ROW_NAMES:
        row = _row(html, name)
        (top1, lo1, hi1), (top5, lo5, hi5) = _acc(row["Top-1 (%)"]), _acc(row["Top-5 (%)"])
        assert 0.0 <= top1 <= top5 <= 100.0, (name, row)
        assert lo1 <= top1 <= hi1 and lo5 <= top5 <= hi5, (name, row)  # every number has its 95%
        assert "Missing" not in row, row  # nothing missing: no such column
        assert row["Labelled images"] == "300", row  # every row: 30% of 10 images x 100 classes
    assert "stand-in" in html and "generated stand-in data" in html  # flagged to the reader
    # fine-tuning shows the encoder lr scale its one-epoch trials chose on validation
    assert html.count("(best validation top-1 of 0.1: ") == 2 and "; 1-epoch trials)" in html
    assert "chosen from 0.1, 1 by validation top-1" in html
    assert "batch-norm running statistics of initialisation" in html and "224 px" in html
    assert "different labelled images" not in html  # no unequal label budgets to flag


def test_report_embeds_figures_and_provenance_without_code(smoke):
    html = smoke["html"]
    # attribute order is the exporter's business: check each tag for an inline PNG and alt text
    tags = re.findall(r"<img\b[^>]*>", html)
    images = [t for t in tags if re.search(r'src="data:image/png;base64,[^"]+"', t)
              and re.search(r'alt="[^"]+"', t)]
    # t-SNE, fine-tuning, label efficiency, size curve, hparam heatmap, training curves
    assert len(images) >= 6
    for heading in ("t-SNE of CIFAR-100 test features", "Pretraining-set size", "SimCLR hyperparameters",
                    "Fine-tuning gains and label efficiency", "Training curves", "Provenance",
                    "Published reference figures"):
        assert heading in html
    assert "<title>SimCLR vs supervised ResNet-18 on CIFAR-100 — smoke test on generated data</title>" in html
    assert "git commit" in html and "torch" in html and "solo-learn" in html
    assert "rp.load_study" not in html and "import " not in html  # code hidden
    assert "<script src=\"http" not in html or "data:image/png" in html


@pytest.mark.skipif(not any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")),
                    reason="needs Chromium (apt-get install chromium)")
def test_a_browser_shows_the_headline_and_the_main_table_in_the_reports_first_screen(smoke):
    """Laid out by headless Chromium at 1280 px wide: the title, then the main table, which starts
    inside the first 1000 px; the first figure comes after it."""
    spec = importlib.util.spec_from_file_location("report_picture", ROOT / "scripts" / "report_picture.py")
    picture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(picture)
    items = picture.layout(smoke["root"] / "report" / "report.html")
    heads = [i["text"].rstrip("¶") for i in items if i["tag"] in ("h1", "h2")]
    assert heads[0].startswith("SimCLR vs supervised") and heads[1] == "Main table", heads
    table = next(i for i in items if i["tag"] == "table")
    assert table["text"].startswith("Main table") and table["top"] < picture.FIRST_SCREEN, table
    first_img = next(i for i in items if i["tag"] == "img")
    assert first_img["top"] > table["top"] + table["height"]


def test_every_run_folder_holds_its_executed_notebook(smoke):
    out = smoke["root"] / "outputs" / "smoke"
    plan = plans.load_plan("smoke", smoke["root"] / "outputs")
    for name, spec in plan.runs.items():
        nb = json.loads((spec.path / "notebook.ipynb").read_text())
        assert nb["metadata"]["papermill"]["parameters"]["out_dir"] == str(spec.path)
        assert spec.status() == "done", name
    assert (out / "report.ipynb").is_file()
    # live curves: a plan's training runs write TensorBoard events holding their jsonl rows
    run = RunDir(out / "selfsuper-pretrain")
    curves = read_curves(run.path)
    assert curves["train/loss"] == [(r["step"], float(np.float32(r["loss"]))) for r in run.read_steps()]
    assert curves["monitor/knn_top1"] == [(r["step"], float(np.float32(r["knn_top1"])))
                                          for r in run.read_metrics()]
    # a supervised run that holds a validation share out (super trains on all its labelled images)
    watched = out / "super-transfer-pretrain"
    assert [s for s, _ in read_curves(watched)["val/top1"]] == [r["step"] for r in RunDir(watched).read_metrics()]
    assert "val/top1" not in read_curves(out / "super")


def test_one_worker_gives_the_run_folders_and_rows_of_two(smoke, capsys):
    """The scheduling changes where and when a run executes, never what it computes: a SimCLR run
    and a supervised run, again on one worker in a fresh folder and each in a fresh kernel, give
    the same results and the supervised row the same cell. ``super`` ran on a worker's shared
    kernel after another run there (only the first run of each of the two workers had a new
    kernel), so this is also a shared kernel's run against a fresh kernel's."""
    root = smoke["root"]
    runs = plans.load_plan("smoke", root / "outputs").runs
    assert "super" not in [n for n, r in runs.items() if not r.needs][:2]  # the two workers' first
    code = plans.run_plan("smoke", outputs=root / "one-worker", report_dir=root / "report-one", progress=False,
                          only=["selfsuper-pretrain", "super"], execution=plans.Execution(kernel_per_run=True))
    assert code == 0
    for name in ("selfsuper-pretrain", "super"):
        one = json.loads((root / "one-worker" / "smoke" / name / "result.json").read_text())
        two = json.loads((root / "outputs" / "smoke" / name / "result.json").read_text())
        for key in ("final_loss", "knn_top1", "top1", "top5", "val_top1"):
            assert one.get(key) == two.get(key), (name, key, one.get(key), two.get(key))
        assert one.get("final_loss") is not None
    html = (root / "report-one" / "report.html").read_text()
    assert _row(html, "super")["Top-1 (%)"] == _row(smoke["html"], "super")["Top-1 (%)"]


def test_a_failing_run_stops_only_the_runs_that_need_it(smoke, capsys):
    """On two workers: a failed probe, and a failed supervised run whose probe is then blocked;
    every other run is reused (no notebook of theirs runs or resumes) and the report renders with
    those rows marked missing."""
    root = smoke["root"]
    plan = yaml.safe_load(planfile.find_plan_file("smoke").read_text())
    for run in plan["runs"]:
        if run["name"] == "random":  # a new folder whose encoder cannot be loaded
            run["name"] = "random-broken"
            run["params"] = {"encoder": str(root / "no-such-run")}
        elif run["name"] == "super":  # fails at once: its init cannot be loaded
            run["name"] = "super-broken"
            run["params"] = {**run.get("params", {}), "init": str(root / "no-such-run")}
        elif run["name"] == "super-probe":
            run["name"] = "super-probe-blocked"
            run["params"] = {**run["params"], "encoder": "{runs.super-broken}"}
    broken = root / "smoke-broken.yaml"
    broken.write_text(yaml.safe_dump(plan, sort_keys=False))
    code = plans.run_plan(broken, outputs=root / "outputs", report_dir=root / "report-broken",
                          progress=False, execution=plans.Execution(devices=["cpu", "cpu"]))
    out = capsys.readouterr().out
    assert code == 1
    assert "random-broken (linear_eval) on cpu: FAILED" in out and "WeightsError" in out
    assert f"executed notebook: {root / 'outputs' / 'smoke' / 'random-broken' / 'notebook.ipynb'}" in out
    assert "super-broken (supervised) on cpu: FAILED" in out
    assert "super-probe-blocked (linear_eval): not run: needs super-broken, which did not finish" in out
    n_runs = len(plans.load_plan("smoke", root / "outputs").runs)
    assert out.count("done earlier with the same config, skipped") == n_runs - 3
    assert out.count(" running -> ") == 2 and "resuming" not in out  # the two broken runs alone
    html = (root / "report-broken" / "report.html").read_text()
    assert _row(html, "super")["Top-1 (%)"] == "—" and _row(html, "super")["Missing"]
    row = _row(html, "random")
    assert row["Top-1 (%)"] == "—" and "WeightsError" in row["Missing"]
    assert _acc(_row(html, "selfsuper")["Top-1 (%)"])[0] >= 0  # the others keep their numbers
    assert _row(html, "selfsuper")["Missing"] == ""

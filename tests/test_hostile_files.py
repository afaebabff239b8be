"""Hostile and broken files in run folders and data folders: each ends in one line naming the
file, or in a report that renders the other runs and names the broken one, with memory bounded.

The forged files are small on disk and huge once read naively (:mod:`helpers.hostile`); the
report test runs under ``ulimit -v`` in a subprocess, at about 1 GB above what the report's
imports need, below what any of the forgeries would expand to.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.hostile import (png_bomb, predictions_declaring, predictions_deflate_bomb,
                             torch_zip_bomb)
from helpers.studyfolders import build_study, fake_features
from simpleclr.data import DataError
from simpleclr.data.images import decode_images
from simpleclr.runs import predictions
from simpleclr.runs.checks import read_features
from simpleclr.runs.rundir import (BrokenRun, CheckpointError, RunDir, TorchFileError,
                                   atomic_write_json, load_torch_file, read_json)

REPO = Path(__file__).resolve().parents[1]
GB = 2**30


def _one_line(text: str, *names: object) -> str:
    assert "\n" not in text.strip() and len(text) < 1000, text[:2000]
    for name in names:
        assert str(name) in text, (name, text)
    return text


def _stride0_features(path: Path, shape: tuple) -> Path:
    """The issue's 3 kB features.pt: one stored element "expanded" to ``shape``."""
    torch.save({"features": torch.zeros(1).expand(*shape), "labels": torch.zeros(shape[0], dtype=torch.long),
                "classes": [f"c{i}" for i in range(100)]}, path)
    return path


def _relabel(run: RunDir, labels: np.ndarray) -> None:
    """Predictions whose labels are out of range, with result.json's digest made to match them
    (so only the range check can catch them)."""
    preds = predictions.Predictions(top1=np.zeros_like(labels), top5_hit=np.ones(len(labels), bool),
                                    labels=labels)
    info = predictions.save_predictions(run.path / predictions.PREDICTIONS, preds)
    atomic_write_json(run.result_path, {**run.read_result(), **info})


# ---- the report, with one forged file in each of eight runs ----------------------------------
# run -> (how it is broken, words its one line must hold)
FORGED = {
    "ss-s0": ("features.pt: one element expanded to (32, 10^9)", "expanded with zero strides"),
    "ss-s1": ("features.pt: one element expanded to the run's own shape", "expanded with zero strides"),
    "super-probe": ("features.pt with a NaN feature", "NaN"),
    "transfer": ("features.pt whose storage is a 1.5 GB deflate bomb", "compressed entry"),
    "random": ("predictions.npz whose labels declare (2*10^10,)", "not the run's (200,)"),
    "hp": ("predictions.npz whose labels are a 1.5 GB deflate bomb", "not the run's (200,)"),
    "size": ("predictions.npz with a negative label", "outside the run's classes"),
    "ss-labels": ("predictions.npz with a label of 10^6", "outside the run's classes"),
    "super-labels": ("result.json nested 100,000 deep", "nested too deep"),
    "ss-pre-s1": ("metrics.jsonl with a loss that is text", "not a number"),
}

_REPORT = """
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
from helpers.reportcells import execute_report_cells

class Patch:  # what execute_report_cells needs of pytest's monkeypatch
    def setattr(self, obj, name, value):
        setattr(obj, name, value)

shown, ns = execute_report_cells(Path(sys.argv[1]), Patch(), tsne_points=60)
study = ns["study"]
Path(sys.argv[2]).write_text(json.dumps({
    "shown": shown, "states": {n: [r.state, r.reason] for n, r in study.runs.items()},
    "tsne": [p["row"] for p in ns.get("panels") or []]}))
"""


def _under_ulimit(script: str, args: list[str], limit_kb: int, cwd: Path) -> subprocess.CompletedProcess:
    code = cwd / "script.py"
    code.write_text(textwrap.dedent(script))
    env_path = f"{REPO / 'lib'}:{REPO / 'tests'}"
    cmd = f"ulimit -v {limit_kb} && exec {sys.executable} {code} " + " ".join(args)
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HOME": str(cwd),
                               "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"})


def _baseline_kb(cwd: Path) -> int:
    """Peak virtual memory of the report's imports alone (torch, sklearn, matplotlib, ...)."""
    probe = cwd / "probe.py"
    probe.write_text("import torch, sklearn.manifold, matplotlib, pandas, IPython.display\n"
                     "import simpleclr.report.prose, simpleclr.report.figures\n"
                     "print(open('/proc/self/status').read().split('VmPeak:')[1].split()[0])\n")
    out = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "lib"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    return int(out.stdout.strip())


@pytest.fixture(scope="module")
def forged_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    plan = build_study(tmp)
    run = {n: RunDir(s.path) for n, s in plan.runs.items()}
    _stride0_features(run["ss-s0"].features_path, (32, 10**9))
    _stride0_features(run["ss-s1"].features_path, (200, 16))
    nan = fake_features(seed=3)
    nan["features"][7, 3] = float("nan")
    torch.save(nan, run["super-probe"].features_path)
    torch_zip_bomb(run["transfer"].features_path, 3 * GB // 2)
    predictions_declaring(run["random"].path / predictions.PREDICTIONS, (2 * 10**10,))
    predictions_deflate_bomb(run["hp"].path / predictions.PREDICTIONS, 3 * GB // 2)
    _relabel(run["size"], np.r_[-3, np.arange(199) % 100])
    _relabel(run["ss-labels"], np.r_[10**6, np.arange(199) % 100])
    run["super-labels"].result_path.write_text("[" * 100_000 + "]" * 100_000)
    run["ss-pre-s1"].log_metrics({"epoch": 3, "step": 30, "loss": "about 3"})
    return plan


def test_the_report_renders_the_other_runs_and_names_each_broken_one_under_a_memory_cap(forged_study, tmp_path):
    limit = _baseline_kb(tmp_path) + 1_000_000  # ~1 GB above the imports; every forgery is larger
    out = tmp_path / "out.json"
    proc = _under_ulimit(_REPORT, [str(forged_study.outputs), str(out)], limit, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    page = "\n".join(got["shown"])
    for name, (how, words) in FORGED.items():
        state, reason = got["states"][name]
        assert state == "broken", (name, how, state, reason)
        assert reason.startswith("this run is broken: ") and words in reason, (name, how, reason)
        _one_line(reason)
        assert f"({name}" in page or f", {name}" in page, (name, "not named in the report")
    # the runs nobody touched are reported with their numbers
    for name in ("super", "ss-pre-s0", "ft-ss"):
        assert got["states"][name][0] == "done"
    assert "50.0" in page  # super's top-1
    assert "super" in got["tsne"] or got["tsne"] == [] or all(r not in FORGED for r in got["tsne"])


# ---- each file kind on its own, in-process ---------------------------------------------------
def test_a_stride0_features_file_is_refused_before_any_copy(tmp_path):
    path = _stride0_features(tmp_path / "features.pt", (32, 10**9))
    assert path.stat().st_size < 4000
    with pytest.raises(TorchFileError) as e:
        load_torch_file(path)
    _one_line(str(e.value), path, "(32, 1000000000)")


def test_features_are_checked_against_the_runs_result(tmp_path):
    path = tmp_path / "features.pt"
    torch.save(fake_features(n=200, dim=16), path)
    result = {"n_test": 200, "feature_dim": 16, "num_classes": 100}
    assert read_features(path, result)["features"].shape == (200, 16)
    for wrong, words in (({"n_test": 100}, "not the run's (100, 16)"), ({"feature_dim": 512}, "(200, 512)"),
                         ({"num_classes": 10}, "names 100 classes, the run has 10")):
        with pytest.raises(BrokenRun) as e:
            read_features(path, {**result, **wrong})
        _one_line(str(e.value), path, words)
    feats = fake_features(n=200, dim=16)
    feats["features"] = torch.zeros(400, 16)[::2]  # a view: storage twice its size
    torch.save(feats, path)
    with pytest.raises(BrokenRun, match="not a plain tensor of its size"):
        read_features(path, result)
    feats = fake_features(n=200, dim=16)
    feats["labels"][5] = 100
    torch.save(feats, path)
    with pytest.raises(BrokenRun, match="outside the classes 0..99"):
        read_features(path, result)


def test_a_zip_bomb_inside_a_checkpoint_is_refused_before_it_expands(tmp_path):
    run = RunDir(tmp_path / "run")
    run.checkpoint_dir.mkdir(parents=True)
    torch_zip_bomb(run.checkpoint_path("last"), GB)
    assert run.checkpoint_path("last").stat().st_size < 10 * 2**20
    with pytest.raises(CheckpointError) as e:
        run.load_checkpoint("last")
    _one_line(str(e.value), run.checkpoint_path("last"), "compressed entry", "delete it")


def test_predictions_headers_are_checked_before_anything_is_allocated(tmp_path):
    path = tmp_path / predictions.PREDICTIONS
    labels = np.arange(200) % 100
    good = predictions.Predictions(labels, np.ones(200, bool), labels)
    digest = predictions.save_predictions(path, good)["test_labels_digest"]
    assert predictions.load_predictions(path, digest, n=200, classes=100).n == 200
    predictions_declaring(path, (2 * 10**10,))
    assert path.stat().st_size < 2000
    with pytest.raises(predictions.PredictionsError) as e:
        predictions.load_predictions(path, digest)  # without the run's size: MAX_IMAGES caps it
    _one_line(str(e.value), path, "labels has shape (20000000000,)")
    predictions.save_predictions(path, good)
    predictions_deflate_bomb(path, GB)
    with pytest.raises(predictions.PredictionsError) as e:
        predictions.load_predictions(path, digest, n=200)
    _one_line(str(e.value), path, "not the run's (200,)")
    for bad in (np.r_[-1, labels[1:]], np.r_[100, labels[1:]]):
        predictions.save_predictions(path, predictions.Predictions(labels, np.ones(200, bool), bad))
        with pytest.raises(predictions.PredictionsError) as e:
            predictions.load_predictions(path, n=200, classes=100)
        _one_line(str(e.value), path, "outside the run's classes 0..99")


@pytest.mark.parametrize("content,words", [
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
    ('{"top1": ' + "9" * 5000 + "}", "not valid JSON"),
    ("\udcff", "not UTF-8"),
], ids=["deep", "long-int", "not-utf8"])
def test_damaged_json_is_one_line(tmp_path, content, words):
    path = tmp_path / "result.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(BrokenRun) as e:
        read_json(path)
    _one_line(str(e.value), path, words)


def test_a_run_json_file_larger_than_any_run_writes_is_refused_unread(tmp_path, monkeypatch):
    from simpleclr.runs import rundir

    monkeypatch.setattr(rundir, "MAX_ROWS_BYTES", 1000)
    run = RunDir(tmp_path)
    run.metrics_path.write_text('{"epoch": 1}\n' * 200)
    with pytest.raises(BrokenRun) as e:
        run.read_metrics()
    _one_line(str(e.value), run.metrics_path, "more than the 1,000")


# ---- images ----------------------------------------------------------------------------------
@pytest.mark.parametrize("side", [12000, 20000])
def test_an_image_bomb_is_refused_in_one_line_before_it_is_decoded(tmp_path, side):
    path = png_bomb(tmp_path / "big.png", side, side)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(DataError) as e:
        decode_images([path], 32)
    _one_line(str(e.value), path, "MP", "shrink it")


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    from PIL import Image

    from simpleclr.data import images

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (800, 600), (200, 30, 40)).save(path, quality=95)
    small = images.MAX_IMAGE_PIXELS
    try:
        images.MAX_IMAGE_PIXELS = 100_000  # 800 x 600 is above it; 1/4 scale (200 x 150) is below
        img = images.open_rgb(path)
    finally:
        images.MAX_IMAGE_PIXELS = small
    assert img.size == (200, 150)
    assert np.abs(np.asarray(img, dtype=int)[75, 100] - [200, 30, 40]).max() <= 8

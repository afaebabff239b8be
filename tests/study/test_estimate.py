"""Time estimates: dataset sizes come from the data registry, timing from bench's own step."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from simpleclr.study import bench, estimate
from simpleclr.config import PretrainConfig, StageConfig, SupervisedConfig
from simpleclr.data import get_spec, load_split
from simpleclr.data.registry import DATASETS


def test_dataset_sizes_are_the_registry_counts():
    assert estimate.dataset_sizes("cifar100") == (50000, 10000)
    assert estimate.dataset_sizes("tiny-imagenet") == (100000, 10000)  # its val split is the test
    for name, spec in DATASETS.items():
        assert estimate.dataset_sizes(name) == (spec.n_train, spec.n_test), name
        assert estimate.native_size(name) == spec.native_size, name
    assert estimate.dataset_sizes("synthetic-tiny-imagenet:classes=10,train=3,val=2") == (30, 20)
    assert estimate.native_size("synthetic-tiny-imagenet") == 64
    assert estimate.dataset_sizes("imagefolder:/nowhere") is None  # only its files know
    assert estimate.native_size("imagefolder:/nowhere") == 32
    assert estimate.dataset_sizes("no-such-data") is None


def test_registry_counts_of_a_stand_in_match_its_files(tmp_path):
    name = "synthetic-cifar100:classes=2,train=3,test=2"
    spec = get_spec(name)
    train, test = (load_split(name, s, root=tmp_path) for s in ("train", "test"))
    assert (len(train), len(test)) == (spec.n_train, spec.n_test) == estimate.dataset_sizes(name)


@dataclass
class _Run:
    config: StageConfig
    path: Path


def units_of(cfg) -> float:
    return estimate.work_units(cfg.stage, cfg.to_dict())


def test_each_stage_is_timed_by_its_own_step_at_the_runs_shape(tmp_path, monkeypatch):
    """Pretraining is priced by bench's SimCLR step (two views, augmentation, NT-Xent), supervised
    training by the supervised step: each timed once per precision and step shape, at the run's own
    side and batch (capped at MEASURE_BATCH)."""
    seen = []

    def case(kind):
        def make(inp, parts=None):
            seen.append((kind, inp))
            return kind
        return make

    monkeypatch.setattr(bench, "supervised_case", case("supervised"))
    monkeypatch.setattr(bench, "simclr_case", case("simclr"))
    times = {"supervised": bench.Timing(0.64, 7.0), "simclr": bench.Timing(1.6, 9.0)}
    monkeypatch.setattr(bench, "time_steps", lambda fn, device, **kw: times[fn])
    est = estimate.Estimator(tmp_path / "out")
    assert est.measure("fp32", "supervised") == (0.64 / estimate.MEASURE_BATCH, 7.0)
    assert est.measure("fp32", "pretrain") == (1.6 / estimate.MEASURE_BATCH, 9.0)
    assert [k for k, _ in seen] == ["supervised", "simclr"]
    assert all(i.batch_size == estimate.MEASURE_BATCH and i.rt.precision == "fp32" and i.image_size == 32
               for _, i in seen)

    # a 32 px run of batch 256: timed at 32 px and the cap (already measured above)
    cfg = PretrainConfig(dataset="cifar100", epochs=1, warmup_epochs=0, precision="fp32", batch_size=256)
    sec, basis = est.seconds(_Run(cfg, tmp_path / "run"))
    units = estimate.work_units("pretrain", cfg.to_dict())
    assert units == pytest.approx(50000 * (1 - cfg.val_fraction))  # the registry's 50,000 images
    assert sec == pytest.approx(estimate.NOTEBOOK_OVERHEAD_S + 9.0 + units * 1.6 / estimate.MEASURE_BATCH)
    assert "timed the SimCLR step now" in basis and "45,000 images x 2 views at 32 px" in basis
    sup = SupervisedConfig(dataset="cifar100", epochs=1, warmup_epochs=0, precision="fp32", batch_size=128)
    sec, basis = est.seconds(_Run(sup, tmp_path / "sup"))
    units = estimate.work_units("supervised", sup.to_dict())
    assert sec == pytest.approx(estimate.NOTEBOOK_OVERHEAD_S + 7.0 + units * 0.64 / estimate.MEASURE_BATCH)
    assert "timed the supervised step now" in basis
    assert len(seen) == 2  # timed once per precision, step and shape

    # every method is priced by its own step (target network, EMA, queue), timed once apiece
    monkeypatch.setattr(bench, "method_case", lambda inp, method: seen.append((method, inp)) or method)
    times.update(byol=bench.Timing(2.4, 9.0), mocov2=bench.Timing(2.0, 9.0))
    byol = PretrainConfig(method="byol", dataset="cifar100", epochs=1, warmup_epochs=0, precision="fp32",
                          batch_size=256)
    sec_byol, basis = est.seconds(_Run(byol, tmp_path / "byol"))
    assert sec_byol == pytest.approx(estimate.NOTEBOOK_OVERHEAD_S + 9.0 + units_of(byol) * 2.4 / estimate.MEASURE_BATCH)
    assert "timed the BYOL step now" in basis
    est.seconds(_Run(byol.replace(seed=1), tmp_path / "byol1"))
    est.seconds(_Run(PretrainConfig(method="mocov2", dataset="cifar100", epochs=1, warmup_epochs=0,
                                    precision="fp32", batch_size=256), tmp_path / "moco"))
    assert [k for k, _ in seen[2:]] == ["byol", "mocov2"]
    del seen[2:]

    # a 16 px run of batch 64 is timed at its own shape, and costs what that step costs per image
    # times its images: the area scaling cancels, whatever 32 px costs
    times["simclr"] = bench.Timing(0.5, 2.0)
    small = PretrainConfig(dataset="cifar100", epochs=1, warmup_epochs=0, precision="fp32", batch_size=64,
                           image_size=16)
    sec, basis = est.seconds(_Run(small, tmp_path / "small"))
    assert (seen[-1][1].image_size, seen[-1][1].batch_size) == (16, 64) and len(seen) == 3
    assert sec == pytest.approx(estimate.NOTEBOOK_OVERHEAD_S + 2.0 + 45000 * 0.5 / 64)
    assert "at 16 px, batch 64" in basis
    # a half-width encoder (the CPU plans') is timed at its own width, and the width's scaling in
    # the work units cancels as the area's does
    sec, basis = est.seconds(_Run(small.replace(width=32), tmp_path / "half"))
    assert seen[-1][1].cfg.width == 32 and len(seen) == 4
    assert sec == pytest.approx(estimate.NOTEBOOK_OVERHEAD_S + 2.0 + 45000 * 0.5 / 64)
    assert "at 16 px, batch 64, width 32" in basis
    # a probe behind the ImageNet stem at 64 px: its convolutions see 16 px, timed there at the cap
    assert estimate.step_shape({"encoder": "imagenet", "image_size": 64, "dataset": "cifar100"}) == (16, 128, 64)
    assert estimate.step_shape({"image_size": 64, "dataset": "cifar100", "batch_size": 32}) == (64, 32, 64)
    assert estimate.step_shape({"dataset": "tiny-imagenet"}) == (64, estimate.MEASURE_BATCH, 64)
    # the CPU plans' half-width encoder is timed at its own width; an ImageNet encoder is ResNet-18's
    assert estimate.step_shape({"dataset": "cifar100", "width": 32}) == (32, estimate.MEASURE_BATCH, 32)
    assert estimate.step_shape({"encoder": "imagenet", "dataset": "cifar100", "width": 32})[2] == 64


def test_importing_plans_does_not_import_torch():
    """``simpleclr plan show`` and the CLI's parser stay light: torch loads only when needed."""
    code = "import sys, simpleclr.study.plans, simpleclr.study.estimate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

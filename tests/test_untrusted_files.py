"""Files a user hands over, or finds in a run folder, never run code while they load.

Each test builds a file whose pickle would create a marker file when unpickled in full (as an
attacker's checkpoint would run a command), passes it through one load path, and checks that the
load is refused with one line naming the file, and that the marker never appears.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from helpers.datasets import TINY
from simpleclr import cli
from simpleclr.report import figures, prose as report
from simpleclr.training import trainer as train
from simpleclr.training.parts import models
from simpleclr.training.stages import pretrain
from simpleclr.config import PretrainConfig
from simpleclr.data import DataError, load_split
from simpleclr.training.parts.models import WeightsError, encoder_state, load_encoder, resnet18_encoder
from simpleclr.runs.rundir import CheckpointError, RunDir



class _Payload:
    """Unpickled in full, this runs ``touch <marker>``: what an attacker's file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a load ran the file's code"


def _evil_encoder_file(path: Path, marker: Path) -> Path:
    """A real encoder checkpoint with one extra entry that runs code when unpickled."""
    state = encoder_state(resnet18_encoder("cifar"), {"stem": "cifar"})
    state["extra"] = _Payload(marker)
    torch.save(state, path)
    return path


def _one_line(text: str, *names: object) -> None:
    assert "\n" not in text.strip(), text
    for name in names:
        assert str(name) in text, (name, text)


def _cli_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    _one_line(err)
    return err


def test_the_payload_does_run_code_when_unpickled_in_full(tmp_path):
    """The check of the check: without weights_only the file would run its command."""
    marker = tmp_path / "MARKER"
    path = _evil_encoder_file(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_encoder_file(tmp_path, marker):
    path = _evil_encoder_file(tmp_path / "evil.pt", marker)
    with pytest.raises(WeightsError) as e:
        load_encoder(str(path))
    _one_line(str(e.value), path, "posix.system")


def test_linear_eval_encoder_option(tmp_path, marker, capsys):
    path = _evil_encoder_file(tmp_path / "evil.pt", marker)
    err = _cli_error(capsys, ["linear-eval", "--out", str(tmp_path / "probe"), "--encoder", str(path),
                              "--dataset", TINY, "--data-dir", str(tmp_path / "data"),
                              "--progress", "false"])
    _one_line(err, path)


def test_finetune_init(tmp_path, marker, capsys):
    path = _evil_encoder_file(tmp_path / "evil.pt", marker)
    err = _cli_error(capsys, ["finetune", "--out", str(tmp_path / "ft"), "--init", str(path),
                              "--dataset", TINY, "--data-dir", str(tmp_path / "data"),
                              "--image-size", "8", "--batch-size", "8", "--epochs", "1",
                              "--warmup-epochs", "0", "--progress", "false", "--num-threads", "1"])
    _one_line(err, path)
    assert not RunDir(tmp_path / "ft").checkpoint_path("last").exists()


def test_imagenet_file_and_the_cached_imagenet_file(tmp_path, marker, monkeypatch):
    from torchvision.models import resnet18

    state = resnet18(weights=None).state_dict()
    state["extra"] = _Payload(marker)
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as e:
        load_encoder(f"imagenet:{path}")
    _one_line(str(e.value), path)
    # the same bytes where torchvision's cache keeps the real file ("imagenet")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = models.imagenet_weights_file()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    with pytest.raises(WeightsError) as e:
        load_encoder("imagenet")
    _one_line(str(e.value), cached, "delete it")


def test_resume_checkpoint(tmp_path, marker, capsys):
    cfg = PretrainConfig(dataset=TINY, data_dir=str(tmp_path / "data"), image_size=8, epochs=1,
                         batch_size=40, proj_hidden=32, proj_out=16, warmup_epochs=0, knn_every=0,
                         progress=False, num_threads=1, width=16)
    run = RunDir(tmp_path / "run")
    run.start(cfg)
    last = run.checkpoint_path("last")
    last.parent.mkdir()
    torch.save({"model": {}, "rng": _Payload(marker)}, last)
    with pytest.raises(CheckpointError) as e:
        pretrain.pretrain(cfg, run.path)
    _one_line(str(e.value), last, "delete it")
    err = _cli_error(capsys, ["pretrain", "--out", str(run.path), "--dataset", TINY, "--data-dir",
                              cfg.data_dir, "--image-size", "8", "--epochs", "1", "--batch-size",
                              "40", "--proj-hidden", "32", "--proj-out", "16", "--warmup-epochs",
                              "0", "--knn-every", "0", "--progress", "false", "--num-threads", "1",
                              "--width", "16"])
    _one_line(err, last)
    assert last.exists()  # nothing the user has is deleted for them


def test_features_file(tmp_path, marker, capsys):
    path = tmp_path / "probe" / "features.pt"
    path.parent.mkdir()
    torch.save({"features": torch.zeros(4, 2), "labels": torch.zeros(4), "classes": ["a"],
                "coarse_labels": _Payload(marker)}, path)
    run = report.RunInfo(name="probe", notebook="linear_eval", stage="linear_eval",
                         path=path.parent, role={"row": "selfsuper"}, state="done", reason=None,
                         fingerprint="f", result={"fingerprint": "f"})
    with pytest.raises(report.ReportError) as e:
        figures.load_features(run)
    _one_line(str(e.value), path, "probe")
    # in the report, the damaged file costs its t-SNE panel and nothing else
    study = report.Study(plan_dir=tmp_path, manifest={}, runs={"probe": run})
    assert figures.tsne_panels(study) == []
    assert "t-SNE: selfsuper left out" in capsys.readouterr().out


def test_cifar_pickles(tmp_path, marker):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        (folder / name).write_bytes(pickle.dumps({b"fine_label_names": _Payload(marker)}))
    with pytest.raises(DataError) as e:
        load_split("cifar100", root=tmp_path, download=False)
    _one_line(str(e.value), folder / "meta", "refusing")


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage" * 5, os.urandom(4096)],
                         ids=["empty", "truncated-pickle", "random-bytes"])
def test_damaged_encoder_file_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "enc.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as e:
        load_encoder(str(path))
    _one_line(str(e.value), path)
    err = _cli_error(capsys, ["linear-eval", "--out", str(tmp_path / "probe"), "--encoder",
                              str(path), "--dataset", TINY, "--progress", "false"])
    _one_line(err, path)


def test_no_weights_only_false_anywhere_in_the_library():
    lib = Path(train.__file__).parent
    hits = [f"{p}:{i}" for p in sorted(lib.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if "weights_only=False" in line]
    assert hits == []

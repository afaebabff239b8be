"""Failures a user can cause, each one line on stderr with nothing lost: an --out that cannot be
a run folder, a folder of other files, a run folder whose config.json was edited, a full disk
during a checkpoint. The stages run for real on a tiny generated dataset (a few seconds)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.datasets import TINY
from simpleclr import cli
from simpleclr.config import LinearEvalConfig, PretrainConfig
from simpleclr.runs import rundir
from simpleclr.runs.rundir import BrokenRun, RunDir

REPO = Path(__file__).resolve().parents[1]


def _pretrain_args(out: Path, data: Path, epochs: int = 2) -> list[str]:
    return ["pretrain", "--out", str(out), "--dataset", TINY, "--data-dir", str(data), "--image-size", "8",
            "--epochs", str(epochs), "--batch-size", "40", "--proj-hidden", "32", "--proj-out", "16",
            "--warmup-epochs", "0", "--knn-every", "0", "--progress", "false", "--num-threads", "1",
            "--width", "16"]


def _pretrain_cfg(data: Path, epochs: int = 2) -> PretrainConfig:
    return PretrainConfig(dataset=TINY, data_dir=str(data), image_size=8, epochs=epochs, batch_size=40,
                          proj_hidden=32, proj_out=16, warmup_epochs=0, knn_every=0, progress=False,
                          num_threads=1, width=16)


def _cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI in this process: an exception escaping it fails the test (no traceback can
    hide behind a passing exit code); its stderr must be one line."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("simpleclr: error: ") and err.count("\n") == 1 and len(err) < 600, err
    return err


# ---- --out that cannot be a run folder ---------------------------------------------------------
def _outs(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "file.txt").write_text("mine")
    os.symlink(tmp / "nowhere", tmp / "dangling")
    os.symlink(tmp / "loop-b", tmp / "loop-a")
    os.symlink(tmp / "loop-a", tmp / "loop-b")
    foreign = tmp / "notes"
    foreign.mkdir()
    (foreign / "metrics.jsonl").write_text('{"mine": 1}\n')
    (foreign / "thesis.tex").write_text("mine")
    return {"a file": (tmp / "file.txt", "is a file, not a folder"),
            "a device": (Path("/dev/null"), "is a device or special file"),
            "a dangling link": (tmp / "dangling", "which does not exist"),
            "a loop of links": (tmp / "loop-a", "loop of symbolic links"),
            "under a file": (tmp / "file.txt" / "run", "lies under"),
            "a folder of other files": (foreign, "--allow-foreign-out")}


@pytest.mark.parametrize("command", ["pretrain", "linear-eval"])
def test_an_out_that_cannot_be_a_run_folder_is_one_line_and_nothing_is_written(tmp_path, capsys, command):
    data = tmp_path / "data"
    before = None
    for what, (out, words) in _outs(tmp_path).items():
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        argv = _pretrain_args(out, data) if command == "pretrain" else \
            ["linear-eval", "--out", str(out), "--dataset", TINY, "--data-dir", str(data), "--progress", "false"]
        err = _cli_error(capsys, argv)
        assert str(out) in err and words in err, (what, err)
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before, what  # nothing written
    assert (tmp_path / "notes" / "metrics.jsonl").read_text() == '{"mine": 1}\n'


def test_a_folder_of_other_files_is_written_into_only_when_the_user_asks(tmp_path, capsys, monkeypatch):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    _cli_error(capsys, _pretrain_args(out, tmp_path / "data", epochs=1))
    monkeypatch.delenv(rundir.ALLOW_FOREIGN_OUT, raising=False)
    assert cli.main(_pretrain_args(out, tmp_path / "data", epochs=1) + ["--allow-foreign-out"]) == 0
    assert (out / "thesis.tex").read_text() == "mine" and RunDir(out).read_result()["epochs"] == 1


def test_the_cli_failures_print_one_line_without_a_traceback_in_a_real_process(tmp_path):
    """The same walk as a user sees it: ``python -m simpleclr`` in its own process, where an
    escaping exception would print a traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    for what, (out, words) in _outs(tmp_path).items():
        proc = subprocess.run([sys.executable, "-m", "simpleclr", "linear-eval", "--out", str(out),
                               "--dataset", TINY, "--progress", "false"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (what, proc.stderr)
        assert proc.stderr.count("\n") == 1 and words in proc.stderr, (what, proc.stderr)


# ---- a run folder proves its identity ----------------------------------------------------------
def _edit(run: RunDir, **changes) -> None:
    saved = json.loads(run.config_path.read_text())
    for key, value in changes.items():
        if key in saved:
            saved[key] = value
        else:
            saved["config"][key] = value
    run.config_path.write_text(json.dumps(saved))


def test_a_hand_edited_fingerprint_is_refused_on_resume_and_on_done(tmp_path, capsys):
    data = tmp_path / "data"
    out = tmp_path / "run"
    assert cli.main(_pretrain_args(out, data, epochs=2)) == 0
    run = RunDir(out)
    done = run.read_result()
    metrics = run.metrics_path.read_text()
    # "done": the issue's --epochs 3 fingerprint written onto a 2-epoch run's config
    three = _pretrain_cfg(data, epochs=3).fingerprint()
    _edit(run, fingerprint=three)
    err = _cli_error(capsys, _pretrain_args(out, data, epochs=3))
    assert "config.json was edited or damaged" in err and str(run.config_path) in err
    assert run.status(three, config_class=PretrainConfig) == "broken"  # what `plan show` says
    assert "config.json was edited or damaged" in run.problem(PretrainConfig)
    # "resume": the same edit on an unfinished run
    run.result_path.unlink()
    err = _cli_error(capsys, _pretrain_args(out, data, epochs=3))
    assert "config.json was edited or damaged" in err
    # another stage's fingerprint (a probe's) in a pretraining folder: the probe is refused
    probe = LinearEvalConfig(encoder="random", dataset=TINY, data_dir=str(data), progress=False)
    _edit(run, fingerprint=probe.fingerprint(), stage="linear_eval")
    err = _cli_error(capsys, ["linear-eval", "--out", str(out), "--encoder", "random", "--dataset", TINY,
                              "--data-dir", str(data), "--progress", "false"])
    assert "config.json was edited or damaged" in err
    assert run.metrics_path.read_text() == metrics and not run.result_path.exists()  # nothing touched
    assert run.status(probe.fingerprint(), config_class=LinearEvalConfig) == "broken"
    assert done["epochs"] == 2


def test_a_config_edited_to_other_values_under_its_old_fingerprint_is_refused(tmp_path):
    data = tmp_path / "data"
    cfg = _pretrain_cfg(data)
    run = RunDir(tmp_path / "run")
    run.start(cfg)
    _edit(run, epochs=7)  # the values say 7 epochs, the stored fingerprint 2
    with pytest.raises(BrokenRun, match="config.json was edited or damaged"):
        run.start(cfg)
    with pytest.raises(BrokenRun, match="config.json was edited or damaged"):
        run.finished(cfg)


# ---- a full disk during a checkpoint -----------------------------------------------------------
def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "run"
    real_save = torch.save

    def full_at_epoch_2(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"PK\x03\x04 partial")  # what reached the disk before it filled up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_epoch_2)
    err = _cli_error(capsys, _pretrain_args(out, data, epochs=3))
    checkpoints = out / "checkpoints"
    assert err == (f"simpleclr: error: no space left on {checkpoints}: the last checkpoint (epoch 1) is "
                   "intact; free space and run the same command again\n")
    assert RunDir(out).load_checkpoint("last")["epoch"] == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt"]  # no temporary left
    monkeypatch.setattr(torch, "save", real_save)
    assert cli.main(_pretrain_args(out, data, epochs=3)) == 0
    result = RunDir(out).read_result()
    assert result["epochs"] == 3 and [r["epoch"] for r in RunDir(out).read_metrics()] == [1, 2, 3]


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None and sys.platform == "linux"


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a small tmpfs")
def test_a_real_full_disk_keeps_the_last_checkpoint_and_the_run_resumes_once_space_is_freed(tmp_path, capsys):
    """A tmpfs with room for one checkpoint: the second one (written beside the first, then
    renamed over it) fills the disk. Remounted larger ("free space"), the same command finishes."""
    data, disk = tmp_path / "data", tmp_path / "disk"
    out = disk / "run"
    disk.mkdir()
    assert cli.main(_pretrain_args(tmp_path / "probe", data, epochs=1)) == 0  # how large is one?
    size = RunDir(tmp_path / "probe").checkpoint_path("last").stat().st_size
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.6) + 200_000}", "tmpfs",
                       str(disk)], capture_output=True).returncode != 0:
        pytest.skip("mount refused")
    try:
        err = _cli_error(capsys, _pretrain_args(out, data, epochs=3))
        assert err == (f"simpleclr: error: no space left on {out / 'checkpoints'}: the last checkpoint "
                       "(epoch 1) is intact; free space and run the same command again\n")
        assert RunDir(out).load_checkpoint("last")["epoch"] == 1
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert cli.main(_pretrain_args(out, data, epochs=3)) == 0
        assert [r["epoch"] for r in RunDir(out).read_metrics()] == [1, 2, 3]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# ---- optional sidecars never stop a run --------------------------------------------------------
def _whole_record(out: Path, epochs: int) -> None:
    run = RunDir(out)
    assert run.read_result()["epochs"] == epochs
    assert [r["epoch"] for r in run.read_metrics()] == list(range(1, epochs + 1))
    assert run.load_checkpoint("last")["epoch"] == epochs and run.checkpoint_path("final").is_file()


def test_sidecars_that_become_unwritable_mid_run_warn_once_and_the_run_finishes(tmp_path, capfd, monkeypatch):
    """After epoch 2 of 4 the TensorBoard folder is replaced by a file, and progress.json and
    steps.jsonl by folders: each warns once, naming its path; the record is whole."""
    from simpleclr.runs import curves

    if not curves.available():
        pytest.skip("tensorboard is not installed")
    out = tmp_path / "run"
    real_log = RunDir.log_metrics

    def log_then_break(self, row):
        real_log(self, row)
        if row["epoch"] == 2:
            shutil.rmtree(self.path / curves.CURVES_DIR)
            (self.path / curves.CURVES_DIR).write_text("not a folder")
            for path in (self.progress_path, self.steps_path):
                path.unlink()
                path.mkdir()

    monkeypatch.setattr(RunDir, "log_metrics", log_then_break)
    assert cli.main(_pretrain_args(out, tmp_path / "data", epochs=4)) == 0
    err = capfd.readouterr().err
    _whole_record(out, 4)
    warnings = [line for line in err.splitlines() if line.startswith("simpleclr: warning:")]
    assert len(warnings) == 3, err
    for path in (out / curves.CURVES_DIR, out / "progress.json", out / "steps.jsonl"):
        assert sum(str(path) + " (" in w for w in warnings) == 1, (path, warnings)
    assert "Traceback" not in err, err


def test_a_tensorboard_path_that_is_a_file_from_the_start_costs_only_the_events(tmp_path, capfd):
    from simpleclr.runs import curves

    if not curves.available():
        pytest.skip("tensorboard is not installed")
    out = tmp_path / "run"
    out.mkdir()
    (out / curves.CURVES_DIR).write_text("a file where the events folder goes")
    assert cli.main(_pretrain_args(out, tmp_path / "data", epochs=2)) == 0
    err = capfd.readouterr().err
    _whole_record(out, 2)
    assert err.count("simpleclr: warning: cannot write the TensorBoard events folder") == 1, err
    assert (out / curves.CURVES_DIR).read_text() == "a file where the events folder goes"


@pytest.mark.parametrize("side", [12000, 20000])
def test_an_image_folder_with_a_decompression_bomb_is_one_line(tmp_path, capsys, side):
    from PIL import Image

    from helpers.hostile import png_bomb

    root = tmp_path / "pets"
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (8, 8), (9, 9, 9)).save(root / split / c / "0.png")
    bomb = png_bomb(root / "train" / "dog" / "1.png", side, side)
    err = _cli_error(capsys, ["data", "prepare", f"imagefolder:{root}", "--data-dir", str(tmp_path / "d"),
                              "--image-size", "8"])
    assert str(bomb) in err and "MP" in err and "shrink it" in err, err


def test_a_checkpoint_from_another_run_is_refused_on_resume(tmp_path, capsys):
    data = tmp_path / "data"
    assert cli.main(_pretrain_args(tmp_path / "a", data, epochs=1)) == 0
    other = RunDir(tmp_path / "b")
    other.start(_pretrain_cfg(data, epochs=2))  # begun, no checkpoint yet
    other.checkpoint_dir.mkdir()
    shutil.copy(RunDir(tmp_path / "a").checkpoint_path("last"), other.checkpoint_path("last"))
    err = _cli_error(capsys, _pretrain_args(other.path, data, epochs=2))
    assert str(other.checkpoint_path("last")) in err and "another run" in err, err

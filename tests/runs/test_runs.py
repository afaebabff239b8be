"""Run-folder writes: atomic (a failed write leaves the previous file whole) and with the
permissions a plain open() would give under the process's umask (results readable by a group);
one writer per run folder (a second process is refused, a dead one's lock does not block)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys

import pytest
import torch

from helpers.datasets import TINY
from simpleclr.data.fetch import file_lock
from simpleclr.data.registry import get_spec
from simpleclr.runs.rundir import RunDir, RunLocked, atomic_torch_save, atomic_write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_get_the_umask_permissions_not_mkstemps_0600(tmp_path, umask_022):
    atomic_write_json(tmp_path / "result.json", {"top1": 1.0})
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "ckpt.pt")
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    assert _mode(tmp_path / "result.json") == _mode(tmp_path / "plain.txt") == 0o644
    assert _mode(tmp_path / "ckpt.pt") == 0o644


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"top1": 1.0})
    with pytest.raises(Exception, match="(?i)pickle"):
        atomic_torch_save(lambda: None, tmp_path / "ckpt.pt")  # a lambda cannot be pickled
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan"), "loop": _Circular()})
    assert json.loads(target.read_text()) == {"top1": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


class _Circular(dict):
    """A mapping json.dumps refuses (it contains itself)."""

    def __init__(self):
        super().__init__()
        self["self"] = self


# ---- one writer per run folder --------------------------------------------------------------
EPOCHS = 2


def _pretrain_argv(out, data_dir) -> list[str]:
    return [sys.executable, "-m", "simpleclr", "pretrain", "--out", str(out), "--dataset", TINY,
            "--data-dir", str(data_dir), "--image-size", "8", "--epochs", str(EPOCHS),
            "--batch-size", "40", "--proj-hidden", "32", "--proj-out", "16", "--warmup-epochs", "0",
            "--knn-every", "0", "--progress", "false", "--num-threads", "1", "--width", "16"]


@contextlib.contextmanager
def _first_writer(tmp_path):
    """A ``simpleclr pretrain`` process that holds its run folder's lock and then waits, for as
    long as the block lasts, on the data cache's lock, which this test holds."""
    data_dir, out = tmp_path / "data", tmp_path / "run"
    data_lock = data_dir / "cache" / f"{get_spec(TINY).key}.lock"
    with file_lock(data_lock, "the test's hold on the data"):
        proc = subprocess.Popen(_pretrain_argv(out, data_dir), stderr=subprocess.PIPE, text=True)
        line = proc.stderr.readline()  # the first thing it says: that it waits for the data
        assert f"waiting for another process (pid {os.getpid()})" in line, line
        yield proc, out
    proc.stderr.close()


@pytest.mark.slow
def test_a_second_writer_is_refused_at_once_and_the_first_finishes_intact(tmp_path):
    with _first_writer(tmp_path) as (first, out):
        assert (out / ".lock").read_text().split() == [str(first.pid), socket.gethostname()]
        second = subprocess.run(_pretrain_argv(out, tmp_path / "data"), capture_output=True,
                                text=True, timeout=120)
        assert first.poll() is None  # refused while the first one still held the folder
    assert second.returncode == 2
    err = second.stderr.strip()
    assert "\n" not in err and f"pid {first.pid} on host {socket.gethostname()}" in err and str(out) in err, err
    assert first.wait(timeout=300) == 0
    run = RunDir(out)
    assert [r["epoch"] for r in run.read_metrics()] == list(range(1, EPOCHS + 1))  # one writer's rows
    assert run.read_result()["epochs"] == EPOCHS
    assert not (out / ".lock").exists()


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    with _first_writer(tmp_path) as (first, out):
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=60) == -signal.SIGKILL
    assert (out / ".lock").read_text().split()[0] == str(first.pid)  # left behind by the dead holder
    again = subprocess.run(_pretrain_argv(out, tmp_path / "data"), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == list(range(1, EPOCHS + 1))
    assert not (out / ".lock").exists()


def test_the_lock_names_its_holder_and_an_unused_folder_is_left_as_it_was(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunLocked, match=f"another process \\(pid {os.getpid()} on host [^)]+\\)") as e:
            with RunDir(tmp_path / "run").lock():
                pass
        assert "\n" not in str(e.value)
    assert not run.path.exists()  # created for the lock, nothing written: removed again
    run.path.mkdir()
    (run.path / "notebook.ipynb").write_text("x")  # papermill writes it before the stage starts
    with run.lock():
        pass
    assert sorted(p.name for p in run.path.iterdir()) == ["notebook.ipynb"]


def test_a_result_records_the_session_that_finished_it(tmp_path, monkeypatch):
    # A run interrupted under one commit and finished under another: config.json keeps the first,
    # result.json names the second, so the number traces to the code that produced it.
    from simpleclr.runs import rundir as runs
    from simpleclr.config import LinearEvalConfig

    cfg = LinearEvalConfig(encoder="random", dataset="synthetic-cifar100:train=2,test=2")
    run = RunDir(tmp_path / "r")
    monkeypatch.setattr(runs, "git_commit", lambda cwd=None: "1111111111aa")
    assert run.start(cfg, device="cpu") == "todo"
    monkeypatch.setattr(runs, "git_commit", lambda cwd=None: "2222222222bb")
    assert run.start(cfg, device="cpu") == "partial"  # the resumed session
    run.write_result({"top1": 1.0})
    assert run.read_config()["provenance"]["git_commit"] == "1111111111aa"
    assert run.read_config()["format"] == runs.RUN_FORMAT == 2  # step trace and predictions
    by = run.read_result()["finished_by"]
    assert by["git_commit"] == "2222222222bb" and by["device"] == "cpu" and "finished_at" in by
    assert run.read_result()["top1"] == 1.0

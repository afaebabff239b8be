"""Run-folder writes: atomic (a failed write leaves the previous file whole) and with the
permissions a plain open() would give under the process's umask (results readable by a group)."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from simpleclr.runs import atomic_torch_save, atomic_write_json


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

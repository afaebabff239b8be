"""What the tests that execute whole plans share: a module's plan environment (data folder,
kernel, working folder) and tiny pretraining plans on generated data."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import pytest


@contextlib.contextmanager
def plan_env(root: Path) -> Iterator[Path]:
    """Run plans under ``root``: generated data in root/data, the test's own Python as the
    notebooks' kernel, and root as the working folder (where SLURM jobs and kernels start)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SIMPLECLR_DATA", str(root / "data"))
    mp.setenv("SIMPLECLR_KERNEL", "python3")
    mp.chdir(root)
    try:
        yield root
    finally:
        mp.undo()


def tiny_pretrain_plan(name: str, epochs: int, runs: str) -> str:
    """A plan of pretrainings on 10 generated images a class at 8 px, one thread, fp32: slow
    enough per run to interrupt or requeue mid-training (``epochs``), quick to set up. ``runs`` is
    the YAML list of runs, one ``  - {...}`` line each."""
    return f"""
name: {name}
defaults:
  all: {{dataset: "synthetic-cifar100:train=10,test=5", image_size: 8, width: 16, precision: fp32,
        num_threads: 1, progress: false}}
  pretrain: {{epochs: {epochs}, batch_size: 64, warmup_epochs: 0.0, proj_hidden: 32, knn_every: 0}}
runs:
{runs.strip(chr(10))}
"""

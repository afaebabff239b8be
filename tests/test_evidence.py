"""scripts/evidence.py writes its record from run folders: every figure is read, none typed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from simpleclr import stats

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("evidence", ROOT / "scripts" / "evidence.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(folder: Path, stage: str, config: dict, result: dict) -> None:
    folder.mkdir(parents=True)
    prov = {"git_commit": "0123456789ab+dirty", "started_at": "2026-11-29T18:00:00+0000",
            "hardware": {"cpu": "Some CPU", "torch_threads": 2}}
    (folder / "config.json").write_text(json.dumps({"stage": stage, "config": config,
                                                    "provenance": prov}))
    (folder / "result.json").write_text(json.dumps(result))


def test_the_record_reads_accuracies_intervals_recipes_and_provenance(tmp_path):
    plan = tmp_path / "recipe"
    _run(plan / "a-pretrain", "pretrain", {"lr": 1.0, "weight_decay": 1e-4, "jitter_strength": 0.5,
                                           "temperature": 0.5, "batch_size": 128, "steps": 200,
                                           "image_size": 16},
         {"knn_top1": 9.8, "final_loss": 4.891, "wall_time_s": 600})
    _run(plan / "a", "linear_eval", {"encoder": str(plan / "a-pretrain")},
         {"top1": 15.6, "top5": 38.0, "n_test": 10000, "n_labelled": 5000, "wall_time_s": 60})
    _run(plan / "random", "linear_eval", {"encoder": "random"},
         {"top1": 12.3, "top5": 31.7, "n_test": 10000, "n_labelled": 5000, "wall_time_s": 60})
    _run(plan / "super-e2", "supervised", {"epochs": 2, "lr": 0.1, "batch_size": 128, "init": None},
         {"top1": 7.1, "top5": 23.9, "n_test": 10000, "n_labelled": 5000, "wall_time_s": 60})
    _run(plan / "unfinished", "pretrain", {}, {})
    (plan / "unfinished" / "result.json").unlink()
    text = _script().record(plan)
    row = next(line for line in text.splitlines() if line.startswith("| a |"))
    assert row == (f"| a | 1.0, 0.0001, 0.5, 0.5, 128, 200, 16 | {stats.wilson(15.6, 10000).text()} | "
                   f"{stats.wilson(38.0, 10000).text()} | higher | 5000 | 9.8 | 4.891 |")
    assert "| random | random init | 12.3 [11.7, 13.0] |" in text
    assert "| a-pretrain | pretrain | 10.0 min | 01234567+dirty | Some CPU (2) |" in text
    assert "| super-e2 | supervised from scratch, 2 epochs, lr 0.1, batch 128 | 7.1 [6.6, 7.6] |" in text
    assert "| 23.9 [23.1, 24.7] | lower | 5000 |" in text  # below the random floor: said so
    assert "unfinished" not in text

"""scripts/evidence.py writes its record from run folders: every figure is read, none typed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from simpleclr.report import stats

ROOT = Path(__file__).resolve().parents[2]


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
    _run(plan / "resumed", "linear_eval", {"encoder": "random"},
         {"top1": 12.3, "top5": 31.7, "n_test": 10000, "wall_time_s": 60,
          "finished_by": {"git_commit": "fedcba9876543210"}})
    # a narrower encoder is set against the random encoder of its own width, not the first one
    _run(plan / "w16-pretrain", "pretrain", {"steps": 200, "image_size": 16, "width": 16}, {"knn_top1": 5.0})
    _run(plan / "w16", "linear_eval", {"encoder": str(plan / "w16-pretrain"), "width": 16},
         {"top1": 12.3, "top5": 31.7, "n_test": 10000, "n_labelled": 5000, "wall_time_s": 60})
    _run(plan / "random-w16", "linear_eval", {"encoder": "random", "width": 16},
         {"top1": 9.0, "top5": 25.0, "n_test": 10000, "n_labelled": 5000, "wall_time_s": 60})
    _run(plan / "unfinished", "pretrain", {}, {})
    (plan / "unfinished" / "result.json").unlink()
    text = _script().record(plan)
    row = next(line for line in text.splitlines() if line.startswith("| a |"))
    # (the settings the run's config leaves out read as the defaults: crop 0.08, LARS, width 64)
    assert row == (f"| a | 1.0, 0.0001, 0.5, 0.5, 128, 200, 16, 0.08, lars, 64 | {stats.wilson(15.6, 10000).text()} | "
                   f"{stats.wilson(38.0, 10000).text()} | higher | 5000 | 9.8 | 4.891 |")
    assert "| random | random init | 12.3 [11.7, 13.0] |" in text
    # w16 ties the width-64 floor's 12.3 but clears its own width's 9.0; the floors get no verdict
    assert "| w16 | " in text and "| 12.3 [11.7, 13.0] | 31.7 [30.8, 32.6] | higher | 5000 |" in text
    assert "| random-w16 | random init | 9.0 [8.5, 9.6] | 25.0 [24.2, 25.9] |  | 5000 |" in text
    assert "| a-pretrain | pretrain | 10.0 min | 01234567+dirty | Some CPU (2) |" in text
    assert "| super-e2 | supervised from scratch, 2 epochs, lr 0.1, batch 128 | 7.1 [6.6, 7.6] |" in text
    assert "| 23.9 [23.1, 24.7] | lower | 5000 |" in text  # below the random floor: said so
    assert "unfinished" not in text
    # interrupted under one commit, finished under another: both are named
    assert "| resumed | linear_eval | 1.0 min | 01234567+dirty → fedcba98 |" in text


def test_learning_curves_state_where_each_learner_clears_the_floor(tmp_path):
    # Two plan folders feed one curve per learner: SimCLR probes by pretraining steps, supervised
    # runs from scratch by epochs; the crossing is the first point whose interval lies above the floor's.
    ev = _script()
    recipe = {"lr": 1.0, "weight_decay": 1e-4, "jitter_strength": 0.5, "temperature": 0.5,
              "batch_size": 128, "image_size": 16}
    a, b = tmp_path / "recipe", tmp_path / "curves"
    probe = {"n_test": 10000, "n_labelled": 5000, "top5": 30.0}
    _run(a / "random", "linear_eval", {"encoder": "random"}, {"top1": 12.3, **probe})
    for plan, steps, top1 in ((a, 200, 15.6), (b, 100, 14.5), (b, 50, 12.6)):
        _run(plan / f"s{steps}-pretrain", "pretrain", {**recipe, "steps": steps}, {"steps": steps})
        _run(plan / f"s{steps}", "linear_eval", {"encoder": str(plan / f"s{steps}-pretrain"),
                                                  "label_fraction": 0.1}, {"top1": top1, **probe})
    for epochs, top1 in ((2, 6.5), (8, 13.2)):
        _run(b / f"super-e{epochs}", "supervised", {"epochs": epochs, "lr": 0.1, "batch_size": 128,
                                                     "subset_fraction": 0.1, "init": None},
             {"top1": top1, **probe})
    _run(b / "finetuned", "supervised", {"epochs": 8, "lr": 0.1, "init": "x"}, {"top1": 30.0, **probe})
    # a run at another image size is another learner, not a point on the default-size curve
    _run(b / "super-px32", "supervised", {"epochs": 4, "lr": 0.1, "batch_size": 128, "subset_fraction": 0.1,
                                          "init": None, "image_size": 32}, {"top1": 15.6, **probe})
    floor, found = ev.curves([a, b])
    assert floor.text() == "12.3 [11.7, 13.0]"
    simclr = next(v for k, v in found.items() if k.startswith("SimCLR"))
    sup = next(v for k, v in found.items() if k.startswith("supervised"))
    assert [(x, n) for x, n, _ in simclr] == [(50, "curves/s50"), (100, "curves/s100"), (200, "recipe/s200")]
    assert [x for x, _, _ in sup] == [2, 8] and len(found) == 2  # the fine-tuned run is no point
    text = ev.crossing(simclr, floor)
    assert text.startswith("first clears the random encoder's interval at 100 (14.5 [13.8, 15.2]")
    assert "at 50 it was same" in text and "rises +1.1 points (+1.1 per doubling), to 15.6" in text
    assert ev.crossing(sup, floor).startswith("never clears the random encoder's interval up to 8")
    section = ev.curves_section([a, b])
    assert "| 100 | curves/s100 | 14.5 [13.8, 15.2] | higher |" in section
    ev.curves_figure([a, b], tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_one_factor_at_a_time_sets_each_single_change_against_the_reference_and_the_seed_spread(tmp_path):
    # Only probes one pretraining setting away from the reference (the probe itself equal) are
    # rows; a setting "matters" only beyond both the intervals and the seed-to-seed spread.
    ev = _script()
    recipe = {"lr": 1.0, "weight_decay": 1e-4, "jitter_strength": 0.5, "steps": 200, "seed": 0,
              "progress": False}
    probe = {"n_test": 10000, "n_labelled": 5000, "top5": 30.0}
    a, b = tmp_path / "recipe", tmp_path / "ablation"

    def simclr(plan, name, top1, label_fraction=0.1, **changes):
        _run(plan / f"{name}-pretrain", "pretrain", {**recipe, **changes}, {"steps": 200})
        _run(plan / name, "linear_eval", {"encoder": str(plan / f"{name}-pretrain"),
                                          "label_fraction": label_fraction}, {"top1": top1, **probe})

    simclr(a, "published", 15.6)
    simclr(b, "lr0.3", 11.0, lr=0.3)  # far below: matters
    simclr(b, "wd1e-6", 15.0, weight_decay=1e-6)  # inside the reference's interval: does not
    simclr(b, "jitter1.0", 14.0, jitter_strength=1.0, progress=True)  # progress is not the experiment
    simclr(b, "two-changes", 9.0, lr=0.3, weight_decay=1e-6)  # not one factor: left out
    simclr(b, "other-probe", 9.0, lr=0.5, label_fraction=0.01)  # probe differs: left out
    simclr(b, "s400", 16.1, steps=400)  # a budget, read by the curves: not a setting
    random = {"encoder": "random", "label_fraction": 0.1}
    _run(a / "random", "linear_eval", {**random, "seed": 0}, {"top1": 12.3, **probe})
    _run(b / "random-seed1", "linear_eval", {**random, "seed": 1}, {"top1": 12.7, **probe})
    _run(b / "random-again", "linear_eval", {**random, "seed": 0}, {"top1": 12.3, **probe})  # listed once
    _run(b / "random-1pct", "linear_eval", {**random, "label_fraction": 0.01}, {"top1": 3.0, **probe})

    # before the second seed of the reference: the intervals alone, and said so
    text = ev.ablation_section([a, b], "recipe/published")
    assert ("No second seed of the reference yet, so beyond the intervals only: "
            "jitter_strength (0.5 → 1.0: -1.6); lr (1.0 → 0.3: -4.6).") in text
    simclr(b, "published-seed1", 15.1, seed=1)
    text = ev.ablation_section([a, b], "recipe/published")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    w = lambda v: stats.wilson(v, 10000).text()  # noqa: E731
    assert rows == [
        f"| jitter_strength | 0.5 → 1.0 | ablation/jitter1.0 | {w(14.0)} | -1.6 | lower |",
        f"| lr | 1.0 → 0.3 | ablation/lr0.3 | {w(11.0)} | -4.6 | lower |",
        f"| weight_decay | 0.0001 → 1e-06 | ablation/wd1e-6 | {w(15.0)} | -0.6 | same |",
        f"| seed | 0 → 1 | ablation/published-seed1 | {w(15.1)} | -0.5 | same |",
        f"| random encoder | seed 0 | recipe/random | {w(12.3)} |  |  |",
        f"| random encoder | seed 1 | ablation/random-seed1 | {w(12.7)} |  |  |"]
    # the noise is the reference's own seed spread (0.5); the random encoder's (0.4) is shown beside
    assert ("A second seed of the reference moved top-1 by 0.5 points (the random encoder's by 0.4). "
            "Beyond both the intervals and that: jitter_strength (0.5 → 1.0: -1.6); "
            "lr (1.0 → 0.3: -4.6).") in text
    assert "No finished SimCLR probe" in ev.ablation_section([a, b], "recipe/missing")
    # supervised runs from scratch that differ in the seed alone are set side by side
    sup = {"epochs": 16, "lr": 0.1, "batch_size": 128, "subset_fraction": 0.1, "init": None}
    _run(a / "super-e16", "supervised", {**sup, "seed": 0}, {"top1": 18.0, **probe})
    _run(b / "super-e16-seed1", "supervised", {**sup, "seed": 1}, {"top1": 16.0, **probe})
    _run(b / "super-e8-seed1", "supervised", {**sup, "epochs": 8, "seed": 1}, {"top1": 13.0, **probe})
    text = ev.ablation_section([a, b], "recipe/published")
    pairs = [line for line in text.splitlines() if "super-e" in line]
    assert pairs == [f"| recipe/super-e16 | {w(18.0)} | ablation/super-e16-seed1 | {w(16.0)} | -2.0 | lower |"]
    # the curves read seed 0 only: the seed-1 probe is not a second point at 200 steps
    _, found = ev.curves([a, b])
    assert all(name != "ablation/published-seed1" for pts in found.values() for _, name, _ in pts)


def _with_predictions(folder: Path, correct: list[bool]) -> dict:
    """Saved test predictions with this per-image correctness; what result.json records of them."""
    import numpy as np
    from simpleclr.runs import predictions

    labels = np.arange(len(correct)) % 7
    top1 = np.where(correct, labels, (labels + 1) % 7)
    preds = predictions.Predictions(top1=top1, top5_hit=np.ones(len(correct), bool), labels=labels)
    return predictions.save_predictions(folder / predictions.PREDICTIONS, preds)


def test_transfer_curves_and_the_resolution_pilot_read_their_runs(tmp_path):
    ev = _script()
    probe = {"n_test": 400, "n_labelled": 5000, "top5": 30.0}
    plan = tmp_path / "curves-tiny"
    _run(plan / "random", "linear_eval", {"encoder": "random"}, {"top1": 12.0, **probe})
    for steps, top1 in ((100, 11.5), (400, 20.0)):
        _run(plan / f"super-s{steps}-pretrain", "supervised",
             {"dataset": "tiny-imagenet", "steps": steps, "lr": 0.1, "batch_size": 128,
              "subset_fraction": 1.0, "init": None}, {"steps": steps, "top1": 40.0, "top5": 60.0, "n_test": 2000})
        _run(plan / f"super-s{steps}", "linear_eval", {"encoder": str(plan / f"super-s{steps}-pretrain"),
                                                        "label_fraction": 0.1}, {"top1": top1, **probe})
    _run(plan / "simclr-s50-pretrain", "pretrain", {"dataset": "tiny-imagenet", "steps": 50}, {"steps": 50})
    _run(plan / "simclr-s50", "linear_eval", {"encoder": str(plan / "simclr-s50-pretrain"),
                                              "label_fraction": 0.1}, {"top1": 13.0, **probe})
    _run(plan / "simclr-s100-pretrain", "pretrain", {"dataset": "tiny-imagenet", "steps": 100}, {"steps": 100})
    _run(plan / "simclr-s100", "linear_eval", {"encoder": str(plan / "simclr-s100-pretrain"),
                                               "label_fraction": 0.1}, {"top1": 14.0, **probe})
    floor, found = ev.curves([plan])
    labels = sorted(found)
    # the Tiny ImageNet supervised runs are probed points by steps, never "from scratch" CIFAR-100
    # points (their own top-1 is on Tiny ImageNet's images)
    assert [k.split(" (")[0] for k in labels] == ["SimCLR on tiny-imagenet", "supervised pretraining on tiny-imagenet"]
    assert [x for x, _, _ in found[labels[1]]] == [100, 400]
    assert [ev.budget_unit(k) for k in labels] == ["steps", "steps"]
    text = ev.record(plan)
    probe_row = next(line for line in text.splitlines() if line.startswith("| super-s400 |"))
    assert "| supervised pretraining on tiny-imagenet, 400 steps, lr 0.1, batch 128 |" in probe_row
    assert probe_row.split("|")[5].strip() == "higher"  # 20.0 on 400 CIFAR-100 images against 12.0
    own_row = next(line for line in text.splitlines() if line.startswith("| super-s400-pretrain |"))
    assert own_row.split("|")[5].strip() == ""  # tested on Tiny ImageNet: no CIFAR-100 floor to compare

    # the pilot: 32 px against 16 px, each beside its own random floor, paired on the same images
    pilot = tmp_path / "resolution"
    n = 400
    for name, size, right, stage, extra in (
            ("random-px16", 16, 48, "linear_eval", {"encoder": "random"}),
            ("random-px32", 32, 50, "linear_eval", {"encoder": "random"}),
            ("simclr-px16", 16, 80, "linear_eval", {"encoder": str(pilot / "simclr-px16-pretrain")}),
            ("simclr-px32", 32, 60, "linear_eval", {"encoder": str(pilot / "simclr-px32-pretrain")})):
        folder = pilot / name
        correct = [i < right for i in range(n)]
        _run(folder, stage, {"image_size": size, **extra}, {"top1": 100.0 * right / n, "n_test": n,
                                                             "input_size": size})
        res = json.loads((folder / "result.json").read_text())
        res.update(_with_predictions(folder, correct))
        (folder / "result.json").write_text(json.dumps(res))
    for size, steps in ((16, 200), (32, 50)):
        _run(pilot / f"simclr-px{size}-pretrain", "pretrain",
             {"image_size": size, "steps": steps, "batch_size": 128}, {"steps": steps})
    # a learning curve's folder (several runs per learner at one size) is no pilot: no rows
    assert not [line for line in ev.resolution_section([plan]).splitlines() if line.startswith("| SimCLR")]
    text = ev.resolution_section([pilot])
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines()
            if line.startswith("| SimCLR") or line.startswith("| random")}
    # equal compute: 200 steps at 16 px and 50 at 32 px are both 12,800 32 px-equivalent passes
    # (the images one run gets right are a superset of the other's: every discordant pair one way)
    w = lambda v: stats.wilson(v, n).text()  # noqa: E731
    assert f"| 12,800 | {w(20.0)} | higher: +8.0 points" in rows[("SimCLR", "16 px")]
    assert f"| 12,800 | {w(15.0)} | higher: +2.5 points" in rows[("SimCLR", "32 px")]  # its own floor
    assert "| lower: -5.0 points [-5.0, -3.3], p<0.001 |" in rows[("SimCLR", "32 px")]
    assert rows[("random encoder", "32 px")].endswith("|  | same: +0.5 points [-0.3, +0.5], p=0.500 |")


def test_the_pilot_chooses_on_training_labels_and_tests_beside(tmp_path):
    # Variants of a reference: each row names what differs, the cross-validated top-1 (the choice)
    # with its interval over the pooled folds, and the test top-1 paired with the reference's.
    ev = _script()
    plan, n = tmp_path / "pilot", 400
    base = {"lr": 1.0, "batch_size": 128, "steps": 200, "image_size": 16}
    for name, change, cv, right in (("base", {}, 14.0, 60), ("lr2", {"lr": 2.0}, 30.0, 64),
                                    ("b64", {"batch_size": 64, "steps": 400}, 14.5, 40)):
        _run(plan / f"{name}-pretrain", "pretrain", {**base, **change}, {"steps": 200})
        folder = plan / name
        _run(folder, "linear_eval", {"encoder": str(plan / f"{name}-pretrain"), "label_fraction": 0.1},
             {"top1": 100.0 * right / n, "top5": 40.0, "n_test": n, "val_top1": cv, "n_val": 5000})
        res = json.loads((folder / "result.json").read_text())
        res.update(_with_predictions(folder, [i < right for i in range(n)]))
        (folder / "result.json").write_text(json.dumps(res))
    # a narrower encoder trained longer: its probe has its width, and its floor is the random
    # encoder of that width, not the reference's
    _run(plan / "w32-pretrain", "pretrain", {**base, "width": 32, "steps": 600}, {"steps": 600})
    for name, probe, right in (("w32", {"encoder": str(plan / "w32-pretrain"), "width": 32}, 60),
                               ("random", {"encoder": "random"}, 52),
                               ("random-w32", {"encoder": "random", "width": 32}, 40)):
        folder = plan / name
        _run(folder, "linear_eval", {**probe, "label_fraction": 0.1},
             {"top1": 100.0 * right / n, "top5": 40.0, "n_test": n, "val_top1": 14.2, "n_val": 5000})
        res = json.loads((folder / "result.json").read_text())
        res.update(_with_predictions(folder, [i < right for i in range(n)]))
        (folder / "result.json").write_text(json.dumps(res))
    # a probe of another protocol (1% of the labels) is no variant of the reference
    _run(plan / "base-labels", "linear_eval", {"encoder": str(plan / "base-pretrain"), "label_fraction": 0.01},
         {"top1": 5.0, "top5": 20.0, "n_test": n, "val_top1": 40.0, "n_val": 500})
    text = ev.pilot_section([plan], "pilot/base")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| pilot/")}
    assert set(rows) == {"pilot/base", "pilot/lr2", "pilot/b64", "pilot/w32"}
    assert f"| lr 1.0 → 2.0 | {stats.wilson(30.0, 5000).text()} | {stats.wilson(16.0, n).text()} | same: +1.0 points" \
        in rows["pilot/lr2"]
    # each row's gain over the random encoder of its width and probe, by the paired test
    # (8 images one way, none the other: McNemar's exact p = 2 / 2**8; 20 one way: 2 / 2**20)
    floor = rows["pilot/base"].split("|")[-2]
    assert floor.startswith(" higher: +2.0 points [") and floor.endswith("p=0.008 (`random`) ")
    assert "| steps 200 → 600, width 64 → 32 |" in rows["pilot/w32"]
    floor = rows["pilot/w32"].split("|")[-2]
    assert floor.startswith(" higher: +5.0 points [") and floor.endswith("p<0.001 (`random-w32`) ")
    assert "| batch_size 128 → 64, steps 200 → 400 |" in rows["pilot/b64"]
    assert "| lower: -5.0 points" in rows["pilot/b64"]
    # the choice reads the training labels only: lr2's CV interval clears the reference's (its
    # test gain is inside the noise), b64's test drop does not enter it
    assert "Highest cross-validated top-1: `lr2` (30.0 against the reference's 14.0)" in text
    assert "Clear of the reference's interval on the training labels: lr2." in text
    assert "No finished probe" in ev.pilot_section([plan], "pilot/absent")

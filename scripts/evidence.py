"""Write a plan's evidence record (markdown) from its run folders: no number is typed by hand.

    python scripts/evidence.py outputs/recipe > docs/evidence-recipe.md
    python scripts/evidence.py outputs/recipe outputs/curves --curves --figure docs/evidence-curves.png

For each probe (and supervised run tested on CIFAR-100): the encoder's pretraining recipe,
CIFAR-100 top-1/top-5 with 95% Wilson intervals
over the test images, and whether it clears the random encoder's interval; for every run: wall
time, commit, CPU, precision, so each figure traces back to the run that produced it. With
``--curves``, the runs of all the folders given are also read as learning curves: one curve per
learner (SimCLR probes by pretraining steps, one per recipe; supervised training from scratch by
epochs), with the budget at which each first clears the random encoder's interval and how fast it
rises after, all computed here from the same intervals; supervised pretraining probed on CIFAR-100
(the transfer row) is a learner by steps too. With ``--resolution``, each learner's runs at two
image sizes are set against each other with the paired test on the same test images, each beside
the random encoder at its size. With ``--ablation PLAN/RUN``, every SimCLR
probe whose pretraining differs from that reference probe's in exactly one setting (the probe
itself equal) is set against it: one factor at a time, and the seed-to-seed spread beside it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional

from simpleclr.report import stats
from simpleclr.runs.rundir import RunDir

RECIPE_KEYS = ("lr", "weight_decay", "jitter_strength", "temperature", "batch_size", "steps",
               "image_size")
# The record's recipe column adds the settings the pilots vary (a learning curve is one recipe)
RECORD_KEYS = RECIPE_KEYS + ("crop_scale_min", "optimizer", "width")


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def runs(plan_dir: Path) -> dict[str, dict]:
    """Finished runs of a plan folder: name -> {config.json, result.json}."""
    out = {}
    for cfg_path in sorted(plan_dir.glob("*/config.json")):
        cfg, res = _read(cfg_path), _read(cfg_path.parent / "result.json")
        if cfg and res:
            out[cfg_path.parent.name] = {"cfg": cfg, "res": res}
    return out


def _encoder_run(run: dict, found: dict[str, dict], stage: str = "pretrain") -> Optional[str]:
    """The run folder (of ``stage``) in the same plan whose encoder a probe read, if any: the run
    itself, or a checkpoint it kept (``<run>/checkpoints/epoch<N>.pt``, a length series' point)."""
    enc = Path(str(run["cfg"]["config"].get("encoder") or ""))
    name = enc.parent.parent.name if enc.parent.name == "checkpoints" else enc.name
    return name if name in found and found[name]["cfg"]["stage"] == stage else None


def _kept_epoch(run: dict) -> Optional[int]:
    """The epoch of the kept checkpoint a probe read (``.../checkpoints/epoch<N>.pt``), else None."""
    enc = Path(str(run["cfg"]["config"].get("encoder") or ""))
    if enc.parent.name == "checkpoints" and enc.stem.startswith("epoch") and enc.stem[5:].isdigit():
        return int(enc.stem[5:])
    return None


def record(plan_dir: Path) -> str:
    found = runs(plan_dir)
    probes = {n: r for n, r in found.items() if r["cfg"]["stage"] == "linear_eval"
              or (r["cfg"]["stage"] == "supervised" and "top1" in r["res"])}
    def shape(r: dict) -> tuple:  # what a floor must share with a row: the encoder's width and input size
        c = _with_defaults(r["cfg"]["stage"], r["cfg"]["config"])
        return c.get("width"), c.get("image_size")

    floors: dict[tuple, stats.Interval] = {}
    for r in probes.values():  # the first random probe of each shape, in the folder's order
        if r["cfg"]["config"].get("encoder") == "random":
            floors.setdefault(shape(r), stats.wilson(r["res"]["top1"], r["res"]["n_test"]))
    lines = [f"# Evidence: `{plan_dir.name}`", "",
             f"Written by `python scripts/evidence.py {plan_dir}` from the run folders.", "",
             "| row | encoder's recipe (" + ", ".join(RECORD_KEYS) + ") | top-1 % [95%] | "
             "top-5 % [95%] | vs random | labelled | kNN top-1 % | final loss |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in probes.items():
        res = r["res"]
        t1, t5 = stats.wilson(res["top1"], res["n_test"]), stats.wilson(res["top5"], res["n_test"])
        pre, sup = _encoder_run(r, found), _encoder_run(r, found, "supervised")
        recipe, knn, loss = "random init", "", ""
        tested_elsewhere = False
        if r["cfg"]["stage"] == "supervised":
            c = r["cfg"]["config"]
            recipe = f"supervised {'fine-tuning' if c.get('init') else 'from scratch'}{_on(c)}, {_length(c)}"
            tested_elsewhere = _on(c) != ""  # its own test split, not CIFAR-100's: no floor to compare
        elif sup:
            c = found[sup]["cfg"]["config"]
            recipe = f"supervised pretraining{_on(c)}, {_length(c)}"
        elif pre:
            c = found[pre]["cfg"]["config"]
            recipe = ", ".join(f"{_with_defaults('pretrain', c).get(k)}" for k in RECORD_KEYS)
            if c.get("method", "simclr") != "simclr":  # its own loss and recipe: named first
                recipe = f"{c['method']}: {recipe}"
            if _kept_epoch(r) is not None:
                recipe += f" (its checkpoint at epoch {_kept_epoch(r)} of {c.get('epochs')})"
            knn = f"{found[pre]['res'].get('knn_top1', float('nan')):.1f}"
            loss = f"{found[pre]['res'].get('final_loss', float('nan')):.3f}"
        floor = floors.get(shape(r))
        is_random = r["cfg"]["config"].get("encoder") == "random"
        versus = "" if floor is None or is_random or tested_elsewhere else stats.compare(t1, floor)
        lines.append(f"| {name} | {recipe} | {t1.text()} | {t5.text()} | {versus} | "
                     f"{res.get('n_labelled', res.get('n_train'))} | {knn} | {loss} |")
    lines += ["", "| run | stage | wall time | commit | CPU (threads) | precision | started |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in found.items():
        prov = r["cfg"].get("provenance") or {}
        hw = prov.get("hardware") or {}
        runtime = r["res"].get("runtime") or {}
        commits = [str(prov.get("git_commit"))]
        last = (r["res"].get("finished_by") or {}).get("git_commit")
        if last and last != commits[0]:  # interrupted, then resumed or redone under newer code
            commits.append(str(last))
        shown = " → ".join(c[:8] + ("+dirty" if "dirty" in c else "") for c in commits)
        lines.append(f"| {name} | {r['cfg']['stage']} | {r['res'].get('wall_time_s', 0) / 60:.1f} min | "
                     f"{shown} | {hw.get('cpu')} ({hw.get('torch_threads')}) | "
                     f"{runtime.get('precision', r['cfg']['config'].get('precision'))} | "
                     f"{prov.get('started_at')} |")
    return "\n".join(lines) + "\n"


# ---- learning curves across plan folders --------------------------------------------------------
Point = tuple[float, str, stats.Interval]  # (budget, run name, top-1 interval)


def curves(plan_dirs: list[Path]) -> tuple[Optional[stats.Interval], dict[str, list[Point]]]:
    """(the random encoder's top-1 interval, learner label -> points sorted by budget).

    A SimCLR point is a probe of a pretrained encoder, its budget the pretraining steps; points
    share a curve when everything else in the recipe and the probe's label share are equal. A
    supervised point is a run from scratch tested on CIFAR-100, its budget the epochs. Only seed 0
    makes a curve (another seed at the same budget is read by ``--ablation`` as spread)."""
    floor, out = None, {}
    for plan_dir in plan_dirs:
        found = runs(plan_dir)
        for name, r in found.items():
            c, res = r["cfg"]["config"], r["res"]
            if "top1" not in res or "n_test" not in res:
                continue
            top1 = stats.wilson(res["top1"], res["n_test"])
            pre = _encoder_run(r, found) if r["cfg"]["stage"] == "linear_eval" else None
            if r["cfg"]["stage"] == "linear_eval" and c.get("encoder") == "random":
                floor = floor or (top1 if c.get("seed", 0) == 0 else None)
            elif pre and found[pre]["cfg"]["config"].get("seed", 0) == 0 and c.get("seed", 0) == 0:
                pc = found[pre]["cfg"]["config"]  # a curve is one seed's: other seeds are spread
                steps = found[pre]["res"].get("steps") or pc.get("steps")
                recipe = ", ".join(f"{k} {pc.get(k)}" for k in RECIPE_KEYS if k != "steps")
                label = (f"SimCLR{_on(pc)} ({recipe}; probe on {c.get('label_fraction')} of the labels)")
                out.setdefault(label, []).append((float(steps), f"{plan_dir.name}/{name}", top1))
            elif (sup := _encoder_run(r, found, "supervised")) and c.get("seed", 0) == 0:
                sc = found[sup]["cfg"]["config"]  # supervised pretraining, probed: by its steps
                steps = found[sup]["res"].get("steps") or sc.get("steps")
                if steps and not sc.get("init") and sc.get("seed", 0) == 0:
                    label = (f"supervised pretraining{_on(sc)} (lr {sc.get('lr')}, batch {sc.get('batch_size')}, "
                             f"{sc.get('subset_fraction')} of its images, {_px(sc)}; probe on "
                             f"{c.get('label_fraction')} of the labels)")
                    out.setdefault(label, []).append((float(steps), f"{plan_dir.name}/{name}", top1))
            elif (r["cfg"]["stage"] == "supervised" and not c.get("init") and c.get("seed", 0) == 0
                  and str(c.get("dataset", "cifar100")).startswith("cifar100")):  # tested on CIFAR-100
                label = (f"supervised from scratch (lr {c.get('lr')}, batch {c.get('batch_size')}, "
                         f"{c.get('subset_fraction')} of the labels, {_px(c)})")
                out.setdefault(label, []).append((float(c.get("epochs")), f"{plan_dir.name}/{name}", top1))
    return floor, {k: sorted(v) for k, v in out.items() if len(v) >= 2}


def _length(c: dict) -> str:
    """A supervised run's length and recipe: its steps when set (they override the epochs)."""
    length = f"{c['steps']} steps" if c.get("steps") else f"{c.get('epochs')} epochs"
    return f"{length}, lr {c.get('lr')}, batch {c.get('batch_size')}"


def _px(config: dict) -> str:
    """A run's image size, part of a curve's label: runs at two sizes are two curves."""
    return f"{config.get('image_size') or 'native'} px"


def _on(config: dict) -> str:
    """" on <dataset>" for a pretraining set other than CIFAR-100 (the curves' default)."""
    dataset = str(config.get("dataset", "cifar100"))
    return "" if dataset == "cifar100" else f" on {dataset}"


def budget_unit(label: str) -> str:
    """A curve's budget: epochs for supervised training from scratch, pretraining steps otherwise."""
    return "epochs" if label.startswith("supervised from scratch") else "steps"


def crossing(points: list[Point], floor: stats.Interval) -> str:
    """Where a curve first clears the floor's interval, and its rise per doubling of budget after."""
    above = [i for i, (_, _, t) in enumerate(points) if stats.compare(t, floor) == "higher"]
    if not above:
        return (f"never clears the random encoder's interval up to {points[-1][0]:g} "
                f"(last point {points[-1][2].text()})")
    i = above[0]
    x, _, t = points[i]
    text = f"first clears the random encoder's interval at {x:g} ({t.text()} vs {floor.text()})"
    if i:
        text += f"; at {points[i - 1][0]:g} it was {stats.compare(points[i - 1][2], floor)}"
    if i + 1 < len(points):
        xl, _, tl = points[-1]
        per = (tl.value - t.value) / math.log2(xl / x)
        text += (f"; from {x:g} to {xl:g} it rises {tl.value - t.value:+.1f} points "
                 f"({per:+.1f} per doubling), to {tl.text()}")
    return text


def curves_section(plan_dirs: list[Path]) -> str:
    floor, found = curves(plan_dirs)
    lines = ["# Learning curves", "",
             "Read by `python scripts/evidence.py " + " ".join(str(d) for d in plan_dirs) + " --curves`; "
             "budgets are pretraining steps (of the given batch: a SimCLR step passes two views of each "
             "image through the encoder, a supervised one image) and epochs of supervised training "
             "from scratch.", ""]
    if floor is None or not found:
        return "\n".join(lines + ["No random-encoder probe or no learner with two points yet.", ""])
    lines += [f"Random encoder (the floor): top-1 {floor.text()}.", ""]
    for label, points in found.items():
        lines += [f"**{label}**: {crossing(points, floor)}.", "",
                  "| budget | run | top-1 % [95%] | vs random |", "| --- | --- | --- | --- |"]
        lines += [f"| {x:g} | {name} | {t.text()} | {stats.compare(t, floor)} |" for x, name, t in points]
        lines.append("")
    return "\n".join(lines)


def curves_figure(plan_dirs: list[Path], path: Path) -> None:
    """Top-1 with its interval against budget (log scale), one panel per kind of budget."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor, found = curves(plan_dirs)
    kinds = {"steps": ("pretraining", "pretraining steps (batch 128)"),
             "epochs": ("supervised from scratch", "epochs on the labelled images")}
    kinds = {u: k for u, k in kinds.items() if any(budget_unit(label) == u for label in found)}
    fig, axs = plt.subplots(1, max(len(kinds), 1), figsize=(5.5 * max(len(kinds), 1), 4.2), squeeze=False)
    for ax, (unit, (title, xlabel)) in zip(axs[0], kinds.items()):
        ticks: set[float] = set()
        for label, points in found.items():
            if budget_unit(label) == unit:
                xs = [x for x, _, _ in points]
                ticks.update(xs)
                ys = [t.value for _, _, t in points]
                err = [[t.value - t.low for _, _, t in points], [t.high - t.value for _, _, t in points]]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label.split(" (")[0])
        if floor is not None:
            ax.axhspan(floor.low, floor.high, color="grey", alpha=0.3, label=f"random encoder {floor.text()}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [f"{x:g}" for x in sorted(ticks)])
        ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("CIFAR-100 top-1 % (95% interval)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


# ---- image size at equal compute ---------------------------------------------------------------
def _correct(folder: Path, res: dict):
    """Per-image top-1 correctness from a run's saved test predictions (None without them)."""
    from simpleclr.runs import predictions

    if not res.get("predictions"):
        return None
    return predictions.load_predictions(folder / res["predictions"], res.get("test_labels_digest")).correct()


def _size_rows(plan_dir: Path) -> dict[str, dict[int, tuple[str, dict, Path, str]]]:
    """Learner -> image size -> (run, result, folder): SimCLR probes, random encoders' probes and
    supervised runs from scratch tested on CIFAR-100."""
    found = runs(plan_dir)
    out: dict[str, dict[int, list[tuple[str, dict, Path, str]]]] = {}
    for name, r in found.items():
        c, res, stage = r["cfg"]["config"], r["res"], r["cfg"]["stage"]
        if "top1" not in res or "n_test" not in res:
            continue
        if stage == "linear_eval" and c.get("encoder") == "random":
            kind = "random encoder"
        elif stage == "linear_eval" and _encoder_run(r, found):
            kind = "SimCLR"
        elif stage == "supervised" and not c.get("init") and not _on(c):  # tested on CIFAR-100
            kind = "supervised from scratch"
        else:
            continue
        size = int(res.get("input_size") or c.get("image_size") or 0)
        out.setdefault(kind, {}).setdefault(size, []).append((name, res, plan_dir / name, _work(found, name)))
    # a pilot has one run per learner and size: a folder with more (a learning curve) is no pilot
    return {kind: {size: rs[0] for size, rs in sizes.items()} for kind, sizes in out.items()
            if all(len(rs) == 1 for rs in sizes.values())}


def _work(found: dict[str, dict], name: str) -> str:
    """A training run's compute in 32 px-equivalent image passes (area x passes; a SimCLR image
    passes as two views): how the sizes were given equal compute."""
    r = found[name]
    pre = _encoder_run(r, found)
    run = found[pre] if pre else r
    c, res = run["cfg"]["config"], run["res"]
    size = int(c.get("image_size") or 32)
    if run["cfg"]["stage"] == "pretrain":
        passes = (res.get("steps") or c.get("steps") or 0) * c.get("batch_size", 0) * 2
    elif run["cfg"]["stage"] == "supervised":
        passes = (res.get("steps") or 0) * c.get("batch_size", 0)
    else:
        return ""
    return f"{passes * (size / 32) ** 2:,.0f}"


def resolution_section(plan_dirs: list[Path]) -> str:
    """Each learner at two image sizes, the larger against the smaller with the paired test."""
    lines = ["# Image size at equal compute", "",
             "Read by `python scripts/evidence.py " + " ".join(str(d) for d in plan_dirs) + " --resolution`: "
             "each learner at two sizes, trained for the same compute (image passes times pixel "
             "area, given here in 32 px-equivalent passes), tested on the same CIFAR-100 test "
             "images; the difference is McNemar's exact test on the per-image predictions, each size "
             "beside the random encoder at that size.", "",
             "| learner | size | run | compute | top-1 % [95%] | vs random at its size | larger minus smaller |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for plan_dir in plan_dirs:
        rows = _size_rows(plan_dir)
        floors = rows.get("random encoder", {})
        for kind in ("SimCLR", "supervised from scratch", "random encoder"):
            sizes = sorted(rows.get(kind, {}))
            if len(sizes) < 2:  # nothing to set against
                continue
            for size in sizes:
                name, res, folder, work = rows[kind][size]
                t = stats.wilson(res["top1"], res["n_test"])
                versus = ""
                if kind != "random encoder" and size in floors:
                    f_name, f_res, f_folder, _ = floors[size]
                    versus = _paired_text(_correct(folder, res), _correct(f_folder, f_res))
                diff = ""
                if len(sizes) == 2 and size == sizes[1]:
                    s_name, s_res, s_folder, _ = rows[kind][sizes[0]]
                    diff = _paired_text(_correct(folder, res), _correct(s_folder, s_res))
                lines.append(f"| {kind} | {size} px | {plan_dir.name}/{name} | {work} | {t.text()} | "
                             f"{versus} | {diff} |")
    return "\n".join(lines) + "\n"


# ---- one factor at a time ----------------------------------------------------------------------
IGNORED = {"progress", "num_threads", "data_dir", "accept_checksum", "launcher"}  # not the experiment
BUDGET = {"steps", "epochs"}  # the learning curves' axis, not a recipe setting
Probe = tuple[str, dict, dict, stats.Interval]  # (plan/run, probe config, pretrain config, top-1)


def _with_defaults(stage: str, config: dict) -> dict:
    """``config`` with the stage's defaults under it, so a field added after a run was recorded
    compares as its default, not as a difference."""
    from simpleclr.config import STAGES

    return {**STAGES[stage]().to_dict(), **config}


def simclr_probes(plan_dirs: list[Path]) -> dict[str, Probe]:
    """Every SimCLR probe of the folders, and the random encoder's (pretrain config {})."""
    out = {}
    for plan_dir in plan_dirs:
        found = runs(plan_dir)
        for name, r in found.items():
            c, res = r["cfg"]["config"], r["res"]
            if r["cfg"]["stage"] != "linear_eval" or "top1" not in res:
                continue
            pre = _encoder_run(r, found)
            if pre or c.get("encoder") == "random":
                key = f"{plan_dir.name}/{name}"
                pc = _with_defaults("pretrain", found[pre]["cfg"]["config"]) if pre else {}
                out[key] = (key, _with_defaults("linear_eval", c), pc,
                            stats.wilson(res["top1"], res["n_test"]))
    return out


def _diff(a: dict, b: dict, skip: set[str]) -> dict[str, tuple]:
    return {k: (a.get(k), b.get(k)) for k in sorted((set(a) | set(b)) - skip - IGNORED)
            if a.get(k) != b.get(k)}


def _one_away(probes: dict[str, Probe], reference: str) -> tuple[list[tuple], list[Probe]]:
    """(rows (setting, reference value, value, run, top-1) one pretraining setting away from the
    reference, its budget equal; random-encoder probes otherwise equal to the reference's probe)."""
    _, ref_probe, ref_pre, _ = probes[reference]
    rows, randoms = [], []
    for key, probe, pre, t in probes.values():
        if key == reference:
            continue
        if not pre:  # one per seed (the same seed's probe is the same run again)
            seen = {r[1].get("seed") for r in randoms}
            if not _diff(probe, ref_probe, {"encoder", "seed"}) and probe.get("seed") not in seen:
                randoms.append((key, probe, pre, t))
            continue
        d = _diff(pre, ref_pre, set())
        if len(d) == 1 and not _diff(probe, ref_probe, {"encoder"}) and not set(d) & BUDGET:
            (setting, (mine, ref)), = d.items()
            rows.append((setting, str(ref), str(mine), key, t))
    return sorted(rows, key=lambda r: (r[0] == "seed", r[0], r[3])), sorted(
        randoms, key=lambda p: (p[1].get("seed", 0), p[0]))


def _verdict(rows: list[tuple], randoms: list[Probe], ref_t: stats.Interval) -> str:
    """Which settings move top-1 beyond the intervals and beyond the reference's seed spread."""
    seeds = [abs(t.value - ref_t.value) for s, *_, t in rows if s == "seed"]
    settings = [r for r in rows if r[0] != "seed"]
    if not settings:
        return ""
    beyond = [r for r in settings if stats.compare(r[4], ref_t) != "same"]
    if seeds:
        noise = max(seeds)
        beyond = [r for r in beyond if abs(r[4].value - ref_t.value) > noise]
        said = f"A second seed of the reference moved top-1 by {noise:.1f} points"
        rnd = [abs(a[3].value - b[3].value) for i, a in enumerate(randoms) for b in randoms[i + 1:]]
        said += f" (the random encoder's by {max(rnd):.1f})" if rnd else ""
        said += ". Beyond both the intervals and that: "
    else:
        said = "No second seed of the reference yet, so beyond the intervals only: "
    named = [f"{s} ({ref} → {m}: {t.value - ref_t.value:+.1f})" for s, ref, m, _, t in beyond]
    return said + ("; ".join(named) if named else "none of the settings") + "."


def supervised_seed_pairs(plan_dirs: list[Path]) -> list[tuple[str, stats.Interval, str, stats.Interval]]:
    """(seed-0 run, its top-1, other-seed run, its top-1) for supervised runs tested on CIFAR-100
    whose configs differ in the seed alone."""
    found = [(f"{d.name}/{n}", _with_defaults("supervised", r["cfg"]["config"]),
              stats.wilson(r["res"]["top1"], r["res"]["n_test"]))
             for d in plan_dirs for n, r in runs(d).items()
             if r["cfg"]["stage"] == "supervised" and "top1" in r["res"]]
    return [(ka, ta, kb, tb) for ka, ca, ta in found if ca.get("seed") == 0
            for kb, cb, tb in found if list(_diff(ca, cb, set())) == ["seed"]]


def _supervised_seed_lines(plan_dirs: list[Path]) -> list[str]:
    pairs = supervised_seed_pairs(plan_dirs)
    if not pairs:
        return []
    lines = ["Supervised training from scratch, the same config with another seed:", "",
             "| seed 0 | top-1 % [95%] | other seed | top-1 % [95%] | difference (points) | vs seed 0 |",
             "| --- | --- | --- | --- | --- | --- |"]
    return lines + [f"| {ka} | {ta.text()} | {kb} | {tb.text()} | {tb.value - ta.value:+.1f} | "
                    f"{stats.compare(tb, ta)} |" for ka, ta, kb, tb in pairs] + [""]


def ablation_section(plan_dirs: list[Path], reference: str) -> str:
    """Each probe one setting away from ``reference`` (the probe equal), and the seed spread."""
    probes = simclr_probes(plan_dirs)
    lines = ["# One factor at a time", "",
             "Read by `python scripts/evidence.py " + " ".join(str(d) for d in plan_dirs)
             + f" --ablation {reference}`: every SimCLR probe whose pretraining differs from "
             f"`{reference}`'s in exactly one setting other than its length (the learning curves "
             "vary that), the probe itself equal; and the random encoder's probes.", ""]
    if reference not in probes or not probes[reference][2]:
        return "\n".join(lines + [f"No finished SimCLR probe `{reference}` yet.", ""])
    ref_t = probes[reference][3]
    rows, randoms = _one_away(probes, reference)
    lines += [f"Reference `{reference}`: top-1 {ref_t.text()}.", "",
              "| setting | reference → this run | run | top-1 % [95%] | difference (points) | vs reference |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {s} | {ref} → {m} | {key} | {t.text()} | {t.value - ref_t.value:+.1f} | "
              f"{stats.compare(t, ref_t)} |" for s, ref, m, key, t in rows]
    lines += [f"| random encoder | seed {c.get('seed', 0)} | {k} | {t.text()} |  |  |"
              for k, c, _, t in randoms]
    return "\n".join(lines + ["", _verdict(rows, randoms, ref_t), ""]
                     + _supervised_seed_lines(plan_dirs))


# ---- a recipe pilot: variants chosen on training labels, tested beside ------------------------
def _pilot_probes(found: dict[str, dict], stage: str) -> dict[str, tuple[dict, dict, dict]]:
    """Probes among a folder's runs whose encoder a ``stage`` run trained: name -> (probe config
    with defaults, encoder config with defaults, probe result)."""
    out = {}
    for name, r in found.items():
        enc = _encoder_run(r, found, stage) if r["cfg"]["stage"] == "linear_eval" else None
        if enc and "top1" in r["res"]:
            out[name] = (_with_defaults("linear_eval", r["cfg"]["config"]),
                         _with_defaults(stage, found[enc]["cfg"]["config"]), r["res"])
    return out


def _random_probes(found: dict[str, dict]) -> dict[str, tuple[dict, dict]]:
    """Probes of a random encoder among a folder's runs: name -> (probe config with defaults, result)."""
    return {name: (_with_defaults("linear_eval", r["cfg"]["config"]), r["res"])
            for name, r in found.items()
            if r["cfg"]["stage"] == "linear_eval" and r["cfg"]["config"].get("encoder") == "random"
            and "top1" in r["res"]}


def _paired_text(mine, theirs) -> str:
    """The paired test of two runs' per-image correctness (:func:`_correct`) on the same test
    images, or "" when either lacks it."""
    if mine is None or theirs is None or mine.shape != theirs.shape:
        return ""
    p = stats.paired(mine, theirs)
    return f"{p.verdict}: {p.text(unit=' points')}"


def pilot_section(plan_dirs: list[Path], reference: str) -> str:
    """Every probe whose encoder the same stage trained as ``reference``'s (the probe itself
    equal, but for the width it must share with its encoder) against it: what differs, the
    cross-validated top-1 on the labelled training images the pilot chooses by, and the test top-1
    with the paired tests against the reference and against the random encoder of the same width
    and probe, shown beside and never chosen on."""
    plan_name, ref_name = reference.split("/", 1)
    plan_dir = next((d for d in plan_dirs if d.name == plan_name), None)
    lines = [f"# Pilot against `{reference}`", "",
             "Read by `python scripts/evidence.py " + " ".join(str(d) for d in plan_dirs)
             + f" --pilot {reference}`: each variant's encoder differs from the reference's in the "
             "settings named, its probe is the same. The pilot chooses by the probe's cross-validated "
             "top-1 over the labelled *training* images (the folds pooled, 95% Wilson interval over "
             "them); the test top-1 and the paired test against the reference on the same test "
             "images (McNemar's exact test) are shown beside it, never chosen on, and so is each "
             "variant's paired gain over the random encoder probed alike (its width's floor).", ""]
    found = runs(plan_dir) if plan_dir else {}
    stage = next((st for st in ("pretrain", "supervised") if ref_name in found
                  and _encoder_run(found[ref_name], found, st)), None)
    if stage is None:
        return "\n".join(lines + [f"No finished probe `{reference}` of a trained encoder yet.", ""])
    probes, randoms = _pilot_probes(found, stage), _random_probes(found)
    ref_probe, ref_enc, _ = probes[ref_name]
    # each run's per-image correctness, read once: the reference and the floors pair with many rows
    correct = {n: _correct(plan_dir / n, entry[-1]) for n, entry in {**probes, **randoms}.items()}
    lines += ["| run | differs from the reference | CV top-1 % [95%] (training labels) | "
              "test top-1 % [95%] | test minus reference (paired) | test minus random encoder "
              "(paired) |", "| --- | --- | --- | --- | --- | --- |"]
    cv = {}
    for name, (probe, enc_cfg, res) in probes.items():
        if _diff(probe, ref_probe, {"encoder", "width"}):
            continue
        d = _diff(enc_cfg, ref_enc, set())
        what = ", ".join(f"{k} {ref} → {mine}" for k, (mine, ref) in d.items()) or "(the reference)"
        cv[name] = stats.wilson(res["val_top1"], res["n_val"])
        t = stats.wilson(res["top1"], res["n_test"])
        paired = "" if name == ref_name else _paired_text(correct[name], correct[ref_name])
        floor = next((f for f, (c, _) in sorted(randoms.items()) if not _diff(c, probe, {"encoder"})), None)
        over = f"{_paired_text(correct[name], correct[floor])} (`{floor}`)" if floor else ""
        lines.append(f"| {plan_name}/{name} | {what} | {cv[name].text()} | {t.text()} | {paired} | {over} |")
    best = max(cv, key=lambda n: cv[n].value)
    clear = [n for n in cv if n != ref_name and stats.compare(cv[n], cv[ref_name]) == "higher"]
    said = (f"Highest cross-validated top-1: `{best}` ({cv[best].value:.1f} against the reference's "
            f"{cv[ref_name].value:.1f}). ")
    said += (f"Clear of the reference's interval on the training labels: {', '.join(clear)}."
             if clear else "No variant's interval clears the reference's on the training labels: there "
             "the pilot cannot tell any variant from the reference.")
    return "\n".join(lines + ["", said, ""])


# ---- self-supervised methods side by side --------------------------------------------------------
def _plan_clock(found: dict[str, dict]) -> tuple[float, str, str]:
    """A plan folder's compute (its :func:`runs`): the sum of its finished runs' wall times, and
    the CPU and precision they ran on (joined where they differ)."""
    wall = sum(float(r["res"].get("wall_time_s") or 0.0) for r in found.values())
    cpus = sorted({str(((r["cfg"].get("provenance") or {}).get("hardware") or {}).get("cpu")) for r in found.values()})
    prec = sorted({str((r["res"].get("runtime") or {}).get("precision", r["cfg"]["config"].get("precision")))
                   for r in found.values()})
    return wall, " / ".join(cpus), " / ".join(prec)


def _length_lines(plan_dir: Path, found: dict[str, dict]) -> list[str]:
    """A length series per pretraining run whose kept checkpoints were probed: each point's top-1
    and its paired difference to the random encoder probed alike (the floor of its width), the
    pretraining's kNN monitor at that epoch beside it; the run's own (final) probe last."""
    floors = {(_with_defaults("linear_eval", r["cfg"]["config"]).get("width")): n for n, r in found.items()
              if r["cfg"]["stage"] == "linear_eval" and r["cfg"]["config"].get("encoder") == "random"}
    series: dict[str, list[tuple[float, str]]] = {}
    for name, r in found.items():
        pre = _encoder_run(r, found) if r["cfg"]["stage"] == "linear_eval" else None
        if pre:
            epoch = _kept_epoch(r) or found[pre]["cfg"]["config"].get("epochs")
            series.setdefault(pre, []).append((float(epoch), name))
    series = {p: pts for p, pts in series.items() if any(_kept_epoch(found[n]) for _, n in pts)}
    if not series:
        return []
    lines = ["### Against length", "",
             "Each pretraining's kept checkpoints (points of one cosine schedule, not finished shorter "
             "runs) probed alike; the difference to the random encoder is McNemar's exact test on the "
             "same test images.", "",
             "| pretraining | method | epoch | steps | top-1 % [95%] | minus random floor (paired) | "
             "kNN top-1 % at that epoch |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for pre, pts in series.items():
        cfg, folder = found[pre]["cfg"]["config"], plan_dir / pre
        knn = {int(m["epoch"]): m["knn_top1"] for m in RunDir(folder).read_metrics()
               if m.get("knn_top1") is not None}
        per_epoch = (found[pre]["res"].get("steps") or 0) / max(1, cfg.get("epochs") or 1)
        floor = floors.get(_with_defaults("pretrain", cfg).get("width"))
        for epoch, name in sorted(pts):
            res = found[name]["res"]
            t = stats.wilson(res["top1"], res["n_test"])
            versus = "" if floor is None else _paired_text(_correct(plan_dir / name, res),
                                                           _correct(plan_dir / floor, found[floor]["res"]))
            k = knn.get(int(epoch))
            lines.append(f"| {pre} | {cfg.get('method', 'simclr')} | {epoch:g} | {epoch * per_epoch:,.0f} | "
                         f"{t.text()} | {versus} | {'' if k is None else f'{k:.1f}'} |")
    return lines + [""]


def methods_section(plan_dirs: list[Path]) -> str:
    """Each self-supervised method's probe, from the report's own methods table
    (simpleclr.report.methods): top-1 with its interval, the paired tests against the random
    encoder of its width and against `super`, the probe's cross-validated top-1 on training labels
    (what the verdict chooses its candidate by), the kNN monitor and the pretraining's wall time;
    then the report's verdict and the plan's compute with its CPU."""
    from simpleclr.report import methods as rm
    from simpleclr.report.model import load_study

    lines = ["# Self-supervised methods side by side", "",
             "Read by `python scripts/evidence.py " + " ".join(str(d) for d in plan_dirs) + " --methods` "
             "with the report's methods table: each method's probe (top-1 with its 95% interval over "
             "the test images), McNemar's exact test on the same test images against the random "
             "encoder of its width and against `super`, the probe's cross-validated top-1 on the "
             "labelled training images (the candidate for \"best\" is chosen by it, never by the "
             "test set), the pretraining's kNN monitor and wall time.", ""]
    for plan_dir in plan_dirs:
        study = load_study(plan_dir)
        df = rm.methods_table(study)
        if not len(df):
            lines += [f"`{plan_dir.name}`: fewer than two methods have finished probes.", ""]
            continue
        lines += [f"## `{plan_dir.name}`", "",
                  "| method | top-1 % [95%] | minus random floor (paired) | minus super (paired) | "
                  "CV top-1 % (training labels) | kNN top-1 % | pretraining |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for _, r in df.iterrows():
            top1 = "missing" if math.isnan(r["top1"]) else f"{r['top1']:.1f} [{r['low']:.1f}, {r['high']:.1f}]"
            cv = "" if math.isnan(r["cv_top1"]) else f"{r['cv_top1']:.1f}"
            knn = "" if math.isnan(r["knn_top1"]) else f"{r['knn_top1']:.1f}"
            pre = "" if math.isnan(r["pretrain_s"]) else f"{r['steps']} steps, {r['pretrain_s'] / 60:.1f} min"
            lines.append(f"| {r['name']} | {top1} | {r['vs_floor_text']} | {r['vs_super_text']} | {cv} | "
                         f"{knn} | {pre} |")
        found = runs(plan_dir)
        lines += [""] + _length_lines(plan_dir, found)
        wall, cpu, prec = _plan_clock(found)
        lines += ["", rm.methods_verdict(study, df), "",
                  f"The plan's {sum(r.done for r in study.runs.values())} finished runs took "
                  f"{wall / 60:.1f} min of run time in all (summed over workers where several ran "
                  f"side by side; notebook start-up between runs not counted) on {cpu}, {prec}.", ""]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("plan_dirs", type=Path, nargs="+", help="plan output folders, e.g. outputs/recipe")
    p.add_argument("--curves", action="store_true", help="also the learning curves across the folders")
    p.add_argument("--figure", type=Path, help="write the learning curves as a PNG here")
    p.add_argument("--resolution", action="store_true",
                   help="also each learner at two image sizes, paired on the same test images")
    p.add_argument("--ablation", metavar="PLAN/RUN",
                   help="set each probe one setting away from this one against it, e.g. recipe/published")
    p.add_argument("--methods", action="store_true",
                   help="also each self-supervised method's probe against the floor and super (paired)")
    p.add_argument("--pilot", metavar="PLAN/RUN", action="append", default=[],
                   help="set each variant of this reference probe against it, chosen on training labels")
    ns = p.parse_args(argv)
    for d in ns.plan_dirs:
        if not d.is_dir():
            print(f"evidence: {d} is not a folder: run the plan first (simpleclr plan run {d.name})",
                  file=sys.stderr)
            return 2
    sys.stdout.write("\n".join(record(d) for d in ns.plan_dirs))
    if ns.curves:
        sys.stdout.write("\n" + curves_section(ns.plan_dirs))
    if ns.resolution:
        sys.stdout.write("\n" + resolution_section(ns.plan_dirs))
    if ns.ablation:
        sys.stdout.write("\n" + ablation_section(ns.plan_dirs, ns.ablation))
    for reference in ns.pilot:
        sys.stdout.write("\n" + pilot_section(ns.plan_dirs, reference))
    if ns.methods:
        sys.stdout.write("\n" + methods_section(ns.plan_dirs))
    if ns.figure:
        curves_figure(ns.plan_dirs, ns.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())

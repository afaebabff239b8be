"""The report's tables: a study's runs aggregated over seeds, and their display forms.

Each ``*_table`` turns a :class:`~simpleclr.report.model.Study` into a pandas frame of numbers (means,
standard deviations and 95% intervals over seeds, differences to ``super``); each ``*_display``
turns that frame into the strings a reader sees, and :func:`styled` into an HTML table. The
prose around them (headline, verdict, protocol, provenance) is :mod:`simpleclr.report.prose`'s, which
re-exports the names the report notebook calls. Nothing here trains or evaluates a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from . import stats
from ..runs.predictions import Predictions, PredictionsError, load_predictions
from .figures import hparam_axes
from .model import ROW_INFO, ROW_NAMES, RunInfo, Study


# ---- aggregation ------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (NaN for one value) and count; NaNs for none."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan, 0
    arr = np.asarray(vals, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else math.nan, len(arr)


def fixed_weights(run: RunInfo) -> bool:
    """Whether a run cannot vary by seed: a probe of torchvision's fixed weights on all the labels
    (its seeds would change only the probe's folds). Random and trained encoders vary by seed, and
    so does a probe on a share of the labels (its seed draws the labelled images)."""
    return (run.stage == "linear_eval" and str(run.config.get("encoder") or "").startswith("imagenet")
            and float(run.config.get("label_fraction", 1.0)) >= 1.0)


def accuracy_interval(values: Sequence[Optional[float]], n_test: Optional[int],
                      correct: Optional[np.ndarray] = None, fixed: bool = False) -> tuple[float, float]:
    """95% interval of an accuracy (:mod:`simpleclr.report.stats`): Wilson for one run or a row
    of fixed weights; over seeds and test images together from the per-image ``correct`` table
    (seeds x images) where every seed has one, else the seeds' spread plus the binomial test
    term; NaNs when it cannot be had."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals or (len(vals) == 1 and not n_test):
        return math.nan, math.nan
    if fixed and n_test:
        iv = stats.fixed_encoder(vals, n_test)
    elif correct is not None and correct.shape[0] == len(vals):
        iv = stats.seeds_and_images(correct)
    else:
        iv = stats.over_seeds(vals, n=n_test)
    return iv.low, iv.high


def correct_table(runs: Sequence[RunInfo], key: str = "top1") -> Optional[np.ndarray]:
    """The seeds x images correctness of finished runs, in seed order, where every one has
    per-image predictions of the same test images; else None."""
    by_seed = _by_seed(runs)
    if len(by_seed) != sum(r.done for r in runs) or len({p.digest for p in by_seed.values()}) != 1:
        return None
    return np.stack([by_seed[s].correct(key) for s in sorted(by_seed)])


def _metric_summary(runs: Sequence[RunInfo], study: Study) -> dict:
    done = [r for r in runs if r.done]
    n_test = next((int(r.result["n_test"]) for r in done if r.result.get("n_test")), None)
    fixed = bool(done) and all(fixed_weights(r) for r in done)
    out: dict[str, Any] = {}
    for key in ("top1", "top5"):
        values = [r.result.get(key) for r in done]
        mean, std, n = mean_std(values)
        low, high = accuracy_interval(values, n_test, correct_table(done, key) if done else None, fixed)
        out.update({key: mean, f"{key}_std": std, f"{key}_lo": low, f"{key}_hi": high, "n": n})
    cv = mean_std([r.result.get("val_top1") for r in done])[0]
    missing = [r for r in runs if not r.done]
    return {**out, "cv_top1": cv, "n_test": n_test, "planned": len(runs), "n_labelled": labelled_count(done),
            "missing": "; ".join(f"{r.name}: {study.missing_reason(r)}" for r in missing)}


def row_interval(row: Any, key: str = "top1") -> Optional[stats.Interval]:
    """A table row's accuracy as an :class:`stats.Interval` (None without one)."""
    low, high = row.get(f"{key}_lo", math.nan), row.get(f"{key}_hi", math.nan)
    if any(v is None or math.isnan(float(v)) for v in (row.get(key), low, high)):
        return None
    return stats.Interval(float(row[key]), float(low), float(high), "")


def versus(row: Any, base: Any, key: str = "top1") -> str:
    """"higher", "lower", "same" (inside the noise) or "" (no interval) for ``row`` against ``base``."""
    a, b = row_interval(row, key), row_interval(base, key)
    return stats.compare(a, b) if a is not None and b is not None else ""


# ---- paired comparisons --------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """Row a against row b as a table shows it: the verdict ("higher", "same", "lower"; "" when
    nothing can be said), the difference in points, its text and whether a paired test made it."""

    verdict: str
    diff: float
    text: str
    paired: bool
    basis: str


NO_COMPARISON = Comparison("", math.nan, "—", False, "")
_PREDICTIONS: dict[tuple[str, int, int], Optional[Predictions]] = {}


def run_predictions(run: RunInfo) -> Optional[Predictions]:
    """A finished run's per-image test predictions, checked against the test-label digest its
    result.json recorded; None for a folder written before they were saved, or a damaged file
    (the report then falls back to the interval rule and says so). Read once per file version:
    the tables pair each run many times."""
    res = run.result or {}
    if not run.done or not res.get("predictions") or not res.get("test_labels_digest"):
        return None
    path = Path(run.path) / str(res["predictions"])
    if not path.is_file():
        return None
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _PREDICTIONS:
        try:
            _PREDICTIONS[key] = load_predictions(path, res["test_labels_digest"])
        except PredictionsError:
            _PREDICTIONS[key] = None
    return _PREDICTIONS[key]


def _by_seed(runs: Sequence[RunInfo]) -> dict[int, Predictions]:
    out: dict[int, Predictions] = {}
    for r in runs:
        preds = run_predictions(r)
        if preds is not None:
            out.setdefault(int(r.config.get("seed", 0) or 0), preds)
    return out


def paired_runs(a_runs: Sequence[RunInfo], b_runs: Sequence[RunInfo], key: str = "top1") -> Optional[stats.Paired]:
    """Row a against row b from all their runs' per-image test predictions
    (:func:`stats.paired_seeds`: one run each, the exact McNemar test; several seeds, the mean
    difference with the seeds' and the test images' variance), or None when either has none or
    they were not tested on the same images (different test-label digests). A fixed-weights row
    (:func:`fixed_weights`) counts as one run and brings no seed variance."""
    a, b = _by_seed(a_runs), _by_seed(b_runs)
    if not a or not b or len({p.digest for p in (*a.values(), *b.values())}) != 1:
        return None
    fixed_a = all(fixed_weights(r) for r in a_runs if r.done)
    fixed_b = all(fixed_weights(r) for r in b_runs if r.done)
    table_a = np.stack([a[s].correct(key) for s in (sorted(a)[:1] if fixed_a else sorted(a))])
    table_b = np.stack([b[s].correct(key) for s in (sorted(b)[:1] if fixed_b else sorted(b))])
    return stats.paired_seeds(table_a, table_b, fixed_a=fixed_a, fixed_b=fixed_b)


def compare_rows(a_runs: Sequence[RunInfo], b_runs: Sequence[RunInfo], a_row: Any, b_row: Any,
                 key: str = "top1") -> Comparison:
    """Row a against row b: the paired test where both have per-image predictions of the same
    test images, else the interval-overlap rule, which the text then names."""
    if a_row is None or b_row is None or any(_nan(r.get(key)) for r in (a_row, b_row)):
        return NO_COMPARISON
    pair = paired_runs(a_runs, b_runs, key)
    if pair is not None:
        return Comparison(pair.verdict, pair.diff, pair.text(), True, pair.basis)
    verdict = versus(a_row, b_row, key)
    diff = float(a_row[key]) - float(b_row[key])
    rule = {"same": "intervals overlap", "": "no interval"}.get(verdict, "intervals apart")
    return Comparison(verdict, diff, f"{fmt_delta(diff)} ({rule}; no per-image predictions)", False,
                      "interval overlap")


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def best_cell(df: pd.DataFrame) -> Optional[int]:
    """The position of a study's best cell, chosen on training labels only: the highest mean
    cross-validated probe accuracy (``cv_top1``, the probes' validation on CIFAR-100 train),
    never the test set; None where no cell has one."""
    if df.empty or "cv_top1" not in df or df["cv_top1"].isna().all():
        return None
    return int(np.nanargmax(df["cv_top1"].to_numpy(dtype=float)))


def _versus_best(groups: Sequence[Sequence[RunInfo]], df: pd.DataFrame, key: str = "top1") -> list[Comparison]:
    """Each group (a table row, ``df``'s row in the same order) against the best cell
    (:func:`best_cell`): what the size and hyperparameter studies say about their cells. The
    paired tests' p-values are Holm-corrected over the study's cells (one family)."""
    best = best_cell(df)
    if best is None or df[key].isna().all():
        return [NO_COMPARISON] * len(df)
    pairs = {i: paired_runs(groups[i], groups[best], key) for i in range(len(df)) if i != best}
    tested = {i: p for i, p in pairs.items() if p is not None}
    adjusted = dict(zip(tested, stats.holm([p.p for p in tested.values()])))
    out = []
    for i in range(len(df)):
        if i == best:
            out.append(NO_COMPARISON)
        elif i in adjusted:
            pair = stats.holm_adjusted(tested[i], adjusted[i], len(tested))
            out.append(Comparison(pair.verdict, pair.diff, pair.text(), True, pair.basis))
        else:
            out.append(compare_rows(groups[i], groups[best], df.iloc[i], df.iloc[best], key))
    return out


def _add_comparisons(df: pd.DataFrame, prefix: str, comps: Sequence[Comparison]) -> None:
    df[f"{prefix}_verdict"] = [c.verdict for c in comps]
    df[f"{prefix}_diff"] = [c.diff for c in comps]
    df[f"{prefix}_text"] = [c.text for c in comps]
    df[f"{prefix}_paired"] = [c.paired for c in comps]


def labelled_count(runs: Sequence[RunInfo]) -> str:
    """The labelled CIFAR-100 images behind finished runs, from their result.json: ``"5,000"``, a
    range when they differ, ``"—"`` when no run recorded it."""
    counts = sorted({int(r.result["n_labelled"]) for r in runs
                     if r.result and r.result.get("n_labelled") is not None})
    if not counts:
        return "—"
    return f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"


def encoder_lr_choice(run: RunInfo) -> str:
    """How a fine-tuning run got its encoder lr scale: chosen on validation (with each value's
    validation top-1), or given (a grid of one value, or none)."""
    res = run.result or {}
    trials = res.get("encoder_lr_trials") or []
    scale = res.get("encoder_lr_scale", run.config.get("encoder_lr_scale", 1.0))
    if not trials:
        return f"{scale:g} (not tuned)"
    scores = ", ".join(f"{t['encoder_lr_scale']:g}: {t['val_top1']:.1f}" for t in trials)
    epochs = trials[0].get("epochs")
    return f"{scale:g} (best validation top-1 of {scores}; {epochs}-epoch trials)"


def short_dataset(name: str) -> str:
    """A dataset name as the tables print it: ``imagefolder:<path>`` -> ``imagefolder``, and
    generated data flagged ``(stand-in)``."""
    return name.split(":")[0] + (" (stand-in)" if name.startswith("synthetic-") else "")


def run_length(cfg: dict) -> str:
    """How long a training run ran: its fixed step count, else its epochs."""
    return f"{cfg['steps']} steps" if cfg.get("steps") else f"{cfg.get('epochs')} epochs"


def encoder_passes(stage: str, result: Optional[dict]) -> Optional[int]:
    """Images a training run passed through its encoder (a SimCLR image's two views counted
    twice), from its result; None where the result did not record them."""
    seen = (result or {}).get("images_seen")
    return int(seen) * (2 if stage == "pretrain" else 1) if seen else None


def training_budget(cfg: dict, stage: str, result: Optional[dict] = None) -> str:
    """What a training run was given, e.g. ``"SimCLR, 40 steps x 128, 10% of cifar100, 10,240
    encoder passes"``: the passes (images through the encoder, a SimCLR image's two views counted
    twice) where the result recorded its images, so rows given equal compute show it."""
    what = "SimCLR" if stage == "pretrain" else "supervised"
    length = run_length(cfg)
    frac = cfg.get("subset_fraction", 1.0)
    share = f"{100 * frac:g}% of " if frac < 1 else ""
    text = f"{what}, {length} × {cfg.get('batch_size')}, {share}{short_dataset(cfg.get('dataset', '?'))}"
    passes = encoder_passes(stage, result)
    if passes:
        text += f", {passes:,} encoder passes"
    return text


def row_budget(study: Study, runs: Sequence[RunInfo]) -> str:
    """The budget behind a main-table row: its training run and, for a probe, its label share."""
    if not runs:
        return ""
    run = runs[0]
    if run.stage == "supervised":
        return training_budget(run.config, "supervised", run.result)
    src = study.source_run(run)
    encoder = str(run.config.get("encoder", ""))
    if src is not None:
        head = training_budget(src.config, src.stage, src.result)
    elif encoder.startswith("imagenet"):
        head = "torchvision IMAGENET1K_V1" if encoder == "imagenet" else "generated stand-in weights"
    else:
        head = "no training"
    frac = run.config.get("label_fraction", 1.0)
    return f"{head}; probe on {100 * frac:g}% of the labels"


def input_size(run: RunInfo) -> Optional[int]:
    """The pixel size the network saw: the probe's record, else the training data's."""
    data = (run.config_json or {}).get("data") or {}
    return (run.result or {}).get("input_size") or data.get("image_size") or run.config.get("image_size")


def main_table(study: Study) -> pd.DataFrame:
    """One row per main-table representation the plan has, in the issue's order.

    Columns: representation, evaluation, top1/top5 (mean over seeds) and their std, n (seeds with
    numbers) of planned, d_top1/d_top5 (difference to ``super``), input_size, missing (why not);
    top-1 against the random floor (``vr_*``), ``super`` (``vs_*``) and the best row (``vb_*``):
    verdict, diff, text, paired (see :func:`compare_rows`).
    """
    rows = []
    for name in ROW_NAMES:
        runs = study.with_role("row", name)
        if not runs:
            continue
        rep, ev = ROW_INFO[name]
        s = _metric_summary(runs, study)
        sizes = sorted({input_size(r) for r in runs if r.done and input_size(r)})
        rows.append({"row": name, "representation": rep, "evaluation": ev, **s,
                     "input_size": ", ".join(str(x) for x in sizes), "budget": row_budget(study, runs)})
    df = pd.DataFrame(rows).set_index("row") if rows else pd.DataFrame(
        columns=["representation", "evaluation", "top1", "top1_std", "top5", "top5_std", "n", "planned",
                 "missing", "n_labelled", "input_size", "budget"])
    base = df.loc["super"] if "super" in df.index else None
    df["d_top1"] = df["top1"] - base["top1"] if base is not None else math.nan
    df["d_top5"] = df["top5"] - base["top5"] if base is not None else math.nan
    groups = {name: study.with_role("row", name) for name in df.index}
    best = df["top1"].idxmax() if len(df) and df["top1"].notna().any() else None
    for prefix, other in (("vr", "random"), ("vs", "super"), ("vb", best)):
        _add_comparisons(df, prefix, [
            compare_rows(groups[n], groups[other], df.loc[n], df.loc[other])
            if other in df.index and n != other else NO_COMPARISON for n in df.index])
    return df


def finetune_table(study: Study) -> pd.DataFrame:
    """Fine-tuned accuracy per initial encoder, its gain over ``super`` and its linear probe."""
    main = main_table(study)
    rows = []
    for name in ROW_NAMES:
        runs = study.with_role("finetune", name)
        if not runs:
            continue
        s = _metric_summary(runs, study)
        probe = main.loc[name, "top1"] if name in main.index else math.nan
        base = main.loc["super", "top1"] if "super" in main.index else math.nan
        base5 = main.loc["super", "top5"] if "super" in main.index else math.nan
        gain = (compare_rows(runs, study.with_role("row", "super"), s, main.loc["super"])
                if "super" in main.index else NO_COMPARISON)
        rows.append({"init": name, "representation": ROW_INFO[name][0], **s,
                     "gain_top1": s["top1"] - base, "gain_top5": s["top5"] - base5, "probe_top1": probe,
                     "gain_vs": gain.verdict, "gain_text": gain.text, "gain_paired": gain.paired,
                     "encoder_lr": "; ".join(encoder_lr_choice(r) for r in runs if r.done) or "—"})
    return pd.DataFrame(rows).set_index("init") if rows else pd.DataFrame()


def _fraction(run: RunInfo) -> Optional[float]:
    if run.notebook == "linear_eval":
        return run.config.get("label_fraction", (run.result or {}).get("label_fraction"))
    return run.config.get("subset_fraction")


def label_table(study: Study) -> pd.DataFrame:
    """Long form: one row per (representation, label fraction) with top-1/top-5 mean and std.

    A curve's point at the main table's own label share (100% in the linear protocol) is the
    main-table row itself, so plans need not run that probe twice.
    """
    groups: dict[tuple[str, float], list[RunInfo]] = {}
    curve_rows = {r.role["label_efficiency"] for r in study.with_role("label_efficiency")}
    for r in study.with_role("label_efficiency"):
        groups.setdefault((r.role["label_efficiency"], float(_fraction(r) or 1.0)), []).append(r)
    for name in curve_rows:
        for r in study.with_role("row", name):
            key = (name, float(_fraction(r) or 1.0))
            if not any(x.role.get("label_efficiency") == name for x in groups.get(key, [])):
                groups.setdefault(key, []).append(r)
    rows = [{"row": name, "fraction": frac, "labels_pct": 100 * frac, **_metric_summary(runs, study)}
            for (name, frac), runs in groups.items()]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["order"] = df["row"].map({n: i for i, n in enumerate(ROW_NAMES)})
    return df.sort_values(["order", "fraction"]).drop(columns="order").reset_index(drop=True)


def _pretrain_of(study: Study, run: RunInfo) -> Optional[RunInfo]:
    src = study.source_run(run)
    return src if src is not None and src.stage == "pretrain" else None


def _epochs_passed(pre: RunInfo) -> float:
    """Passes over its training images a pretraining run made: steps x batch / images (a run of
    fixed steps stops inside an epoch, which its ``epochs`` counts as begun)."""
    steps, batch = pre.config.get("steps"), pre.config.get("batch_size")
    n_train = pre.result.get("n_train")
    if steps and batch and n_train:
        return steps * batch / n_train
    return pre.result.get("epochs") or math.nan


def size_table(study: Study) -> pd.DataFrame:
    """Probe accuracy against the fraction (and count) of pretraining images, mean over seeds; one
    row per pretraining set and fraction (a run on another set of equal size separates the domain
    from the size), the sets in the order the plan first names them."""
    groups: dict[tuple[str, float], list[tuple[RunInfo, Optional[RunInfo]]]] = {}
    for r in study.with_role("size_study"):
        pre = _pretrain_of(study, r)
        frac = float(pre.config.get("subset_fraction", 1.0)) if pre and pre.config else math.nan
        dataset = str(pre.config.get("dataset")) if pre and pre.config else "?"
        groups.setdefault((dataset, frac), []).append((r, pre))
    order = {d: i for i, d in enumerate(dict.fromkeys(d for d, _ in groups))}
    groups = dict(sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])))
    rows = []
    for (_, frac), pairs in groups.items():
        pres = [p for _, p in pairs if p is not None and p.done]
        n_images = [((p.config_json or {}).get("data") or {}).get("n_train") for p in pres]
        first = pairs[0][1]
        rows.append({"fraction": frac, "pct": 100 * frac,
                     "n_images": int(np.nanmean([n for n in n_images if n])) if any(n_images) else math.nan,
                     "dataset": first.config.get("dataset") if first else None,
                     "steps": first.config.get("steps") if first else None,
                     "epochs_equiv": (np.nanmean([_epochs_passed(p) for p in pres]) if pres else math.nan),
                     **_metric_summary([r for r, _ in pairs], study)})
    df = pd.DataFrame(rows)
    _add_comparisons(df, "vb", _versus_best([[r for r, _ in pairs] for pairs in groups.values()], df))
    return df


def size_axes(df: pd.DataFrame) -> list[str]:
    """What names a size-study cell: its share, and its pretraining set where there are several."""
    return ["dataset", "pct"] if "dataset" in df and df["dataset"].nunique() > 1 else ["pct"]


def _axis_value(probe: RunInfo, pre: Optional[RunInfo], axis: str) -> Any:
    """A hyperparameter cell's value on ``axis``: the pretraining run's field, else the probe's own
    (``probe_layer`` varies the probe, not the pretraining)."""
    if pre is not None and pre.config and axis in pre.config:
        return pre.config[axis]
    return (probe.config or {}).get(axis)


def hparam_table(study: Study) -> pd.DataFrame:
    """One row per pretraining hyperparameter cell: the axes, probe top-1/top-5, kNN, final loss."""
    groups: dict[tuple, list[tuple[RunInfo, Optional[RunInfo]]]] = {}
    axes: list[str] = []
    for r in study.with_role("hparam"):
        for a in r.role["hparam"]:
            if a not in axes:
                axes.append(a)
    for r in study.with_role("hparam"):
        pre = _pretrain_of(study, r)
        key = tuple(_axis_value(r, pre, a) for a in axes)
        groups.setdefault(key, []).append((r, pre))
    rows = []
    for key, pairs in groups.items():
        pres = [p for _, p in pairs if p is not None and p.done]
        knn = mean_std([p.result.get("knn_top1") for p in pres])
        loss = mean_std([p.result.get("final_loss") for p in pres])
        rows.append({**dict(zip(axes, key)), **_metric_summary([r for r, _ in pairs], study),
                     "knn_top1": knn[0], "final_loss": loss[0]})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    _add_comparisons(df, "vb", _versus_best([[r for r, _ in pairs] for pairs in groups.values()], df))
    return df.sort_values(axes).reset_index(drop=True)


def length_epochs(run: RunInfo) -> float:
    """The epochs a length-series probe's encoder had trained: the kept checkpoint's own record
    (its meta, which the probe's result copies), else the number the plan's role gives."""
    meta = (run.result or {}).get("encoder_meta") or {}
    if isinstance(meta.get("epoch"), (int, float)):
        return float(meta["epoch"])
    role = run.role.get("length")
    return float(role) if isinstance(role, (int, float)) and not isinstance(role, bool) else math.nan


def length_table(study: Study) -> pd.DataFrame:
    """The length series: one row per kept checkpoint of the long SimCLR run, by epochs, with its
    probe's top-1 (interval over seeds and test images) and its paired difference to ``super``
    (``vs_*``): how much of the gap to supervised training is the length."""
    groups: dict[float, list[RunInfo]] = {}
    for r in study.with_role("length"):
        groups.setdefault(length_epochs(r), []).append(r)
    if not groups:
        return pd.DataFrame()
    sup_runs = study.with_role("row", "super")
    sup = _metric_summary(sup_runs, study) if sup_runs else None
    rows, comps = [], []
    for epochs, runs in sorted(groups.items()):
        s = _metric_summary(runs, study)
        rows.append({"epochs": epochs, **s})
        comps.append(compare_rows(runs, sup_runs, s, sup) if sup is not None else NO_COMPARISON)
    df = pd.DataFrame(rows)
    _add_comparisons(df, "vs", comps)
    if sup is not None:
        for key in ("top1", "top1_lo", "top1_hi"):
            df[f"super_{key}"] = sup[key]
    return df


def length_display(df: pd.DataFrame) -> pd.DataFrame:
    """The length series as the reader sees it."""
    return pd.DataFrame({
        "SimCLR epochs": [f"{e:g}" for e in df["epochs"]],
        "Probe top-1 (%)": fmt_acc(df, "top1"),
        "Probe top-5 (%)": fmt_acc(df, "top5"),
        "Top-1 vs super (points) [95%], p": ["—" if not v else f"{t}: {v}"
                                              for t, v in zip(df["vs_text"], df["vs_verdict"])],
        "Seeds": [f"{n}/{p}" for n, p in zip(df["n"], df["planned"])],
        "Missing": df["missing"],
    })


# ---- formatting -----------------------------------------------------------------------------
def fmt_pm(mean: float, std: float = math.nan, digits: int = 1, low: float = math.nan,
           high: float = math.nan) -> str:
    """``"65.2 ± 0.4 [64.6, 65.8]"``: mean, std over seeds, 95% interval; each part only when
    known; ``"—"`` when missing."""
    def known(v: Any) -> bool:
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    if not known(mean):
        return "—"
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if known(std) else "")
    if known(low) and known(high):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def fmt_acc(df: pd.DataFrame, key: str = "top1") -> list[str]:
    """A column of accuracies with their std over seeds and 95% interval."""
    lo = df[f"{key}_lo"] if f"{key}_lo" in df else [math.nan] * len(df)
    hi = df[f"{key}_hi"] if f"{key}_hi" in df else [math.nan] * len(df)
    return [fmt_pm(m, s, low=a, high=b) for m, s, a, b in zip(df[key], df[f"{key}_std"], lo, hi)]


def fmt_seconds(seconds: Optional[float]) -> str:
    """``"42 s"``, ``"3.5 min"``, ``"1.2 h"``; ``"—"`` when unknown."""
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_delta(d: float, digits: int = 1) -> str:
    if d is None or (isinstance(d, float) and math.isnan(d)):
        return "—"
    return f"{d:+.{digits}f}"


def _delta_color(text: str) -> str:
    if text.startswith("+") and text.strip("+0.") != "":
        return "color: #1a7f37; font-weight: 600"
    if text.startswith("-") and text.strip("-0.") != "":
        return "color: #b42318; font-weight: 600"
    return ""


TABLE_STYLES = [
    {"selector": "", "props": "border-collapse: collapse; font-size: 0.92em; margin: 0.5em 0;"},
    {"selector": "th", "props": "background: #f3f4f6; padding: 6px 10px; text-align: left; "
                                "border-bottom: 2px solid #d0d7de;"},
    {"selector": "td", "props": "padding: 5px 10px; border-bottom: 1px solid #e5e7eb;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; font-weight: 600; "
                                     "padding: 4px 0; color: #374151;"},
]


def styled(df: pd.DataFrame, caption: str = "", delta_cols: Sequence[str] = (),
           missing_col: Optional[str] = None) -> "pd.io.formats.style.Styler":
    """A display table: strings as given, deltas green/red, rows without numbers greyed (the
    ``missing_col`` column is left out when nothing is missing)."""
    if missing_col in df.columns and not df[missing_col].astype(bool).any():
        df = df.drop(columns=missing_col)
    sty = df.style.set_table_styles(TABLE_STYLES).hide(axis="index")
    if caption:
        sty = sty.set_caption(caption)
    for c in delta_cols:
        if c in df.columns:
            sty = sty.map(_delta_color, subset=[c])
    if missing_col and missing_col in df.columns:
        def grey(row: pd.Series) -> list[str]:
            return ["color: #6b7280; font-style: italic" if row[missing_col] else "" for _ in row]
        sty = sty.apply(grey, axis=1)
    return sty


def _delta_cells(df: pd.DataFrame, key: str) -> list[str]:
    """Differences to ``super``, marked "(within noise)" when the paired test (top-1, where both
    rows have per-image predictions) or else the 95% intervals find no difference."""
    base = df.loc["super"] if "super" in df.index else None
    cells = []
    for name, row in df.iterrows():
        if name == "super":
            cells.append("(baseline)")
            continue
        text = fmt_delta(row[f"d_{key}"])
        same = (row["vs_verdict"] == "same" if key == "top1" and row.get("vs_paired")
                else base is not None and versus(row, base, key) == "same")
        if same:
            text += " (within noise)"
        cells.append(text)
    return cells


def _floor_cells(df: pd.DataFrame) -> list[str]:
    """Each row's top-1 against the random-encoder floor: paired difference [95%], p and verdict,
    or the interval rule's verdict, named as such, for rows without per-image predictions."""
    if "vr_text" not in df:
        return ["—"] * len(df)
    return ["(the floor)" if name == "random" else "—" if not row["vr_verdict"]
            else f"{row['vr_text']}: {row['vr_verdict']}" for name, row in df.iterrows()]


def main_table_display(df: pd.DataFrame) -> pd.DataFrame:
    """The main table as the reader sees it (strings, missing rows say why)."""
    out = pd.DataFrame({
        "Representation": [f"{n} — {r}" for n, r in zip(df.index, df["representation"])],
        "Evaluation on CIFAR-100": df["evaluation"],
        "Top-1 (%)": fmt_acc(df, "top1"),
        "Top-5 (%)": fmt_acc(df, "top5"),
        "Top-1 vs random (points) [95%], p": _floor_cells(df),
        "Δ top-1 vs super": _delta_cells(df, "top1"),
        "Δ top-5 vs super": _delta_cells(df, "top5"),
        "Seeds": [f"{n}/{p}" for n, p in zip(df["n"], df["planned"])],
        "Labelled images": df["n_labelled"],
        "Input px": df["input_size"],
        "Budget": df["budget"],
        "Missing": df["missing"],
    })
    return out


def finetune_display(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "Initial encoder": [f"{n} — {r}" for n, r in zip(df.index, df["representation"])],
        "Fine-tuned top-1 (%)": fmt_acc(df, "top1"),
        "Fine-tuned top-5 (%)": fmt_acc(df, "top5"),
        "Gain top-1": [(t if p else fmt_delta(d)) + (" (within noise)" if v == "same" else "")
                       for d, v, t, p in zip(df["gain_top1"], df["gain_vs"], df["gain_text"], df["gain_paired"])],
        "Gain top-5": [fmt_delta(d) for d in df["gain_top5"]],
        "Its linear probe top-1 (%)": [fmt_pm(p) for p in df["probe_top1"]],
        "Encoder lr scale": df["encoder_lr"],
        "Labelled images": df["n_labelled"],
        "Seeds": [f"{n}/{p}" for n, p in zip(df["n"], df["planned"])],
        "Missing": df["missing"],
    })


def label_display(df: pd.DataFrame) -> pd.DataFrame:
    """Representations as rows, label shares as columns, ``mean ± std [95% interval] (n images)``."""
    cells = df.assign(cell=[(acc + (f" ({k} images)" if k != "—" else "")) if n else "missing"
                            for acc, n, k in zip(fmt_acc(df, "top1"), df["n"], df["n_labelled"])])
    wide = cells.pivot(index="row", columns="labels_pct", values="cell").fillna("—")
    wide = wide.reindex([r for r in ROW_NAMES if r in wide.index])
    wide.columns = [f"{c:g}% labels" for c in wide.columns]
    return wide.reset_index().rename(columns={"row": "Representation"})


def size_display(df: pd.DataFrame) -> pd.DataFrame:
    sets = {"Pretraining set": list(df["dataset"])} if "dataset" in size_axes(df) else {}
    return pd.DataFrame({
        **sets,
        "Share of pretraining set": [f"{p:g}%" for p in df["pct"]],
        "Images": ["—" if (isinstance(n, float) and math.isnan(n)) else f"{int(n):,}" for n in df["n_images"]],
        "Steps": df["steps"].astype(object).where(df["steps"].notna(), "—"),
        "Epochs (steps x batch / images)": [fmt_pm(e, digits=2) for e in df["epochs_equiv"]],
        "Probe top-1 (%)": fmt_acc(df, "top1"),
        "Probe top-5 (%)": fmt_acc(df, "top5"),
        "Top-1 vs chosen cell (Holm)": _best_cells(df),
        "Seeds": [f"{n}/{p}" for n, p in zip(df["n"], df["planned"])],
        "Missing": df["missing"],
    })


def _best_cells(df: pd.DataFrame) -> list[str]:
    """Each study cell against the chosen one (:func:`best_cell`): "chosen", or the comparison's
    text and verdict."""
    if "vb_text" not in df:
        return ["—"] * len(df)
    best = best_cell(df)
    return ["—" if _nan(t) else "chosen (best CV on train labels)" if i == best else "—" if not v
            else f"{x}: {v}" for i, (t, v, x) in enumerate(zip(df["top1"], df["vb_verdict"], df["vb_text"]))]


def hparam_display(df: pd.DataFrame) -> pd.DataFrame:
    """The hyperparameter table as the reader sees it: the axes (every column :func:`hparam_table`
    did not add, see :func:`simpleclr.report.figures.hparam_axes`), then the accuracies, kNN and loss."""
    axes = hparam_axes(df)
    out = df[axes].map(lambda v: f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
    out.columns = [a.replace("_", " ") for a in axes]
    out["Probe top-1 (%)"] = fmt_acc(df, "top1")
    out["Probe top-5 (%)"] = fmt_acc(df, "top5")
    out["Top-1 vs chosen cell (Holm)"] = _best_cells(df)
    out["kNN monitor top-1 (%)"] = [fmt_pm(k) for k in df["knn_top1"]]
    out["Final NT-Xent loss"] = [fmt_pm(v, digits=3) for v in df["final_loss"]]
    out["Seeds"] = [f"{n}/{p}" for n, p in zip(df["n"], df["planned"])]
    out["Missing"] = df["missing"]
    return out


def style_main_table(df: pd.DataFrame) -> "pd.io.formats.style.Styler":
    return styled(main_table_display(df),
                  caption="Main table: CIFAR-100 test accuracy, mean ± std over seeds [95% interval]",
                  delta_cols=("Δ top-1 vs super", "Δ top-5 vs super"), missing_col="Missing")

"""The report's tables and prose, read from a plan's run folders alone.

:func:`load_study` (from :mod:`simpleclr.study`) reads ``<outputs>/<plan>/plan.json`` and each
run's folder; every function here turns that study into a pandas table or the report's text
(headline, protocol, caveats, provenance). The figures, t-SNE and the HTML export live in
:mod:`simpleclr.figures`. Nothing here trains or evaluates a model.
"""
from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from . import stats
from .figures import hparam_axes
from .study import ROW_INFO, ROW_NAMES, RunInfo, Study
# The report's entry point and its error, as the report notebook and callers know them.
from .study import ReportError, load_study  # noqa: F401


# Published figures for context, each verified against its source (see the URLs).
REFERENCES: tuple[dict, ...] = (
    {"what": "SimCLR ResNet-18 pretrained on CIFAR-100, linear classifier (solo-learn)",
     "top1": 65.78, "top5": 89.04, "budget": "1000 epochs, batch 256, online linear head",
     "source": "https://github.com/vturrisi/solo-learn (README, CIFAR-100 results table)"},
    {"what": "ResNet-18 supervised from scratch on CIFAR-100 (pytorch-cifar100)",
     "top1": 75.61, "top5": 93.05, "budget": "200 epochs, SGD, step schedule (top-1 error 24.39)",
     "source": "https://github.com/weiaicunzai/pytorch-cifar100 (README, results table)"},
)


# ---- aggregation ------------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (NaN for one value) and count; NaNs for none."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return math.nan, math.nan, 0
    arr = np.asarray(vals, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else math.nan, len(arr)


def accuracy_interval(values: Sequence[Optional[float]], n_test: Optional[int]) -> tuple[float, float]:
    """95% interval of an accuracy: Wilson over the test images for one seed, Student-t over
    seeds for several (:mod:`simpleclr.stats`); NaNs when it cannot be had."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals or (len(vals) == 1 and not n_test):
        return math.nan, math.nan
    iv = stats.over_seeds(vals, n=n_test)
    return iv.low, iv.high


def _metric_summary(runs: Sequence[RunInfo]) -> dict:
    done = [r for r in runs if r.done]
    n_test = next((int(r.result["n_test"]) for r in done if r.result.get("n_test")), None)
    out: dict[str, Any] = {}
    for key in ("top1", "top5"):
        values = [r.result.get(key) for r in done]
        mean, std, n = mean_std(values)
        low, high = accuracy_interval(values, n_test)
        out.update({key: mean, f"{key}_std": std, f"{key}_lo": low, f"{key}_hi": high, "n": n})
    missing = [r for r in runs if not r.done]
    return {**out, "n_test": n_test, "planned": len(runs), "n_labelled": labelled_count(done),
            "missing": "; ".join(f"{r.name}: {r.why_missing}" for r in missing)}


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


def _short_dataset(name: str) -> str:
    return name.split(":")[0] + (" (stand-in)" if name.startswith("synthetic-") else "")


def _length(cfg: dict) -> str:
    """How long a training run ran: its fixed step count, else its epochs."""
    return f"{cfg['steps']} steps" if cfg.get("steps") else f"{cfg.get('epochs')} epochs"


def training_budget(cfg: dict, stage: str) -> str:
    """What a training run was given, e.g. ``"SimCLR, 40 steps x 128, 10% of cifar100"``."""
    what = "SimCLR" if stage == "pretrain" else "supervised"
    length = _length(cfg)
    frac = cfg.get("subset_fraction", 1.0)
    share = f"{100 * frac:g}% of " if frac < 1 else ""
    return f"{what}, {length} × {cfg.get('batch_size')}, {share}{_short_dataset(cfg.get('dataset', '?'))}"


def row_budget(study: Study, runs: Sequence[RunInfo]) -> str:
    """The budget behind a main-table row: its training run and, for a probe, its label share."""
    if not runs:
        return ""
    run = runs[0]
    if run.stage == "supervised":
        return training_budget(run.config, "supervised")
    src = study.source_run(run)
    encoder = str(run.config.get("encoder", ""))
    if src is not None:
        head = training_budget(src.config, src.stage)
    elif encoder.startswith("imagenet"):
        head = "torchvision IMAGENET1K_V1" if encoder == "imagenet" else "generated stand-in weights"
    else:
        head = "no training"
    frac = run.config.get("label_fraction", 1.0)
    return f"{head}; probe on {100 * frac:g}% of the labels"


def _input_size(run: RunInfo) -> Optional[int]:
    """The pixel size the network saw: the probe's record, else the training data's."""
    data = (run.config_json or {}).get("data") or {}
    return (run.result or {}).get("input_size") or data.get("image_size") or run.config.get("image_size")


def main_table(study: Study) -> pd.DataFrame:
    """One row per main-table representation the plan has, in the issue's order.

    Columns: representation, evaluation, top1/top5 (mean over seeds) and their std, n (seeds with
    numbers) of planned, d_top1/d_top5 (difference to ``super``), input_size, missing (why not).
    """
    rows = []
    for name in ROW_NAMES:
        runs = study.with_role("row", name)
        if not runs:
            continue
        rep, ev = ROW_INFO[name]
        s = _metric_summary(runs)
        sizes = sorted({_input_size(r) for r in runs if r.done and _input_size(r)})
        rows.append({"row": name, "representation": rep, "evaluation": ev, **s,
                     "input_size": ", ".join(str(x) for x in sizes), "budget": row_budget(study, runs)})
    df = pd.DataFrame(rows).set_index("row") if rows else pd.DataFrame(
        columns=["representation", "evaluation", "top1", "top1_std", "top5", "top5_std", "n", "planned",
                 "missing", "n_labelled", "input_size", "budget"])
    base = df.loc["super"] if "super" in df.index else None
    df["d_top1"] = df["top1"] - base["top1"] if base is not None else math.nan
    df["d_top5"] = df["top5"] - base["top5"] if base is not None else math.nan
    return df


def finetune_table(study: Study) -> pd.DataFrame:
    """Fine-tuned accuracy per initial encoder, its gain over ``super`` and its linear probe."""
    main = main_table(study)
    rows = []
    for name in ROW_NAMES:
        runs = study.with_role("finetune", name)
        if not runs:
            continue
        s = _metric_summary(runs)
        probe = main.loc[name, "top1"] if name in main.index else math.nan
        base = main.loc["super", "top1"] if "super" in main.index else math.nan
        base5 = main.loc["super", "top5"] if "super" in main.index else math.nan
        rows.append({"init": name, "representation": ROW_INFO[name][0], **s,
                     "gain_top1": s["top1"] - base, "gain_top5": s["top5"] - base5, "probe_top1": probe,
                     "gain_vs": versus(s, main.loc["super"]) if "super" in main.index else "",
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
    rows = [{"row": name, "fraction": frac, "labels_pct": 100 * frac, **_metric_summary(runs)}
            for (name, frac), runs in groups.items()]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["order"] = df["row"].map({n: i for i, n in enumerate(ROW_NAMES)})
    return df.sort_values(["order", "fraction"]).drop(columns="order").reset_index(drop=True)


def _pretrain_of(study: Study, run: RunInfo) -> Optional[RunInfo]:
    src = study.source_run(run)
    return src if src is not None and src.stage == "pretrain" else None


def size_table(study: Study) -> pd.DataFrame:
    """Probe accuracy against the fraction (and count) of pretraining images, mean over seeds."""
    groups: dict[float, list[tuple[RunInfo, Optional[RunInfo]]]] = {}
    for r in study.with_role("size_study"):
        pre = _pretrain_of(study, r)
        frac = float(pre.config.get("subset_fraction", 1.0)) if pre and pre.config else math.nan
        groups.setdefault(frac, []).append((r, pre))
    rows = []
    for frac, pairs in sorted(groups.items()):
        pres = [p for _, p in pairs if p is not None and p.done]
        n_images = [((p.config_json or {}).get("data") or {}).get("n_train") for p in pres]
        first = pairs[0][1]
        rows.append({"fraction": frac, "pct": 100 * frac,
                     "n_images": int(np.nanmean([n for n in n_images if n])) if any(n_images) else math.nan,
                     "dataset": first.config.get("dataset") if first else None,
                     "steps": first.config.get("steps") if first else None,
                     "epochs_equiv": (np.nanmean([p.result.get("epochs") or math.nan for p in pres])
                                      if pres else math.nan),
                     **_metric_summary([r for r, _ in pairs])})
    return pd.DataFrame(rows)


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
        key = tuple((pre.config.get(a) if pre and pre.config else None) for a in axes)
        groups.setdefault(key, []).append((r, pre))
    rows = []
    for key, pairs in groups.items():
        pres = [p for _, p in pairs if p is not None and p.done]
        knn = mean_std([p.result.get("knn_top1") for p in pres])
        loss = mean_std([p.result.get("final_loss") for p in pres])
        rows.append({**dict(zip(axes, key)), **_metric_summary([r for r, _ in pairs]),
                     "knn_top1": knn[0], "final_loss": loss[0]})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(axes).reset_index(drop=True)


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
    """Differences to ``super``, marked "(within noise)" when the 95% intervals overlap."""
    base = df.loc["super"] if "super" in df.index else None
    cells = []
    for name, row in df.iterrows():
        if name == "super":
            cells.append("(baseline)")
            continue
        text = fmt_delta(row[f"d_{key}"])
        if base is not None and versus(row, base, key) == "same":
            text += " (within noise)"
        cells.append(text)
    return cells


def main_table_display(df: pd.DataFrame) -> pd.DataFrame:
    """The main table as the reader sees it (strings, missing rows say why)."""
    out = pd.DataFrame({
        "Representation": [f"{n} — {r}" for n, r in zip(df.index, df["representation"])],
        "Evaluation on CIFAR-100": df["evaluation"],
        "Top-1 (%)": fmt_acc(df, "top1"),
        "Top-5 (%)": fmt_acc(df, "top5"),
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
        "Gain top-1": [fmt_delta(d) + (" (within noise)" if v == "same" else "")
                       for d, v in zip(df["gain_top1"], df["gain_vs"])],
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
    return pd.DataFrame({
        "Share of pretraining set": [f"{p:g}%" for p in df["pct"]],
        "Images": ["—" if (isinstance(n, float) and math.isnan(n)) else f"{int(n):,}" for n in df["n_images"]],
        "Steps": df["steps"].astype(object).where(df["steps"].notna(), "—"),
        "Epochs (equivalent)": [fmt_pm(e) for e in df["epochs_equiv"]],
        "Probe top-1 (%)": fmt_acc(df, "top1"),
        "Probe top-5 (%)": fmt_acc(df, "top5"),
        "Seeds": [f"{n}/{p}" for n, p in zip(df["n"], df["planned"])],
        "Missing": df["missing"],
    })


# What hparam_table adds to its axes: everything else in it is an axis.
def hparam_display(df: pd.DataFrame) -> pd.DataFrame:
    axes = hparam_axes(df)
    out = df[axes].map(lambda v: f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
    out.columns = [a.replace("_", " ") for a in axes]
    out["Probe top-1 (%)"] = fmt_acc(df, "top1")
    out["Probe top-5 (%)"] = fmt_acc(df, "top5")
    out["kNN monitor top-1 (%)"] = [fmt_pm(k) for k in df["knn_top1"]]
    out["Final NT-Xent loss"] = [fmt_pm(v, digits=3) for v in df["final_loss"]]
    out["Seeds"] = [f"{n}/{p}" for n, p in zip(df["n"], df["planned"])]
    out["Missing"] = df["missing"]
    return out


def style_main_table(df: pd.DataFrame) -> "pd.io.formats.style.Styler":
    return styled(main_table_display(df),
                  caption="Main table: CIFAR-100 test accuracy, mean ± std over seeds [95% interval]",
                  delta_cols=("Δ top-1 vs super", "Δ top-5 vs super"), missing_col="Missing")


# ---- text: headline, protocol, provenance --------------------------------------------------------
def _datasets(study: Study) -> dict[str, dict]:
    """Each dataset the runs read, with its provenance (source, checksum) from config.json."""
    out: dict[str, dict] = {}
    for r in study.runs.values():
        data = (r.config_json or {}).get("data") or {}
        parts = [data] if "source" in data else [v for v in data.values() if isinstance(v, dict)]
        for d in parts:
            if "source" not in d:
                continue
            name = d.get("name") or d.get("dataset") or r.config.get("dataset")
            out.setdefault(name, {"dataset": name, "source": d.get("source"), "sha256": d.get("sha256"),
                                  "url": d.get("url"), "file": d.get("path") or d.get("file")})
    return out


def _standin(run: RunInfo) -> bool:
    """Whether a stand-in (not torchvision's ImageNet file) is in the run's encoder's past, as the
    stage recorded it from the file's hash (``encoder_standin``; ``encoder_source`` before that)."""
    result = run.result or {}
    if "encoder_standin" in result:
        return bool(result["encoder_standin"])
    return result.get("encoder_source") == "standin"


def standin_runs(study: Study) -> list[RunInfo]:
    return [r for r in study.runs.values() if r.done and _standin(r)]


def warnings(study: Study) -> list[str]:
    """What a reader must know before trusting a number: stand-ins, unofficial data, gaps."""
    out = []
    sr = standin_runs(study)
    if sr:
        out.append("The <b>imagenet-super</b> rows use a <b>generated stand-in</b> file in torchvision's "
                   "ResNet-18 format (random weights), not the real ImageNet weights: those numbers "
                   f"only show the pipeline works ({', '.join(r.name for r in sr)}).")
    for d in _datasets(study).values():
        if d["source"] == "generated":
            out.append(f"<b>{d['dataset']}</b> is generated stand-in data (synthetic patterns), "
                       "not the real dataset: accuracies say nothing about real images.")
        elif d["source"] not in ("official", None):
            out.append(f"<b>{d['dataset']}</b> came from a file whose checksum is not the official one "
                       f"(source: {d['source']}, sha256 {str(d['sha256'])[:16]}…).")
    out += budget_mismatches(study)
    missing = [r for r in study.runs.values() if not r.done]
    if missing:
        out.append(f"{len(missing)} of {len(study.runs)} runs have no result; their rows are marked "
                   "missing below with the reason.")
    return out


def _budget(study: Study) -> str:
    parts = []
    for name in ("selfsuper", "selfsuper-transfer", "super", "super-transfer"):
        for r in study.with_role("row", name):
            src = r if r.stage != "linear_eval" else study.source_run(r)
            if src is None or not src.config:
                continue
            c = src.config
            what = ("SimCLR" if src.stage == "pretrain" else "supervised")
            frac = c.get("subset_fraction", 1.0)
            parts.append(f"{name}: {what} on {c.get('dataset')}"
                         + (f" ({100 * frac:g}% subset)" if frac < 1 else "")
                         + f", {_length(c)}, batch {c.get('batch_size')}")
            break
    return "; ".join(parts)


def budget_mismatches(study: Study) -> list[str]:
    """Compared runs (rows, fine-tuning, label curves) that, at one dataset and label share, used
    different numbers of labelled or validation images: their comparison is not like for like."""
    compared = {"row", "finetune", "label_efficiency"}
    groups: dict[tuple, list[RunInfo]] = {}
    for r in study.runs.values():
        res = r.result or {}
        if r.done and res.get("n_labelled") is not None and compared & set(r.role):
            groups.setdefault((r.config.get("dataset"), res.get("label_fraction")), []).append(r)
    out = []
    for (dataset, frac), runs in groups.items():
        counts = {(r.result["n_labelled"], r.result.get("n_val")) for r in runs}
        if len(counts) > 1:
            which = ", ".join(f"{r.name} {r.result['n_labelled']:,} ({r.result.get('n_val')} val)"
                              for r in runs)
            out.append(f"At {100 * frac:g}% of the {_short_dataset(str(dataset))} labels the compared runs "
                       f"used different labelled images: {which}.")
    return out


def verdict(done: pd.DataFrame) -> str:
    """The study's answer in one sentence, from the main table's 95% intervals: a difference
    inside the noise is said to be one, never turned into a ranking."""
    best = done["top1"].idxmax()
    b = done.loc[best]
    text = (f"Best CIFAR-100 top-1: <b>{best}</b> ({ROW_INFO[best][0]}) at <b>"
            f"{fmt_pm(b['top1'], b['top1_std'], low=b.get('top1_lo'), high=b.get('top1_hi'))}%</b>")
    tied = [n for n in done.index if n != best and versus(done.loc[n], b) == "same"]
    if tied:
        text += (f"; the 95% interval of {', '.join(tied)} overlaps the best one's, "
                 "so this plan does not rank them")
    if "super" in done.index and best != "super":
        sup = done.loc["super"]
        rel = versus(b, sup)
        if rel == "same":
            text += (f"; no difference from supervised from scratch ({sup['top1']:.1f}%) is resolved "
                     "at this budget")
        else:
            beyond = ", beyond the 95% intervals" if rel == "higher" else ""
            text += (f", {b['d_top1']:+.1f} points vs supervised from scratch ({sup['top1']:.1f}%)"
                     f"{beyond}")
    trained = [n for n in done.index if n != "random"]
    if "random" in done.index and trained:
        above = [n for n in trained if versus(done.loc[n], done.loc["random"]) == "higher"]
        if best == "random" or (not above and all(versus(done.loc[n], done.loc["random"])
                                                  for n in trained)):
            text += (" — no trained representation is above the random-encoder floor beyond the "
                     "noise at this plan's budget, so read the rows as a check of the pipeline, "
                     "not as a result")
    return text


def headline(study: Study, title: str = "") -> str:
    """The first thing a reader sees: title, plan, the verdict in one sentence, warnings."""
    main = main_table(study)
    title = title or f"SimCLR vs supervised ResNet-18 representations on CIFAR-100 — plan '{study.name}'"
    lines = [f"<h1>{html.escape(title)}</h1>"]
    done = main.dropna(subset=["top1"]) if len(main) else main
    if len(done):
        lines.append(f"<p style='font-size:1.1em'>{verdict(done)}.</p>")
    else:
        lines.append("<p>No run of this plan has finished yet.</p>")
    n_done = sum(r.done for r in study.runs.values())
    lines.append(f"<p>Plan <code>{html.escape(study.name)}</code>: {n_done} of {len(study.runs)} runs "
                 f"finished; report written {time.strftime('%Y-%m-%d %H:%M')}.</p>")
    warn = warnings(study)
    if warn:
        items = "".join(f"<li>{w}</li>" for w in warn)
        lines.append("<div style='border-left:4px solid #d97706;background:#fffbeb;padding:6px 12px;'>"
                     f"<b>Read with care</b><ul style='margin:4px 0'>{items}</ul></div>")
    return "\n".join(lines)


def _values_text(values: Sequence[float]) -> str:
    """A grid as a reader takes it in: listed when short, else its size and range."""
    values = sorted(float(v) for v in values)
    if len(values) <= 8:
        return ", ".join(f"{v:g}" for v in values)
    return f"{len(values)} values from {values[0]:g} to {values[-1]:g}"


def _labels_text(study: Study) -> str:
    """How every stage takes its labelled images, with the validation share the plan used."""
    shares = sorted({float(r.config.get("val_fraction", 0.1)) for r in study.runs.values()
                     if r.stage in ("supervised", "linear_eval") and r.config})
    val = " / ".join(f"{100 * v:g}%" for v in shares) or "a share"
    return ("**Labels.** At a label share *p* and label seed *s* every stage that uses labels — the "
            "probe, `super`, fine-tuning — takes the same images: a class-balanced share *p* of "
            f"CIFAR-100 train (per class, rounded half up), then {val} of each class of them held out "
            "for validation, both drawn with *s*; each result.json records the counts and a digest "
            "of both sets, and the tables give each row's labelled-image count. The probe chooses "
            "its weight decay on the validation part and refits on all labelled images; supervised "
            "training and fine-tuning train on the rest and validate every epoch.")


def _finetune_text(study: Study) -> str:
    """How fine-tuning got its encoder learning rate: the grid, the trials, or a fixed value."""
    runs = [r for r in study.with_role("finetune") if r.config]
    if not runs:
        return ""
    grids = {tuple(sorted(set(r.config.get("encoder_lr_grid")
                              or [r.config.get("encoder_lr_scale", 1.0)]))) for r in runs}
    tuned = [g for g in grids if len(g) > 1]
    if not tuned:
        fixed = ", ".join(f"{g[0]:g}" for g in sorted(grids))
        return ("**Fine-tuning rate.** Not tuned in this plan: the encoder's learning rate is the "
                f"head's times {fixed}, with the same schedule as `super`.")
    epochs = sorted({min(int(r.config.get("trial_epochs", 20)), int(r.config.get("epochs", 1)))
                     for r in runs})
    return ("**Fine-tuning rate.** The encoder's learning rate is the head's times a scale chosen "
            f"from {'; '.join(_values_text(g) for g in tuned)} by validation top-1 after one trial "
            f"of {'/'.join(map(str, epochs))} epochs per value (the schedule compressed to it, never "
            "scored on test); the real run then trains the full schedule with the chosen scale. "
            "The fine-tuning table shows each value's validation top-1 and the choice.")


def _caveats(study: Study) -> str:
    """Choices a reader comparing with published numbers must know (issue #12, part 4)."""
    items = []
    if study.with_role("row", "random"):
        items.append("The random encoder's probe uses the batch-norm running statistics of "
                     "initialisation (mean 0, variance 1), not statistics of CIFAR-100 images: the "
                     "frozen encoder runs in eval mode, like every other.")
    imagenet = study.with_role("row", "imagenet-super")
    sizes = sorted({int(_input_size(r)) for r in imagenet if _input_size(r)})
    if imagenet and sizes:
        px, grid = "/".join(str(s) for s in sizes), sizes[0] // 4
        items.append(f"The ImageNet rows see CIFAR-100 upsampled to {px} px, where published ImageNet "
                     "transfer figures use 224 px: the ImageNet stem's 4× downsampling then leaves a "
                     f"{grid}×{grid} grid, what the CIFAR stem sees at {grid} px. "
                     "How much 224 px would add was not measured (no GPU was available).")
    probe = next((r for r in study.runs.values() if r.stage == "linear_eval" and r.config), None)
    n_wd = len(probe.config.get("weight_decays") or []) if probe else 0
    if n_wd and n_wd < 45:
        items.append(f"The probe's weight-decay grid has {n_wd} values, against 45 log-spaced values "
                     "in SimCLR's Appendix B.8 (the default grid; this plan narrowed it for time).")
    return "**Caveats.** " + " ".join(items) if items else ""


CIFAR_RECIPE = {"lr": 1.0, "weight_decay": 1e-4, "jitter_strength": 0.5, "temperature": 0.5,
                "lr_scaling": "linear", "optimizer": "lars"}


def _recipe_text(study: Study) -> str:
    """Which SimCLR recipe the pretraining runs followed, from their configs."""
    pres = [r.config for r in study.runs.values() if r.notebook == "pretrain" and r.config]
    if not pres:
        return ""
    keys = list(CIFAR_RECIPE)
    seen = {k: sorted({str(c.get(k)) for c in pres}) for k in keys}
    used = ", ".join(f"{k} {'/'.join(v)}" for k, v in seen.items())
    off = [k for k in keys if any(c.get(k) != CIFAR_RECIPE[k] for c in pres)]
    verdict = ("google-research/simclr's CIFAR recipe" if not off else
               "google-research/simclr's CIFAR recipe except " + ", ".join(off)
               + " (varied on purpose where a study varies it)")
    return (f"**SimCLR recipe.** {verdict}: {used}; the lr is per 256 images and scales linearly "
            "with the batch (lr × B/256, as in that command), so the batch-size study changes both; "
            "warm-up then cosine, stepped per iteration; weight decay and LARS adaptation skip "
            "biases and batch-norm parameters.")


def protocol(study: Study) -> str:
    """What was compared and how, in a few paragraphs (markdown), from the configs."""
    desc = study.manifest.get("description") or ""
    probe = next((r for r in study.runs.values() if r.notebook == "linear_eval" and r.config), None)
    wds = _values_text(probe.config.get("weight_decays") or []) if probe else ""
    datasets = _datasets(study)
    data_line = ", ".join(f"{d['dataset']} ({d['source']})" for d in datasets.values())
    devices = sorted({str(((r.config_json or {}).get("provenance") or {}).get("device")) for r in study.runs.values()
                      if r.config_json})
    total = sum(float((r.result or {}).get("wall_time_s") or 0) for r in study.runs.values())
    text = [
        desc,
        "",
        "**Protocol.** Every representation is a ResNet-18 encoder (torchvision's, 512-d output; the "
        "CIFAR stem — 3×3 stride-1 first convolution, no max-pool — for encoders we train, the "
        "ImageNet stem for torchvision's weights). Each is evaluated on CIFAR-100 by the linear "
        "classification protocol: the encoder is frozen and in eval mode, features of un-augmented "
        "images are extracted once, and a multinomial logistic regression is fitted on them with its "
        "weight decay chosen on a validation split carved from the labelled images "
        f"(grid: {wds or 'n/a'}), "
        "then refitted on all of them; top-1/top-5 are measured once on the test set. "
        "`super` is trained and tested on CIFAR-100 directly; fine-tuning starts supervised training "
        "from a pretrained encoder.",
    ]
    for para in (_recipe_text(study), _labels_text(study), _finetune_text(study), _caveats(study)):
        if para:
            text += ["", para]
    text += [
        "",
        f"**Data.** {data_line or 'n/a'}.",
        "",
        f"**Budget.** {_budget(study) or 'n/a'}. Devices: {', '.join(devices) or 'n/a'}; total recorded "
        f"run time {total / 60:.1f} min.",
    ]
    if study.manifest.get("estimate"):
        text += ["", f"**Plan sizing.** {study.manifest['estimate']}"]
    return "\n".join(text)


def references_table() -> pd.DataFrame:
    return pd.DataFrame([{"Published result": r["what"], "Top-1 (%)": f"{r['top1']:.2f}",
                          "Top-5 (%)": f"{r['top5']:.2f}", "Budget": r["budget"],
                          "Source": f"<a href='{r['source'].split(' ')[0]}'>{html.escape(r['source'])}</a>"}
                         for r in REFERENCES])


def provenance_table(study: Study) -> pd.DataFrame:
    """Per run: state, wall time, device, commit, data checksum status, encoder source."""
    rows = []
    for r in study.runs.values():
        cj = r.config_json or {}
        prov = cj.get("provenance") or {}
        hw = prov.get("hardware") or {}
        data = _datasets(Study(study.plan_dir, {}, {r.name: r}))
        rows.append({"run": r.name, "stage": r.stage, "state": "done" if r.done else r.state,
                     "wall time": fmt_seconds((r.result or {}).get("wall_time_s")) if r.done else "—",
                     "device": f"{prov.get('device') or '—'} ({hw.get('gpu') or hw.get('cpu') or '?'})",
                     "git commit": _short_commit(prov.get("git_commit")),
                     "data (checksum status)": ", ".join(f"{d['dataset']}: {d['source']}"
                                                         for d in data.values()) or "—",
                     "encoder": encoder_label(study, r),
                     "missing": r.why_missing})
    return pd.DataFrame(rows)


def _short_commit(commit: Optional[str]) -> str:
    if not commit:
        return "—"
    return commit[:12] + (" (uncommitted changes)" if commit.endswith("+dirty") else "")


def encoder_label(study: Study, run: RunInfo) -> str:
    """Where a probe's or fine-tuning's encoder came from: a plan run, the ImageNet weights
    (flagged when a stand-in), random, or nothing for training from scratch."""
    spec = run.config.get("encoder") if run.stage == "linear_eval" else run.config.get("init")
    if not spec:
        return "—"
    src = study.by_path(spec)
    if src is not None:
        return f"run {src.name}"
    if str(spec).startswith("imagenet"):
        if _standin(run):
            return "stand-in weights (not ImageNet)"
        return "torchvision ImageNet weights" + ("" if spec == "imagenet" else f" ({Path(spec[9:]).name})")
    return str(spec)


NOT_RECORDED = "not recorded"


def versions(study: Study) -> dict:
    """The library versions the runs recorded (the first run that recorded them); empty when no
    run did. Never this machine's versions: those need not be the ones that made the numbers."""
    for r in study.runs.values():
        v = ((r.config_json or {}).get("provenance") or {}).get("versions")
        if v:
            return v
    return {}


def provenance_summary(study: Study) -> str:
    m = study.manifest
    v = versions(study)
    shown = ", ".join(f"{k} {val or NOT_RECORDED}" for k, val in v.items()) or NOT_RECORDED
    return (f"<p>Plan <code>{html.escape(m.get('plan', ''))}</code> "
            f"from <code>{html.escape(m.get('source', ''))}</code>; "
            f"git commit <code>{html.escape(str(m.get('git_commit') or NOT_RECORDED))}</code>; "
            f"versions: {html.escape(shown)}.</p>")

"""The report's prose, read from a plan's run folders alone.

:func:`load_study` (from :mod:`simpleclr.report.model`) reads ``<outputs>/<plan>/plan.json`` and each
run's folder; the functions here turn that study into the report's text: headline and verdict,
protocol (recipe, labels, fine-tuning rate, caveats), warnings and provenance. The tables come
from :mod:`simpleclr.report.tables` and are re-exported below, so the report notebook reaches all of it
as ``rp.*``; the figures, t-SNE and the HTML export live in :mod:`simpleclr.report.figures`. Nothing here
trains or evaluates a model.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from ..config import RESNET18_WIDTH
from . import methods
from .model import ROW_INFO, ROW_NAMES, RunInfo, Study
from .tables import (best_cell, encoder_passes, fmt_pm, fmt_seconds, input_size, main_table, row_interval, run_length,
                     short_dataset, versus)
# The report's entry point and its error, as the report notebook and callers know them.
from .model import ReportError, load_study  # noqa: F401
# The tables the report notebook shows, reached there as rp.* like the prose.
from .tables import (finetune_display, finetune_table, hparam_display, hparam_table, label_display,  # noqa: F401
                     label_table, length_display, length_table, main_table_display, size_axes, size_display,
                     size_table, style_main_table, styled)


# Published figures for context, each verified against its source (see the URLs), with the budget
# behind it: architecture, training length, input size. Top-5 is None where the source gives none.
SIMCLR_PAPER = ("https://arxiv.org/abs/2002.05709 (Chen et al. 2020, appendix B.8, transfer table, "
                "linear evaluation; quoted with the same figures in BYOL's Table 3, arXiv:2006.07733)")
COURSE = "the original course project's results, the figures this project set out to reproduce"
REFERENCES: tuple[dict, ...] = (
    {"what": "SimCLR ResNet-18 pretrained on CIFAR-100, linear classifier (solo-learn)",
     "top1": 65.78, "top5": 89.04, "budget": "ResNet-18, 32 px, 1000 epochs, batch 256, online linear head",
     "source": "https://github.com/vturrisi/solo-learn (README, CIFAR-100 results table)"},
    {"what": "ResNet-18 supervised from scratch on CIFAR-100 (pytorch-cifar100)",
     "top1": 75.61, "top5": 93.05,
     "budget": "ResNet-18, 32 px, 200 epochs, SGD, step schedule (top-1 error 24.39)",
     "source": "https://github.com/weiaicunzai/pytorch-cifar100 (README, results table)"},
    {"what": "SimCLR pretrained on ImageNet (no labels), linear probe on CIFAR-100 (SimCLR paper)",
     "top1": 71.6, "top5": None, "budget": "ResNet-50 (1×), ImageNet pretraining, 224 px, frozen features",
     "source": SIMCLR_PAPER},
    {"what": "Supervised on ImageNet, linear probe on CIFAR-100 (SimCLR paper)",
     "top1": 78.3, "top5": None, "budget": "ResNet-50 (1×), ImageNet pretraining, 224 px, frozen features",
     "source": SIMCLR_PAPER},
    {"what": "Course: selfsuper-transfer (SimCLR on Tiny ImageNet, probed on CIFAR-100)",
     "top1": 32.93, "top5": 61.08, "budget": "100 epochs (architecture and input size as in the course)",
     "source": COURSE},
    {"what": "Course: super-transfer (supervised on Tiny ImageNet, probed on CIFAR-100)",
     "top1": 38.15, "top5": 66.66, "budget": "100 epochs (architecture and input size as in the course)",
     "source": COURSE},
    {"what": "Course: selfsuper (SimCLR on CIFAR-100, probed on CIFAR-100)",
     "top1": 35.77, "top5": 63.55, "budget": "100 epochs (architecture and input size as in the course)",
     "source": COURSE},
    {"what": "Course: super (supervised on CIFAR-100, tested directly)",
     "top1": 50.80, "top5": 76.95, "budget": "100 epochs (architecture and input size as in the course)",
     "source": COURSE},
)


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
                                  "url": d.get("url"), "file": d.get("path") or d.get("file"),
                                  "counts": d.get("image_counts"), "official": d.get("official_counts"),
                                  "partial": bool(d.get("partial"))})
    return out


def _counts_text(counts: Optional[dict]) -> str:
    """``50,000 train / 10,000 test images``, from a run's record of what it read."""
    if not counts:
        return ""
    return f"{counts.get('train') or 0:,} train / {counts.get('test') or 0:,} test images"


def _data_text(d: dict) -> str:
    """A dataset as the protocol's Data line gives it: checksum status and the image counts the
    runs read, a partial set named as such."""
    counts = _counts_text(d.get("counts"))
    if d.get("partial"):
        counts += f", a PARTIAL set (official: {_counts_text(d['official'])})"
    return f"{d['dataset']} ({d['source']}" + (f"; {counts}" if counts else "") + ")"


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
    cut = rehearsal_runs(study)
    if cut:
        out.append(f"<b>Rehearsal</b>: {', '.join(r.name for r in cut[:6])}{' …' if len(cut) > 6 else ''} "
                   "ran cut short (<code>simpleclr plan rehearse</code>); every accuracy below is noise.")
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
        if d.get("partial"):
            out.append(f"<b>{d['dataset']}</b> is a <b>partial set</b>: the runs read "
                       f"{_counts_text(d['counts'])}, where the official set has {_counts_text(d['official'])}; "
                       "every row trained on it, and the size study's shares of it, had fewer images than "
                       "the published figures'.")
    out += budget_mismatches(study)
    missing = [r for r in study.runs.values() if not r.done]
    if missing:
        out.append(f"{len(missing)} of {len(study.runs)} runs have no result; their rows are marked "
                   "missing below with the reason.")
    for n, (reason, names) in enumerate(study.missing_notes(), 1):
        out.append(f"Missing-run note {n} ({', '.join(names)}): {html.escape(reason)}")
    return out


def planned_passes(run: RunInfo) -> Optional[int]:
    """Images a training run passes through its encoder (a SimCLR image's two views counted
    twice): from its result where it recorded them, else from a fixed step count in its config."""
    done = encoder_passes(run.stage, run.result)
    if done:
        return done
    c = run.config
    if c.get("steps") and c.get("batch_size") and run.stage in ("pretrain", "supervised"):
        return int(c["steps"]) * int(c["batch_size"]) * (2 if run.stage == "pretrain" else 1)
    return None


def _budget(study: Study) -> str:
    """Each trained row's training run with its encoder passes, and plainly where they differ:
    each row's passes as a multiple of the fewest (a SimCLR image's two views count twice)."""
    parts, passes = [], {}
    for name in ("selfsuper", "selfsuper-transfer", "super", "super-transfer"):
        for r in study.with_role("row", name):
            src = r if r.stage != "linear_eval" else study.source_run(r)
            if src is None or not src.config:
                continue
            c = src.config
            what = ("SimCLR" if src.stage == "pretrain" else "supervised")
            frac = c.get("subset_fraction", 1.0)
            n = planned_passes(src)
            if n:
                passes[name] = n
            parts.append(f"{name}: {what} on {c.get('dataset')}"
                         + (f" ({100 * frac:g}% subset)" if frac < 1 else "")
                         + f", {run_length(c)}, batch {c.get('batch_size')}"
                         + (f", {n:,} encoder passes" if n else ""))
            break
    text = "; ".join(parts)
    if len(passes) > 1:
        if len(set(passes.values())) == 1:
            text += (f". Equal compute: {', '.join(passes)} each passed {next(iter(passes.values())):,} "
                     "images through the encoder (a SimCLR image's two views count twice)")
        else:
            fewest = min(passes, key=lambda k: passes[k])
            ratios = ", ".join(f"{k} {passes[k] / passes[fewest]:.1f}×" for k in passes if k != fewest)
            text += (f". Unequal compute: the rows passed different numbers of images through the encoder "
                     f"(a SimCLR image's two views count twice); against {fewest}'s {passes[fewest]:,}: "
                     f"{ratios}. A row with more passes had more compute: compare them with that in mind")
    return text


def budget_mismatches(study: Study) -> list[str]:
    """Compared runs (rows, fine-tuning, label curves) that, at one dataset and label share, drew
    different numbers of labelled images or trained on different numbers of them (a supervised run
    that held a validation share out, beside a probe that refits on all): not like for like."""
    compared = {"row", "finetune", "label_efficiency"}
    groups: dict[tuple, list[RunInfo]] = {}
    for r in study.runs.values():
        res = r.result or {}
        if r.done and res.get("n_labelled") is not None and compared & set(r.role):
            groups.setdefault((r.config.get("dataset"), res.get("label_fraction")), []).append(r)
    out = []
    for (dataset, frac), runs in groups.items():
        counts = {(r.result["n_labelled"], _trained_on(r)) for r in runs}
        if len(counts) > 1:
            which = ", ".join(f"{r.name} trained on {_trained_on(r):,} of {r.result['n_labelled']:,}"
                              for r in runs)
            out.append(f"At {100 * frac:g}% of the {short_dataset(str(dataset))} labels the compared runs "
                       f"used different labelled images: {which}.")
    return out


def _trained_on(run: RunInfo) -> int:
    """How many of its labelled images a run's final model was fitted on (a probe refits on all)."""
    res = run.result or {}
    if run.stage == "linear_eval":
        return int(res["n_labelled"])
    return int(res.get("n_train", res.get("n_fit", res["n_labelled"])))


def _row_verdict(done: pd.DataFrame, name: str, prefix: str, other: str) -> str:
    """``name``'s verdict against ``other``: the main table's paired one, else the intervals'."""
    col = f"{prefix}_verdict"
    if col in done.columns and isinstance(done.loc[name, col], str) and done.loc[name, col]:
        return done.loc[name, col]
    return versus(done.loc[name], done.loc[other])


def _how(done: pd.DataFrame, names: Sequence[str], prefix: str) -> str:
    """Which test made the verdicts about ``names``: the paired test, the intervals, or both."""
    paired = {bool(done.loc[n, f"{prefix}_paired"]) if f"{prefix}_paired" in done.columns else False
              for n in names}
    if paired == {True}:
        return "paired test on the same test images"
    if paired == {False}:
        return "by the 95% intervals; no per-image predictions for a paired test"
    return "paired test where the rows have per-image predictions, else 95% intervals"


def _diff_text(done: pd.DataFrame, name: str, prefix: str, fallback: float) -> str:
    """``+1.2 [+0.5, +1.9], p=0.002`` from the paired test, else the plain difference."""
    col = f"{prefix}_text"
    if f"{prefix}_paired" in done.columns and done.loc[name, f"{prefix}_paired"]:
        return str(done.loc[name, col])
    return f"{fallback:+.1f}"


def verdict(done: pd.DataFrame) -> str:
    """The study's answer from the main table, in up to three sentences: the highest row and the
    rows the noise does not separate from it; which representations clear the random floor; each
    one's gain over training from scratch (``super``). From the paired tests where the rows have
    per-image predictions, else the 95% intervals. A difference inside the noise is said to be
    one, never turned into a ranking."""
    best = done["top1"].idxmax()
    b = done.loc[best]
    first = (f"Highest CIFAR-100 top-1: <b>{best}</b> ({ROW_INFO[best][0]}) at <b>"
             f"{fmt_pm(b['top1'], b['top1_std'], low=b.get('top1_lo'), high=b.get('top1_hi'))}%</b>")
    tied = [n for n in done.index if n != best and _row_verdict(done, n, "vb", best) == "same"]
    if tied:
        first += (f"; {', '.join(tied)} {'does' if len(tied) == 1 else 'do'} not differ from it "
                  f"({_how(done, tied, 'vb')}), so this plan does not rank them")
    sentences = [first]
    trained = [n for n in done.index if n != "random"]
    if "random" in done.index and trained:
        above = [n for n in trained if _row_verdict(done, n, "vr", "random") == "higher"]
        if above:
            gains = ", ".join(f"{n} ({_diff_text(done, n, 'vr', done.loc[n, 'top1'] - done.loc['random', 'top1'])})"
                              for n in above)
            rest = [n for n in trained if n not in above]
            sentences.append(f"Above the random-encoder floor (points; {_how(done, above, 'vr')}): {gains}"
                             + (f"; not above it: {', '.join(rest)}" if rest else ""))
        if best == "random" or not above:
            sentences.append("No trained representation is above the random-encoder floor beyond the "
                             "noise at this plan's budget, so read the rows as a check of the pipeline, "
                             "not as a result")
    if "super" in done.index:
        sup = done.loc["super"]
        others = [n for n in done.index if n not in ("super", "random")]
        parts = []
        for n in others:
            rel = _row_verdict(done, n, "vs", "super")
            d = _diff_text(done, n, "vs", done.loc[n, "d_top1"] if "d_top1" in done.columns
                           else done.loc[n, "top1"] - sup["top1"])
            word = {"higher": "above it", "lower": "below it"}.get(rel, "no difference resolved")
            parts.append(f"{n} ({d}; {word})")
        if parts:
            sentences.append(f"Against supervised training from scratch (super, {sup['top1']:.1f}%; points; "
                             f"{_how(done, others, 'vs')}): " + ", ".join(parts))
    return ". ".join(sentences) + "."


def study_spread(df: pd.DataFrame, axes: Sequence[str]) -> str:
    """What a study (pretraining-set size, hyperparameters) shows: its chosen cell (the best
    cross-validated probe accuracy on training labels, never test) and which cells differ from
    it, by the paired tests Holm-corrected over the cells where they have per-image predictions,
    else by their 95% intervals. ``axes`` name a cell."""
    cells = [(r, row_interval(r)) for _, r in df.iterrows()]
    cells = [(r, i) for r, i in cells if i is not None]
    if len(cells) < 2:
        return "_Fewer than two finished cells: nothing to compare yet._"
    pos = best_cell(df)
    if pos is None or row_interval(df.iloc[pos]) is None:
        return ("_No cell recorded its probe's cross-validated accuracy on training labels, so no cell "
                "is chosen: the study does not rank its cells by test accuracy._")
    best_row, best = df.iloc[pos], row_interval(df.iloc[pos])
    assert best is not None
    others = [(r, i) for r, i in cells if r.name != best_row.name]
    lo_row, lo = min(others, key=lambda c: c[1].value)

    def name(row: pd.Series) -> str:
        return ", ".join(f"{row[a]:g}% of the pretraining images" if a == "pct"
                         else f"on {row[a]}" if a == "dataset"
                         else f"{a.replace('_', ' ')} {row[a]:g}" if isinstance(row[a], (int, float))
                         else f"{a.replace('_', ' ')} {row[a]}" for a in axes)

    text = (f"Chosen cell (best cross-validated probe accuracy on training labels, "
            f"{best_row['cv_top1']:.1f}%): {name(best_row)}, test top-1 {best.text()}%; lowest "
            f"{name(lo_row)}: {lo.text()}%. ")
    paired = [r for r, _ in others if r.get("vb_paired")]
    if paired:
        lower = [r for r in paired if r.get("vb_verdict") == "lower"]
        higher = [r for r in paired if r.get("vb_verdict") == "higher"]
        text += (f"Paired tests of the other {len(paired)} cells against it on the same test images, "
                 f"Holm-corrected over the {len(paired)}: ")
        if not lower and not higher:
            return text + ("none differs beyond the noise, so at this budget the study shows no "
                           "difference between its cells: it needs more steps or seeds to separate them.")
        parts = []
        if lower:
            parts.append("below it: " + "; ".join(f"{name(r)} ({r['vb_text']})" for r in lower))
        if higher:
            parts.append("above it on test: " + "; ".join(name(r) for r in higher))
        return text + ", ".join(parts) + f"; {len(paired) - len(lower) - len(higher)} do not differ from it."
    if best.overlaps(lo):
        return text + ("Their 95% intervals overlap, so at this budget the study shows no difference "
                       "between its cells: it needs more steps or seeds to separate them.")
    return text + "The chosen cell is above the lowest beyond their 95% intervals."


def length_text(df: pd.DataFrame) -> str:
    """What the length series says: the gap to `super` at the shortest and the longest point, by
    the paired test, and whether training longer closed it."""
    done = df.dropna(subset=["top1"]) if len(df) else df
    if len(done) < 2 or "super_top1" not in done or pd.isna(done["super_top1"].iloc[0]):
        return "_Fewer than two finished length points beside a finished `super`: no curve yet._"
    first, last = done.iloc[0], done.iloc[-1]

    def gap(row: pd.Series) -> str:
        return f"{row['epochs']:g} epochs: {row['top1']:.1f}%, {row['vs_text']} against super ({row['vs_verdict']})"

    text = (f"SimCLR's probe after {gap(first)}; after {gap(last)}. Supervised from scratch (`super`): "
            f"{done['super_top1'].iloc[0]:.1f}%. ")
    moved = last["top1"] - first["top1"]
    text += f"Training {last['epochs'] / first['epochs']:g}× longer moved the probe by {moved:+.1f} points"
    if last["vs_verdict"] in ("higher", "same"):
        text += ("; at the longest point SimCLR is no longer below `super`: the gap at the plan's own "
                 "length is largely the length.")
    else:
        text += "; at the longest point SimCLR is still below `super`: the gap is not only the length."
    return text


def rehearsal_runs(study: Study) -> list[RunInfo]:
    """Runs that are rehearsals (``simpleclr plan rehearse``): cut short, their numbers mean nothing."""
    return [r for r in study.runs.values() if r.config.get("rehearsal")]


def headline(study: Study, title: str = "") -> str:
    """The first thing a reader sees: title, plan, the verdict in one sentence, warnings."""
    main = main_table(study)
    title = title or f"SimCLR vs supervised ResNet-18 representations on CIFAR-100 — plan '{study.name}'"
    cut = rehearsal_runs(study)
    if cut:
        title = f"REHEARSAL, not results: {title}"
    lines = [f"<h1>{html.escape(title)}</h1>"]
    done = main.dropna(subset=["top1"]) if len(main) else main
    if cut:
        lines.append(f"<p style='font-size:1.1em'>{len(cut)} of {len(study.runs)} runs are rehearsals "
                     f"(batches of {max(r.config['rehearsal'] for r in cut)} images, two steps): this "
                     "report checks that the plan's runs and report sections work together; no number "
                     "in it is a result.</p>")
    elif len(done):
        lines.append(f"<p style='font-size:1.1em'>{verdict(done)}</p>")
    else:
        lines.append("<p>No run of this plan has finished yet.</p>")
    if not cut and methods.method_probes(study):  # a best method is named only where the paired test separates it
        lines.append(f"<p style='font-size:1.1em'>{html.escape(methods.methods_verdict(study))}</p>")
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
    """How every stage takes its labelled images, and how each validates, from the configs."""
    probes = [r for r in study.runs.values() if r.stage == "linear_eval" and r.config and _probe_folds(r) == 1]
    held = sorted({float(r.config.get("val_fraction", 0.1)) for r in probes})
    how = (f"{_probe_validation(study)} (class-balanced folds drawn with *s*: each image is validated "
           "once, by the probe fitted on the other folds)" if _cross_validated(_fold_counts(study))
           else f"on a held-out {' / '.join(f'{100 * v:g}%' for v in held) or 'share'} of them")
    text = ("**Labels.** At a label share *p* and label seed *s* every stage that uses labels — the "
            "probe, `super`, fine-tuning — takes the same images: a class-balanced share *p* of "
            "CIFAR-100 train (per class, rounded half up), drawn with *s*, and any part a stage holds out "
            "for validation drawn with *s* too; each result.json records the counts and a digest of the "
            "sets, and the tables give each row's labelled-image count. The probe chooses its weight "
            f"decay {how} and refits on all labelled images")
    clauses = [c for c in (_supervised_validation(study, False), _supervised_validation(study, True)) if c]
    return text + ("; " + "; ".join(clauses) if clauses else "") + "."


def _supervised_validation(study: Study, finetune: bool) -> str:
    """What `super` (``finetune`` False) or fine-tuning does with its labelled images: holds a
    validation share out (its ``val_fraction``) or trains on all of them, from the configs."""
    runs = [r for r in study.runs.values() if r.stage == "supervised" and r.config
            and bool(r.config.get("init")) == finetune]
    if not runs:
        return ""
    who = "fine-tuning" if finetune else "supervised training (`super`, its label curve)"
    vals = sorted({float(r.config.get("val_fraction", 0.1)) for r in runs})
    chooses = any(len(set(r.config.get("encoder_lr_grid") or ())) > 1 for r in runs)
    held = " / ".join(f"{100 * v:g}%" for v in vals if v > 0)
    if vals == [0.0]:
        return f"{who} trains on all of them, none held out (val_fraction 0: nothing is chosen on validation)"
    if chooses:
        return (f"{who} holds {held} out to choose its encoder learning rate (below), then trains on all of "
                "them")
    text = f"{who} holds {held} out, evaluated every epoch (never test), and trains on the rest"
    if 0.0 in vals:
        text += " (runs with val_fraction 0 train on all of them)"
    return text


def _probe_folds(run: RunInfo) -> int:
    """The folds a probe's weight decay was chosen by (1: one held-out split; older run folders,
    written before folds existed, chose on one split)."""
    return int((run.config or {}).get("val_folds", 1))


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
    """Choices a reader comparing with published numbers must know."""
    items = []
    if study.with_role("row", "random"):
        items.append("The random encoder's probe uses the batch-norm running statistics of "
                     "initialisation (mean 0, variance 1), not statistics of CIFAR-100 images: the "
                     "frozen encoder runs in eval mode, like every other.")
    imagenet = study.with_role("row", "imagenet-super")
    text = _imagenet_input_text(imagenet, study)
    if text:
        items.append(text)
    width = _width_text(study)
    if width:
        items.append(width)
    probe = next((r for r in study.runs.values() if r.stage == "linear_eval" and r.config), None)
    n_wd = len(probe.config.get("weight_decays") or []) if probe else 0
    if n_wd and n_wd < 45:
        items.append(f"The probe's weight-decay grid has {n_wd} values, against 45 log-spaced values "
                     "in SimCLR's Appendix B.8 (the default grid; this plan narrowed it for time).")
    return "**Caveats.** " + " ".join(items) if items else ""


def _native_size(run: RunInfo) -> Optional[int]:
    """The side the dataset's images have on disk, as a probe's data record gives it."""
    data = ((run.config_json or {}).get("data") or {}).get("train") or {}
    size = data.get("resized_from") or data.get("image_size")
    return int(size) if size else None


def _imagenet_input_text(imagenet: Sequence[RunInfo], study: Study) -> str:
    """What the ImageNet rows' input size means beside the other rows', from the runs' records:
    upsampling adds no detail to an image stored at a smaller size, only pixels and compute."""
    sizes = sorted({int(input_size(r)) for r in imagenet if input_size(r)})
    if not sizes:
        return ""
    px = "/".join(map(str, sizes))
    grid = "/".join(f"{s // 4}×{s // 4}" for s in sizes)
    natives = sorted({n for r in imagenet if (n := _native_size(r))})
    others = sorted({int(input_size(r)) for role in ROW_NAMES if role != "imagenet-super"
                     for r in study.with_role("row", role) if input_size(r)})
    native = f"its stored {'/'.join(map(str, natives))} px" if natives else "its stored size"
    text = f"The ImageNet rows read CIFAR-100 upsampled from {native} to {px} px"
    if sizes == [224]:
        text += (", the size the weights were trained at and the input of SimCLR's transfer protocol "
                 "(Appendix B.8)")
    else:
        text += ", below the 224 px of SimCLR's transfer protocol; this plan did not probe them at 224 px"
    text += f"; behind the ImageNet stem's 4× downsampling that leaves a {grid} grid. "
    if others and others != sizes:
        smaller = "/".join(map(str, others))
        if natives and max(natives) > min(others):
            text += (f"The other rows read {smaller} px copies, which drop detail that the {px} px input "
                     "keeps: part of the ImageNet rows' gap to them is the input, not the representation. ")
        else:
            text += (f"The other rows read the images at {smaller} px: the ImageNet rows get "
                     f"{sizes[0] ** 2 // others[0] ** 2}× the pixels per image, upsampled, so more compute "
                     "per image but no detail beyond the stored image's. ")
    return text.strip()


def _width_of(r: RunInfo) -> int:
    """A run's encoder width (first-stage channels); configs recorded before the field had 64."""
    return int(r.config.get("width") or RESNET18_WIDTH)


def _widths(study: Study) -> list[int]:
    """The encoder widths of the study's runs, sorted."""
    return sorted({_width_of(r) for r in study.runs.values() if r.config})


def _encoder_shape(study: Study) -> str:
    """The encoders' layout and feature size: the last stage has eight times the first's channels."""
    widths = _widths(study)
    if widths in ([], [RESNET18_WIDTH]):
        return f"torchvision's, {8 * RESNET18_WIDTH}-d output"
    return (f"torchvision's layout at width {'/'.join(map(str, widths))}, "
            f"{'/'.join(f'{8 * w}-d' for w in widths)} output: the caveats name each row's width")


def _width_text(study: Study) -> str:
    """Which rows' encoders are narrower than ResNet-18, and what that costs and means."""
    narrow = [w for w in _widths(study) if w != RESNET18_WIDTH]
    if not narrow:
        return ""
    by_width: dict[int, list[str]] = {}
    for role in ROW_NAMES:
        for r in study.with_role("row", role):
            if r.config:
                rows = by_width.setdefault(_width_of(r), [])
                if role not in rows:
                    rows.append(role)
    share = ", ".join(f"{(w / RESNET18_WIDTH) ** 2:.3g}" for w in narrow)
    text = (f"Encoders of width {'/'.join(map(str, narrow))} (first-stage channels, doubled at each "
            f"stage; {share} of the multiply-adds) stand in for ResNet-18's 64: a narrower ResNet-18 "
            "that the plan trains longer in its time, not the model at full width. ")
    if len(by_width) > 1:
        groups = "; ".join(f"width {w}: {', '.join(rows)}" for w, rows in sorted(by_width.items()))
        text += (f"The main table mixes widths ({groups}): rows of one width, the random floor "
                 "among them, compare like for like.")
    elif by_width:
        text += "Every row of the main table, the random floor included, has that width."
    return text


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
    return (f"**SimCLR recipe.** {verdict}: {used}; {_lr_scaling_text(pres)}; warm-up then cosine, "
            "stepped per iteration; weight decay and LARS adaptation skip biases and batch-norm "
            "parameters.")


LR_RULES = {"linear": "scales linearly with the batch B (lr × B/256, as in that command)",
            "sqrt": "scales with the square root of the batch B (lr × √B, google-research/simclr's rule "
                    "for small batches)",
            "none": "is used as given, whatever the batch"}


def _lr_scaling_text(configs: Sequence[dict]) -> str:
    """How the pretraining runs' learning rate followed the batch, from each config's rule."""
    by_rule: dict[str, list[dict]] = {}
    for c in configs:
        by_rule.setdefault(str(c.get("lr_scaling", "linear")), []).append(c)
    if len(by_rule) == 1:
        rule = next(iter(by_rule))
        return f"the lr {LR_RULES.get(rule, rule)}"
    parts = []
    for rule, cs in by_rule.items():
        batches = "/".join(str(b) for b in sorted({int(c.get("batch_size", 0)) for c in cs}))
        parts.append(f"{LR_RULES.get(rule, rule)} in {len(cs)} runs (batch {batches})")
    return "the lr " + "; and ".join(parts) + ": where a study varies the batch, the lr moves with it"


def protocol(study: Study) -> str:
    """What was compared and how, in a few paragraphs (markdown), from the configs."""
    desc = study.manifest.get("description") or ""
    probe = next((r for r in study.runs.values() if r.notebook == "linear_eval" and r.config), None)
    wds = _values_text(probe.config.get("weight_decays") or []) if probe else ""
    datasets = _datasets(study)
    data_line = ", ".join(_data_text(d) for d in datasets.values())
    devices = sorted({str(((r.config_json or {}).get("provenance") or {}).get("device")) for r in study.runs.values()
                      if r.config_json})
    total = sum(float((r.result or {}).get("wall_time_s") or 0) for r in study.runs.values())
    text = [
        desc,
        "",
        f"**Protocol.** Every representation is a ResNet-18 encoder ({_encoder_shape(study)}; the "
        "CIFAR stem — 3×3 stride-1 first convolution, no max-pool — for encoders we train, the "
        "ImageNet stem for torchvision's weights). Each is evaluated on CIFAR-100 by the linear "
        "classification protocol: the encoder is frozen and in eval mode, features of un-augmented "
        "images are extracted once, and a multinomial logistic regression is fitted on them with its "
        f"weight decay chosen on validation {_probe_validation(study)} "
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


def _fold_counts(study: Study) -> list[int]:
    """The fold counts the plan's probes validated with, sorted (1: one held-out split)."""
    return sorted({_probe_folds(r) for r in study.runs.values() if r.stage == "linear_eval" and r.config})


def _cross_validated(counts: list[int]) -> bool:
    """Whether every probe chose its weight decay by cross-validation, from :func:`_fold_counts`."""
    return bool(counts) and counts[0] > 1


def _probe_validation(study: Study) -> str:
    """How the plan's probes validated: by k-fold cross-validation over the labelled images, or on
    a split carved from them."""
    counts = _fold_counts(study)
    if _cross_validated(counts):
        return f"by {' / '.join(map(str, counts))}-fold cross-validation over the labelled images"
    return "on a split carved from the labelled images"


def references_table() -> pd.DataFrame:
    """The published figures beside which the report's rows are read, each with its budget."""
    def source(text: str) -> str:
        url = text.split(" ")[0]
        return f"<a href='{url}'>{html.escape(text)}</a>" if url.startswith("http") else html.escape(text)

    return pd.DataFrame([{"Published result": r["what"], "Top-1 (%)": f"{r['top1']:.2f}",
                          "Top-5 (%)": "—" if r["top5"] is None else f"{r['top5']:.2f}",
                          "Budget": r["budget"], "Source": source(r["source"])}
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
                     "git commit": commit_text(prov, (r.result or {}).get("finished_by")),
                     "data (checksum status)": ", ".join(f"{d['dataset']}: {d['source']}"
                                                         for d in data.values()) or "—",
                     "encoder": encoder_label(study, r),
                     "missing": study.missing_reason(r)})
    return pd.DataFrame(rows)


def commit_text(started: dict, finished: Optional[dict]) -> str:
    """The commit a run started under, and the one that finished it where that differs (a run
    interrupted and resumed under newer code)."""
    first, last = started.get("git_commit"), (finished or {}).get("git_commit")
    if last and last != first:
        return f"{_short_commit(first)}, finished under {_short_commit(last)}"
    return _short_commit(first)


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

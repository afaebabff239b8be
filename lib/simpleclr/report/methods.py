"""The report's methods section: which self-supervised method gives the better representation.

It draws from any plan whose probes read encoders pretrained by two or more methods (the probe's
``encoder`` names a pretraining run; that run's ``method`` is the method): each method's probe with
its interval, its paired gain over the random encoder of its width (the floor), its paired gap to
`super` (training from scratch with labels), the kNN monitor's figure beside it and what the
pretraining cost. Runs of one method at several seeds are one row (Student-t over seeds; the
paired tests then pair by seed). :func:`methods_verdict` picks its candidate on training labels
(the probes' cross-validated accuracy, never the test set) and names it the best method only where
the paired test on the test images separates it from every other; otherwise it says the methods are
within the noise.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import pandas as pd

from ..config import METHOD_NAMES, METHOD_TITLES
from . import stats
from .model import RunInfo, Study
from .tables import fmt_seconds, mean_std, paired_runs

__all__ = ["method_probes", "methods_table", "methods_display", "methods_verdict"]


def _group(pre: RunInfo, probe: RunInfo) -> str:
    """A row's key: the method, and where it pretrained when that is not the probe's data set
    (``byol`` in-domain, ``byol@tiny-imagenet`` transferred)."""
    method, data = pre.config.get("method") or "simclr", pre.config.get("dataset")
    return method if data == probe.config.get("dataset") else f"{method}@{data}"


def method_probes(study: Study) -> dict[str, list[RunInfo]]:
    """Probe runs (linear_eval) by the method that pretrained their encoder (and where, when
    transferred), in the registry's order; empty unless two or more methods are there."""
    found: dict[str, list[RunInfo]] = {}
    for run in study.runs.values():
        if run.stage != "linear_eval" or (run.config.get("probe_layer") or "encoder") != "encoder":
            continue
        pre = study.source_run(run)
        if pre is None or pre.stage != "pretrain":
            continue
        found.setdefault(_group(pre, run), []).append(run)
    ordered = {k: found[k] for m in METHOD_NAMES for k in sorted(found) if k.split("@")[0] == m}
    return ordered if len({k.split("@")[0] for k in ordered}) >= 2 else {}


def _interval(runs: Sequence[RunInfo]) -> Optional[stats.Interval]:
    done = [r for r in runs if r.done and r.result.get("top1") is not None]
    if not done:
        return None
    return stats.over_seeds([r.result["top1"] for r in done], int(done[0].result.get("n_test") or 0) or None)


def _floor(study: Study, width: Optional[int]) -> list[RunInfo]:
    """The random encoder's probes at ``width`` (the floor of that width)."""
    return [r for r in study.with_role("row", "random") if r.config.get("width", 64) == width]


def _paired_text(pair: Optional[stats.Paired]) -> str:
    return "" if pair is None else f"{pair.text()} ({pair.verdict})"


def methods_table(study: Study) -> pd.DataFrame:
    """One row per method: ``top1`` and its interval, the paired gain over the floor of its width
    and the gap to `super`, kNN (the pretraining's monitor, last value), steps, pretraining wall
    time, seeds and how many runs are still missing. Empty when the plan has fewer than two."""
    probes = method_probes(study)
    supers = study.with_role("row", "super")
    rows = []
    for method, runs in probes.items():
        done = [r for r in runs if r.done]
        pres = [p for p in (study.source_run(r) for r in runs) if p is not None]
        ci = _interval(runs)
        width = runs[0].config.get("width", 64)
        floor = paired_runs(done, _floor(study, width)) if done else None
        gap = paired_runs(done, [s for s in supers if s.done]) if done else None
        trained = [p for p in pres if p.done]
        base, _, data = method.partition("@")
        rows.append({"method": method, "pretrained_on": data or runs[0].config.get("dataset"),
                     "name": METHOD_TITLES.get(base, base) + (f" (pretrained on {data})" if data else ""),
                     "top1": ci.value if ci else math.nan, "low": ci.low if ci else math.nan,
                     "high": ci.high if ci else math.nan,
                     "cv_top1": mean_std([r.result.get("val_top1") for r in done])[0],
                     "vs_floor": floor.diff if floor else math.nan, "vs_floor_text": _paired_text(floor),
                     "floor_verdict": floor.verdict if floor else "",
                     "vs_super": gap.diff if gap else math.nan, "vs_super_text": _paired_text(gap),
                     "knn_top1": mean_std([p.result.get("knn_top1") for p in trained])[0],
                     "steps": (pres[0].config.get("steps") or (pres[0].result or {}).get("steps")) if pres else None,
                     "pretrain_s": mean_std([p.result.get("wall_time_s") or None for p in trained])[0],
                     "seeds": len(done), "missing": len(runs) - len(done)})
    return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()


def methods_display(df: pd.DataFrame) -> pd.DataFrame:
    """The table as the report shows it: text cells, a row per method."""
    def acc(r: pd.Series) -> str:
        return "missing" if math.isnan(r["top1"]) else f"{r['top1']:.1f} [{r['low']:.1f}, {r['high']:.1f}]"

    return pd.DataFrame({
        "Method": df["name"], "Top-1 (%)": df.apply(acc, axis=1),
        "vs random floor (paired)": df["vs_floor_text"].replace("", "—"),
        "vs super (paired)": df["vs_super_text"].replace("", "—"),
        "Probe CV (train labels)": df["cv_top1"].map(lambda v: "—" if math.isnan(v) else f"{v:.1f}"),
        "kNN top-1 (monitor)": df["knn_top1"].map(lambda v: "—" if math.isnan(v) else f"{v:.1f}"),
        "Pretraining": [f"{s} steps, {fmt_seconds(t)}" if s else fmt_seconds(t)
                        for s, t in zip(df["steps"], df["pretrain_s"])],
        "Seeds": df["seeds"],
    }).set_index("Method")


def methods_verdict(study: Study, df: Optional[pd.DataFrame] = None) -> str:
    """Per pretraining set, one sentence: the best method by the paired test against every other
    method, or that the test separates none; and which methods clear their floor."""
    df = methods_table(study) if df is None else df
    if not len(df):
        return "Fewer than two methods have finished probes: no comparison yet."
    return " ".join(_verdict(study, df[df["pretrained_on"] == data]) for data in dict.fromkeys(df["pretrained_on"]))


def _candidate(done: pd.DataFrame) -> tuple[str, str]:
    """The method the verdict tests against the others, and how it was chosen: the highest
    cross-validated probe accuracy on training labels where every method has one, so the test
    images only test the choice; else (folders from before the probes recorded it) the highest
    test top-1, said so."""
    if "cv_top1" in done.columns and done["cv_top1"].notna().all():
        best = str(done["cv_top1"].idxmax())
        return best, f"chosen on training labels (cross-validated probe {done.loc[best, 'cv_top1']:.1f}%)"
    return str(done["top1"].idxmax()), "chosen by the highest test top-1, as no probe recorded a validation figure"


def _verdict(study: Study, df: pd.DataFrame) -> str:
    done = df[~df["top1"].isna()]
    if len(done) < 2:
        return "Fewer than two methods have finished probes: no comparison yet."
    probes = method_probes(study)
    best, how = _candidate(done)
    beaten = []
    for other in done.index:
        if other == best:
            continue
        pair = paired_runs([r for r in probes[best] if r.done], [r for r in probes[other] if r.done])
        beaten.append(pair is not None and pair.verdict == "higher")
    cleared = [done.loc[m, "name"] for m in done.index if done.loc[m, "floor_verdict"] == "higher"]
    floor = (f" Over the random floor by the paired test: {', '.join(cleared)}." if cleared
             else " None clears the random floor by the paired test at this budget.")
    name, top1 = done.loc[best, "name"], done.loc[best, "top1"]
    if all(beaten):
        return (f"{name} gives the best probe: {how}, it reaches {top1:.1f}% on the test images, ahead of "
                f"every other method by the paired test.{floor}")
    return (f"No method is separated from all the others by the paired test: {name}, {how}, reaches "
            f"{top1:.1f}% on the test images, within the noise of or below at least one other.{floor}")

"""The study's figures, t-SNE of saved features, and the report's HTML export.

Each ``plot_*`` function takes a table from :mod:`simpleclr.report.prose` (or runs from
:mod:`simpleclr.report.model`) and returns a matplotlib figure, or ``None`` when nothing has finished;
:func:`show` displays one with alternative text. The stage notebooks use :func:`setup_style` and
:func:`show` too. t-SNE of a probe's ``features.pt`` is the one computation, cached beside the plan.
:func:`export_html` turns the executed report notebook into one self-contained HTML file; plans
call it without importing the report.
"""
from __future__ import annotations

import hashlib
import html
import math
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from ..types import PathLike
from ..runs.checks import read_features
from ..runs.rundir import BrokenRun, RunDir
from .model import ROW_NAMES, ReportError, RunInfo, Study



# The columns tables.hparam_table adds to its axes: the seed summary, kNN, loss and each cell's
# comparison with the best cell.
HPARAM_VALUES = frozenset({"top1", "top1_std", "top1_lo", "top1_hi", "top5", "top5_std", "top5_lo",
                           "top5_hi", "n", "n_test", "planned", "n_labelled", "missing", "knn_top1",
                           "final_loss", "vb_verdict", "vb_diff", "vb_text", "vb_paired", "cv_top1"})


def hparam_axes(df: pd.DataFrame) -> list[str]:
    """The pretraining fields a hyperparameter table varies: every column but HPARAM_VALUES."""
    return [c for c in df.columns if c not in HPARAM_VALUES]


# ---- figures ----------------------------------------------------------------------------------
def setup_style() -> None:
    """Seaborn's white-grid look (through matplotlib's copy of it, so a stage notebook need not
    import seaborn) and a figure size that reads well in the HTML report."""
    import matplotlib
    import matplotlib.pyplot as plt

    plt.style.use("seaborn-v0_8-whitegrid")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "figure.figsize": (7.5, 4.2),
                                "axes.titleweight": "bold", "axes.titlesize": 12, "axes.labelsize": 11})


def figure_alt(fig: Any) -> str:
    """A text description of a figure for screen readers: its titles and axis labels."""
    parts = []
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>" or not ax.get_visible() or not ax.has_data():
            continue
        what = ax.get_title() or "panel"
        axes = " against ".join(t for t in (ax.get_ylabel(), ax.get_xlabel()) if t)
        parts.append(f"{what}: {axes}" if axes else what)
    return "; ".join(dict.fromkeys(parts)) or "figure"


def figure_html(fig: Any, alt: Optional[str] = None) -> str:
    """The figure as an inline base64 PNG ``<img>`` with alternative text."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt or figure_alt(fig))}"/>'


def show(fig: Any, alt: Optional[str] = None) -> None:
    """Display a figure once (an inline PNG with alternative text) and close it; ``None`` (a
    plot function with no finished run to draw) shows a one-line note instead."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML, Markdown, display

    if fig is None:
        display(Markdown("_Nothing to draw yet: no run behind this figure has finished._"))
        return
    display(HTML(figure_html(fig, alt)))
    plt.close(fig)


def _errorbar(ax: Any, x: Sequence[float], y: Sequence[float], err: Sequence[float], **kw: Any) -> None:
    err = [0.0 if (e is None or math.isnan(e)) else e for e in err]
    ax.errorbar(x, y, yerr=err, capsize=3, marker="o", **kw)


def _nothing(df: pd.DataFrame, col: str = "top1") -> bool:
    return len(df) == 0 or col not in df or not df[col].notna().any()


def plot_finetune(df: pd.DataFrame) -> Any:
    """Bar chart of top-1 gain over training from scratch, per initial encoder (None: no data)."""
    import matplotlib.pyplot as plt

    if _nothing(df, "gain_top1"):
        return None

    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.55 * max(len(df), 1)))
    d = df.dropna(subset=["gain_top1"]) if len(df) else df
    colors = ["#1a7f37" if g >= 0 else "#b42318" for g in d["gain_top1"]] if len(d) else []
    ax.barh(list(d.index), d["gain_top1"], color=colors,
            xerr=[0 if math.isnan(s) else s for s in d["top1_std"]] if len(d) else None, capsize=3)
    ax.axvline(0, color="black", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 gain over supervised from scratch (percentage points)")
    ax.set_ylabel("initial encoder")
    ax.set_title("Fine-tuning on CIFAR-100")
    fig.tight_layout()
    return fig


def plot_label_efficiency(df: pd.DataFrame) -> Any:
    """Top-1 against the share of CIFAR-100 labels used, one line per representation."""
    import matplotlib.pyplot as plt

    if _nothing(df):
        return None
    df = df.dropna(subset=["top1"])

    fig, ax = plt.subplots()
    for name, g in df.groupby("row", sort=False):
        g = g.sort_values("fraction")
        _errorbar(ax, g["labels_pct"], g["top1"], g["top1_std"], label=name)
    ax.set_xscale("log")
    ticks = sorted(df["labels_pct"].unique())
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}%" for t in ticks])
    ax.set_xlabel("CIFAR-100 training labels used (%, log scale)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("Label efficiency")
    ax.legend(title="representation", fontsize=9)
    fig.tight_layout()
    return fig


def plot_size_curve(df: pd.DataFrame, floor: Optional[float] = None, ceiling: Optional[float] = None) -> Any:
    """Probe top-1 against the number of pretraining images (log x), with reference lines."""
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FixedLocator, NullLocator

    if _nothing(df):
        return None
    df = df.dropna(subset=["top1"])
    fig, ax = plt.subplots()
    counts = bool(df["n_images"].notna().all())
    x = df["n_images"] if counts else df["pct"]
    names = df["dataset"].fillna("pretraining set")
    sets = list(dict.fromkeys(names))
    colours = ["#2563eb", "#059669", "#d97706", "#7c3aed"]
    for i, name in enumerate(sets):  # the first set is the study; another one separates domain
        mine = (names == name).to_numpy()
        label = "SimCLR probe (top-1)" if len(sets) == 1 else f"SimCLR on {name} (probe top-1)"
        _errorbar(ax, x[mine], df["top1"][mine], df["top1_std"][mine], label=label,
                  color=colours[i % len(colours)])
    for xv, pct, name in zip(x, df["pct"], names):
        if name == sets[0]:
            ax.annotate(f"{pct:g}%", (xv, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=8, color="#6b7280")
    if floor is not None and not math.isnan(floor):
        ax.axhline(floor, ls=":", color="#6b7280", label="random encoder (floor)")
    if ceiling is not None and not math.isnan(ceiling):
        ax.axhline(ceiling, ls="--", color="#b42318", label="supervised from scratch")
    ax.set_xscale("log")
    ticks = sorted(set(x))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{int(v):,}" if counts else f"{v:g}%" for v in ticks])
    dataset = sets[0] if len(sets) == 1 else "pretraining"
    ax.set_xlabel(f"{dataset} images used for SimCLR pretraining (count, log scale)"
                  if counts else f"share of {dataset} used (%, log scale)")
    ax.set_ylabel("CIFAR-100 linear-probe top-1 (%)")
    ax.set_title("Pretraining-set size (same number of optimisation steps)")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def plot_length_gap(df: pd.DataFrame) -> Any:
    """The gap against length: SimCLR's probe top-1 at each kept checkpoint of the long run (its
    95% interval as error bars) beside supervised from scratch (`super`, its interval as a band)."""
    import matplotlib.pyplot as plt

    if _nothing(df):
        return None
    df = df.dropna(subset=["top1"])
    fig, ax = plt.subplots()
    lo = (df["top1"] - df["top1_lo"]).fillna(0).clip(lower=0)
    hi = (df["top1_hi"] - df["top1"]).fillna(0).clip(lower=0)
    ax.errorbar(df["epochs"], df["top1"], yerr=[lo, hi], marker="o", capsize=4, color="#2563eb",
                label="SimCLR on CIFAR-100, probe top-1 [95%]")
    if "super_top1" in df and df["super_top1"].notna().any():
        sup, s_lo, s_hi = (float(df[k].iloc[0]) for k in ("super_top1", "super_top1_lo", "super_top1_hi"))
        ax.axhline(sup, ls="--", color="#b42318", label="supervised from scratch (super) [95%]")
        if not (math.isnan(s_lo) or math.isnan(s_hi)):
            ax.axhspan(s_lo, s_hi, color="#b42318", alpha=0.12)
        for x, y in zip(df["epochs"], df["top1"]):
            ax.annotate(f"{y - sup:+.1f}", (x, y), xytext=(6, -12), textcoords="offset points", fontsize=8,
                        color="#374151")
    ax.set_xscale("log")
    ax.set_xticks(list(df["epochs"]))
    ax.set_xticklabels([f"{e:g}" for e in df["epochs"]])
    ax.minorticks_off()
    ax.set_xlabel("SimCLR pretraining epochs (kept checkpoints of one run, log scale)")
    ax.set_ylabel("CIFAR-100 top-1 (%)")
    ax.set_title("Gap against length")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


HEATMAP_SPAN = 10.0  # points of accuracy the heatmap's colour scale spans at least


def heatmap_limits(values: Sequence[float], span: float = HEATMAP_SPAN) -> tuple[float, float]:
    """(vmin, vmax) of the heatmap's colours: at least ``span`` points centred on the cells' mean,
    wider only to keep every cell on the scale. A scale stretched from the worst to the best cell
    would paint a 0.5-point difference, inside the noise, as the full range of colours."""
    vals = np.asarray([float(v) for v in values], dtype=float)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        raise ValueError("heatmap_limits needs at least one value")
    centre = float(vals.mean())
    half = max(span / 2, float(np.abs(vals - centre).max()))
    return centre - half, centre + half


def _cell_label(value: float, vs_best: str) -> str:
    """A heatmap cell's text: its accuracy, and where it stands against the chosen cell (the best
    on training labels; Holm-corrected paired test, else 95% intervals)."""
    mark = {"": "\nchosen", "same": "\n= chosen", "lower": "", "higher": "\n> chosen"}.get(vs_best, "")
    return f"{value:.1f}{mark}"


def plot_hparam_heatmap(df: pd.DataFrame, value: str = "top1") -> Any:
    """Heatmap(s) of probe top-1 over the first two hparam axes, one panel per other-axes cell.

    The colours span a fixed number of points around the mean (:func:`heatmap_limits`), so noise
    stays pale; each cell says whether it differs from the chosen cell, the best by the probes'
    cross-validated accuracy on training labels (``= chosen``: not, by the Holm-corrected paired
    test where the cells have predictions, else by their 95% intervals)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if _nothing(df, value):
        return None
    df = df.dropna(subset=[value])
    vmin, vmax = heatmap_limits(df[value])
    vs_best = df["vb_verdict"] if "vb_verdict" in df.columns else pd.Series("lower", index=df.index)
    if "vb_verdict" not in df.columns and "cv_top1" in df.columns and df["cv_top1"].notna().any():
        vs_best = vs_best.where(df["cv_top1"] != df["cv_top1"].max(), "")
    df = df.assign(_label=[_cell_label(v, b) for v, b in zip(df[value], vs_best)])
    axes = hparam_axes(df.drop(columns="_label"))
    if len(axes) == 1:
        axes = axes + ["_"]
        df = df.assign(_="")
    rows_ax, cols_ax, rest = axes[0], axes[1], axes[2:]
    panels = list(df.groupby(rest, sort=True)) if rest else [((), df)]
    fig, axs = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1, 3.6), squeeze=False)
    for ax, (key, g) in zip(axs[0], panels):
        pivot = g.pivot_table(index=rows_ax, columns=cols_ax, values=value, aggfunc="mean")
        labels = g.pivot_table(index=rows_ax, columns=cols_ax, values="_label", aggfunc="first")
        labels = labels.reindex(index=pivot.index, columns=pivot.columns).fillna("")
        sns.heatmap(pivot, annot=labels.to_numpy(), fmt="", cmap="RdBu_r", vmin=vmin, vmax=vmax, ax=ax,
                    cbar_kws={"label": f"probe top-1 (%), {vmax - vmin:g}-point scale"})
        ax.set_ylabel(rows_ax.replace("_", " "))
        ax.set_xlabel(cols_ax.replace("_", " ") if cols_ax != "_" else "")
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(", ".join(f"{a}={k}" for a, k in zip(rest, key)) or "SimCLR hyperparameters")
    fig.tight_layout()
    return fig


def curve_runs(study: Study) -> list[tuple[str, RunInfo]]:
    """(label, training run) behind each main-table row, first seed only, in row order; runs
    with fewer than two epochs logged and fewer than two step-trace rows are left out (one point
    is not a curve)."""
    out: list[tuple[str, RunInfo]] = []
    seen: set[str] = set()
    for name in ROW_NAMES:
        for r in study.with_role("row", name):
            src = r if r.stage in ("pretrain", "supervised") else study.source_run(r)
            if src is not None and src.name not in seen and _has_curve(src):
                out.append((name, src))
                seen.add(src.name)
                break
    return out


def _has_curve(run: RunInfo) -> bool:
    return len(run.metrics()) >= 2 or len(run.steps()) >= 2


def _rows(rows: list[dict]) -> pd.DataFrame:
    """Rows with an epoch and a loss as a table; empty when they have neither."""
    df = pd.DataFrame(rows)
    return df if {"epoch", "loss"} <= set(df.columns) else pd.DataFrame()


def plot_training_curves(curves: Sequence[tuple[str, RunInfo]]) -> Any:
    """Loss along training (SimCLR and supervised apart) and the accuracy they were watched with.

    The loss is the step trace (``steps.jsonl``: about 200 points, at fractional epochs) where the
    run has one, else one point per epoch from its metrics; the accuracy is per epoch."""
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 3, figsize=(14, 3.8))
    for label, run in curves:
        m, s = _rows(run.metrics()), _rows(run.steps())
        simclr = run.stage == "pretrain"
        if len(s) >= 2:
            axs[0 if simclr else 1].plot(s["epoch"], s["loss"], lw=1.2, label=label)
        elif not m.empty:
            axs[0 if simclr else 1].plot(m["epoch"], m["loss"], marker=".", label=label)
        acc = "knn_top1" if simclr else "val_top1"
        if acc in m and m[acc].notna().any():
            a = m.dropna(subset=[acc])
            axs[2].plot(a["epoch"], a[acc], marker="o", ls="-" if simclr else "--",
                        label=f"{label} ({'kNN' if simclr else 'val'})")
    for ax in axs:
        if not ax.has_data():
            ax.text(0.5, 0.5, "no run here logged a curve (two epochs or two trace rows)", ha="center", va="center",
                    transform=ax.transAxes, color="#6b7280")
            ax.set_xticks([])
            ax.set_yticks([])
    axs[0].set_title("SimCLR pretraining")
    axs[0].set_ylabel("NT-Xent loss")
    axs[1].set_title("Supervised training")
    axs[1].set_ylabel("cross-entropy loss")
    axs[2].set_title("Accuracy while training")
    axs[2].set_ylabel("top-1 (%)")
    for ax in axs:
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---- t-SNE ------------------------------------------------------------------------------------
def tsne_sources(study: Study) -> list[tuple[str, RunInfo]]:
    """(row, run with features.pt) per main-table row, first seed, in row order."""
    out, used = [], set()
    for name in ROW_NAMES:
        cands = [r for r in study.with_role("row", name) + study.with_role("features", name)
                 if r.notebook == "linear_eval" and r.name not in used]
        cands = [r for r in cands if r.done and RunDir(r.path).features_path.is_file()]
        if cands:
            out.append((name, cands[0]))
            used.add(cands[0].name)
    return out


def load_features(run: RunInfo) -> dict:
    """The run's features.pt, loaded with ``weights_only=True`` and checked against its
    result.json (:func:`simpleclr.runs.checks.read_features`); a refused, damaged or forged
    file is a one-line :class:`ReportError`."""
    try:
        return read_features(RunDir(run.path).features_path, run.result)
    except BrokenRun as e:
        raise ReportError(f"{e} ({run.name})") from None


def stratified_points(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A fixed, class-balanced choice of at most ``n`` indices (sorted), the same for every panel."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    take, i = [], 0
    while len(take) < n:
        for p in per:
            if i < len(p) and len(take) < n:
                take.append(p[i])
        i += 1
    return np.sort(np.asarray(take))


def tsne_embedding(features: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of L2-normalised features after PCA to at most 50 dimensions."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dims = min(50, x.shape[0] - 1, x.shape[1])
    if dims >= 2:
        x = PCA(n_components=dims, random_state=seed).fit_transform(x)
    perplexity = min(perplexity, max(2.0, (x.shape[0] - 1) / 3))
    # One OpenMP thread: Barnes-Hut's threads spin-wait, and on a busy 2-core machine two of them
    # ran 8x slower than one (38 s against 4.7 s for 500 points).
    with threadpool_limits(limits=1, user_api="openmp"):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    max_iter=600).fit_transform(x).astype(np.float32)


def tsne_panels(study: Study, n_points: int = 1000, seed: int = 0, perplexity: float = 30.0) -> list[dict]:
    """One panel per representation: 2-D points and coarse labels, cached in ``<plan>/.cache``."""
    panels = []
    idx = None
    for name, run in tsne_sources(study):
        try:
            feats = load_features(run)
        except ReportError as e:  # one damaged file costs its panel, not the report
            print(f"t-SNE: {name} left out: {e}")
            continue
        labels = feats.get("coarse_labels")
        classes = feats.get("coarse_classes")
        if labels is None:  # no superclasses (not CIFAR-100): colour by class
            labels, classes = feats["labels"], feats["classes"]
        labels = np.asarray(labels)
        if idx is None or len(idx) and idx.max() >= len(labels):
            idx = stratified_points(labels, n_points, seed)
        x = feats["features"].float().numpy()[idx]
        key = hashlib.sha256(x.tobytes() + f"{seed}-{perplexity}".encode()).hexdigest()[:16]
        cache = study.plan_dir / ".cache" / f"tsne-{name}-{key}.npy"
        if cache.is_file():
            emb = np.load(cache)
        else:
            emb = tsne_embedding(x, seed, perplexity)
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npy")
            np.save(tmp, emb)
            tmp.replace(cache)
        panels.append({"row": name, "xy": emb, "labels": labels[idx], "classes": list(classes),
                       "source": (run.result or {}).get("encoder_source")})
    return panels


def plot_tsne(panels: Sequence[dict], n_cols: int = 3) -> Any:
    """Side-by-side t-SNE panels coloured by the 20 CIFAR-100 superclasses, with one legend."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = len(panels)
    cols = min(n_cols, n)
    rows = math.ceil(n / cols)
    fig, axs = plt.subplots(rows, cols, figsize=(4.3 * cols + 2.6, 4.1 * rows), squeeze=False)
    classes = panels[0]["classes"]
    palette = sns.color_palette("tab20", len(classes)) if len(classes) <= 20 else \
        sns.color_palette("husl", len(classes))
    for ax, p in zip(axs.flat, panels):
        colors = [palette[int(c) % len(palette)] for c in p["labels"]]
        ax.scatter(p["xy"][:, 0], p["xy"][:, 1], c=colors, s=6, alpha=0.8, linewidths=0)
        title = p["row"] + (" (stand-in weights)" if p.get("source") == "standin" else "")
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1 (no units)")
        ax.set_ylabel("t-SNE 2 (no units)")
    for ax in list(axs.flat)[n:]:
        ax.axis("off")
    if len(classes) <= 20:
        from matplotlib.lines import Line2D

        handles = [Line2D([0], [0], marker="o", ls="", color=palette[i], label=c.replace("_", " "))
                   for i, c in enumerate(classes)]
        fig.legend(handles=handles, loc="center right", title="CIFAR-100 superclass", fontsize=8,
                   title_fontsize=9, frameon=False)
        fig.tight_layout(rect=(0, 0, 1 - 2.5 / (4.3 * cols + 2.6), 1))
    else:
        fig.tight_layout()
    return fig


# ---- export -------------------------------------------------------------------------------------
def export_html(executed: PathLike, html_path: PathLike, title: Optional[str] = None) -> Path:
    """The executed report notebook as one self-contained HTML file: code hidden, figures inline,
    ``title`` (the plan's report title) in the page's ``<title>``, so a tab or bookmark names it."""
    import nbformat
    from nbconvert import HTMLExporter

    from ..runs.rundir import atomic_write_bytes

    nb = nbformat.read(str(executed), as_version=4)
    if title:
        nb.metadata["title"] = title  # nbconvert's template puts it in <title> (else the file name)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    body = _strip_remote_scripts(body)
    # nbconvert's HTML pass writes attributes alphabetically; keep src first, as written
    body = re.sub(r'<img alt="([^"]*)" src="(data:image/png;base64,[^"]*)"', r'<img src="\2" alt="\1"', body)
    html_path = Path(html_path)
    atomic_write_bytes(html_path, body.encode("utf-8"))
    return html_path


def _strip_remote_scripts(body: str) -> str:
    """Drop the template's CDN scripts (require.js, MathJax, mermaid): the report needs none of
    them, and without them the file shows the same offline as online."""
    body = re.sub(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", "", body, flags=re.S)
    body = re.sub(r'<script type="module">(?:(?!</script>).)*?mermaid.*?</script>\s*', "", body, flags=re.S)
    return re.sub(r'<script src="https?://[^"]*"></script>\s*', "", body)

#!/usr/bin/env python
"""Write notebooks/*.ipynb (without outputs) from the stage configs.

The ``parameters`` cell of each stage notebook is generated from the config dataclass, so it
lists exactly the config's fields (plus ``out_dir``) and cannot drift from it; the defaults are
the dataclass defaults overlaid with small values that run in a couple of minutes on a laptop CPU
on generated data. ``tests/test_notebooks.py`` checks the committed notebooks equal this output.

Usage: python scripts/make_notebooks.py [--check]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from simpleclr.config import LinearEvalConfig, PretrainConfig, StageConfig, SupervisedConfig
from simpleclr.fielddocs import GROUPS, field_doc

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "notebooks"

# By-hand defaults: generated CIFAR-100 stand-in, a few epochs on a subset (a couple of minutes
# on a laptop CPU). Plans override every field.
HAND = {
    "pretrain": {"dataset": "synthetic-cifar100", "subset_fraction": 0.4, "epochs": 3, "batch_size": 128,
                 "warmup_epochs": 1.0, "knn_every": 1, "knn_k": 20, "knn_max_bank": 2000,
                 "proj_hidden": 512},
    "supervised": {"dataset": "synthetic-cifar100", "subset_fraction": 0.4, "epochs": 3,
                   "batch_size": 128, "warmup_epochs": 1.0},
    "linear_eval": {"dataset": "synthetic-cifar100", "label_fraction": 0.4},
}
OUT_DIR = {k: f"../outputs/notebooks/{k}" for k in HAND}
KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def literal(value: object) -> str:
    """A Python literal for a config value (tuples written as lists, as papermill passes them)."""
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def parameters_cell(cls: type[StageConfig], stage: str) -> nbformat.NotebookNode:
    """One literal per config field, grouped, each with its line from simpleclr.fielddocs."""
    lines = [f"# {cls.__name__} fields (simpleclr.config) and the run folder. A plan (papermill)",
             "# overrides every one of them; these defaults are a small run on generated data."]
    names = [f.name for f in fields(cls)]
    defaults = {f.name: f.default for f in fields(cls)}
    for group, members in GROUPS.items():
        shown = [n for n in members if n in names]
        if not shown:
            continue
        lines += ["", f"# ---- {group}"]
        for n in shown:
            lines.append(f"{n} = {literal(HAND[stage].get(n, defaults[n]))}  # {field_doc(stage, n)}")
    lines += ["", f"out_dir = {OUT_DIR[stage]!r}  # the run folder this notebook writes"]
    return new_code_cell("\n".join(lines), metadata={"tags": ["parameters"]})


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip())


def notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNEL, "language_info": {"name": "python"}})
    for i, c in enumerate(nb.cells):  # stable ids so regenerating gives identical files
        c["id"] = f"cell-{i}"
    return nb


def pretrain() -> nbformat.NotebookNode:
    return notebook([
        md("""
# SimCLR pretraining

Trains a ResNet-18 encoder (CIFAR stem) with SimCLR (Chen et al., 2020): two augmented views per
image, a projection head, the NT-Xent loss; LARS with per-iteration warm-up and cosine decay. A kNN
monitor on a held-out part of the training split is only for watching, never for choosing a
checkpoint. Running it again on the same `out_dir` resumes from `checkpoints/last.pt`; a finished
run is not redone.
"""),
        parameters_cell(PretrainConfig, "pretrain"),
        code("""
from simpleclr.study import notebook as nb
from simpleclr.config import PretrainConfig
from simpleclr.report.figures import setup_style, show
from simpleclr.training.stages.pretrain import pretrain

setup_style()
cfg = nb.stage_config(PretrainConfig, globals())
cfg
"""),
        code("result = pretrain(cfg, out_dir)"),
        md("## Result"),
        code("nb.result_table(result)"),
        md("## Training curves\nNT-Xent loss along the steps (the run's step trace, `steps.jsonl`, in epochs) "
           "and the kNN monitor's top-1 on the held-out split, per epoch."),
        code("show(nb.plot_run(out_dir))"),
    ])


def supervised() -> nbformat.NotebookNode:
    return notebook([
        md("""
# Supervised training (from scratch, or fine-tuning)

Trains ResNet-18 with cross-entropy (random crop with padding, flip; SGD with Nesterov momentum,
warm-up and cosine decay) and tests it once on the test split at the end. With `init` set to
`"imagenet"`, `"imagenet:<file>"` or a run folder, it fine-tunes that encoder instead
(`encoder_lr_scale` scales the encoder's learning rate; with several values in `encoder_lr_grid`,
a trial of `trial_epochs` per value chooses it on the validation split first). The labelled images
are the linear probe's at the same share and seed: `subset_fraction` of the split, then
`val_fraction` of them held out for validation, both drawn with `subset_seed`. Resumes from
`checkpoints/last.pt`.
"""),
        parameters_cell(SupervisedConfig, "supervised"),
        code("""
from simpleclr.study import notebook as nb
from simpleclr.config import SupervisedConfig
from simpleclr.report.figures import setup_style, show
from simpleclr.training.stages.supervised import train_supervised

setup_style()
cfg = nb.stage_config(SupervisedConfig, globals())
cfg
"""),
        code("result = train_supervised(cfg, out_dir)"),
        md("## Result\nTop-1 / top-5 on the test split (measured once, at the end)."),
        code("nb.result_table(result)"),
        md("## Training curves\nCross-entropy loss along the steps (the run's step trace, `steps.jsonl`, in "
           "epochs) and top-1 on the validation split, per epoch."),
        code("show(nb.plot_run(out_dir))"),
    ])


def linear_eval() -> nbformat.NotebookNode:
    return notebook([
        md("""
# Linear evaluation

The linear classification protocol: the encoder (`"random"`, `"imagenet"`, `"imagenet:<file>"`, a
run folder or a checkpoint) is frozen and in eval mode, features of un-augmented images are
extracted once, and a multinomial logistic regression is fitted on them; its weight decay is chosen
on a validation split carved from the training labels, then it is refitted on all of them and
tested once. `label_fraction` keeps a class-balanced share of the labels (label efficiency). The
test features are saved for the report's t-SNE. Set `encoder` to the pretraining notebook's
`out_dir` (`"../outputs/notebooks/pretrain"`) to probe what it learnt.
"""),
        parameters_cell(LinearEvalConfig, "linear_eval"),
        code("""
from simpleclr.study import notebook as nb
from simpleclr.config import LinearEvalConfig
from simpleclr.training.stages.linear_eval import linear_eval
from simpleclr.report.figures import setup_style, show

setup_style()
cfg = nb.stage_config(LinearEvalConfig, globals())
cfg
"""),
        code("result = linear_eval(cfg, out_dir)"),
        md("## Result\nTop-1 / top-5 of the probe on the test split."),
        code("nb.result_table(result)"),
        md("## Choosing the weight decay"),
        code("show(nb.plot_probe(out_dir))"),
    ])


def report() -> nbformat.NotebookNode:
    params = "\n".join([
        "# The plan folder (outputs/<plan>) to report on, and how the t-SNE is drawn.",
        'plan_dir = "outputs/smoke"',
        'title = ""',
        "tsne_points = 1000",
        "tsne_seed = 0",
        "tsne_perplexity = 30.0",
    ])
    return notebook([
        new_code_cell(params, metadata={"tags": ["parameters"]}),
        code("""
from IPython.display import HTML, Markdown, display

from simpleclr.report import figures as fg
from simpleclr.report import methods as rm
from simpleclr.report import prose as rp

fg.setup_style()
study = rp.load_study(plan_dir)
main = rp.main_table(study)
display(HTML(rp.headline(study, title)))
"""),
        md("## Main table"),
        code("display(rp.style_main_table(main))"),
        md("""
CIFAR-100 test accuracy of each representation (linear probe on frozen features, except `super`,
which is the supervised network tested directly; `super-probe` is the linear probe of that same
network's encoder, the like-for-like row for the probed ones), mean ± std over seeds where the
plan repeats runs, and the difference to `super` (training from scratch with labels) in
percentage points. Brackets hold the 95% interval: Wilson over the test images for one seed,
Student-t over seeds for several.

Rows are compared on the same test images: *vs random* is the paired difference to the
random-encoder floor, its 95% interval and p-value — the exact McNemar test on the images one row
gets right and the other wrong for one run each, a t-test over the per-seed differences where
seeds repeat. A difference the test does not resolve is marked *within noise*: it is no ranking.
Run folders without per-image predictions fall back to comparing the two intervals (different
only when they do not overlap), and their cells say so.
*Labelled images* counts the CIFAR-100 training labels the row's evaluation used (the probe's, or
`super`'s), validation included: equal at one label share, by construction.
"""),
        md("""
## t-SNE of CIFAR-100 test features
The same fixed, class-balanced subset of test images for every representation, coloured by the
20 CIFAR-100 superclasses (PCA to 50 dimensions, then t-SNE; axes have no units).
"""),
        code("""
panels = fg.tsne_panels(study, tsne_points, tsne_seed, tsne_perplexity)
if panels:
    fg.show(fg.plot_tsne(panels))
else:
    display(Markdown("_No saved features yet._"))
"""),
        md("""
## Self-supervised methods
Each method pretrained at its published recipe (SimCLR, MoCo v2+, BYOL, SimSiam, Barlow Twins,
VICReg; `PretrainConfig.method`) and probed like the rows above: its top-1 with the 95% interval,
its paired difference to the random encoder of the same width (the floor) and to `super`, both on
the same test images, and the kNN monitor's top-1 on the held-out training images beside it. A
method is named best only where the paired test separates it from every other.
"""),
        code("""
mt = rm.methods_table(study)
if len(mt):
    display(Markdown(rm.methods_verdict(study, mt)))
    display(rp.styled(rm.methods_display(mt), "Linear-probe top-1 on CIFAR-100 by self-supervised method"))
else:
    display(Markdown("_This plan probes one self-supervised method: no methods comparison._"))
"""),
        md("""
## Fine-tuning gains and label efficiency
Fine-tuning starts supervised training on CIFAR-100 from each pretrained encoder; the gain is its
top-1 minus that of the same training from scratch (`super`), next to the encoder learning-rate
scale it used and how that was chosen (on validation, never on test). Label efficiency repeats
the linear probe (and, for `super`, supervised training) with class-balanced shares of the
CIFAR-100 labels (1%, 10% and all of them in the full plan; the table's columns give the shares
this plan used, each cell the labelled images behind it).
"""),
        code("""
ft = rp.finetune_table(study)
if len(ft):
    display(rp.styled(rp.finetune_display(ft), "Fine-tuning on CIFAR-100: gain over training from scratch",
                      delta_cols=("Gain top-1", "Gain top-5"), missing_col="Missing"))
    fg.show(fg.plot_finetune(ft))
else:
    display(Markdown("_This plan has no fine-tuning runs._"))
"""),
        code("""
le = rp.label_table(study)
if len(le):
    display(rp.styled(rp.label_display(le), "Top-1 (%) by share of CIFAR-100 labels"))
    fg.show(fg.plot_label_efficiency(le))
else:
    display(Markdown("_This plan has no label-efficiency runs._"))
"""),
        md("""
## Pretraining-set size
SimCLR pretrained on stratified, nested subsets of the pretraining set (each smaller subset lies
inside the larger ones), every subset for **the same number of optimisation steps**, then
linear-probed on CIFAR-100. Equal steps keep the compute and the learning-rate schedule identical,
so the curve measures what more *distinct* images buy; equal epochs would give the small subsets
far fewer updates and confound data size with training length. A run on another pretraining set of
the same size (in the full plan, CIFAR-100 beside the 50% Tiny ImageNet subset: 50,000 images each)
has its own row and line, which separates the domain from the size.
"""),
        code("""
sz = rp.size_table(study)
if len(sz):
    display(rp.styled(rp.size_display(sz), "Linear-probe top-1 by pretraining-set size", missing_col="Missing"))
    fg.show(fg.plot_size_curve(sz, floor=main["top1"].get("random"), ceiling=main["top1"].get("super")))
    display(Markdown(rp.study_spread(sz, rp.size_axes(sz))))
else:
    display(Markdown("_This plan has no size-study runs._"))
"""),
        md("""
## Gap against length
Is SimCLR's gap to supervised training only its length? One SimCLR run on CIFAR-100 at the
published 1000 epochs keeps its checkpoints at 100, 200, 500 and 1000 epochs, and each is probed
(probes only, no extra pretraining): the curve against `super`, with 95% intervals and the paired
difference at each point. A checkpoint mid-run has a learning rate not yet annealed, so the early
points sit a little below a run of that length.
"""),
        code("""
ln = rp.length_table(study)
if len(ln):
    display(rp.styled(rp.length_display(ln), "SimCLR probe by pretraining length, against super",
                      missing_col="Missing"))
    fg.show(fg.plot_length_gap(ln))
    display(Markdown(rp.length_text(ln)))
else:
    display(Markdown("_This plan has no length series._"))
"""),
        md("## SimCLR hyperparameters\nLinear-probe top-1 on CIFAR-100 for each pretraining cell. The "
           "heatmap's colours span at least 10 points around the mean, so differences inside the noise "
           "stay pale; the cell chosen by the probes' cross-validated accuracy on training labels is "
           "*chosen*, and *= chosen* marks the cells the Holm-corrected paired test (or, without "
           "per-image predictions, the intervals) cannot tell from it."),
        code("""
hp = rp.hparam_table(study)
if len(hp):
    display(rp.styled(rp.hparam_display(hp), "Hyperparameter study", missing_col="Missing"))
    fg.show(fg.plot_hparam_heatmap(hp))
    display(Markdown(rp.study_spread(hp, fg.hparam_axes(hp))))
else:
    display(Markdown("_This plan has no hyperparameter runs._"))
"""),
        md("## Training curves\nLoss along the steps (each run's step trace, `steps.jsonl`, in epochs; one "
           "point per epoch for a run folder written before there was one) and the accuracy watched "
           "per epoch."),
        code("""
curves = fg.curve_runs(study)
if curves:
    fg.show(fg.plot_training_curves(curves))
else:
    display(Markdown("_No run logged a curve (two epochs, or two rows of its step trace): nothing to draw._"))
"""),
        md("## What was compared and how"),
        code("display(Markdown(rp.protocol(study)))"),
        md("## Published reference figures\nFor context only: other architectures, budgets and input "
           "sizes (each row's budget says which), never a target this plan's rows are tuned towards."),
        code("display(rp.styled(rp.references_table(), 'Published results on CIFAR-100'))"),
        md("## Provenance"),
        code("""
display(HTML(rp.provenance_summary(study)))
display(rp.styled(rp.provenance_table(study), "Runs", missing_col="missing"))
"""),
    ])


NOTEBOOKS = {"pretrain": pretrain, "supervised": supervised, "linear_eval": linear_eval,
             "report": report}


def render(name: str) -> str:
    return nbformat.writes(NOTEBOOKS[name](), version=4) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed notebook differs")
    args = ap.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = OUT / f"{name}.ipynb"
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)}: run python scripts/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

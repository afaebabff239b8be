"""``simpleclr plan rehearse PLAN``: every run of a plan through its own notebook, cut short, then
its report, on this machine, before a GPU is spent on it.

Each run executes with the plan's exact config (datasets, image size, model, optimizer, grids,
study axes) and ``rehearsal=N`` (a runtime field, :class:`simpleclr.config.StageConfig`): batches
and evaluation passes of N images, two epochs of one step with a checkpoint after the first and a
resume from it. So a missing dataset, an encoder path that does not resolve, a notebook that fails
after its first epoch or at its resume, and a report section that cannot draw the plan's runs all
show here. The runs and the report go to ``<outputs>/<plan>/`` (``rehearsal/`` by default), never
to the plan's real run folders; a rehearsal's folder never passes for a real run's
(:meth:`simpleclr.runs.rundir.RunDir.finished`), and its report says so in its title.

What it measures, written to ``rehearsal.json`` and ``rehearsal.md`` there:

- per run: the rehearsal's time and peak memory (at the cut batch), the real run's work (32-px
  training-image passes, :func:`simpleclr.study.estimate.work_units`), its estimate on this
  machine (from a timed step, :class:`simpleclr.study.estimate.Estimator`) and on the GPU the
  plans are sized for (:data:`GPU_IMAGES_PER_S`, an assumption);
- per training shape (stage, image size, stem, precision, width): one step's time and peak memory at each
  batch size the plan uses, measured at ``FIT_BATCHES`` and extrapolated linearly beyond them (a
  step of 512 SimCLR images at 32 px took 43-46 s on a 2-core AVX2 CPU: measuring every plan batch
  would cost most of the rehearsal's budget; the line ran 20-30% low at 512 there,
  docs/rehearsal-full.md).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ..report.model import MANIFEST
from ..runs.rundir import RunDir, atomic_write_json, hardware, read_json
from ..runs.watch import fmt_seconds
from ..types import PathLike
from .estimate import Estimator, native_size, work_units
from .planfile import Plan, PlanError, load_plan
from .plans import Execution, cut_plan, run_plan

REHEARSAL_IMAGES = 32  # images per cut batch and evaluation pass
FIT_BATCHES = (48, 128)  # a training shape's step is timed at these batches (fewer where the plan's is)
# The GPU the plans are sized for (plans/full.yaml's header): training images (SimCLR views) per
# second at 32 px with bf16 and channels_last on an A100-class GPU, 3x that for a forward pass
# alone, and a notebook's start-up there. Assumed, not measured: no GPU has run the full plan.
GPU_IMAGES_PER_S = 8000.0
GPU_NOTEBOOK_S = 15.0


def rehearse_plan(plan: PathLike, outputs: PathLike = "rehearsal", images: int = REHEARSAL_IMAGES,
                  measure: bool = True, progress: bool = True) -> int:
    """Rehearse ``plan`` into ``<outputs>/<plan>/`` (cleared of an earlier rehearsal first), render
    its report there, measure and record; the exit code is :func:`run_plan`'s."""
    if images < 2:
        raise PlanError(f"--images {images}: use at least 2 (a SimCLR batch needs a negative)")
    p = load_plan(plan, outputs)
    _clear(p)
    started = time.time()
    code = run_plan(plan, outputs=outputs, report_dir=p.outputs / "report", progress=progress,
                    execution=Execution(rehearsal=images))
    wall = time.time() - started
    cut = cut_plan(p, images, quiet=True)  # as run_plan ran it
    shapes = measure_shapes(cut) if measure else []
    record = build_record(cut, images, wall, shapes)
    atomic_write_json(p.outputs / "rehearsal.json", record)
    text = record_markdown(record)
    (p.outputs / "rehearsal.md").write_text(text)
    print(text, flush=True)
    return code


def _clear(p: Plan) -> None:
    """Remove an earlier rehearsal of ``p``; refuse a folder holding anything else."""
    if not p.outputs.exists():
        return
    for cfg_path in p.outputs.glob("*/config.json"):
        cfg = read_json(cfg_path) or {}
        if not (cfg.get("config") or {}).get("rehearsal"):
            raise PlanError(f"{cfg_path.parent} is a real run, not a rehearsal: rehearse into another "
                            "folder (--outputs), never over real runs")
    shutil.rmtree(p.outputs)


# ---- one step at the plan's batch sizes ----------------------------------------------------------
def _shape(spec: Any) -> Optional[tuple[str, int, str, str, int]]:
    """(step kind, image size, stem, precision, width) of a training run; None for a probe."""
    c = spec.config
    if c.stage not in ("pretrain", "supervised"):
        return None
    init = str(getattr(c, "init", None) or "")
    stem = "imagenet" if init.startswith("imagenet") else c.stem
    return c.stage, int(c.image_size or native_size(c.dataset)), stem, c.precision, c.width


def measure_shapes(p: Plan) -> list[dict]:
    """One row per training shape and batch size the plan uses: a step's seconds and peak memory."""
    wanted: dict[tuple, set[int]] = {}
    for spec in p.runs.values():
        shape = _shape(spec)
        if shape is not None:
            wanted.setdefault(shape, set()).add(spec.config.batch_size)
    rows = []
    for (kind, size, stem, precision, width), batches in wanted.items():
        points = [_measure_step(kind, size, stem, precision, b, width)
                  for b in sorted({min(b, max(batches)) for b in FIT_BATCHES})]
        for b in sorted(batches):
            rows.append({"stage": kind, "image_size": size, "stem": stem, "precision": precision,
                         "width": width, "batch_size": b, **step_at(points, b)})
    return rows


def _measure_step(kind: str, size: int, stem: str, precision: str, batch: int, width: int = 64) -> dict:
    """A step of ``batch`` images (after one untimed one) and the memory it took, in a fresh
    process: in this one the allocator would reuse what an earlier measurement freed."""
    code = (f"import json; from simpleclr.study.rehearse import step_here; "
            f"print(json.dumps(step_here({kind!r}, {size}, {stem!r}, {precision!r}, {batch}, {width})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        why = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {"batch_size": batch, "step_s": float("nan"), "memory_mb": float("nan"), "error": why}
    return json.loads(out.stdout.strip().splitlines()[-1])


def step_here(kind: str, size: int, stem: str, precision: str, batch: int, width: int = 64) -> dict:
    """:func:`_measure_step`'s work, in the process it starts: the memory is the peak resident
    size while the step's model and data are built and it runs, beyond what the process held."""
    from ..training.parts import device
    from . import bench

    base = device.resident_mb()
    device.reset_peak_memory()
    inp = bench.make_inputs(bench.Setup(batch_size=batch, image_size=size, precision=precision,
                                         stem=stem, width=width))
    case = bench.simclr_case(inp) if kind == "pretrain" else bench.supervised_case(inp)
    timing = bench.time_steps(case, inp.rt.device, warmup=1, repeats=1, steps=1)
    peak = device.peak_memory(inp.rt.device)["peak_memory_mb"]
    return {"batch_size": batch, "step_s": timing.seconds,
            "memory_mb": peak - (0.0 if inp.rt.device.type == "cuda" else base)}


def step_at(points: list[dict], batch: int) -> dict:
    """The step at ``batch``: measured when it is one of ``points``, else the straight line
    through the two outermost points."""
    for pt in points:
        if pt["batch_size"] == batch:
            return {"step_s": pt["step_s"], "memory_mb": pt["memory_mb"], "how": "measured"}
    lo, hi = points[0], points[-1]
    if lo["batch_size"] == hi["batch_size"]:
        scale = batch / lo["batch_size"]
        return {"step_s": lo["step_s"] * scale, "memory_mb": lo["memory_mb"] * scale,
                "how": f"scaled from batch {lo['batch_size']}"}
    f = (batch - lo["batch_size"]) / (hi["batch_size"] - lo["batch_size"])
    return {k: lo[k] + f * (hi[k] - lo[k]) for k in ("step_s", "memory_mb")} | {
        "how": f"line through batches {lo['batch_size']} and {hi['batch_size']}"}


# ---- the record ------------------------------------------------------------------------------------
def build_record(p: Plan, images: int, wall_s: float, shapes: list[dict]) -> dict:
    """What the rehearsal ran and measured, per run and in total (JSON-ready)."""
    manifest = read_json(p.outputs / MANIFEST) or {}
    est = Estimator(p.outputs / ".no-finished-runs")  # priced from a timed step, not from cut runs
    runs, cpu_total, gpu_total = [], 0.0, 0.0
    for n, spec in p.runs.items():
        state = (manifest.get("runs") or {}).get(n, {})
        res = RunDir(spec.path).read_result() or {}
        real = dataclasses.replace(spec, config=spec.config.replace(rehearsal=0),
                                   path=p.outputs / ".no-finished-runs" / n)
        cpu_s, _ = est.seconds(real)
        units = work_units(spec.config.stage, real.config.to_dict())
        gpu_s = None if units is None else (
            GPU_NOTEBOOK_S + units * (2 if spec.config.stage == "pretrain" else 1) / GPU_IMAGES_PER_S)
        cpu_total += cpu_s or 0.0
        gpu_total += gpu_s or 0.0
        runs.append({"name": n, "stage": spec.config.stage, "state": state.get("state"),
                     "reason": state.get("reason"), "rehearsal_s": state.get("seconds"),
                     "peak_memory_mb": res.get("peak_memory_mb"), "work_units": units,
                     "estimate_here_s": cpu_s, "estimate_gpu_s": gpu_s})
    failed = [r["name"] for r in runs if r["state"] not in ("done",)]
    return {"plan": p.name, "images": images, "wall_s": wall_s, "hardware": hardware(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": runs, "shapes": shapes,
            "failed": failed, "report": str(p.outputs / "report"),
            "estimate_here_s": cpu_total, "estimate_gpu_s": gpu_total,
            "gpu_assumed": {"images_per_s": GPU_IMAGES_PER_S, "notebook_s": GPU_NOTEBOOK_S}}


def record_markdown(rec: dict) -> str:
    """The record as a page: runs, shapes, totals, with the machine the figures are from."""
    hw = rec["hardware"]
    cpu = f"{hw.get('cpu') or hw.get('processor') or 'CPU'}, {hw.get('cpu_count', '?')} cores"

    def mb(v: Optional[float]) -> str:
        return "" if v is None else f"{v:,.0f}"

    def sec(v: Optional[float]) -> str:
        return "" if v is None else fmt_seconds(v)

    lines = [f"# Rehearsal of plan `{rec['plan']}`", "",
             f"{len(rec['runs'])} runs cut to batches of {rec['images']} images and two one-step epochs "
             f"(a checkpoint and a resume each), then the report: **{sec(rec['wall_s'])}** on {cpu} "
             f"({hw.get('hostname', '?')}), {rec['written_at']}. "
             + (f"**Failed or not run: {', '.join(rec['failed'])}.**" if rec["failed"] else "Every run finished."),
             "", "Memory figures are a CPU process's resident peak, not a GPU's.", "",
             "| run | stage | state | rehearsal | peak memory (MB) | real run here | real run on the GPU |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rec["runs"]:
        lines.append(f"| {r['name']} | {r['stage']} | {r['state']} | {sec(r['rehearsal_s'])} | "
                     f"{mb(r['peak_memory_mb'])} | {sec(r['estimate_here_s'])} | {sec(r['estimate_gpu_s'])} |")
    g = rec["gpu_assumed"]
    lines += ["", f"Real plan: about **{sec(rec['estimate_here_s'])}** on this machine (each stage's "
              "step timed here, scaled by each run's images) and about "
              f"**{sec(rec['estimate_gpu_s'])}** on one A100-class GPU, assuming "
              f"{g['images_per_s']:,.0f} training images/s at 32 px (3x that for a forward pass) and "
              f"{g['notebook_s']:.0f} s per notebook.", ""]
    if rec["shapes"]:
        lines += ["One training step at each batch size the plan uses (CPU, this machine):", "",
                  "| stage | image size | stem | precision | width | batch | step | memory (MB) | how |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in rec["shapes"]:
            lines.append(f"| {s['stage']} | {s['image_size']} | {s['stem']} | {s['precision']} | "
                         f"{s.get('width', 64)} | {s['batch_size']} | {s['step_s']:.2f} s | "
                         f"{mb(s['memory_mb'])} | {s['how']} |")
    return "\n".join(lines) + "\n"


def load_record(path: PathLike) -> dict:
    """A rehearsal record written by :func:`rehearse_plan`."""
    return json.loads(Path(path).read_text())

"""Experiment plans: run a plan's runs as papermill notebooks into run folders, then the report.

A plan (``plans/<name>.yaml``, read and validated by :func:`simpleclr.study.planfile.load_plan`) names
its runs, the notebook (= stage) each one executes, its parameters and what the report does with
it. :func:`run_plan` checks the data every run needs and that each run's images fit its config,
executes the runs in dependency order, skipping finished ones and resuming partial ones, then
renders the report; :func:`show_plan` lists status and an estimate of the time left
(:mod:`simpleclr.study.estimate`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..config import ConfigError, StageConfig
from ..types import PathLike
from ..errors import one_line
from .estimate import Estimator, PlanClock, estimate_runs
from .kernels import SharedKernel, run_notebook
from .planfile import REPO_ROOT, Plan, PlanError, RunSpec, load_plan
from ..runs.rundir import RunDir, atomic_write_json, git_commit
from ..runs.watch import RunWatch, fmt_seconds
from ..report.model import MAIN_ROWS, MANIFEST

if TYPE_CHECKING:
    import torch


REPORT_NOTEBOOK = "report"
ACCEPT_ENV = "SIMPLECLR_ACCEPT_CHECKSUM"  # what the shipped plans read accept_checksum from


# ---- what a plan needs before it starts -----------------------------------------------------
def _datasets(plan: Plan, names: Sequence[str]) -> list[tuple[str, Optional[str], Optional[str], Optional[int]]]:
    from ..data import read_size

    out = []
    for n in names:
        c = plan.runs[n].config
        size = read_size(c.dataset, c.image_size) if c.stage != "pretrain" else c.image_size
        key = (c.dataset, c.data_dir, c.accept_checksum, size)
        if key not in out:
            out.append(key)
    return out


def check_data(plan: Plan, names: Sequence[str]) -> None:
    """Make every dataset the runs use ready (cache, placed file or download) before any run, and
    stop when an official dataset's image counts are not the official ones, unless the plan
    (``partial_data``) or the environment (:data:`simpleclr.data.PARTIAL_ENV`) declares it partial.

    Raises :class:`PlanError` with the data layer's own message and a pointer to the smoke plan,
    so a machine without the data stops at once instead of after the first hour of runs.
    """
    from .. import data

    for name, root, accept, size in _datasets(plan, names):
        try:  # the native cache and the size the runs read, built once here
            summary = data.prepare(name, root=root, accept_checksum=accept, download=True, image_size=size)
            problem = data.count_problem(name, summary["splits"])
            if problem and not data.declared_partial(name, plan.partial_data):
                raise PlanError(f"{problem}; no run was started")
        except data.DataError as e:
            hint = "" if name.startswith("synthetic-") else (
                " (to try the whole pipeline on generated data with no download: make report PLAN=smoke)")
            if isinstance(e, data.ChecksumMismatch) and accept is None:
                hint = (f"; the quick and full plans pass it to every run from the environment: "
                        f"export {ACCEPT_ENV}=<sha256>") + hint
            raise PlanError(f"{e}{hint}") from None


def check_images(plan: Plan, names: Sequence[str],
                 labels_of: Optional[Callable[[StageConfig], "torch.Tensor"]] = None) -> None:
    """Every run's images fit its config (a batch no larger than its images, a label share that
    leaves validation images; :func:`simpleclr.training.preflight.check_images`), checked from the
    datasets' labels before any run starts. ``labels_of`` gives a config's training labels (the
    data layer's, by default; a test passes the official counts).

    Raises :class:`PlanError` naming the first run that fails, how many more do and what to do.
    """
    from .. import data
    from ..training.preflight import check_images as check_run

    cache: dict[tuple, "torch.Tensor"] = {}

    def from_data(c: StageConfig) -> "torch.Tensor":
        key = (c.dataset, getattr(c, "split", "train"), c.data_dir, c.accept_checksum)
        if key not in cache:
            cache[key] = data.load_labels(c.dataset, key[1], root=c.data_dir,
                                          accept_checksum=c.accept_checksum)
        return cache[key]

    failed = []
    for n in names:
        c = plan.runs[n].config
        try:
            check_run(c, (labels_of or from_data)(c))
        except (ConfigError, data.DataError) as e:
            failed.append((n, e))
    if failed:
        n, e = failed[0]
        more = ""
        if len(failed) > 1:
            others = ", ".join(m for m, _ in failed[1:4]) + (", ..." if len(failed) > 4 else "")
            more = f" ({len(failed) - 1} more runs fail this check: {others})"
        raise PlanError(f"run {n} cannot start: {e}{more}; no run was started")


def uses_imagenet(spec: RunSpec) -> bool:
    c = spec.config
    value = getattr(c, "encoder", None) or getattr(c, "init", None) or ""
    return value == "imagenet"


def check_imagenet_weights() -> Optional[str]:
    """None when torchvision's ImageNet ResNet-18 file is cached or can be fetched, else why not."""
    from ..training.parts.models import WeightsError, imagenet_encoder

    try:
        imagenet_encoder(progress=False)
    except WeightsError as e:
        return str(e)
    return None


def write_standins(plan: Plan) -> None:
    from ..training.parts.models import write_standin_imagenet_weights

    for kind in plan.standins:
        path = plan.standin_path(kind)
        if kind == "imagenet_weights" and not path.is_file():
            write_standin_imagenet_weights(path, seed=0)


# ---- the manifest the report reads ----------------------------------------------------------
def manifest(plan: Plan, states: dict[str, dict]) -> dict:
    """The plan as resolved (runs, roles, folders) plus what happened to each run."""
    return {
        "plan": plan.name, "source": str(plan.source), "description": plan.description,
        "estimate": plan.estimate, "report": plan.report, "standins": {
            k: str(plan.standin_path(k)) for k in plan.standins},
        "git_commit": git_commit(), "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "main_rows": [list(r) for r in MAIN_ROWS], "order": list(plan.runs),
        "runs": {n: {"notebook": s.notebook, "stage": s.config.stage, "path": str(s.path),
                     "fingerprint": s.config.fingerprint(), "config": s.config.to_dict(),
                     "needs": list(s.needs),
                     "report": s.report, **states.get(n, {"state": s.status(), "reason": None})}
                 for n, s in plan.runs.items()},
    }


def write_manifest(plan: Plan, states: dict[str, dict]) -> Path:
    path = plan.outputs / MANIFEST
    atomic_write_json(path, manifest(plan, states))
    return path


# ---- execution -------------------------------------------------------------------------------
def notebook_file(name: str) -> Path:
    path = REPO_ROOT / "notebooks" / f"{name}.ipynb"
    if not path.is_file():
        raise PlanError(f"notebook {path} is missing: restore it from git (scripts/make_notebooks.py writes it)")
    return path


def _failure_reason(e: BaseException) -> str:
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    return one_line(f"{ename}: {evalue}" if ename else f"{type(e).__name__}: {e}", 400)


def execute_notebook(name: str, output: Path, parameters: dict, *, cwd: Optional[PathLike] = None,
                     progress: bool = False, kernel: Optional[SharedKernel] = None) -> None:
    """Run ``notebooks/<name>.ipynb`` with ``parameters`` through papermill into ``output``, in
    ``kernel`` when given (:class:`simpleclr.study.kernels.SharedKernel`), else in its own.

    ``progress`` shows papermill's per-cell bar; plans show a run's own steps instead (RunWatch).
    """
    run_notebook(notebook_file(name), output, parameters, cwd=cwd, progress=progress, kernel=kernel)


def _before_runs(p: Plan, names: Sequence[str], statuses: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(runs to run, why some cannot) once the data, stand-ins and weights they need are there.

    A stale run folder (another config) stops the plan here, before any compute; a missing
    ImageNet weights file only marks the runs that use it unavailable.
    """
    stale = [n for n in names if statuses[n] == "stale"]
    if stale:
        spec = p.runs[stale[0]]
        held = (RunDir(spec.path).read_config() or {}).get("config") or {}
        if bool(held.get("rehearsal")) != bool(spec.config.rehearsal):
            raise PlanError(f"{spec.path} holds {'a rehearsal' if held.get('rehearsal') else 'a real run'} "
                            f"of this run, and this is {'a rehearsal' if spec.config.rehearsal else 'the real plan'}: "
                            "rehearsals and real runs never share a folder; use another --outputs folder")
        raise PlanError(f"{spec.path} holds a run with another config than plan {p.name} "
                        "gives it now: delete that folder to redo it, or use another --outputs folder")
    todo = [n for n in names if statuses[n] not in ("done", "broken")]
    check_data(p, todo)
    check_images(p, todo)
    write_standins(p)
    unavailable: dict[str, str] = {}
    if any(uses_imagenet(p.runs[n]) for n in todo):
        why = check_imagenet_weights()
        if why:
            print(f"note: ImageNet weights unavailable, their rows will be marked missing: {why}", flush=True)
            unavailable = {n: f"ImageNet weights unavailable: {why}" for n in todo if uses_imagenet(p.runs[n])}
    return todo, unavailable


def _not_run(spec: RunSpec, status: str, states: dict[str, dict], unavailable: dict[str, str]) -> Optional[dict]:
    """The state of a run that is not executed now (broken, done earlier, unavailable, blocked by
    a need that did not finish), or None when it is to run."""
    if status == "broken":  # a damaged JSON file: never run over it, never delete it
        return {"state": "broken", "reason": spec.problem()}
    if status == "done":
        res = RunDir(spec.path).read_result() or {}
        return {"state": "done", "reason": None, "reused": True, "seconds": 0.0,
                "wall_time_s": res.get("wall_time_s")}
    blocked = [d for d in spec.needs
               if states.get(d, {}).get("state") in ("failed", "blocked", "unavailable", "broken")]
    if spec.name in unavailable or blocked:
        state = "unavailable" if spec.name in unavailable or all(
            states[d]["state"] == "unavailable" for d in blocked) else "blocked"
        reason = (unavailable.get(spec.name)
                  or f"needs {blocked[0]}, which did not finish ({states[blocked[0]]['reason']})")
        return {"state": state, "reason": reason}
    return None


def parse_devices(text: Optional[str]) -> Optional[list[str]]:
    """``--devices`` as a list of worker devices: ``0,1`` -> cuda:0, cuda:1; ``cpu,cpu`` -> two CPU
    workers; None (or empty) -> None, one worker on each run's own device."""
    if not text:
        return None
    out = []
    for item in (t.strip() for t in text.split(",")):
        if item.isdigit():
            out.append(f"cuda:{item}")
        elif item == "cpu" or item.startswith("cuda:") and item[5:].isdigit():
            out.append(item)
        else:
            raise PlanError(f"--devices: {item!r} is not a device; give GPU indices (0,1), cuda:N or cpu, "
                            "comma-separated, one per worker")
    return out


def worker_params(spec: RunSpec, device: str, devices: Sequence[str]) -> dict:
    """The notebook parameters of ``spec`` on one worker: its device, and on a CPU shared by several
    workers an equal share of the cores unless the run names its thread count. Both are runtime
    fields: the run's fingerprint, and so its folder's identity, stay the same."""
    params = dict(spec.params)
    params["device"] = device
    n_cpu = sum(d == "cpu" for d in devices)
    if device == "cpu" and n_cpu > 1 and spec.config.num_threads is None:
        params["num_threads"] = max(1, (os.cpu_count() or 1) // n_cpu)
    return params


_WORKER_KERNEL: Optional[SharedKernel] = None  # a plan worker process's kernel, for its runs


def _worker_kernel() -> SharedKernel:
    """This worker process's shared kernel, shut down when the process leaves (multiprocessing
    runs its finalizers there; atexit does not run in a pool's workers)."""
    global _WORKER_KERNEL
    if _WORKER_KERNEL is None:
        _WORKER_KERNEL = SharedKernel()
        multiprocessing.util.Finalize(None, _WORKER_KERNEL.close, exitpriority=10)
    return _WORKER_KERNEL


def _execute_in_worker(notebook: str, output: str, params: dict, shared: bool = True) -> Optional[str]:
    """One run's notebook in a worker process (in its shared kernel unless ``shared`` is False):
    None when it finished, else why not (a line)."""
    try:
        execute_notebook(notebook, Path(output), params, kernel=_worker_kernel() if shared else None)
    except KeyboardInterrupt:
        return "interrupted"
    except Exception as e:  # papermill's execution error, a dead kernel, ...
        return _failure_reason(e)
    return None


def _execute_run(p: Plan, spec: RunSpec, tag: str, states: dict[str, dict], progress: bool,
                 kernel: Optional[SharedKernel] = None) -> dict:
    """Execute one run's notebook (in ``kernel`` when given); its state (done or failed). An
    interrupt leaves it partial, in the manifest too, and goes on up."""
    t0 = time.time()
    try:
        with RunWatch(tag, RunDir(spec.path)) if progress else contextlib.nullcontext():
            execute_notebook(spec.notebook, RunDir(spec.path).notebook_path, spec.params, kernel=kernel)
    except KeyboardInterrupt:
        states[spec.name] = {"state": "partial", "reason": "interrupted"}
        write_manifest(p, states)
        raise
    except Exception as e:  # papermill's execution error, a dead kernel, ...
        reason = _failure_reason(e)
        print(f"{tag}: FAILED after {fmt_seconds(time.time() - t0)}: {reason}\n"
              f"    executed notebook: {RunDir(spec.path).notebook_path}", flush=True)
        return {"state": "failed", "reason": reason, "seconds": time.time() - t0}
    res = RunDir(spec.path).read_result() or {}
    return {"state": "done", "reason": None, "reused": False, "seconds": time.time() - t0,
            "wall_time_s": res.get("wall_time_s")}


def _run_one(p: Plan, spec: RunSpec, tag: str, status: str, states: dict[str, dict],
             unavailable: dict[str, str], clock: PlanClock, progress: bool,
             kernel: Optional[SharedKernel] = None) -> None:
    """One run's turn: skipped with its reason, or executed; its state goes into ``states`` and the
    manifest (a run done earlier changes nothing there)."""
    state = _not_run(spec, status, states, unavailable)
    if state is not None:
        states[spec.name] = state
        if state["state"] == "broken":
            print(f"{tag}: BROKEN, not run: {state['reason']}", flush=True)
        elif state["state"] == "done":
            print(f"{tag}: done earlier with the same config, skipped", flush=True)
            return
        else:
            print(f"{tag}: not run: {state['reason']}", flush=True)
        write_manifest(p, states)
        return
    print(f"{tag}: {'resuming' if status == 'partial' else 'running'} -> {spec.path}", flush=True)
    states[spec.name] = state = _execute_run(p, spec, tag, states, progress, kernel)
    if state["state"] == "done":
        clock.finished(spec.name, state["seconds"])
        print(f"{tag}: done in {fmt_seconds(state['seconds'])}{clock.left_text()}", flush=True)
    write_manifest(p, states)


def _after_runs(p: Plan, names: Sequence[str], states: dict[str, dict], report_dir: PathLike,
                started: float, kernel: Optional[SharedKernel] = None) -> int:
    """Render the report; 1 when it or any run failed, broke or was blocked."""
    print(f"plan {p.name}: runs finished in {fmt_seconds(time.time() - started)}; rendering the report", flush=True)
    try:
        html = render_report(p, report_dir, kernel)
        print(f"report: {html}", flush=True)
    except Exception as e:
        print(f"report: FAILED: {_failure_reason(e)}\n    executed notebook: {p.outputs / 'report.ipynb'}",
              flush=True)
        return 1
    failed = [n for n in names if states[n]["state"] in ("failed", "broken")]
    if failed:
        print(f"plan {p.name}: {len(failed)} run(s) failed or broken: {', '.join(failed)} "
              "(their rows are marked missing in the report)", file=sys.stderr, flush=True)
        return 1
    blocked = [n for n, s in states.items() if s["state"] == "blocked"]
    return 1 if blocked else 0


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (``kill``, a job scheduler's cancel: SLURM's scancel sends it) ends the plan as
    Ctrl-C does: the running run is marked partial and its kernel shut down, instead of the
    process dying where it stands. Only in the main thread, where Python runs signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cut_plan(p: Plan, images: int, quiet: bool = False) -> Plan:
    """``p`` as a rehearsal runs it (:mod:`simpleclr.study.rehearse`): every run's config with
    ``rehearsal=images`` (a runtime field: the fingerprints are those of the plan loaded at the
    same folder, whose run references point into it), and where torchvision's ImageNet
    weights cannot be had, a generated stand-in file of the same format in their place."""
    swap = any(uses_imagenet(s) for s in p.runs.values()) and check_imagenet_weights() is not None
    standin = f"imagenet:{p.standin_path('imagenet_weights')}"
    runs = {}
    for n, spec in p.runs.items():
        cfg = spec.config.replace(rehearsal=images)
        if swap and uses_imagenet(spec):
            cfg = cfg.replace(**{"encoder" if hasattr(cfg, "encoder") else "init": standin})
        runs[n] = dataclasses.replace(spec, config=cfg)
    if swap and not quiet:
        print("note: ImageNet weights unavailable here: the rehearsal loads a generated stand-in of "
              "the same format in their place", flush=True)
    standins = tuple(sorted(set(p.standins) | ({"imagenet_weights"} if swap else set())))
    return dataclasses.replace(p, runs=runs, standins=standins)


def run_plan(plan: PathLike, outputs: PathLike = "outputs", report_dir: PathLike = "report",
             only: Optional[Sequence[str]] = None, *, progress: bool = True,
             devices: Optional[Sequence[str]] = None, kernel_per_run: bool = False,
             rehearsal: int = 0) -> int:
    """Execute a plan's runs, then render the report; the exit code is 1 when a run failed.

    The runs share one kernel, reset between them (:class:`simpleclr.study.kernels.SharedKernel`),
    unless ``kernel_per_run``; the report notebook and runs on several devices get their own.

    ``devices`` (see :func:`parse_devices`): with several, independent runs go side by side, one
    per device (:func:`_run_on_workers`); with one, every run uses that device; None, each run its own.

    Finished runs with the same config are skipped, partial ones resume (the library resumes from
    ``checkpoints/last.pt``). A failed run is reported with its executed notebook; runs that do not
    need it go on, and the report still renders with that row marked missing.

    ``rehearsal`` > 0 runs every run cut short (:func:`cut_plan`); :mod:`simpleclr.study.rehearse`
    gives it a folder of its own.
    """
    p = load_plan(plan, outputs)
    if rehearsal:
        p = cut_plan(p, rehearsal)
    names = p.closure(only) if only else list(p.runs)
    statuses = {n: p.runs[n].status() for n in p.runs}
    todo, unavailable = _before_runs(p, names, statuses)
    states: dict[str, dict] = {}
    write_manifest(p, states)
    print(f"plan {p.name}: {len(names)} runs ({len(todo)} to run) -> {p.outputs}", flush=True)
    runnable = [n for n in todo if n not in unavailable]
    clock = PlanClock(estimate_runs(p, runnable, Path(outputs)) if progress and not rehearsal else {})
    if progress and not rehearsal:
        print(clock.summary(p), flush=True)
    started = time.time()
    width = len(str(len(names)))
    tags = {n: f"[{i:>{width}}/{len(names)}] {n} ({p.runs[n].notebook})" for i, n in enumerate(names, 1)}
    with sigterm_as_interrupt(), SharedKernel() if not kernel_per_run else contextlib.nullcontext() as kernel:
        if devices and len(devices) > 1:
            _run_on_workers(p, names, tags, statuses, states, unavailable, clock, progress, devices,
                            shared=not kernel_per_run)
        else:
            for n in names:
                spec = p.runs[n]
                if devices:  # one worker on a named device: a runtime field, the fingerprint stays
                    spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, device=devices[0]))
                _run_one(p, spec, tags[n], statuses[n], states, unavailable, clock, progress, kernel)
        return _after_runs(p, names, states, report_dir, started, kernel)


def _run_on_workers(p: Plan, names: Sequence[str], tags: dict[str, str], statuses: dict[str, str],
                    states: dict[str, dict], unavailable: dict[str, str], clock: PlanClock, progress: bool,
                    devices: Sequence[str], shared: bool = True) -> None:
    """The runs side by side, one per worker device, in worker processes (each with one kernel for
    its runs unless ``shared`` is False).

    A run starts once every run it needs has settled (in plan order among those ready); one that
    sets a launcher takes every device and runs alone. A failed run blocks only the runs that need
    it. Only this process writes the manifest and prints the runs' lines; each run's folder has
    its one writer, the notebook's kernel. Ctrl-C interrupts every running notebook, marks those
    runs partial and goes on up."""
    pending = list(names)
    running: dict[Future, tuple[str, str, str, float, contextlib.ExitStack]] = {}
    free = list(devices)
    pool = ProcessPoolExecutor(len(devices), mp_context=multiprocessing.get_context("spawn"))
    try:
        while pending or running:
            while _start_ready(p, pending, running, free, tags, statuses, states, unavailable, clock, progress,
                               devices, pool, shared):
                pass
            if not running:
                if pending:  # cannot happen with a validated plan (needs come first, all in names)
                    raise PlanError(f"plan {p.name}: runs {', '.join(pending)} wait on runs that never ran")
                break
            for fut in wait(running, return_when=FIRST_COMPLETED).done:
                n, tag, taken, t0, watch = running.pop(fut)
                watch.close()
                free += taken.split(",")
                _record_worker_result(p, n, tag, fut.result(), t0, states, clock)
    except KeyboardInterrupt:
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGINT)
        for n, *_ in running.values():
            states[n] = {"state": "partial", "reason": "interrupted"}
        write_manifest(p, states)
        raise
    finally:
        for *_, watch in running.values():
            watch.close()
        pool.shutdown(wait=True, cancel_futures=True)


def _start_ready(p: Plan, pending: list[str], running: dict, free: list[str], tags: dict[str, str],
                 statuses: dict[str, str], states: dict[str, dict], unavailable: dict[str, str],
                 clock: PlanClock, progress: bool, devices: Sequence[str], pool: ProcessPoolExecutor,
                 shared: bool = True) -> bool:
    """Settle or start the first pending run whose needs have settled and that fits on the free
    devices, in plan order; False when none can move now."""
    for n in [n for n in pending if all(d in states for d in p.runs[n].needs)]:
        spec, exclusive = p.runs[n], bool(p.runs[n].config.launcher)
        if _not_run(spec, statuses[n], states, unavailable) is not None:  # done earlier, blocked, ...
            pending.remove(n)
            _run_one(p, spec, tags[n], statuses[n], states, unavailable, clock, progress)
            return True
        if not free or exclusive and len(free) < len(devices):
            continue
        pending.remove(n)
        taken = [free.pop(0)] + ([free.pop() for _ in list(free)] if exclusive else [])
        tag = f"{tags[n]} on {'every device' if exclusive else taken[0]}"
        print(f"{tag}: {'resuming' if statuses[n] == 'partial' else 'running'} -> {spec.path}", flush=True)
        watch = contextlib.ExitStack()
        if progress:
            watch.enter_context(RunWatch(tag, RunDir(spec.path), tty=False))
        params = spec.params if exclusive else worker_params(spec, taken[0], devices)
        fut = pool.submit(_execute_in_worker, spec.notebook, str(RunDir(spec.path).notebook_path), params, shared)
        running[fut] = (n, tag, ",".join(taken), time.time(), watch)
        return True
    return False


def _record_worker_result(p: Plan, n: str, tag: str, failure: Optional[str], t0: float,
                          states: dict[str, dict], clock: PlanClock) -> None:
    """A worker's run has ended: its state, its closing line and the manifest, as for one worker."""
    spec, seconds = p.runs[n], time.time() - t0
    if failure is not None:
        states[n] = {"state": "failed", "reason": failure, "seconds": seconds}
        print(f"{tag}: FAILED after {fmt_seconds(seconds)}: {failure}\n"
              f"    executed notebook: {RunDir(spec.path).notebook_path}", flush=True)
    else:
        res = RunDir(spec.path).read_result() or {}
        states[n] = {"state": "done", "reason": None, "reused": False, "seconds": seconds,
                     "wall_time_s": res.get("wall_time_s")}
        clock.finished(n, seconds)
        print(f"{tag}: done in {fmt_seconds(seconds)}{clock.left_text()}", flush=True)
    write_manifest(p, states)


def render_report(plan: Plan, report_dir: PathLike = "report", kernel: Optional[SharedKernel] = None) -> Path:
    """Execute the report notebook on the plan's folder (in ``kernel`` when given) and export it as
    one HTML file."""
    from ..report.figures import export_html

    executed = plan.outputs / "report.ipynb"
    execute_notebook(REPORT_NOTEBOOK, executed, {**plan.report, "plan_dir": str(plan.outputs)}, kernel=kernel)
    return export_html(executed, Path(report_dir) / "report.html", title=plan.report.get("title"))


# ---- status and estimates --------------------------------------------------------------------
def show_plan(plan: PathLike, outputs: PathLike = "outputs") -> int:
    """Print each run's status (done / partial / todo / stale / broken) and the time left here."""
    p = load_plan(plan, outputs)
    est = Estimator(Path(outputs))
    rows = []
    total = 0.0
    unknown = 0
    for n, spec in p.runs.items():
        status = spec.status()
        if status == "broken":  # not run until repaired: the last column says why
            rows.append((n, spec.notebook, status, "-", spec.problem()))
            continue
        seconds, basis = (0.0, "") if status == "done" else est.seconds(spec)
        if seconds is None:
            unknown += 1
        else:
            total += seconds
        rows.append((n, spec.notebook, status, "-" if status == "done" else fmt_seconds(seconds), basis))
    w = [max(len(r[i]) for r in rows + [("run", "notebook", "status", "left", "")]) for i in range(4)]
    print(f"plan {p.name} ({p.source}) -> {p.outputs}")
    print(f"  {'run':<{w[0]}}  {'notebook':<{w[1]}}  {'status':<{w[2]}}  {'left':>{w[3]}}  basis")
    for r in rows:
        print(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:>{w[3]}}  {r[4]}")
    counts = {s: sum(r[2] == s for r in rows) for s in ("done", "partial", "todo", "stale", "broken")}
    left = f"about {fmt_seconds(total)} left on this machine" + (
        f" (+{unknown} run(s) not estimated)" if unknown else "")
    print(f"{counts['done']} done, {counts['partial']} partial, {counts['todo']} todo"
          + "".join(f", {counts[s]} {s}" for s in ("stale", "broken") if counts[s]) + f"; {left}")
    print("  estimate: a finished run of the same config on this machine gives its recorded wall time; "
          "otherwise seconds per image from finished runs of the stage here, else a short timing of "
          "the supervised step now (simpleclr bench's), times the images the run will process, plus "
          "notebook start-up")
    return 0

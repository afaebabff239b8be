"""Experiment plans: run a plan's runs as papermill notebooks into run folders, then the report.

A plan (``plans/<name>.yaml``, read and validated by :func:`simpleclr.study.planfile.load_plan`) names
its runs, the notebook (= stage) each one executes, its parameters and what the report does with
it. :func:`run_plan` checks the data every run needs and that each run's images fit its config,
executes the runs in dependency order, skipping finished ones and resuming partial ones, then
renders the report; :func:`show_plan` lists status and an estimate of the time left
(:mod:`simpleclr.study.estimate`). :class:`PlanExecutor` owns a plan's execution; its backends
run the notebooks in this process (:class:`InProcess`), in worker processes, one per device
(:class:`Workers`), or as SLURM jobs (:class:`simpleclr.study.slurm.Slurm`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

from ..config import ConfigError, StageConfig
from ..types import PathLike
from .estimate import Estimator, PlanClock, estimate_runs
from .kernels import SharedKernel, failure_reason, interrupts_quietly, quiet_on_interrupt, run_notebook
from .planfile import REPO_ROOT, Plan, PlanError, RunSpec, load_plan
from ..runs.rundir import RunDir, atomic_write_json, git_commit
from ..runs.watch import RunWatch, fmt_seconds
from ..report.model import MAIN_ROWS, MANIFEST

if TYPE_CHECKING:
    import torch

    from .slurm import SlurmOptions


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


def not_run(spec: RunSpec, status: str, states: dict[str, dict], unavailable: dict[str, str]) -> Optional[dict]:
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


def execute_in_worker(notebook: str, output: str, params: dict, shared: bool = True) -> Optional[str]:
    """One run's notebook in a worker process (in the process's shared kernel unless ``shared``
    is False): None when it finished, else why not (a line)."""
    try:
        execute_notebook(notebook, Path(output), params, kernel=_worker_kernel() if shared else None)
    except KeyboardInterrupt:
        return "interrupted"
    except Exception as e:  # papermill's execution error, a dead kernel, ...
        return failure_reason(e)
    return None


# ---- the executor and its backends -----------------------------------------------------------
class Backend(Protocol):
    """Where a plan's notebooks execute, for :class:`PlanExecutor` (which owns every rule)."""

    eager: bool  # takes a run before its needs settle: the scheduler holds it (SLURM's afterok)
    verb: str  # the run's line when it starts: "running", "submitted"
    watched: bool  # progress lines from the run folders while runs execute (RunWatch)
    tty: Optional[bool]  # RunWatch's tty: None decides by the terminal, False writes plain lines
    detach: bool  # hand the runs over and return without waiting for them

    def fits(self, spec: RunSpec) -> bool:
        """Whether ``spec`` can start now."""

    def start(self, spec: RunSpec, after: Sequence[str]) -> str:
        """Start ``spec`` once the runs ``after`` (handed over, not settled) finish; where it runs,
        appended to its tag (" on cuda:1")."""

    def wait(self) -> list[tuple[str, Optional[str]]]:
        """Block until at least one started run ends: (name, None when it finished, else why not)."""

    def drop(self, name: str) -> None:
        """Forget a started run that is not to run after all (a need of it failed)."""

    def stop(self, names: Sequence[str]) -> dict[str, str]:
        """Ctrl-C or SIGTERM: stop what can be stopped; each started run's reason in the manifest."""

    def close(self) -> None:
        """Release what the backend holds (worker processes); runs handed to a scheduler stay."""


class InProcess:
    """One run after another, in ``kernel`` (a fresh kernel per run when None), every run on
    ``device`` when given (a runtime field: the fingerprint stays)."""

    eager, verb, detach, watched = False, "running", False, True
    tty: Optional[bool] = None  # one run at a time: its line is rewritten in place on a terminal

    def __init__(self, kernel: Optional[SharedKernel] = None, device: Optional[str] = None):
        self.kernel, self.device = kernel, device
        self.next: Optional[RunSpec] = None

    def fits(self, spec: RunSpec) -> bool:
        return self.next is None

    def start(self, spec: RunSpec, after: Sequence[str]) -> str:
        self.next = spec
        return ""

    def wait(self) -> list[tuple[str, Optional[str]]]:
        spec, self.next = self.next, None
        if self.device:
            spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, device=self.device))
        try:
            execute_notebook(spec.notebook, RunDir(spec.path).notebook_path, spec.params, kernel=self.kernel)
        except Exception as e:  # papermill's execution error, a dead kernel, ...
            return [(spec.name, failure_reason(e))]
        return [(spec.name, None)]

    def drop(self, name: str) -> None:
        self.next = None

    def stop(self, names: Sequence[str]) -> dict[str, str]:
        return {n: "interrupted" for n in names}

    def close(self) -> None:
        pass


class Workers:
    """Runs side by side in worker processes, one per device (each with one kernel for its runs
    unless ``shared`` is False); a run that sets a launcher takes every device and runs alone."""

    eager, verb, detach, watched = False, "running", False, True
    tty: Optional[bool] = False  # several runs share the terminal: plain lines

    def __init__(self, devices: Sequence[str], shared: bool = True):
        self.devices, self.free, self.shared = list(devices), list(devices), shared
        self.pool = ProcessPoolExecutor(len(devices), mp_context=multiprocessing.get_context("spawn"),
                                        initializer=quiet_on_interrupt)
        self.futures: dict[Future, tuple[str, list[str]]] = {}

    def fits(self, spec: RunSpec) -> bool:
        return bool(self.free) and not (spec.config.launcher and len(self.free) < len(self.devices))

    def start(self, spec: RunSpec, after: Sequence[str]) -> str:
        exclusive = bool(spec.config.launcher)
        taken = [self.free.pop(0)] + ([self.free.pop() for _ in list(self.free)] if exclusive else [])
        params = spec.params if exclusive else worker_params(spec, taken[0], self.devices)
        fut = self.pool.submit(execute_in_worker, spec.notebook, str(RunDir(spec.path).notebook_path),
                               params, self.shared)
        self.futures[fut] = (spec.name, taken)
        return f" on {'every device' if exclusive else taken[0]}"

    def wait(self) -> list[tuple[str, Optional[str]]]:
        ended = []
        for fut in wait(self.futures, return_when=FIRST_COMPLETED).done:
            name, taken = self.futures.pop(fut)
            self.free += taken
            ended.append((name, fut.result()))
        return ended

    def drop(self, name: str) -> None:
        pass  # never started before its needs settled

    def stop(self, names: Sequence[str]) -> dict[str, str]:
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGINT)
        return {n: "interrupted" for n in names}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclasses.dataclass
class Started:
    """A run handed to the backend: its line's tag, when, and its progress watch."""

    tag: str
    t0: float
    watch: contextlib.ExitStack


class PlanExecutor:
    """One plan's execution: the rules every backend shares, and the only writer of the manifest.

    A run starts once every run it needs has settled (an eager backend, SLURM, takes it as soon
    as its needs are handed over, and the scheduler holds it), in plan order among those ready;
    a run done earlier with the same config is skipped, a partial one resumes (the library
    resumes from ``checkpoints/last.pt``), a broken one is never run over; a failed run blocks
    only the runs that need it, and the others go on. The backend says where a run executes;
    this process alone prints the runs' lines and writes ``plan.json``. Ctrl-C or SIGTERM marks
    the started runs partial (with the backend's reason) and goes on up.
    """

    def __init__(self, plan: Plan, names: Sequence[str], backend: Backend, progress: bool = True):
        self.plan, self.names, self.backend, self.progress = plan, list(names), backend, progress
        self.statuses = {n: s.status() for n, s in plan.runs.items()}
        self.states: dict[str, dict] = {}
        self.unavailable: dict[str, str] = {}
        self.running: dict[str, Started] = {}
        self.clock = PlanClock({})
        width = len(str(len(self.names)))
        self.tags = {n: f"[{i:>{width}}/{len(self.names)}] {n} ({plan.runs[n].notebook})"
                     for i, n in enumerate(self.names, 1)}

    def prepare(self, estimate_from: Optional[Path] = None) -> list[str]:
        """Check what the runs need (:func:`_before_runs`), write the manifest and the plan's line;
        with ``estimate_from`` (the outputs folder), the time each run should take. The runs to run."""
        p = self.plan
        todo, self.unavailable = _before_runs(p, self.names, self.statuses)
        self.write()
        print(f"plan {p.name}: {len(self.names)} runs ({len(todo)} to run) -> {p.outputs}", flush=True)
        if estimate_from is not None:
            names = [n for n in todo if n not in self.unavailable]
            self.clock = PlanClock(estimate_runs(p, names, estimate_from), {n: p.runs[n].config.stage for n in names})
            print(self.clock.summary(p), flush=True)
        return todo

    def write(self) -> Path:
        return write_manifest(self.plan, self.states)

    def run(self) -> None:
        """Execute (or hand over, with a detached backend) every run, in dependency order."""
        pending = list(self.names)
        try:
            while pending or self.running:
                while self._step(pending):
                    pass
                if self.backend.detach and not pending:  # the scheduler has every run
                    for n, reason in self.backend.stop(list(self.running)).items():
                        self.states[n] = {"state": "submitted", "reason": reason}
                    self.write()
                    return
                if not self.running:
                    if pending:  # cannot happen with a validated plan (needs come first, all in names)
                        raise PlanError(f"plan {self.plan.name}: runs {', '.join(pending)} wait on runs that never ran")
                    break
                for name, failure in self.backend.wait():
                    if name in self.running:  # else settled already: a need of it failed first
                        self._ended(name, failure)
        except KeyboardInterrupt:
            for n, reason in self.backend.stop(list(self.running)).items():
                self.states[n] = {"state": "partial", "reason": reason}
            self.write()
            raise
        finally:
            for started in self.running.values():
                started.watch.close()
            self.backend.close()

    def _step(self, pending: list[str]) -> bool:
        """Settle or start the first pending run that can move now, in plan order; False when none can."""
        for n in pending:
            needs = self.plan.runs[n].needs
            if not all(d in self.states or self.backend.eager and d in self.running for d in needs):
                continue
            state = not_run(self.plan.runs[n], self.statuses[n], self.states, self.unavailable)
            if state is None and not self.backend.fits(self.plan.runs[n]):
                continue
            pending.remove(n)
            if state is not None:
                self._settle(n, state)
            else:
                self._start(n, [d for d in needs if d in self.running])
            return True
        return False

    def _start(self, n: str, after: Sequence[str]) -> None:
        spec = self.plan.runs[n]
        tag = self.tags[n] + self.backend.start(spec, after)
        print(f"{tag}: {'resuming' if self.statuses[n] == 'partial' else self.backend.verb} -> {spec.path}", flush=True)
        watch = contextlib.ExitStack()
        if self.progress and self.backend.watched:
            watch.enter_context(RunWatch(tag, RunDir(spec.path), tty=self.backend.tty))
        self.running[n] = Started(tag, time.time(), watch)

    def _ended(self, n: str, failure: Optional[str]) -> None:
        """A started run has ended: its state, its closing line and the manifest; a failure settles
        the runs handed over that need it."""
        started = self.running.pop(n)
        started.watch.close()
        spec, seconds = self.plan.runs[n], time.time() - started.t0
        if failure is not None:
            self.states[n] = {"state": "failed", "reason": failure, "seconds": seconds}
            print(f"{started.tag}: FAILED after {fmt_seconds(seconds)}: {failure}\n"
                  f"    executed notebook: {RunDir(spec.path).notebook_path}", flush=True)
        else:
            res = RunDir(spec.path).read_result() or {}
            self.states[n] = {"state": "done", "reason": None, "reused": False, "seconds": seconds,
                              "wall_time_s": res.get("wall_time_s")}
            self.clock.finished(n, seconds)
            print(f"{started.tag}: done in {fmt_seconds(seconds)}{self.clock.left_text()}", flush=True)
        self.write()
        for m in list(self.running):  # handed over before this one failed: they will not run
            state = not_run(self.plan.runs[m], self.statuses[m], self.states, self.unavailable)
            if m in self.running and state is not None:
                self.running.pop(m).watch.close()
                self.backend.drop(m)
                self._settle(m, state)

    def _settle(self, n: str, state: dict) -> None:
        """A run that is not executed now: its state, its line and the manifest (a run done earlier
        changes nothing there)."""
        self.states[n] = state
        tag = self.tags[n]
        if state["state"] == "broken":
            print(f"{tag}: BROKEN, not run: {state['reason']}", flush=True)
        elif state["state"] == "done":
            print(f"{tag}: done earlier with the same config, skipped", flush=True)
            return
        else:
            print(f"{tag}: not run: {state['reason']}", flush=True)
        self.write()

    def finish(self, report_dir: PathLike, started: float, kernel: Optional[SharedKernel] = None) -> int:
        """Render the report; 1 when it or any run failed, broke or was blocked."""
        p = self.plan
        print(f"plan {p.name}: runs finished in {fmt_seconds(time.time() - started)}; rendering the report",
              flush=True)
        try:
            html = render_report(p, report_dir, kernel)
            print(f"report: {html}", flush=True)
        except Exception as e:
            print(f"report: FAILED: {failure_reason(e)}\n    executed notebook: {p.outputs / 'report.ipynb'}",
                  flush=True)
            return 1
        failed = [n for n in self.names if self.states[n]["state"] in ("failed", "broken")]
        if failed:
            print(f"plan {p.name}: {len(failed)} run(s) failed or broken: {', '.join(failed)} "
                  "(their rows are marked missing in the report)", file=sys.stderr, flush=True)
            return 1
        return 1 if any(s["state"] == "blocked" for s in self.states.values()) else 0


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


@dataclasses.dataclass(frozen=True)
class Execution:
    """How a plan's runs execute (:func:`run_plan`).

    ``devices`` (see :func:`parse_devices`): with several, independent runs go side by side, one
    per device (:class:`Workers`); with one, every run uses that device; None, each run its own.
    ``kernel_per_run``: a fresh Jupyter kernel for every run instead of one shared kernel, reset
    between runs (:class:`simpleclr.study.kernels.SharedKernel`). ``rehearsal`` > 0 runs every run
    cut short (:func:`cut_plan`). ``slurm``: every run as a SLURM job instead
    (:class:`simpleclr.study.slurm.SlurmOptions`).
    """

    devices: Optional[Sequence[str]] = None
    kernel_per_run: bool = False
    rehearsal: int = 0
    slurm: Optional["SlurmOptions"] = None

    def __post_init__(self) -> None:
        if self.rehearsal < 0:
            raise PlanError(f"rehearsal={self.rehearsal}: use 0 (the real plan) or a number of images")
        if self.slurm is not None and self.devices:
            raise PlanError("--devices and --executor slurm exclude each other: on SLURM each job "
                            "asks for its own GPUs (--gpus-per-job)")

    def backend(self, plan: Plan, kernel: Optional[SharedKernel]) -> Backend:
        if self.slurm is not None:
            from .slurm import Slurm

            return Slurm(plan, self.slurm)
        if self.devices and len(self.devices) > 1:
            return Workers(self.devices, shared=not self.kernel_per_run)
        return InProcess(kernel, self.devices[0] if self.devices else None)


def run_plan(plan: PathLike, outputs: PathLike = "outputs", report_dir: PathLike = "report",
             only: Optional[Sequence[str]] = None, *, progress: bool = True,
             execution: Optional[Execution] = None) -> int:
    """Execute a plan's runs (:class:`PlanExecutor`, where ``execution`` says), then render the
    report; the exit code is 1 when a run failed.

    The runs share one kernel, reset between them (:class:`simpleclr.study.kernels.SharedKernel`),
    unless ``execution.kernel_per_run``; the report notebook and runs on several devices get their own.

    Finished runs with the same config are skipped, partial ones resume (the library resumes from
    ``checkpoints/last.pt``). A failed run is reported with its executed notebook; runs that do not
    need it go on, and the report still renders with that row marked missing. A detached SLURM
    backend submits the jobs and the call returns 0; run again once they have settled, it
    renders the report.
    """
    how = execution or Execution()
    p = load_plan(plan, outputs)
    if how.rehearsal:
        p = cut_plan(p, how.rehearsal)
    names = p.closure(only) if only else list(p.runs)
    with interrupts_quietly(), SharedKernel() if not how.kernel_per_run else contextlib.nullcontext() as kernel:
        executor = PlanExecutor(p, names, how.backend(p, kernel), progress)
        executor.prepare(Path(outputs) if progress and not how.rehearsal else None)
        started = time.time()
        executor.run()
        if executor.running:  # detached: the scheduler has them
            print(f"plan {p.name}: {len(executor.running)} job(s) submitted; watch them with "
                  f"simpleclr plan show {plan}, and run this command again once they have settled "
                  "to render the report", flush=True)
            return 0
        return executor.finish(report_dir, started, kernel)


def render_report(plan: Plan, report_dir: PathLike = "report", kernel: Optional[SharedKernel] = None) -> Path:
    """Execute the report notebook on the plan's folder (in ``kernel`` when given) and export it as
    one HTML file."""
    from ..report.figures import export_html

    executed = plan.outputs / "report.ipynb"
    execute_notebook(REPORT_NOTEBOOK, executed, {**plan.report, "plan_dir": str(plan.outputs)}, kernel=kernel)
    return export_html(executed, Path(report_dir) / "report.html", title=plan.report.get("title"))


# ---- status and estimates --------------------------------------------------------------------
def show_plan(plan: PathLike, outputs: PathLike = "outputs") -> int:
    """Print each run's status (done / partial / todo / stale / broken), its SLURM job's state when
    the plan was submitted there (``plan run --executor slurm``) and the time left here."""
    p = load_plan(plan, outputs)
    est = Estimator(Path(outputs))
    rows = []
    total = 0.0
    unknown = 0
    for n, spec in p.runs.items():
        status = spec.status()
        if status == "broken":  # not run until repaired: the last column says why
            rows.append([n, spec.notebook, status, "-", "-", spec.problem()])
            continue
        seconds, basis = (0.0, "") if status == "done" else est.seconds(spec)
        if seconds is None:
            unknown += 1
        else:
            total += seconds
        rows.append([n, spec.notebook, status, "-" if status == "done" else fmt_seconds(seconds), "-", basis])
    jobs: dict[str, str] = {}
    if (p.outputs / "slurm").is_dir():  # submitted to SLURM: the jobs' states, read last, so fresh
        from .slurm import run_job_states

        jobs = run_job_states(p)
        for r in rows:
            r[2] = p.runs[r[0]].status()  # as of the same moment
            r[4] = jobs.get(r[0], "-") if r[2] != "done" else "-"
    head = ("run", "notebook", "status", "left", "slurm")
    cols = 5 if jobs else 4  # the SLURM column once the plan was submitted there
    w = [max(len(r[i]) for r in rows + [list(head)]) for i in range(5)]
    print(f"plan {p.name} ({p.source}) -> {p.outputs}")
    print("  " + "  ".join(f"{h:>{w[i]}}" if i == 3 else f"{h:<{w[i]}}" for i, h in enumerate(head[:cols]))
          + "  basis")
    for r in rows:
        print("  " + "  ".join(f"{r[i]:>{w[i]}}" if i == 3 else f"{r[i]:<{w[i]}}" for i in range(cols)) + f"  {r[5]}")
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

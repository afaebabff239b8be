"""Experiment plans: YAML files listing runs, executed as papermill notebooks into run folders.

A plan (``plans/<name>.yaml``) names its runs, the notebook (= stage) each one executes, its
parameters and what the report does with it. :func:`load_plan` validates the whole plan up front
(unknown notebook, missing need, cycle, bad reference, invalid config value: one line each) so no
compute starts on a broken plan; :func:`run_plan` executes the runs in dependency order, skipping
finished ones and resuming partial ones, then renders the report; :func:`show_plan` lists status
and an estimate of the time left.

Plan file::

    name: smoke                       # outputs/<name>/<run>/ (default: the file name)
    description: one paragraph for the report
    standins: [imagenet_weights]      # generated files the plan may reference (smoke only)
    defaults:                         # merged under every run's params
      all: {device: auto}             #   every stage (keys must be a field of some stage)
      pretrain: {epochs: 2}           #   one stage
    report: {title: ..., tsne_points: 1000}
    runs:
      - name: selfsuper-pretrain
        notebook: pretrain            # pretrain | supervised | linear_eval
        params: {dataset: cifar100}
      - name: selfsuper
        notebook: linear_eval
        params: {encoder: "{runs.selfsuper-pretrain}"}   # that run's folder; implies needs
        report: {row: selfsuper}
      - name: hp-t{temperature}-s{seed}                  # one run per combination
        matrix: {temperature: [0.2, 0.5], seed: [0, 1]}
        notebook: pretrain
        params: {temperature: "{temperature}", seed: "{seed}"}
      - name: big-pretrain
        notebook: pretrain
        launch: torchrun --nproc-per-node 8  # the notebook starts the stage through torchrun

References: ``{runs.<name>}`` (a run folder), ``{standin.imagenet_weights}`` (the generated
stand-in file), ``{env.<VARIABLE>}`` (an environment variable, None when unset, e.g. for
``accept_checksum``), ``{<matrix key>}`` (a whole-string placeholder keeps the value's type).

Report roles (a run's ``report:`` mapping; runs sharing a role and value are seeds, averaged):
``row`` (a main-table row), ``finetune`` (fine-tuned from that row's encoder: its gain over
``super``), ``label_efficiency`` (a point of that row's label curve), ``size_study`` (a probe of an
encoder pretrained on a subset: x is that run's ``subset_fraction``), ``hparam`` (the pretraining
fields that are the study's axes), ``features`` (t-SNE features for a row tested directly).
The report reads everything else from the run folders.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from .config import STAGES, ConfigError, StageConfig, config_from_dict, yaml_load
from .estimate import Estimator, PlanClock, estimate_runs
from .runs import RunDir, atomic_write_json, git_commit
from .runwatch import RunWatch, fmt_seconds
from .study import MAIN_ROWS, MANIFEST, ROLES, ROW_NAMES

PathLike = Union[str, os.PathLike]

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ("pretrain", "supervised", "linear_eval")
REPORT_NOTEBOOK = "report"
ACCEPT_ENV = "SIMPLECLR_ACCEPT_CHECKSUM"  # what the shipped plans read accept_checksum from
STANDIN_FILES = {"imagenet_weights": "standin-imagenet-resnet18.pth"}

REPORT_PARAMS = ("title", "tsne_points", "tsne_seed", "tsne_perplexity")  # report.ipynb's parameters
PLAN_KEYS = {"name", "description", "defaults", "report", "runs", "standins", "estimate",
             "budget_min", "smaller"}
RUN_KEYS = {"name", "notebook", "params", "needs", "report", "matrix", "launch"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


class PlanError(ValueError):
    """A plan that cannot run; the message is one line saying what is wrong and what to do."""


@dataclass(frozen=True)
class RunSpec:
    """One run of a plan, fully resolved: its config is what the notebook will build."""

    name: str
    notebook: str
    config: StageConfig
    path: Path
    needs: tuple[str, ...] = ()
    report: dict = field(default_factory=dict)

    @property
    def params(self) -> dict:
        """The notebook's parameters: every config field plus ``out_dir``."""
        return {**self.config.to_dict(), "out_dir": str(self.path)}

    def status(self) -> str:
        return RunDir(self.path).status(self.config.fingerprint())


@dataclass(frozen=True)
class Plan:
    name: str
    source: Path
    description: str
    outputs: Path  # the plan's folder: <outputs>/<name>
    runs: dict[str, RunSpec]  # in an order where every run follows its needs
    report: dict = field(default_factory=dict)
    standins: tuple[str, ...] = ()
    estimate: str = ""
    budget_min: Optional[float] = None  # the wall time the plan is sized for, where one is stated
    smaller: Optional[str] = None  # the plan to name when this one would take far longer here

    def standin_path(self, kind: str) -> Path:
        return self.outputs / STANDIN_FILES[kind]

    def closure(self, names: Iterable[str]) -> list[str]:
        """``names`` and everything they need, in execution order."""
        want: set[str] = set()
        stack = list(names)
        while stack:
            n = stack.pop()
            if n not in self.runs:
                raise PlanError(f"plan {self.name}: no run named {n!r}; runs: {', '.join(self.runs)}")
            if n not in want:
                want.add(n)
                stack.extend(self.runs[n].needs)
        return [n for n in self.runs if n in want]


# ---- loading and validation ---------------------------------------------------------------
def find_plan_file(plan: PathLike) -> Path:
    """A plan file from a path or a name (``plans/<name>.yaml`` here, then in the repository)."""
    p = Path(plan)
    if p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        if not p.is_file():
            raise PlanError(f"plan file {p} does not exist")
        return p
    for base in (Path.cwd() / "plans", REPO_ROOT / "plans"):
        for ext in (".yaml", ".yml"):
            if (base / f"{plan}{ext}").is_file():
                return base / f"{plan}{ext}"
    known = sorted({q.stem for q in (REPO_ROOT / "plans").glob("*.yaml")})
    raise PlanError(f"no plan named {str(plan)!r}: use one of {', '.join(known) or '(none found)'} "
                    "or the path of a YAML file")


def _substitute(obj: Any, values: dict) -> Any:
    """Replace ``{key}`` for the keys of ``values`` in every string inside ``obj``."""
    if isinstance(obj, str):
        m = _REF.fullmatch(obj)
        if m and m.group(1) in values:
            return values[m.group(1)]
        return _REF.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), obj)
    if isinstance(obj, list):
        return [_substitute(v, values) for v in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, values) for k, v in obj.items()}
    return obj


def _expand(raw: dict, where: str) -> list[dict]:
    """One entry per combination of the run's ``matrix`` (itself when it has none)."""
    matrix = raw.get("matrix")
    if matrix is None:
        return [raw]
    if not isinstance(matrix, dict) or not matrix or not all(isinstance(v, list) and v for v in matrix.values()):
        raise PlanError(f"{where}: matrix must map each key to a non-empty list of values")
    missing = [k for k in matrix if "{" + k + "}" not in str(raw.get("name", ""))]
    if missing:
        raise PlanError(f"{where}: the run name must contain {{{missing[0]}}} so each matrix run gets its own folder")
    body = {k: v for k, v in raw.items() if k != "matrix"}
    return [_substitute(body, dict(zip(matrix, combo))) for combo in itertools.product(*matrix.values())]


def _references(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return _REF.findall(obj)
    if isinstance(obj, list):
        return [r for v in obj for r in _references(v)]
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _references(v)]
    return []


def _needs(value: Any, where: str) -> list[str]:
    """A run's ``needs``: a list of run names, or one name as a string (never split into letters)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError(f"{where}: needs must be a run name or a list of run names, e.g. [pre]")
    return list(value)


def _order(deps: dict[str, list[str]], plan_name: str) -> list[str]:
    """Runs in file order, each moved after its needs; a cycle is an error naming it."""
    done: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = path[path.index(n):] + [n]
            raise PlanError(f"plan {plan_name}: runs need each other in a cycle: {' -> '.join(cycle)}")
        state[n] = 1
        for d in deps[n]:
            visit(d, path + [n])
        state[n] = 2
        done.append(n)

    for n in deps:
        visit(n, [])
    return done


def _merge_defaults(defaults: Any, where: str) -> dict[str, dict]:
    if defaults is None:
        return {}
    if not isinstance(defaults, dict):
        raise PlanError(f"{where}: defaults must be a mapping of all/{'/'.join(NOTEBOOKS)} to parameters")
    unknown = sorted(set(defaults) - {"all", *NOTEBOOKS})
    if unknown:
        raise PlanError(f"{where}: defaults has unknown section {unknown[0]!r}; use all, {', '.join(NOTEBOOKS)}")
    every = {f.name for cls in STAGES.values() for f in fields(cls)}
    bad = sorted(set(defaults.get("all") or {}) - every)
    if bad:
        raise PlanError(f"{where}: defaults.all has {bad[0]!r}, a field of no stage")
    out = {}
    for nb in NOTEBOOKS:
        names = {f.name for f in fields(STAGES[nb])}
        out[nb] = {k: v for k, v in (defaults.get("all") or {}).items() if k in names}
        out[nb].update(defaults.get(nb) or {})
    return out


def _check_role(role: Any, run: str, notebook: str, where: str) -> dict:
    if role is None:
        return {}
    if not isinstance(role, dict):
        raise PlanError(f"{where}: report must be a mapping such as {{row: selfsuper}}")
    for key, value in role.items():
        if key not in ROLES:
            raise PlanError(f"{where}: report key {key!r} is unknown; use one of {', '.join(ROLES)}")
        if notebook not in ROLES[key]:
            raise PlanError(f"{where}: report.{key} needs a {' or '.join(ROLES[key])} run, not {notebook}")
        if key in ("row", "finetune", "label_efficiency", "features") and value not in ROW_NAMES:
            raise PlanError(f"{where}: report.{key}={value!r} is not a main-table row; "
                            f"use one of {', '.join(ROW_NAMES)}")
        if key == "row" and notebook == "supervised" and value != "super":
            raise PlanError(f"{where}: only the 'super' row is tested directly; probe the others with linear_eval")
        if key == "hparam":
            names = {f.name for f in fields(STAGES["pretrain"])}
            if not isinstance(value, list) or not value or not set(value) <= names:
                raise PlanError(f"{where}: report.hparam must list pretrain fields, e.g. [temperature, batch_size]")
    return dict(role)


def load_plan(plan: PathLike, outputs: PathLike = "outputs") -> Plan:
    """Read and validate a plan; every error is a :class:`PlanError` with one line."""
    import yaml

    source = find_plan_file(plan)
    try:
        raw = yaml_load(source.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise PlanError(f"plan file {source} is not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"plan file {source} must hold a mapping with a 'runs' list")
    name = str(raw.get("name") or source.stem)
    where = f"plan {name} ({source})"
    if not _NAME.match(name):
        raise PlanError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-'")
    unknown = sorted(set(raw) - PLAN_KEYS)
    if unknown:
        raise PlanError(f"{where}: unknown key {unknown[0]!r}; use {', '.join(sorted(PLAN_KEYS))}")
    standins = tuple(raw.get("standins") or ())
    bad = [s for s in standins if s not in STANDIN_FILES]
    if bad:
        raise PlanError(f"{where}: unknown stand-in {bad[0]!r}; use {', '.join(STANDIN_FILES)}")
    defaults = _merge_defaults(raw.get("defaults"), where)
    bad = [r for r in _references(raw.get("defaults") or {}) if not r.startswith("env.")]
    if bad:
        raise PlanError(f"{where}: defaults may only reference {{env.<VARIABLE>}}, not {{{bad[0]}}}")
    runs_raw = raw.get("runs")
    if not isinstance(runs_raw, list) or not runs_raw:
        raise PlanError(f"{where}: 'runs' must be a non-empty list of runs")

    plan_dir = Path(outputs) / name
    entries: list[dict] = []
    for i, r in enumerate(runs_raw):
        w = f"{where}: run #{i + 1}"
        if not isinstance(r, dict) or "name" not in r:
            raise PlanError(f"{w}: each run is a mapping with at least name and notebook")
        w = f"{where}: run {r['name']!r}"
        extra = sorted(set(r) - RUN_KEYS)
        if extra:
            raise PlanError(f"{w}: unknown key {extra[0]!r}; use {', '.join(sorted(RUN_KEYS))}")
        entries.extend(_expand(r, w))

    seen: dict[str, dict] = {}
    for r in entries:
        n = str(r["name"])
        w = f"{where}: run {n!r}"
        if not _NAME.match(n):
            raise PlanError(f"{w}: a run name must be letters, digits, '.', '_' or '-' (it names a folder)")
        if n in seen:
            raise PlanError(f"{w}: the name is used twice; run names must be unique")
        if r.get("notebook") not in NOTEBOOKS:
            raise PlanError(f"{w}: unknown notebook {r.get('notebook')!r}; use one of {', '.join(NOTEBOOKS)}")
        if not isinstance(r.get("params") or {}, dict):
            raise PlanError(f"{w}: params must be a mapping of config fields to values")
        seen[n] = r

    deps: dict[str, list[str]] = {}
    for n, r in seen.items():
        w = f"{where}: run {n!r}"
        needs = _needs(r.get("needs"), w)
        for ref in _references(r.get("params") or {}):
            kind, _, target = ref.partition(".")
            if kind == "runs" and target:
                needs.append(target)
            elif kind == "standin" and target in standins:
                continue
            elif kind == "standin":
                raise PlanError(f"{w}: {{{ref}}} names a stand-in the plan does not list under 'standins'")
            elif kind == "env" and target:
                continue
            else:
                raise PlanError(f"{w}: unknown reference {{{ref}}}; use {{runs.<run name>}}, "
                               "{standin.<kind>}, {env.<VARIABLE>} or a matrix key")
        for d in needs:
            if d not in seen:
                raise PlanError(f"{w}: needs {d!r}, which the plan does not define")
            if d == n:
                raise PlanError(f"{w}: a run cannot need itself")
        deps[n] = list(dict.fromkeys(needs))

    values = {f"runs.{n}": str(plan_dir / n) for n in seen}
    values.update({f"standin.{k}": str(plan_dir / STANDIN_FILES[k]) for k in standins})
    values.update({f"env.{ref[4:]}": os.environ.get(ref[4:]) or None for r in seen.values()
                   for ref in _references(r.get("params") or {}) if ref.startswith("env.")})
    values.update({f"env.{ref[4:]}": os.environ.get(ref[4:]) or None
                   for ref in _references(raw.get("defaults") or {}) if ref.startswith("env.")})
    runs: dict[str, RunSpec] = {}
    for n in _order(deps, name):
        r = seen[n]
        w = f"{where}: run {n!r}"
        params = _substitute({**copy.deepcopy(defaults.get(r["notebook"], {})),
                              **copy.deepcopy(r.get("params") or {})}, values)
        if r.get("launch") is not None:  # the stage runs under this launcher (e.g. torchrun)
            if not isinstance(r["launch"], str) or not r["launch"].strip():
                raise PlanError(f'{w}: launch must be a command, e.g. "torchrun --nproc-per-node 4"')
            params["launcher"] = r["launch"]
        try:
            cfg = config_from_dict(r["notebook"], params)
        except ConfigError as e:
            raise PlanError(f"{w}: {e}") from None
        except TypeError as e:
            raise PlanError(f"{w}: {e}") from None
        runs[n] = RunSpec(name=n, notebook=r["notebook"], config=cfg, path=plan_dir / n,
                          needs=tuple(deps[n]), report=_check_role(r.get("report"), n, r["notebook"], w))
    report = raw.get("report") or {}
    if not isinstance(report, dict):
        raise PlanError(f"{where}: report must be a mapping of report notebook parameters")
    extra = sorted(set(report) - set(REPORT_PARAMS))
    if extra:
        raise PlanError(f"{where}: report has unknown parameter {extra[0]!r}; use {', '.join(REPORT_PARAMS)}")
    budget = raw.get("budget_min")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise PlanError(f"{where}: budget_min must be a positive number of minutes, not {budget!r}")
    return Plan(name=name, source=source, description=str(raw.get("description") or "").strip(),
                outputs=plan_dir, runs=runs, report=report, standins=standins,
                estimate=str(raw.get("estimate") or "").strip(),
                budget_min=None if budget is None else float(budget),
                smaller=str(raw["smaller"]) if raw.get("smaller") else None)


# ---- what a plan needs before it starts -----------------------------------------------------
def _datasets(plan: Plan, names: Sequence[str]) -> list[tuple[str, Optional[str], Optional[str], Optional[int]]]:
    out = []
    for n in names:
        c = plan.runs[n].config
        key = (c.dataset, c.data_dir, c.accept_checksum, c.image_size)
        if key not in out:
            out.append(key)
    return out


def check_data(plan: Plan, names: Sequence[str]) -> None:
    """Make every dataset the runs use ready (cache, placed file or download) before any run.

    Raises :class:`PlanError` with the data layer's own message and a pointer to the smoke plan,
    so a machine without the data stops at once instead of after the first hour of runs.
    """
    from . import data

    for name, root, accept, size in _datasets(plan, names):
        try:  # the native cache and the size the runs read, built once here
            data.prepare(name, root=root, accept_checksum=accept, download=True, image_size=size)
        except data.DataError as e:
            hint = "" if name.startswith("synthetic-") else (
                " (to try the whole pipeline on generated data with no download: make report PLAN=smoke)")
            if "accept-checksum" in str(e) and accept is None:
                hint = (f"; the quick and full plans pass it to every run from the environment: "
                        f"export {ACCEPT_ENV}=<sha256>") + hint
            raise PlanError(f"{e}{hint}") from None


def _uses_imagenet(spec: RunSpec) -> bool:
    c = spec.config
    value = getattr(c, "encoder", None) or getattr(c, "init", None) or ""
    return value == "imagenet"


def check_imagenet_weights() -> Optional[str]:
    """None when torchvision's ImageNet ResNet-18 file is cached or can be fetched, else why not."""
    from .models import WeightsError, imagenet_encoder

    try:
        imagenet_encoder(progress=False)
    except WeightsError as e:
        return str(e)
    return None


def write_standins(plan: Plan) -> None:
    from .models import write_standin_imagenet_weights

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


def kernel_name() -> str:
    """The Jupyter kernel notebooks run in: ``$SIMPLECLR_KERNEL`` or ``python3``."""
    return os.environ.get("SIMPLECLR_KERNEL", "python3")


def _failure_reason(e: BaseException) -> str:
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(e).__name__}: {e}"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


def _kernel_manager_class() -> Optional[type]:
    """A kernel manager that talks to the kernel over IPC (Unix sockets in Jupyter's private
    runtime folder) instead of TCP on localhost: nothing listens on a port, and ipykernel's
    "running over TCP without encryption" warning is not raised. None (TCP) where IPC is absent."""
    if os.name != "posix":
        return None
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport", "ipc")
            super().__init__(**kwargs)

    return IPCKernelManager


def execute_notebook(name: str, output: Path, parameters: dict, *, cwd: Optional[PathLike] = None,
                     progress: bool = False) -> None:
    """Run ``notebooks/<name>.ipynb`` with ``parameters`` through papermill into ``output``.

    ``progress`` shows papermill's per-cell bar; plans show a run's own steps instead (RunWatch).
    """
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    manager = _kernel_manager_class()
    extra = {"kernel_manager_class": manager} if manager is not None else {}
    pm.execute_notebook(str(notebook_file(name)), str(output), parameters=parameters,
                        kernel_name=kernel_name(), progress_bar=progress, cwd=str(cwd or Path.cwd()),
                        log_output=False, **extra)


def run_plan(plan: PathLike, outputs: PathLike = "outputs", report_dir: PathLike = "report",
             only: Optional[Sequence[str]] = None, *, progress: bool = True) -> int:
    """Execute a plan's runs, then render the report; the exit code is 1 when a run failed.

    Finished runs with the same config are skipped, partial ones resume (the library resumes from
    ``checkpoints/last.pt``). A failed run is reported with its executed notebook; runs that do not
    need it go on, and the report still renders with that row marked missing.
    """
    p = load_plan(plan, outputs)
    names = p.closure(only) if only else list(p.runs)
    statuses = {n: p.runs[n].status() for n in p.runs}
    stale = [n for n in names if statuses[n] == "stale"]
    if stale:
        raise PlanError(f"{p.runs[stale[0]].path} holds a run with another config than plan {p.name} "
                        "gives it now: delete that folder to redo it, or use another --outputs folder")
    todo = [n for n in names if statuses[n] not in ("done", "broken")]
    check_data(p, todo)
    write_standins(p)
    unavailable: dict[str, str] = {}
    if any(_uses_imagenet(p.runs[n]) for n in todo):
        why = check_imagenet_weights()
        if why:
            print(f"note: ImageNet weights unavailable, their rows will be marked missing: {why}", flush=True)
            unavailable = {n: f"ImageNet weights unavailable: {why}" for n in todo if _uses_imagenet(p.runs[n])}

    states: dict[str, dict] = {}
    write_manifest(p, states)
    print(f"plan {p.name}: {len(names)} runs ({len(todo)} to run) -> {p.outputs}", flush=True)
    runnable = [n for n in todo if n not in unavailable]
    clock = PlanClock(estimate_runs(p, runnable, Path(outputs)) if progress else {})
    if progress:
        print(clock.summary(p), flush=True)
    failed: list[str] = []
    started = time.time()
    width = len(str(len(names)))
    for i, n in enumerate(names, 1):
        spec = p.runs[n]
        tag = f"[{i:>{width}}/{len(names)}] {n} ({spec.notebook})"
        blocked = [d for d in spec.needs
                   if states.get(d, {}).get("state") in ("failed", "blocked", "unavailable", "broken")]
        if statuses[n] == "broken":  # a damaged JSON file: never run over it, never delete it
            states[n] = {"state": "broken", "reason": RunDir(spec.path).problem()}
            failed.append(n)
            print(f"{tag}: BROKEN, not run: {states[n]['reason']}", flush=True)
            write_manifest(p, states)
            continue
        if statuses[n] == "done":
            res = RunDir(spec.path).read_result() or {}
            states[n] = {"state": "done", "reason": None, "reused": True, "seconds": 0.0,
                         "wall_time_s": res.get("wall_time_s")}
            print(f"{tag}: done earlier with the same config, skipped", flush=True)
            continue
        if n in unavailable or blocked:
            state = "unavailable" if n in unavailable or all(
                states[d]["state"] == "unavailable" for d in blocked) else "blocked"
            reason = unavailable.get(n) or f"needs {blocked[0]}, which did not finish ({states[blocked[0]]['reason']})"
            states[n] = {"state": state, "reason": reason}
            print(f"{tag}: not run: {reason}", flush=True)
            write_manifest(p, states)
            continue
        verb = "resuming" if statuses[n] == "partial" else "running"
        print(f"{tag}: {verb} -> {spec.path}", flush=True)
        t0 = time.time()
        try:
            with RunWatch(tag, RunDir(spec.path)) if progress else contextlib.nullcontext():
                execute_notebook(spec.notebook, RunDir(spec.path).notebook_path, spec.params)
        except KeyboardInterrupt:
            states[n] = {"state": "partial", "reason": "interrupted"}
            write_manifest(p, states)
            raise
        except Exception as e:  # papermill's execution error, a dead kernel, ...
            reason = _failure_reason(e)
            states[n] = {"state": "failed", "reason": reason, "seconds": time.time() - t0}
            failed.append(n)
            print(f"{tag}: FAILED after {fmt_seconds(time.time() - t0)}: {reason}\n"
                  f"    executed notebook: {RunDir(spec.path).notebook_path}", flush=True)
            write_manifest(p, states)
            continue
        res = RunDir(spec.path).read_result() or {}
        states[n] = {"state": "done", "reason": None, "reused": False, "seconds": time.time() - t0,
                     "wall_time_s": res.get("wall_time_s")}
        clock.finished(n, time.time() - t0)
        print(f"{tag}: done in {fmt_seconds(time.time() - t0)}{clock.left_text()}", flush=True)
        write_manifest(p, states)

    print(f"plan {p.name}: runs finished in {fmt_seconds(time.time() - started)}; rendering the report", flush=True)
    try:
        html = render_report(p, report_dir)
        print(f"report: {html}", flush=True)
    except Exception as e:
        print(f"report: FAILED: {_failure_reason(e)}\n    executed notebook: {p.outputs / 'report.ipynb'}",
              flush=True)
        return 1
    if failed:
        print(f"plan {p.name}: {len(failed)} run(s) failed or broken: {', '.join(failed)} "
              "(their rows are marked missing in the report)", file=sys.stderr, flush=True)
        return 1
    blocked = [n for n, s in states.items() if s["state"] == "blocked"]
    return 1 if blocked else 0


def render_report(plan: Plan, report_dir: PathLike = "report") -> Path:
    """Execute the report notebook on the plan's folder and export it as one HTML file."""
    from .figures import export_html

    executed = plan.outputs / "report.ipynb"
    execute_notebook(REPORT_NOTEBOOK, executed, {**plan.report, "plan_dir": str(plan.outputs)})
    return export_html(executed, Path(report_dir) / "report.html")


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
            rows.append((n, spec.notebook, status, "-", RunDir(spec.path).problem() or ""))
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

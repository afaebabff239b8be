"""Plan files: reading a YAML plan into validated runs, before any compute starts.

:func:`load_plan` validates the whole plan up front (unknown notebook, missing need, cycle, bad
reference, invalid config value: one :class:`PlanError` line each) and resolves every run to a
:class:`RunSpec` whose config is what its notebook will build. Executing a plan is
:mod:`simpleclr.study.plans`' concern.

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

import copy
import itertools
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Optional

from ..types import PathLike
from ..config import REGISTRY, ConfigError, StageConfig, notebook_stage
from ..configio import yaml_load
from ..errors import SimpleCLRError
from ..runs.rundir import RunDir
from ..report.model import ROLES, ROW_NAMES


REPO_ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = tuple(s.notebook for s in REGISTRY)  # the stage notebooks a plan's runs may name
STANDIN_FILES = {"imagenet_weights": "standin-imagenet-resnet18.pth"}

REPORT_PARAMS = ("title", "tsne_points", "tsne_seed", "tsne_perplexity")  # report.ipynb's parameters
PLAN_KEYS = {"name", "description", "defaults", "report", "runs", "standins", "estimate",
             "budget_min", "smaller", "partial_data"}
RUN_KEYS = {"name", "notebook", "params", "needs", "report", "matrix", "launch"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


class PlanError(SimpleCLRError, ValueError):
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
        return RunDir(self.path).status(self.config.fingerprint(), rehearsal=bool(self.config.rehearsal))


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
    # datasets the plan accepts with other than their official image counts (a subset on purpose)
    partial_data: tuple[str, ...] = ()

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
    every = {f.name for s in REGISTRY for f in fields(s.config)}
    bad = sorted(set(defaults.get("all") or {}) - every)
    if bad:
        raise PlanError(f"{where}: defaults.all has {bad[0]!r}, a field of no stage")
    out = {}
    for nb in NOTEBOOKS:
        names = {f.name for f in fields(notebook_stage(nb).config)}
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
            names = {f.name for f in fields(notebook_stage("pretrain").config)} | {"probe_layer"}
            if not isinstance(value, list) or not value or not set(value) <= names:
                raise PlanError(f"{where}: report.hparam must list pretrain fields or probe_layer, "
                                "e.g. [temperature, batch_size]")
    return dict(role)



# ---- load_plan, one step at a time ----------------------------------------------------------
def _read(source: Path) -> dict:
    """The plan file's mapping; invalid YAML is an error naming its line."""
    import yaml

    try:
        raw = yaml_load(source.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise PlanError(f"plan file {source} is not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise PlanError(f"plan file {source} must hold a mapping with a 'runs' list")
    return raw


def _header(raw: dict, source: Path) -> tuple[str, str, tuple[str, ...], dict[str, dict]]:
    """(name, where errors say they are, stand-ins, defaults by notebook) of a plan's top level."""
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
    return name, where, standins, defaults


def _entries(raw: dict, where: str) -> dict[str, dict]:
    """The plan's runs by name, matrices expanded, each with a valid name, notebook and params."""
    runs_raw = raw.get("runs")
    if not isinstance(runs_raw, list) or not runs_raw:
        raise PlanError(f"{where}: 'runs' must be a non-empty list of runs")
    entries: list[dict] = []
    for i, r in enumerate(runs_raw):
        if not isinstance(r, dict) or "name" not in r:
            raise PlanError(f"{where}: run #{i + 1}: each run is a mapping with at least name and notebook")
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
    return seen


def _run_needs(n: str, r: dict, seen: dict[str, dict], standins: tuple[str, ...], w: str) -> list[str]:
    """What run ``n`` needs: its ``needs`` plus every run its params reference; other references
    must be listed stand-ins, environment variables or (already substituted) matrix keys."""
    needs = _needs(r.get("needs"), w)
    for ref in _references(r.get("params") or {}):
        kind, _, target = ref.partition(".")
        if kind == "runs" and target:
            needs.append(target)
        elif kind == "standin" and target not in standins:
            raise PlanError(f"{w}: {{{ref}}} names a stand-in the plan does not list under 'standins'")
        elif kind not in ("standin", "env") or not target:
            raise PlanError(f"{w}: unknown reference {{{ref}}}; use {{runs.<run name>}}, "
                            "{standin.<kind>}, {env.<VARIABLE>} or a matrix key")
    for d in needs:
        if d not in seen:
            raise PlanError(f"{w}: needs {d!r}, which the plan does not define")
        if d == n:
            raise PlanError(f"{w}: a run cannot need itself")
    return list(dict.fromkeys(needs))


def _values(raw: dict, seen: dict[str, dict], plan_dir: Path, standins: tuple[str, ...]) -> dict:
    """What each reference stands for: run folders, stand-in files, environment variables."""
    values: dict[str, Any] = {f"runs.{n}": str(plan_dir / n) for n in seen}
    values.update({f"standin.{k}": str(plan_dir / STANDIN_FILES[k]) for k in standins})
    refs = [ref for r in seen.values() for ref in _references(r.get("params") or {})]
    refs += _references(raw.get("defaults") or {})
    values.update({f"env.{ref[4:]}": os.environ.get(ref[4:]) or None for ref in refs if ref.startswith("env.")})
    return values


def _run_spec(n: str, r: dict, defaults: dict[str, dict], values: dict, needs: list[str],
              plan_dir: Path, where: str) -> RunSpec:
    """One run resolved: defaults under its params, references substituted, its config built."""
    w = f"{where}: run {n!r}"
    params = _substitute({**copy.deepcopy(defaults.get(r["notebook"], {})),
                          **copy.deepcopy(r.get("params") or {})}, values)
    if r.get("launch") is not None:  # the stage runs under this launcher (e.g. torchrun)
        if not isinstance(r["launch"], str) or not r["launch"].strip():
            raise PlanError(f'{w}: launch must be a command, e.g. "torchrun --nproc-per-node 4"')
        params["launcher"] = r["launch"]
    try:
        cfg = notebook_stage(r["notebook"]).config.from_dict(params)
    except (ConfigError, TypeError) as e:
        raise PlanError(f"{w}: {e}") from None
    return RunSpec(name=n, notebook=r["notebook"], config=cfg, path=plan_dir / n,
                   needs=tuple(needs), report=_check_role(r.get("report"), n, r["notebook"], w))


def _report_params(raw: dict, where: str) -> dict:
    report = raw.get("report") or {}
    if not isinstance(report, dict):
        raise PlanError(f"{where}: report must be a mapping of report notebook parameters")
    extra = sorted(set(report) - set(REPORT_PARAMS))
    if extra:
        raise PlanError(f"{where}: report has unknown parameter {extra[0]!r}; use {', '.join(REPORT_PARAMS)}")
    return report


def _budget(raw: dict, where: str) -> Optional[float]:
    budget = raw.get("budget_min")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise PlanError(f"{where}: budget_min must be a positive number of minutes, not {budget!r}")
    return None if budget is None else float(budget)


def load_plan(plan: PathLike, outputs: PathLike = "outputs") -> Plan:
    """Read and validate a plan; every error is a :class:`PlanError` with one line."""
    source = find_plan_file(plan)
    raw = _read(source)
    name, where, standins, defaults = _header(raw, source)
    seen = _entries(raw, where)
    deps = {n: _run_needs(n, r, seen, standins, f"{where}: run {n!r}") for n, r in seen.items()}
    plan_dir = Path(outputs) / name
    values = _values(raw, seen, plan_dir, standins)
    runs = {n: _run_spec(n, seen[n], defaults, values, deps[n], plan_dir, where) for n in _order(deps, name)}
    return Plan(name=name, source=source, description=str(raw.get("description") or "").strip(),
                outputs=plan_dir, runs=runs, report=_report_params(raw, where), standins=standins,
                estimate=str(raw.get("estimate") or "").strip(), budget_min=_budget(raw, where),
                smaller=str(raw["smaller"]) if raw.get("smaller") else None,
                partial_data=_partial_data(raw, where))


def _partial_data(raw: dict, where: str) -> tuple[str, ...]:
    names = raw.get("partial_data") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise PlanError(f"{where}: partial_data must be a list of dataset names, e.g. [tiny-imagenet], "
                        f"not {names!r}")
    return tuple(names)

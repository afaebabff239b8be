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
# A plan or run name is a folder name on every file system the outputs may live on: at most this
# long (ext4 and APFS allow 255 bytes, but the folder also sits inside the plan's on Windows'
# 260-character paths), not ending in a dot (Windows drops it), not a Windows device name, and
# unique ignoring case (macOS and Windows file systems ignore it).
MAX_NAME = 100
_DEVICE = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.I)
MAX_RUNS = 100_000  # a plan (its matrices expanded) of more runs is refused before expanding
MAX_PLAN_BYTES = 32 * 2**20  # a 10,000-run plan written out run by run is about 1 MB


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error line quotes a value's head only."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def name_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot name a plan's or a run's folder on every file system; None if it can."""
    if not _NAME.match(name):
        return "must be letters, digits, '.', '_' or '-', starting with a letter or digit"
    if len(name) > MAX_NAME:
        return f"is {len(name)} characters long; use at most {MAX_NAME} (it names a folder)"
    if name.endswith("."):
        return "must not end in '.' (Windows drops it from folder names)"
    if _DEVICE.match(name):
        return "is a device name on Windows (CON, NUL, COM1, ...): choose another"
    return None


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
        """The run folder's status for this run (:meth:`RunDir.status`), its identity checked."""
        return RunDir(self.path).status(self.config.fingerprint(), rehearsal=bool(self.config.rehearsal),
                                        config_class=type(self.config))

    def problem(self) -> str:
        """Why the run's folder is "broken", in one line ("" when it is not)."""
        return RunDir(self.path).problem(type(self.config)) or ""


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
                raise PlanError(f"plan {self.name}: no run named {_shown(n)}; runs: "
                               f"{_shown(', '.join(self.runs), 300)}")
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


def _combinations(raw: dict) -> int:
    """How many runs ``raw`` expands to (1 without a ``matrix``), before expanding it."""
    matrix = raw.get("matrix")
    if not isinstance(matrix, dict):
        return 1
    return math.prod(len(v) if isinstance(v, list) else 1 for v in matrix.values())


def _expand(raw: dict, where: str) -> list[dict]:
    """One entry per combination of the run's ``matrix`` (itself when it has none)."""
    matrix = raw.get("matrix")
    if matrix is None:
        return [raw]
    if not isinstance(matrix, dict) or not matrix or not all(isinstance(v, list) and v for v in matrix.values()):
        raise PlanError(f"{where}: matrix must map each key to a non-empty list of values")
    if not all(isinstance(k, str) for k in matrix):
        raise PlanError(f"{where}: matrix keys must be names, e.g. {{seed: [0, 1]}}")
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
    """Runs in file order, each moved after its needs (a depth-first walk with its own stack, so
    a chain of any length works); a cycle is an error naming it."""
    done: list[str] = []
    state: dict[str, int] = {}  # 1 on the walk's path, 2 done
    for root in deps:
        if state.get(root) == 2:
            continue
        path, stack = [root], [iter(deps[root])]
        state[root] = 1
        while stack:
            d = next(stack[-1], None)
            if d is None:  # every need of path[-1] is done
                stack.pop()
                n = path.pop()
                state[n] = 2
                done.append(n)
            elif state.get(d) == 1:
                cycle = path[path.index(d):] + [d]
                shown = " -> ".join(cycle) if len(cycle) <= 8 else \
                    " -> ".join(cycle[:4] + [f"... ({len(cycle) - 6} more)"] + cycle[-2:])
                raise PlanError(f"plan {plan_name}: runs need each other in a cycle: {shown}")
            elif state.get(d) != 2:
                state[d] = 1
                path.append(d)
                stack.append(iter(deps[d]))
    return done


def _merge_defaults(defaults: Any, where: str) -> dict[str, dict]:
    if defaults is None:
        return {}
    if not isinstance(defaults, dict):
        raise PlanError(f"{where}: defaults must be a mapping of all/{'/'.join(NOTEBOOKS)} to parameters")
    unknown = sorted(map(str, set(defaults) - {"all", *NOTEBOOKS}))
    if unknown:
        raise PlanError(f"{where}: defaults has unknown section {_shown(unknown[0])}; use all, {', '.join(NOTEBOOKS)}")
    every = {f.name for s in REGISTRY for f in fields(s.config)}
    if not all(isinstance(defaults.get(k) or {}, dict) for k in ("all", *NOTEBOOKS)):
        raise PlanError(f"{where}: each section of defaults must be a mapping of fields to values")
    bad = sorted(map(str, set(defaults.get("all") or {}) - every))
    if bad:
        raise PlanError(f"{where}: defaults.all has {_shown(bad[0])}, a field of no stage")
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
            raise PlanError(f"{where}: report key {_shown(key)} is unknown; use one of {', '.join(ROLES)}")
        if notebook not in ROLES[key]:
            raise PlanError(f"{where}: report.{key} needs a {' or '.join(ROLES[key])} run, not {notebook}")
        if key in ("row", "finetune", "label_efficiency", "features") and value not in ROW_NAMES:
            raise PlanError(f"{where}: report.{key}={_shown(value)} is not a main-table row; "
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
        size = source.stat().st_size
        if size > MAX_PLAN_BYTES:
            raise PlanError(f"plan file {source} is {size:,} bytes, more than a plan's "
                            f"{MAX_PLAN_BYTES:,}: is it the right file?")
        raw = yaml_load(source.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())[:200]
        raise PlanError(f"plan file {source} is not valid YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PlanError(f"plan file {source} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(raw, dict):
        raise PlanError(f"plan file {source} must hold a mapping with a 'runs' list")
    return raw


def _header(raw: dict, source: Path) -> tuple[str, str, tuple[str, ...], dict[str, dict]]:
    """(name, where errors say they are, stand-ins, defaults by notebook) of a plan's top level."""
    name = raw.get("name") or source.stem
    problem = name_problem(name) if isinstance(name, str) else "must be a string"
    if problem:
        raise PlanError(f"plan file {source}: name {_shown(name)} {problem}")
    where = f"plan {name} ({source})"
    for key in ("description", "estimate", "smaller"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise PlanError(f"{where}: {key} must be text, not {_shown(raw[key], 40)}")
    unknown = sorted(map(str, set(raw) - PLAN_KEYS))
    if unknown:
        raise PlanError(f"{where}: unknown key {_shown(unknown[0])}; use {', '.join(sorted(PLAN_KEYS))}")
    standins = raw.get("standins") or ()
    if not isinstance(standins, (list, tuple)):
        raise PlanError(f"{where}: standins must be a list, e.g. [imagenet_weights]")
    standins = tuple(standins)
    bad = [s for s in standins if s not in STANDIN_FILES]
    if bad:
        raise PlanError(f"{where}: unknown stand-in {_shown(bad[0])}; use {', '.join(STANDIN_FILES)}")
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
    total = sum(_combinations(r) for r in runs_raw if isinstance(r, dict))
    if total > MAX_RUNS:
        raise PlanError(f"{where}: the plan expands to {total:,} runs, more than {MAX_RUNS:,}: "
                        "split it, or use fewer matrix values")
    for i, r in enumerate(runs_raw):
        if not isinstance(r, dict) or "name" not in r:
            raise PlanError(f"{where}: run #{i + 1}: each run is a mapping with at least name and notebook")
        w = f"{where}: run {_shown(r['name'])}"
        extra = sorted(map(str, set(r) - RUN_KEYS))
        if extra:
            raise PlanError(f"{w}: unknown key {_shown(extra[0])}; use {', '.join(sorted(RUN_KEYS))}")
        entries.extend(_expand(r, w))
    seen: dict[str, dict] = {}
    folded: dict[str, str] = {}  # lower-case name -> name: folders that one file system would merge
    for r in entries:
        n = str(r["name"])
        w = f"{where}: run {_shown(n)}"
        problem = name_problem(n)
        if problem:
            raise PlanError(f"{w}: a run name {problem}")
        if n in seen:
            raise PlanError(f"{w}: the name is used twice; run names must be unique")
        if n.lower() in folded:
            raise PlanError(f"{w}: the name differs from run {folded[n.lower()]!r} only in case; "
                            "on macOS and Windows both would be one folder: rename one")
        folded[n.lower()] = n
        if not isinstance(r.get("notebook"), str) or r["notebook"] not in NOTEBOOKS:
            raise PlanError(f"{w}: unknown notebook {_shown(r.get('notebook'))}; use one of {', '.join(NOTEBOOKS)}")
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
            raise PlanError(f"{w}: needs {_shown(d)}, which the plan does not define")
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


def _run_spec(r: dict, defaults: dict[str, dict], values: dict, needs: list[str],
              plan_dir: Path, where: str) -> RunSpec:
    """One run resolved: defaults under its params, references substituted, its config built."""
    n = str(r["name"])
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
        raise PlanError(f"{where}: report has unknown parameter {_shown(extra[0])}; use {', '.join(REPORT_PARAMS)}")
    return report


def _budget(raw: dict, where: str) -> Optional[float]:
    budget = raw.get("budget_min")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise PlanError(f"{where}: budget_min must be a positive number of minutes, not {_shown(budget)}")
    return None if budget is None else float(budget)


def load_plan(plan: PathLike, outputs: PathLike = "outputs") -> Plan:
    """Read and validate a plan; every error is a :class:`PlanError` with one line."""
    source = find_plan_file(plan)
    raw = _read(source)
    try:
        return _validated(raw, source, outputs)
    except (TypeError, AttributeError, KeyError, ValueError) as e:
        if isinstance(e, PlanError):
            raise
        # a value of a shape no check above expected (a number where a list goes, ...)
        raise PlanError(f"plan file {source} has a value of an unexpected type "
                        f"({type(e).__name__}: {_shown(str(e), 120)}): compare it with plans/smoke.yaml") from None


def _validated(raw: dict, source: Path, outputs: PathLike) -> Plan:
    """The plan in ``raw`` (read from ``source``), validated."""
    name, where, standins, defaults = _header(raw, source)
    seen = _entries(raw, where)
    deps = {n: _run_needs(n, r, seen, standins, f"{where}: run {n!r}") for n, r in seen.items()}
    plan_dir = Path(outputs) / name
    values = _values(raw, seen, plan_dir, standins)
    runs = {n: _run_spec(seen[n], defaults, values, deps[n], plan_dir, where) for n in _order(deps, name)}
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

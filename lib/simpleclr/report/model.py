"""The study model: a plan's run folders as the report's rows and roles.

A plan (:mod:`simpleclr.study.plans`) writes ``<outputs>/<plan>/plan.json`` (:data:`MANIFEST`): each
run's notebook, folder, config fingerprint and its ``report:`` role. :func:`load_study` reads that
file and each run's ``config.json`` and ``result.json`` into a :class:`Study`, each run's files
checked first (:mod:`simpleclr.runs.checks`); the report and its figures read nothing else. No
plotting, no training: the standard library, the stage configs and :mod:`simpleclr.runs` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..types import PathLike
from ..config import STAGES
from ..errors import SimpleCLRError, one_line
from ..runs.checks import check_metrics, check_run_files
from ..runs.rundir import BrokenRun, RunDir, read_json

MANIFEST = "plan.json"  # a plan's manifest, beside its run folders

# The main table's rows, in the order the report shows them: (name, representation, evaluation).
MAIN_ROWS: tuple[tuple[str, str, str], ...] = (
    ("selfsuper-transfer", "SimCLR pretrained on Tiny ImageNet-200 (no labels)", "linear probe"),
    ("selfsuper", "SimCLR pretrained on CIFAR-100 train (no labels)", "linear probe"),
    ("super-transfer", "supervised on Tiny ImageNet-200", "linear probe"),
    ("imagenet-super", "torchvision ResNet-18 ImageNet-1k weights", "linear probe"),
    ("super", "supervised from scratch on CIFAR-100", "tested directly"),
    ("super-probe", "supervised from scratch on CIFAR-100 (the super encoder)",
     "linear probe (like for like with the probed rows)"),
    ("random", "randomly initialised encoder", "linear probe (the floor)"),
)
ROW_NAMES = tuple(r[0] for r in MAIN_ROWS)
# What a run's ``report:`` mapping may say, and which notebooks may say it.
ROLES: dict[str, tuple[str, ...]] = {
    "row": ("linear_eval", "supervised"),          # a main-table row (supervised only for "super")
    "finetune": ("supervised",),                   # fine-tuned from this row's encoder
    "label_efficiency": ("linear_eval", "supervised"),  # a point of this row's label curve
    "size_study": ("linear_eval",),                # probe of an encoder pretrained on a subset
    "hparam": ("linear_eval",),                    # probe of a pretraining hparam cell
    "features": ("linear_eval",),                  # t-SNE features for a row tested directly
    "length": ("linear_eval",),                    # probe of a kept checkpoint of one long run
}
ROW_INFO = {name: (rep, ev) for name, rep, ev in MAIN_ROWS}


class ReportError(SimpleCLRError, RuntimeError):
    """The plan folder cannot be reported on; one line saying what to do."""


@dataclass
class RunInfo:
    """One run as the report sees it: what the plan meant it to be and what its folder holds."""

    name: str
    notebook: str
    stage: str
    path: Path
    role: dict
    state: str
    reason: Optional[str]
    fingerprint: Optional[str]
    config_json: Optional[dict] = None
    result: Optional[dict] = None
    planned: dict = field(default_factory=dict)  # the config the plan gave it (manifest)

    @property
    def config(self) -> dict:
        """The run folder's config, else (run never started) the one the plan meant it to have."""
        return (self.config_json or {}).get("config") or self.planned

    @property
    def done(self) -> bool:
        return self.result is not None and self.result.get("fingerprint") == self.fingerprint

    @property
    def why_missing(self) -> str:
        if self.done:
            return ""
        if self.reason:
            return self.reason
        return {"partial": "started but not finished (run the plan again to resume it)",
                "stale": "its folder holds another config",
                }.get(self.state, "not run yet")

    def metrics(self) -> list[dict]:
        """The run's metrics rows: one per epoch (a probe: one per weight decay tried); [] when
        the file cannot be read (:func:`load_study` has made such a run "broken")."""
        try:
            return RunDir(self.path).read_metrics()
        except BrokenRun:
            return []

    def steps(self) -> list[dict]:
        """The run's step trace (``steps.jsonl``); [] for a format 1 run folder, or one that
        cannot be read (the trace is optional: its run is still reported)."""
        try:
            return RunDir(self.path).read_steps()
        except BrokenRun:
            return []


# A reason why a run is missing that is longer than this (a path, a URL, advice) is written out
# once in the report, not in every table that shows the run.
LONG_REASON_CHARS = 100
REASON_HEAD_CHARS = 50  # what a table cell keeps of such a reason


@dataclass
class Study:
    plan_dir: Path
    manifest: dict
    runs: dict[str, RunInfo] = field(default_factory=dict)

    def missing_notes(self) -> list[tuple[str, list[str]]]:
        """Each distinct reason longer than :data:`LONG_REASON_CHARS` why runs have no result, in
        plan order, with the runs it stops: the report writes each out once, in the headline's
        notes, and every table refers to its number (:meth:`missing_reason`)."""
        notes: dict[str, list[str]] = {}
        for r in self.runs.values():
            if len(r.why_missing) > LONG_REASON_CHARS:
                notes.setdefault(r.why_missing, []).append(r.name)
        return list(notes.items())

    def missing_reason(self, run: RunInfo) -> str:
        """Why ``run`` has no result, as a table cell: the reason itself when short, else its
        first words and the number of the note that gives it whole; "" for a finished run."""
        reason = run.why_missing
        if len(reason) <= LONG_REASON_CHARS:
            return reason
        n = next(i for i, (text, _) in enumerate(self.missing_notes(), 1) if text == reason)
        head = reason[:REASON_HEAD_CHARS].rsplit(" ", 1)[0]
        return f"{head} … (missing-run note {n}, at the top)"

    @property
    def name(self) -> str:
        return self.manifest.get("plan", self.plan_dir.name)

    def with_role(self, key: str, value: Any = None) -> list[RunInfo]:
        return [r for r in self.runs.values()
                if key in r.role and (value is None or r.role[key] == value)]

    def by_path(self, spec: Optional[str]) -> Optional[RunInfo]:
        """The plan's run whose folder a config value (encoder / init) names, if any."""
        if not spec:
            return None
        for r in self.runs.values():
            if str(r.path) == spec or r.path.name == Path(spec).name and r.path.parent.name == Path(spec).parent.name:
                return r
        return None

    def source_run(self, run: RunInfo) -> Optional[RunInfo]:
        """The training run whose encoder ``run`` probes or fine-tunes."""
        return self.by_path(run.config.get("encoder") or run.config.get("init"))


def resolve_plan_dir(plan_dir: PathLike) -> Path:
    """``plan_dir`` as given, else relative to the repository (for notebooks opened by hand)."""
    p = Path(plan_dir)
    if (p / MANIFEST).is_file() or p.is_absolute():
        return p
    repo = Path(__file__).resolve().parents[3]
    return repo / p if (repo / p / MANIFEST).is_file() else p


def load_study(plan_dir: PathLike) -> Study:
    """Everything the report shows, read from the plan folder and its run folders."""
    plan_dir = resolve_plan_dir(plan_dir)
    try:
        manifest = read_json(plan_dir / MANIFEST, "run the plan again to rewrite it")
    except BrokenRun as e:
        raise ReportError(str(e)) from None
    if manifest is None:
        raise ReportError(f"{plan_dir / MANIFEST} does not exist: run the plan first "
                          f"(e.g. `simpleclr plan run {plan_dir.name}`)")
    study = Study(plan_dir=plan_dir, manifest=manifest)
    runs = manifest.get("runs", {})
    try:
        for name in manifest.get("order") or list(runs):
            m = runs[name]
            path = Path(m["path"])
            if not path.is_absolute() and not path.exists():
                path = plan_dir / name
            state, reason, config_json, result = _read_run(RunDir(path), m)
            study.runs[name] = RunInfo(name=name, notebook=m["notebook"],
                                       stage=m.get("stage", m["notebook"]), path=path,
                                       role=m.get("report") or {}, state=state, reason=reason,
                                       fingerprint=m.get("fingerprint"), config_json=config_json,
                                       result=result, planned=m.get("config") or {})
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ReportError(f"{plan_dir / MANIFEST} is damaged ({type(e).__name__}: "
                          f"{one_line(str(e), 80)}): run the plan again to rewrite it") from None
    return study


BROKEN = "this run is broken: "  # how a run whose files fail their checks is told


def _read_run(rd: RunDir, m: dict) -> tuple[str, Optional[str], Optional[dict], Optional[dict]]:
    """(state, reason, config.json, result.json) of one run. Its files are checked before the
    report uses them (:mod:`simpleclr.runs.checks`: config.json's identity, the metrics, and a
    finished run's predictions and features against its result); a file that fails makes the
    run "broken", "this run is broken: <reason>", and the report goes on with the other runs.
    Nothing a run folder holds escapes as an exception."""
    read: list[Optional[dict]] = []
    try:
        read.append(rd.read_config())
        read.append(rd.read_result())
        stage = (read[0] or {}).get("stage")
        if read[0] is not None and stage in STAGES:
            rd.check_identity(read[0], STAGES[stage])
        check_metrics(rd)
        if read[1] is not None and read[1].get("fingerprint") == m.get("fingerprint"):
            check_run_files(rd, read[1])
    except BrokenRun as e:
        return "broken", BROKEN + str(e), (read + [None])[0], None
    except Exception as e:  # noqa: BLE001 - a forged file can fail in any library it reaches
        return "broken", f"{BROKEN}{rd.path}: {type(e).__name__}: {one_line(str(e), 160)}", \
            (read + [None])[0], None
    return m.get("state", "todo"), m.get("reason"), read[0], read[1]


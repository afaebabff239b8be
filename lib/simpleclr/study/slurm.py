"""A plan's runs as SLURM jobs, submitted through submitit: the SLURM backend of
:class:`simpleclr.study.plans.PlanExecutor` (``simpleclr plan run PLAN --executor slurm``).

Every run not yet finished becomes one job that executes the run's notebook into its run folder,
as a ``--devices`` worker does (papermill through :func:`simpleclr.study.kernels.run_notebook`, a
fresh kernel per job), submitted with ``--dependency=afterok:<its needs' jobs>`` and
``--kill-on-invalid-dep=yes``: SLURM holds a run until its needs have succeeded and drops it when
one fails. A run with a launcher (``torchrun --nproc-per-node N``) is one job holding N GPUs; the
launcher inside it sets the variables ``init_from_env`` reads. A job's time limit is the run's
estimate (:class:`simpleclr.study.estimate.Estimator`) times :data:`TIME_MARGIN`, plus
:data:`TIME_SLACK_MIN`. A job preempted or at its time limit is requeued by submitit's
checkpointing (:meth:`RunJob.checkpoint`); so is one requeued by hand (``scontrol requeue``): it
executes the notebook again, and the stage resumes from ``checkpoints/last.pt``.

The plan's process is the only writer of the manifest and of ``<plan folder>/slurm/jobs.json``
(run -> job id and config fingerprint). It polls the jobs' states (``squeue``, then ``sacct`` for
jobs the controller has forgotten) and, once all have settled, renders the report. ``--detach``
submits and returns; ``plan show`` then lists each run's job state, and ``plan run`` again adopts
the jobs still queued or running instead of submitting them twice, waits for them and renders
the report.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import SimpleCLRError
from ..runs.rundir import RunDir, atomic_write_json, read_json
from .kernels import failure_reason, run_notebook
from .planfile import REPO_ROOT, Plan, PlanError, RunSpec

# A job's time limit: the run's estimate times this, plus this many minutes (start-up, a slower
# node than the one estimated on); where no estimate exists, DEFAULT_TIME_MIN.
TIME_MARGIN = 1.5
TIME_SLACK_MIN = 10
DEFAULT_TIME_MIN = 240
JOBS_FILE = "jobs.json"
# A job that neither squeue nor sacct lists for this long has been forgotten (a cluster without
# accounting purges finished jobs after MinJobAge, 300 s by default): its run folder says how it went.
FORGOTTEN_S = 120.0
# SLURM job states in which the job may still run; any other state is final.
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                    "COMPLETING", "RESIZING", "SUSPENDED", "PREEMPTED", "SIGNALING", "STAGE_OUT",
                    "RESV_DEL_HOLD"})


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """What every job of a plan asks SLURM for (``simpleclr plan run --executor slurm``).

    ``partition``/``account``: sbatch's ``--partition``/``--account`` (None: the cluster's
    default). ``gpus_per_job``: GPUs of a job (a run with a torchrun launcher asks for as many as
    its ``--nproc-per-node`` instead). ``cpus_per_job``: its CPUs, also the run's thread count
    unless the run names one. ``sbatch``: further sbatch options, ``--qos=high`` or ``qos=high``
    each. ``time_min``: every job's time limit in minutes (None: from the run's estimate).
    ``detach``: submit and return. ``poll_s``: seconds between two reads of the jobs' states.
    """

    partition: Optional[str] = None
    account: Optional[str] = None
    gpus_per_job: int = 0
    cpus_per_job: Optional[int] = None
    sbatch: tuple[str, ...] = ()
    time_min: Optional[int] = None
    detach: bool = False
    poll_s: float = 10.0

    def __post_init__(self) -> None:
        if self.gpus_per_job < 0:
            raise PlanError(f"--gpus-per-job {self.gpus_per_job}: use 0 (CPU jobs) or more")
        if self.cpus_per_job is not None and self.cpus_per_job < 1:
            raise PlanError(f"--cpus-per-job {self.cpus_per_job}: use 1 or more")
        if self.time_min is not None and self.time_min < 1:
            raise PlanError(f"--time-min {self.time_min}: use a number of minutes, 1 or more")
        if self.poll_s <= 0:
            raise PlanError(f"poll_s={self.poll_s}: use a positive number of seconds")
        sbatch_parameters(self.sbatch)  # one line for a malformed option, before any submission

    def parameters(self) -> dict[str, Any]:
        """submitit's SlurmExecutor parameters shared by every job."""
        extra: dict[str, Any] = {"requeue": True, **sbatch_parameters(self.sbatch)}
        if self.account:
            extra["account"] = self.account
        params: dict[str, Any] = {"additional_parameters": extra, "signal_delay_s": 120}
        if self.partition:
            params["partition"] = self.partition
        if self.cpus_per_job:
            params["cpus_per_task"] = self.cpus_per_job
        return params


def sbatch_parameters(options: Sequence[str]) -> dict[str, Any]:
    """``["--qos=high", "exclusive", "mail-type=END"]`` -> {"qos": "high", "exclusive": True, ...}."""
    out: dict[str, Any] = {}
    for option in options:
        key, eq, value = option.lstrip("-").partition("=")
        if not key or not key.replace("-", "").replace("_", "").isalnum() or eq and not value:
            raise PlanError(f"--sbatch {option!r}: give sbatch options as --name=value or --flag, "
                            "e.g. --sbatch=--qos=high")
        out[key.replace("_", "-")] = value if eq else True
    return out


def time_limit_min(seconds: Optional[float]) -> int:
    """A job's time limit in minutes from its run's estimate in seconds (None: not estimated)."""
    if seconds is None:
        return DEFAULT_TIME_MIN
    return math.ceil(seconds * TIME_MARGIN / 60) + TIME_SLACK_MIN


def launcher_gpus(launcher: Optional[str]) -> int:
    """The GPUs a run's job holds for its launcher: one per process it starts on the node
    (:func:`simpleclr.training.preflight.launcher_processes`); 0 without a launcher."""
    from ..training.preflight import launcher_processes

    return launcher_processes(launcher) if launcher else 0


class RunFailed(SimpleCLRError, RuntimeError):
    """A run's notebook did not finish; the message is the plan's one line for it."""


@dataclasses.dataclass(frozen=True)
class RunJob:
    """What one SLURM job executes: the run's notebook (``source``, the file under notebooks/)
    into its run folder, in a fresh kernel, as a ``--devices`` worker does."""

    source: str
    output: str
    params: dict

    def __call__(self) -> None:
        try:
            run_notebook(Path(self.source), Path(self.output), self.params)
        except Exception as e:  # the job fails, so SLURM drops the runs that need this one
            raise RunFailed(failure_reason(e)) from None

    def checkpoint(self) -> Any:
        """Preempted, or at its time limit: submitit requeues the job with this same call. The
        state to carry over is in the run folder already: the stage resumes from
        ``checkpoints/last.pt``, written every epoch."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


# ---- job states ---------------------------------------------------------------------------------
def _query(cmd: list[str]) -> Optional[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def job_states(ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} for the jobs SLURM knows: the controller's (``squeue``, which
    keeps a finished job for MinJobAge), then accounting (``sacct``) for the others; a job neither
    knows is missing from the answer."""
    ids = [str(i) for i in ids]
    if not ids:
        return {}
    out: dict[str, tuple[str, str]] = {}
    squeue = ["squeue", "-h", "--states=all", "-o", "%i|%T|%r", "-j"]
    text = _query(squeue + [",".join(ids)])
    if text is None and len(ids) > 1:  # squeue refuses the whole list when one id is unknown to it
        text = "".join(_query(squeue + [i]) or "" for i in ids)
    for line in (text or "").splitlines():
        job, state, reason = (line.split("|") + ["", ""])[:3]
        if job.strip() in ids:
            out[job.strip()] = (state.strip(), reason.strip())
    rest = [i for i in ids if i not in out]
    if rest:
        text = _query(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Reason", "-j", ",".join(rest)])
        for line in (text or "").splitlines():
            job, state, reason = (line.split("|") + ["", ""])[:3]
            if job in rest:  # "CANCELLED by 0" -> CANCELLED
                out[job] = (state.split()[0] if state else "UNKNOWN", reason)
    return out


def read_jobs(plan: Plan) -> dict[str, dict]:
    """The plan's ``slurm/jobs.json``: {run: {"job_id", "fingerprint", "submitted_at"}}."""
    return read_json(plan.outputs / "slurm" / JOBS_FILE, "delete it: the jobs it lists are then "
                     "not adopted, and runs not finished are submitted anew") or {}


def run_job_states(plan: Plan) -> dict[str, str]:
    """{run: "job 123 RUNNING"} for the runs of ``plan`` submitted to SLURM with their current
    config (``plan show``); empty when the plan never ran there."""
    jobs = {n: j for n, j in read_jobs(plan).items()
            if n in plan.runs and j.get("fingerprint") == plan.runs[n].config.fingerprint()}
    states = job_states([j["job_id"] for j in jobs.values()])
    return {n: f"job {j['job_id']} {states.get(str(j['job_id']), ('not known to SLURM any more', ''))[0]}"
            for n, j in jobs.items()}


# ---- the backend --------------------------------------------------------------------------------
class Slurm:
    """The SLURM backend of :class:`simpleclr.study.plans.PlanExecutor`: one job per run, every
    run handed over at once (``afterok`` holds it until its needs succeed)."""

    eager, verb, watched = True, "submitted", False
    tty: Optional[bool] = False

    def __init__(self, plan: Plan, options: SlurmOptions):
        try:
            import submitit
        except ImportError:
            raise PlanError("--executor slurm needs submitit: pip install -e '.[slurm]'") from None
        if not shutil.which("sbatch") or not shutil.which("srun"):
            raise PlanError("--executor slurm: sbatch and srun are not on PATH; run the plan on a "
                            "SLURM cluster's login node")
        self.plan, self.options, self.detach = plan, options, options.detach
        self.notebooks = REPO_ROOT / "notebooks"
        missing = sorted({s.notebook for s in plan.runs.values()
                          if not (self.notebooks / f"{s.notebook}.ipynb").is_file()})
        if missing:
            raise PlanError(f"notebook {self.notebooks / missing[0]}.ipynb is missing: restore it from git "
                            "(scripts/make_notebooks.py writes it)")
        self.folder = plan.outputs / "slurm"
        self.known = read_jobs(plan)
        self.jobs: dict[str, Any] = {}  # run -> submitit SlurmJob
        self.unknown_since: dict[str, float] = {}  # run -> when its job was first missing from SLURM's answers
        self._submitit = submitit
        self._estimator: Any = None

    def fits(self, spec: RunSpec) -> bool:
        return True

    def start(self, spec: RunSpec, after: Sequence[str]) -> str:
        adopted = self._adopt(spec)
        if adopted is not None:
            self.jobs[spec.name] = adopted
            return f" as SLURM job {adopted.job_id} (submitted earlier)"
        executor = self._submitit.SlurmExecutor(folder=self.folder)
        params = self.options.parameters()
        gpus = launcher_gpus(spec.config.launcher) if self.options.gpus_per_job else 0
        gpus = gpus or self.options.gpus_per_job
        deps = [str(self.jobs[d].job_id) for d in after]
        if deps:
            params["additional_parameters"] = {**params["additional_parameters"],
                                               "dependency": "afterok:" + ":".join(deps),
                                               "kill-on-invalid-dep": "yes"}
        executor.update_parameters(job_name=f"{self.plan.name}/{spec.name}", time=self._time_min(spec),
                                   **({"gpus_per_node": gpus} if gpus else {}), **params)
        run_params = dict(spec.params)
        if self.options.cpus_per_job and spec.config.num_threads is None:
            run_params["num_threads"] = self.options.cpus_per_job
        job = executor.submit(RunJob(str(self.notebooks / f"{spec.notebook}.ipynb"),
                                     str(RunDir(spec.path).notebook_path), run_params))
        self.jobs[spec.name] = job
        self.known[spec.name] = {"job_id": str(job.job_id), "fingerprint": spec.config.fingerprint(),
                                 "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_json(self.folder / JOBS_FILE, self.known)
        return f" as SLURM job {job.job_id}"

    def _adopt(self, spec: RunSpec) -> Any:
        """The job submitted for ``spec`` earlier (``--detach``, an interrupted plan) when it is
        still queued or running with the run's current config, else None."""
        old = self.known.get(spec.name)
        if not old or old.get("fingerprint") != spec.config.fingerprint():
            return None
        state = job_states([old["job_id"]]).get(str(old["job_id"]))
        if state is None or state[0] not in ACTIVE:
            return None
        return self._submitit.SlurmJob(folder=self.folder, job_id=str(old["job_id"]))

    def _time_min(self, spec: RunSpec) -> int:
        if self.options.time_min is not None:
            return self.options.time_min
        from .estimate import Estimator

        if self._estimator is None:
            self._estimator = Estimator(self.plan.outputs.parent)
        return time_limit_min(self._estimator.seconds(spec)[0])

    def wait(self) -> list[tuple[str, Optional[str]]]:
        while True:
            states = job_states([j.job_id for j in self.jobs.values()])
            ended = [(n, self._outcome(n, states.get(str(j.job_id), ("UNKNOWN", ""))))
                     for n, j in self.jobs.items() if states.get(str(j.job_id), ("UNKNOWN", ""))[0] not in ACTIVE]
            ended = [(n, why) for n, why in ended if why != "unknown"]
            if ended:
                for n, _ in ended:
                    del self.jobs[n]
                order = {n: i for i, n in enumerate(self.plan.runs)}
                return sorted(ended, key=lambda e: order[e[0]])
            time.sleep(self.options.poll_s)

    def _outcome(self, name: str, state: tuple[str, str]) -> Optional[str]:
        """None when the job finished its run; else why not (a line); "unknown" while SLURM does
        not list the job."""
        job, spec = self.jobs[name], self.plan.runs[name]
        if state[0] == "UNKNOWN":  # not listed yet, or already forgotten (no accounting here)
            first = self.unknown_since.setdefault(name, time.time())
            if time.time() - first < FORGOTTEN_S:
                return "unknown"
            if spec.status() == "done":
                return None
            return (f"SLURM no longer knows job {job.job_id} and its run did not finish; its log: "
                    f"{job.paths.stderr}")
        self.unknown_since.pop(name, None)
        if state[0] == "COMPLETED" and spec.status() == "done":
            return None
        result = Path(job.paths.result_pickle)
        if result.is_file():
            from submitit.core.utils import pickle_load

            outcome, value = pickle_load(result)
            if outcome == "error":
                lines = [ln for ln in str(value).splitlines() if f"{RunFailed.__name__}: " in ln]
                if lines:
                    return lines[-1].split(f"{RunFailed.__name__}: ", 1)[1]
                return f"SLURM job {job.job_id}: {str(value).strip().splitlines()[-1]}"
        why = f", {state[1]}" if state[1] and state[1] != "None" else ""
        return f"SLURM job {job.job_id} ended {state[0]}{why}; its log: {job.paths.stderr}"

    def drop(self, name: str) -> None:
        job = self.jobs.pop(name, None)
        if job is not None:
            subprocess.run(["scancel", str(job.job_id)], capture_output=True)

    def stop(self, names: Sequence[str]) -> dict[str, str]:
        """The jobs stay with SLURM: ``plan run`` again adopts them (``scancel`` cancels them)."""
        return {n: f"SLURM job {self.jobs[n].job_id} queued or running: simpleclr plan run collects it "
                   f"(scancel {self.jobs[n].job_id} cancels it)" for n in names if n in self.jobs}

    def close(self) -> None:
        pass


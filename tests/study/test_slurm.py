"""The plan executor's three backends against the same expectations, and the SLURM backend
against a real SLURM: a one-node cluster that ``scripts/local_slurm.py`` installs (apt-get, as
root) and starts for this module, driven through submitit with the real sbatch, squeue, scontrol
and scancel. Where SLURM cannot be started (not root, no apt-get) the SLURM tests skip with one
line; CI runs as root, so there they run.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from helpers.plankit import plan_env, tiny_pretrain_plan
from simpleclr.runs.rundir import RunDir
from simpleclr.study import plans
from simpleclr.study.slurm import SlurmOptions, job_states, launcher_gpus, sbatch_parameters, time_limit_min

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _starter():
    spec = importlib.util.spec_from_file_location("local_slurm", ROOT / "scripts" / "local_slurm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_slurm"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    """A running one-node SLURM for this module (SLURM_CONF set), stopped by pid at its end."""
    pytest.importorskip("submitit", reason="the SLURM backend needs submitit: pip install -e '.[slurm,test]'")
    starter = _starter()
    t0 = time.time()
    try:
        cluster = starter.start(tmp_path_factory.mktemp("slurm"))
    except starter.SlurmUnavailable as e:
        pytest.skip(f"no local SLURM: {e}")
    print(f"\nlocal SLURM up in {time.time() - t0:.1f} s", file=sys.stderr)
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", str(cluster.conf))
    yield cluster
    mp.undo()
    cluster.stop()
    for name, proc in cluster.processes.items():
        assert proc.poll() is not None, f"{name} still runs after stop"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with plan_env(tmp_path_factory.mktemp("executor")) as root:  # SLURM jobs start in the submitting folder
        yield root


def _slurm(**kw) -> plans.Execution:
    return plans.Execution(slurm=SlurmOptions(poll_s=0.5, **{"time_min": 30, **kw}))


# ---- the rules every backend shares --------------------------------------------------------
TINY = """
name: tiny
defaults:
  all: {dataset: "synthetic-cifar100:train=4,test=2", image_size: 8, width: 16, precision: fp32,
        num_threads: 1, progress: false}
  pretrain: {epochs: 1, steps: 2, batch_size: 32, warmup_epochs: 0.0, proj_hidden: 32, knn_every: 0}
  supervised: {epochs: 1, batch_size: 32, warmup_epochs: 0.0}
  linear_eval: {weight_decays: [0.01]}
runs:
  - {name: pre, notebook: pretrain}
  - {name: probe, notebook: linear_eval, params: {encoder: "{runs.pre}"}, report: {row: selfsuper}}
  - {name: super-broken, notebook: supervised, params: {init: "%s"}}
  - {name: super-probe, notebook: linear_eval, params: {encoder: "{runs.super-broken}"}, report: {row: super}}
  - {name: random, notebook: linear_eval, report: {row: random}}
"""

BACKENDS = ["in-process", "two workers", "slurm"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_keeps_the_plan_rules(env, backend, request, capsys):
    """Needs first, a failed run stops only its dependents, the others finish, the report renders,
    the manifest (written by the plan's process alone) says what happened to each run; run
    again, finished runs are skipped and only the failed one is tried again."""
    execution = {"in-process": plans.Execution(), "two workers": plans.Execution(devices=["cpu", "cpu"])}.get(backend)
    if backend == "slurm":
        request.getfixturevalue("local_slurm")
        execution = _slurm()
    folder = env / backend.replace(" ", "-")
    folder.mkdir()
    (folder / "tiny.yaml").write_text(TINY % (folder / "no-such-run"))
    args = (folder / "tiny.yaml",)
    kw = dict(outputs=folder / "out", report_dir=folder / "report", progress=False, execution=execution)
    assert plans.run_plan(*args, **kw) == 1
    out = capsys.readouterr().out
    manifest = json.loads((folder / "out" / "tiny" / "plan.json").read_text())
    states = {n: r["state"] for n, r in manifest["runs"].items()}
    assert states == {"pre": "done", "probe": "done", "super-broken": "failed", "super-probe": "blocked",
                      "random": "done"}, out
    assert "WeightsError" in manifest["runs"]["super-broken"]["reason"]
    assert manifest["runs"]["super-probe"]["reason"].startswith("needs super-broken, which did not finish")
    assert not (folder / "out" / "tiny" / "super-probe").exists()  # never started: no folder
    assert (folder / "report" / "report.html").is_file()
    for name in ("pre", "probe", "random"):
        assert RunDir(folder / "out" / "tiny" / name).status() == "done"
    # the order: a run starts only after the runs it needs have finished
    probe_started = (folder / "out" / "tiny" / "probe" / "config.json").stat().st_mtime
    assert probe_started >= (folder / "out" / "tiny" / "pre" / "result.json").stat().st_mtime
    assert plans.run_plan(*args, **kw) == 1
    again = capsys.readouterr().out
    assert again.count("done earlier with the same config, skipped") == 3
    assert again.count("running -> ") + again.count("resuming -> ") == 1, again  # the failed run, again
    assert "super-probe (linear_eval): not run: needs super-broken, which did not finish" in again
    assert "super-broken (supervised)" in again and "FAILED" in again


# ---- SLURM -----------------------------------------------------------------------------------
def test_sbatch_options_and_time_limits():
    assert sbatch_parameters(["--qos=high", "exclusive", "mail_type=END"]) == {
        "qos": "high", "exclusive": True, "mail-type": "END"}
    with pytest.raises(plans.PlanError, match="--sbatch '--qos=': give sbatch options"):
        SlurmOptions(sbatch=("--qos=",))
    with pytest.raises(plans.PlanError, match="--gpus-per-job -1"):
        SlurmOptions(gpus_per_job=-1)
    assert time_limit_min(600) == 15 + 10  # 10 min x 1.5, plus 10 min of slack
    assert time_limit_min(None) == 240
    assert launcher_gpus("torchrun --nproc-per-node 4") == 4
    assert launcher_gpus("torchrun --nproc_per_node=2 --standalone") == 2
    assert launcher_gpus(None) == 0 and launcher_gpus("torchrun --standalone") == 1
    params = SlurmOptions(partition="gpu", account="lab", cpus_per_job=8, sbatch=("--qos=high",)).parameters()
    assert params["partition"] == "gpu" and params["cpus_per_task"] == 8
    assert params["additional_parameters"] == {"requeue": True, "qos": "high", "account": "lab"}


def _main_rows(html: str) -> list[str]:
    table = html.split("Main table: CIFAR-100 test accuracy")[1].split("</table>")[0]
    return [re.sub(r"<[^>]+>", "", tr).split() for tr in re.findall(r"<tr>.*?</tr>", table, flags=re.S)]


@pytest.mark.timeout(1800)  # the smoke plan twice: 11 min on 2 cores shared with other work
def test_smoke_plan_on_slurm_equals_one_local_worker(env, local_slurm, capsys):
    """The whole smoke plan as SLURM jobs gives the run folders and the report rows that one
    local worker gives: every run done, the same results, the same main table."""
    t0 = time.time()
    assert plans.run_plan("smoke", outputs=env / "local", report_dir=env / "report-local", progress=False) == 0
    local_s = time.time() - t0
    t0 = time.time()
    assert plans.run_plan("smoke", outputs=env / "slurm", report_dir=env / "report-slurm", progress=False,
                          execution=_slurm()) == 0
    print(f"\nsmoke plan: one local worker {local_s:.0f} s, local SLURM {time.time() - t0:.0f} s", file=sys.stderr)
    out = capsys.readouterr().out
    p_local, p_slurm = plans.load_plan("smoke", env / "local"), plans.load_plan("smoke", env / "slurm")
    jobs = json.loads((p_slurm.outputs / "slurm" / "jobs.json").read_text())
    assert set(jobs) == set(p_slurm.runs)  # one job per run
    assert out.count("as SLURM job") == 2 * len(p_slurm.runs)  # submitted, then done
    for name, spec in p_slurm.runs.items():
        assert spec.status() == "done", name
        a = json.loads((p_local.runs[name].path / "result.json").read_text())
        b = json.loads((spec.path / "result.json").read_text())
        for key in ("final_loss", "knn_top1", "top1", "top5", "val_top1", "n_train", "n_test"):
            assert a.get(key) == b.get(key), (name, key, a.get(key), b.get(key))
    local_rows = _main_rows((env / "report-local" / "report.html").read_text())
    assert local_rows and _main_rows((env / "report-slurm" / "report.html").read_text()) == local_rows
    # afterok on exactly the plan's needs
    for name, spec in p_slurm.runs.items():
        script = (p_slurm.outputs / "slurm" / f"{jobs[name]['job_id']}_submission.sh").read_text()
        deps = re.search(r"--dependency=afterok:([\d:]+)", script)
        assert sorted(deps[1].split(":") if deps else []) == sorted(jobs[d]["job_id"] for d in spec.needs)
        assert ("--kill-on-invalid-dep=yes" in script) == bool(spec.needs)


def test_a_failed_job_drops_its_dependents_through_slurm(env, local_slurm, capsys):
    """SLURM itself drops the job of a run whose need failed (afterok, kill-on-invalid-dep): it
    never starts; a run that needs nothing that failed finishes, and the report renders."""
    plan = yaml.safe_load(TINY % (env / "no-such-run"))
    plan["name"] = "drop"
    plan["runs"][1]["params"]["encoder"] = "{runs.pre}"
    plan["runs"].append({"name": "super-probe-2", "notebook": "linear_eval",
                         "params": {"encoder": "{runs.super-probe}"}})
    (env / "drop.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    # the executor must not cancel the dependents itself here: SLURM is what drops them
    options = SlurmOptions(poll_s=0.5, time_min=30)
    original = plans.PlanExecutor._ended

    def slow_to_notice(self, name, failure):
        if failure is not None:
            time.sleep(8)  # several scheduler passes (sched_interval=2) before the plan reacts
        original(self, name, failure)

    mp = pytest.MonkeyPatch()
    mp.setattr(plans.PlanExecutor, "_ended", slow_to_notice)
    try:
        assert plans.run_plan(env / "drop.yaml", outputs=env / "drop", report_dir=env / "report-drop",
                              progress=False, execution=plans.Execution(slurm=options)) == 1
    finally:
        mp.undo()
    p = plans.load_plan(env / "drop.yaml", env / "drop")
    jobs = json.loads((p.outputs / "slurm" / "jobs.json").read_text())
    states = job_states([j["job_id"] for j in jobs.values()])
    assert states[jobs["super-broken"]["job_id"]][0] == "FAILED"
    for name in ("super-probe", "super-probe-2"):
        assert states[jobs[name]["job_id"]] == ("CANCELLED", "DependencyNeverSatisfied"), name
        assert not p.runs[name].path.exists()
    assert states[jobs["random"]["job_id"]][0] == "COMPLETED" and p.runs["random"].status() == "done"
    manifest = json.loads((p.outputs / "plan.json").read_text())
    assert manifest["runs"]["super-probe-2"]["state"] == "blocked"
    assert (env / "report-drop" / "report.html").is_file()


def test_detach_then_show_then_run_again(env, local_slurm, capsys):
    """--detach submits and returns; plan show lists each run's SLURM state while the jobs are
    queued or running; plan run again adopts the jobs (no second submission) and renders the
    report once they have settled."""
    plan = yaml.safe_load(TINY % (env / "unused"))
    plan["name"] = "detached"
    plan["runs"] = plan["runs"][:2]
    (env / "detached.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    args = dict(outputs=env / "detached", report_dir=env / "report-detached", progress=False)
    # submitted held (an extra sbatch option), so both are still queued when shown: a tiny run
    # would otherwise be over by then
    assert plans.run_plan(env / "detached.yaml", **args, execution=_slurm(detach=True, sbatch=("--hold",))) == 0
    out = capsys.readouterr().out
    assert "2 job(s) submitted" in out and not (env / "report-detached").exists()
    p = plans.load_plan(env / "detached.yaml", env / "detached")
    jobs = json.loads((p.outputs / "slurm" / "jobs.json").read_text())
    assert plans.show_plan(env / "detached.yaml", outputs=env / "detached") == 0
    shown = capsys.readouterr().out
    for name in ("pre", "probe"):
        assert re.search(rf"\n  {name}\s+\S+\s+todo\s+\S+\s+job {jobs[name]['job_id']} PENDING", shown), shown
    assert re.search(r"\n  run\s+notebook\s+status\s+left\s+slurm\s+basis", shown), shown
    subprocess.run(["scontrol", "release", f"{jobs['pre']['job_id']},{jobs['probe']['job_id']}"], check=True)
    manifest = json.loads((p.outputs / "plan.json").read_text())
    assert {r["state"] for r in manifest["runs"].values()} == {"submitted"}
    assert plans.run_plan(env / "detached.yaml", **args, execution=_slurm()) == 0
    again = capsys.readouterr().out
    assert len(re.findall(r"\(submitted earlier\): (submitted|resuming) -> ", again)) == 2, again  # adopted
    assert json.loads((p.outputs / "slurm" / "jobs.json").read_text()) == jobs
    assert (env / "report-detached" / "report.html").is_file()
    assert all(s.status() == "done" for s in p.runs.values())


REQUEUE = tiny_pretrain_plan("requeue", 12, "  - {name: pre, notebook: pretrain}")


def _final_weights(path: Path) -> dict:
    return torch.load(path / "checkpoints" / "final.pt", map_location="cpu", weights_only=True)


def test_a_requeued_training_job_resumes_to_the_uninterrupted_weights(env, local_slurm, capsys):
    """scontrol requeue mid-training: SLURM kills the job and queues it again; the notebook runs
    again and the stage resumes from checkpoints/last.pt; the final weights equal those of the
    same run left alone (run here in this process)."""
    (env / "requeue.yaml").write_text(REQUEUE)
    assert plans.run_plan(env / "requeue.yaml", outputs=env / "alone", report_dir=env / "report-alone",
                          progress=False) == 0
    assert plans.run_plan(env / "requeue.yaml", outputs=env / "requeued", report_dir=env / "report-requeued",
                          progress=False, execution=_slurm(detach=True)) == 0
    p = plans.load_plan(env / "requeue.yaml", env / "requeued")
    job = json.loads((p.outputs / "slurm" / "jobs.json").read_text())["pre"]["job_id"]
    run = RunDir(p.runs["pre"].path)
    deadline = time.time() + 300
    while not run.read_metrics() or run.read_metrics()[-1]["epoch"] < 3:
        assert time.time() < deadline, "the job never reached epoch 3"
        time.sleep(0.5)
    subprocess.run(["scontrol", "requeue", job], check=True)
    while job_states([job])[job][0] in ("RUNNING", "COMPLETING"):
        time.sleep(0.5)
    assert not run.result_path.exists()  # stopped mid-run
    kept = run.load_checkpoint("last")["epoch"]
    before = [r for r in run.read_metrics() if r["epoch"] <= kept]
    assert 1 <= kept < 12
    assert plans.run_plan(env / "requeue.yaml", outputs=env / "requeued", report_dir=env / "report-requeued",
                          progress=False, execution=_slurm()) == 0
    restarts = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert re.search(r"Restarts=1\b", restarts), restarts
    alone, requeued = _final_weights(env / "alone" / "requeue" / "pre"), _final_weights(run.path)
    assert alone.keys() == requeued.keys()
    for part in ("encoder", "head"):
        for k, v in alone[part].items():
            assert torch.equal(v, requeued[part][k]), (part, k)
    # resumed, not restarted: the epochs up to the checkpoint keep their rows, measured seconds
    # included (a second training of them would have timed them anew)
    assert [r for r in run.read_metrics() if r["epoch"] <= kept] == before
    assert len(run.read_metrics()) == 12

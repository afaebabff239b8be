"""Ctrl-C or SIGTERM during a real ``simpleclr plan run`` prints the command's one line and nothing
else: no kernel traceback (ZMQError), no "Kernel died", no "Task exception was never retrieved";
the interrupted run is partial in the manifest, and the run folder keeps what it wrote."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.plankit import tiny_pretrain_plan

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.name != "posix", reason="POSIX signals and the IPC kernel manager")]

LINE = "simpleclr: interrupted; finished work and checkpoints are kept, run again to resume"
PLAN = tiny_pretrain_plan("long", 200, """
  - {name: pre, notebook: pretrain}
  - {name: other, notebook: pretrain, params: {seed: 1}}
  - {name: probe, notebook: linear_eval, params: {encoder: "{runs.pre}"}, report: {row: selfsuper}}
""")


def _plan_run(tmp_path: Path, *extra: str) -> subprocess.Popen:
    (tmp_path / "long.yaml").write_text(PLAN)
    env = {**os.environ, "SIMPLECLR_DATA": str(tmp_path / "data"), "SIMPLECLR_KERNEL": "python3",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-c", "import sys; from simpleclr.cli import main; sys.exit(main())",
           "plan", "run", str(tmp_path / "long.yaml"), "--outputs", str(tmp_path / "out"),
           "--report-dir", str(tmp_path / "report"), *extra]
    # a session of its own, as a terminal's foreground job: killpg reaches it and its workers
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"plan run ended first ({proc.returncode}):\n{out}\n{err}")
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["SIGINT to the group (Ctrl-C), one shared kernel",
                                 "SIGTERM to the plan (kill, scancel), two workers"])
def test_an_interrupted_plan_prints_its_one_line_only(tmp_path, how):
    proc = _plan_run(tmp_path, *(["--devices", "cpu,cpu"] if "workers" in how else []))
    try:
        # the stage is inside a notebook cell once its run folder holds a checkpoint: mid-training
        _wait_for(tmp_path / "out" / "long" / "pre" / "checkpoints" / "last.pt", proc)
        time.sleep(1.0)
        if how.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert err.strip() == LINE, err  # the one line: nothing from the kernels, nbclient or asyncio
    assert "Traceback" not in out and "Error" not in out, out
    manifest = json.loads((tmp_path / "out" / "long" / "plan.json").read_text())
    assert manifest["runs"]["pre"]["state"] == "partial"
    assert manifest["runs"]["pre"]["reason"] == "interrupted"
    assert (tmp_path / "out" / "long" / "pre" / "checkpoints" / "last.pt").is_file()  # nothing lost

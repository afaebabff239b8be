"""Running a stage through a launcher (``torchrun ...``) from a notebook or a plan.

A stage whose config sets ``launcher`` is started as ``<launcher> -m simpleclr <stage> --config
<file> --out <run folder>``: the launcher spawns the processes, rank 0 writes the run folder as in a
single-process run, and this process streams the launcher's log (progress bars included) into the
notebook and then returns the run's ``result.json``. The meaning of the run does not change:
``launcher`` is a runtime field, outside the config's fingerprint.
"""
from __future__ import annotations

import codecs
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from ..types import PathLike
from ..config import ConfigError, StageConfig, stage_of
from .parts.distributed import launched
from ..errors import SimpleCLRError
from ..runs.rundir import RunDir



class LaunchError(SimpleCLRError, RuntimeError):
    """The launched command failed; the message names its exit code and its last log line."""


def launcher_argv(launcher: str) -> list[str]:
    """The launcher as argv; ``torchrun`` falls back to ``python -m torch.distributed.run`` when
    the script is not on PATH (a Jupyter kernel started without its virtualenv's ``bin``)."""
    argv = shlex.split(launcher)
    if argv[0] == "torchrun" and shutil.which("torchrun") is None:
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    if shutil.which(argv[0]) is None:
        raise ConfigError(f"launcher={launcher!r}: {argv[0]!r} is not on PATH: install it, give its "
                          "full path, or set launcher=None to run in this process")
    return argv


def stage_command(cfg: StageConfig) -> str:
    """The ``simpleclr`` subcommand that runs ``cfg``'s stage (the stage registry's)."""
    return stage_of(cfg).command_for(cfg).name


def command(cfg: StageConfig, out_dir: PathLike, config_file: PathLike) -> list[str]:
    """The full command line that runs ``cfg`` under its launcher."""
    return [*launcher_argv(cfg.launcher), "-m", "simpleclr", stage_command(cfg),
            "--config", str(config_file), "--out", str(out_dir)]


def _stream(proc: subprocess.Popen) -> str:
    """Copy the child's output to our stdout as it comes (``\\r`` kept, so bars redraw in place);
    return the line that says best why it failed: its last error line (our one-line errors, a
    worker's traceback end; torchrun's own report after it runs to many lines), else its last line."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    error, last, pending = None, "no output", ""
    assert proc.stdout is not None
    while chunk := os.read(proc.stdout.fileno(), 65536):
        text = decoder.decode(chunk)
        sys.stdout.write(text)
        sys.stdout.flush()
        *lines, pending = (pending + text).replace("\r", "\n").split("\n")
        for line in filter(str.strip, lines):
            last = line.strip()
            error = last if _ERROR.match(last) else error
    if pending.strip():
        last = pending.strip()
    return error or last


# our one-line errors, and the closing line of a Python traceback in a worker (not torchrun's own)
_ERROR = re.compile(r"^(simpleclr: error:|(?!torch\.distributed\.elastic)[\w.]*(Error|Exception)\b:)")


def wanted(cfg: StageConfig) -> bool:
    """Whether ``cfg`` asks to be launched (refused inside a process a launcher already started)."""
    if not cfg.launcher:
        return False
    if launched():
        raise ConfigError(f"launcher={cfg.launcher!r} is set, but this process was itself started by "
                          "a launcher (RANK is set): drop --launcher inside torchrun")
    return True


def run_stage(cfg: StageConfig, out_dir: PathLike, work: Callable[[RunDir], dict]) -> dict:
    """The preamble every stage shares: a finished run folder's result is returned as it is
    (another config's run or a damaged file raise, see :meth:`RunDir.finished`), a config with a
    ``launcher`` runs under it, and otherwise ``work`` runs here on the run folder (it takes the
    folder's lock: one writer, however the stage spreads over processes)."""
    run = RunDir(out_dir)
    done = run.finished(cfg)
    if done is not None:
        return done
    if wanted(cfg):
        return run_launched(cfg, out_dir)
    return work(run)


def run_launched(cfg: StageConfig, out_dir: PathLike) -> dict:
    """Run ``cfg`` under ``cfg.launcher`` into ``out_dir`` and return its result.json."""
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="simpleclr-launch-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(cfg.replace(launcher=None).to_dict()))
        argv = command(cfg, out, config_file)
        print(f"launching: {shlex.join(argv)}", flush=True)
        # torchrun's per-run log folders (``--log-dir``, read from PET_LOG_DIR) go in this temporary
        # folder, removed below, not in one of their own left in the system's temp folder per launch
        env = {"PET_LOG_DIR": str(Path(tmp) / "torchrun-logs"), **os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            reason = _stream(proc)
        except BaseException:  # interrupted notebook: stop the launcher (it stops its workers)
            proc.terminate()
            proc.wait()
            raise
        code = proc.wait()
    if code != 0:
        raise LaunchError(f"the launched {stage_command(cfg)} stage exited with code {code}: "
                          f"{reason} (full log above; finished work in {out} is kept)")
    result = RunDir(out).read_result()
    if result is None:
        raise LaunchError(f"the launched {stage_command(cfg)} stage ended without writing "
                          f"{out / 'result.json'}: see its log above")
    return result

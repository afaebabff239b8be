"""The ``simpleclr`` command: parse, build a config, call one library function.

Stage options are generated from the config dataclasses (``--batch-size``, ``--temperature``, ...),
so the CLI, the notebooks' parameters and config.json share one set of names.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import REGISTRY, ConfigError, Stage, StageCommand
from .configio import add_config_arguments, config_from_args, read_config_file
from .errors import SimpleCLRError, one_line


def _stage_parser(sub, stage: Stage, command: StageCommand) -> None:
    p = sub.add_parser(command.name, help=command.help, description=command.help)
    p.add_argument("--out", required=True, help="run folder to write (resumed if it exists)")
    p.add_argument("--allow-foreign-out", action="store_true",
                   help="write the run into --out even when it is a non-empty folder that is not "
                        "a run folder (refused otherwise: its files could be overwritten)")
    p.add_argument("--config", help="YAML or JSON file of config fields; options override it")
    add_config_arguments(p, stage.config)
    p.set_defaults(func=_run_stage, stage=stage, stage_command=command)


def _entry(stage: Stage):
    """The library function that runs ``stage``, imported by the path the registry names."""
    module, name = stage.entry.split(":")
    return getattr(importlib.import_module(module), name)


def _run_stage(ns: argparse.Namespace) -> int:
    """One stage; under torchrun every rank runs this and rank 0 alone prints the result."""
    from .runs.rundir import ALLOW_FOREIGN_OUT, RunDir
    from .training.parts import distributed

    stage, command = ns.stage, ns.stage_command
    cfg = config_from_args(stage.config, ns, read_config_file(ns.config))
    if command.needs_init and not getattr(cfg, "init", None):
        raise ConfigError(f'{command.name} needs --init ("imagenet", a run folder or a checkpoint path)')
    if ns.allow_foreign_out:  # an environment variable, so a launcher's processes inherit it
        os.environ[ALLOW_FOREIGN_OUT] = str(Path(ns.out).resolve())
    RunDir(ns.out).check_path()  # before any data is read or model built
    RunDir(ns.out).check_claimable()
    fn = _entry(stage)
    try:
        result = fn(cfg, ns.out)
        if distributed.current_world().is_main:
            print(json.dumps(result, indent=2, default=str))
        # every rank leaves the group together: one that tears it down while another's gloo
        # threads still talk to it can abort the process after its work is done (seen once under
        # load: rank 0 wrote its result, then "terminate called without an active exception")
        distributed.barrier()
    finally:
        distributed.shutdown()
    return 0


def _data(ns: argparse.Namespace) -> int:
    from . import data

    if ns.data_cmd == "list":
        print("\n".join(data.available_datasets()))
        return 0
    if ns.data_cmd == "info":
        print(json.dumps(data.info(ns.name, root=ns.data_dir, accept_checksum=ns.accept_checksum),
                         indent=2, default=str))
        return 0
    for name in ns.names:
        out = data.prepare(name, root=ns.data_dir, accept_checksum=ns.accept_checksum,
                           download=not ns.no_download, image_size=ns.image_size)
        print(json.dumps(out, default=str))
    return 0


def _plan(ns: argparse.Namespace) -> int:
    from .study import plans

    if ns.plan_cmd == "show":
        return plans.show_plan(ns.plan, outputs=ns.outputs)
    if ns.plan_cmd == "rehearse":
        from .study import rehearse

        return rehearse.rehearse_plan(ns.plan, outputs=ns.outputs, images=ns.images, measure=not ns.no_measure)
    slurm_options = None
    if ns.executor == "slurm":
        from .study.slurm import SlurmOptions

        slurm_options = SlurmOptions(partition=ns.partition, account=ns.account, gpus_per_job=ns.gpus_per_job,
                                     cpus_per_job=ns.cpus_per_job, sbatch=tuple(ns.sbatch), time_min=ns.time_min,
                                     detach=ns.detach)
    elif ns.detach or ns.partition or ns.account or ns.sbatch:
        raise plans.PlanError("--detach, --partition, --account and --sbatch are for --executor slurm")
    execution = plans.Execution(devices=plans.parse_devices(ns.devices), kernel_per_run=ns.kernel_per_run,
                                slurm=slurm_options)
    return plans.run_plan(ns.plan, outputs=ns.outputs, report_dir=ns.report_dir, only=ns.only, execution=execution)


def _bench(ns: argparse.Namespace) -> int:
    from .study import bench

    if hasattr(ns, "rest"):  # options were not parsed up front (argv did not name bench)
        p = argparse.ArgumentParser(prog="simpleclr bench")
        bench.add_arguments(p)
        ns = p.parse_args(ns.rest)
    return bench.main(ns)


def _add_bench_arguments(p: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """The bench options, without importing torch for every other subcommand."""
    if "bench" in argv[:1] or not argv:
        from .study.bench import add_arguments

        add_arguments(p)
    else:  # parsed later by bench itself when the subcommand is bench after all
        p.add_argument("rest", nargs=argparse.REMAINDER)


def build_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simpleclr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="list, prepare (download/verify/extract/cache) and describe datasets")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    dsub.add_parser("list", help="the dataset names this version knows")
    for name, help in (("prepare", "download, verify, extract and cache datasets"),
                       ("info", "print a dataset's splits, counts, classes, location and checksum status")):
        p = dsub.add_parser(name, help=help)
        if name == "prepare":
            p.add_argument("names", nargs="+", metavar="NAME")
            p.add_argument("--no-download", action="store_true", help="fail instead of downloading")
            p.add_argument("--image-size", type=int, default=None, help="also cache at this size")
        else:
            p.add_argument("name", metavar="NAME")
        p.add_argument("--data-dir", default=None, help="data folder (default: $SIMPLECLR_DATA or ./data)")
        p.add_argument("--accept-checksum", default=os.environ.get("SIMPLECLR_ACCEPT_CHECKSUM") or None,
                       metavar="SUMS|any",
                       help="accept a re-packed archive whose md5 or sha256 is in this "
                            "comma-separated list (recorded as unofficial); default: "
                            "$SIMPLECLR_ACCEPT_CHECKSUM, which the shipped plans read too")
    d.set_defaults(func=_data)

    for stage in REGISTRY:
        for command in stage.commands:
            _stage_parser(sub, stage, command)

    pl = sub.add_parser("plan", help="run or show an experiment plan (papermill)")
    psub = pl.add_subparsers(dest="plan_cmd", required=True)
    for name, help in (("run", "execute a plan's runs, then render the report"),
                       ("show", "list a plan's runs with their status and the time left"),
                       ("rehearse", "run every run of a plan cut to a few steps, and its report, in "
                                    "rehearsal/<plan>/: what would break, memory, the time it will take")):
        p = psub.add_parser(name, help=help)
        p.add_argument("plan", help="plan name (smoke, quick, full) or a YAML file")
        p.add_argument("--outputs", default="rehearsal" if name == "rehearse" else "outputs",
                       help="folder holding the run folders")
        if name == "rehearse":
            from .study.rehearse import REHEARSAL_IMAGES

            p.add_argument("--images", type=int, default=REHEARSAL_IMAGES,
                           help="images per cut batch and evaluation pass")
            p.add_argument("--no-measure", action="store_true",
                           help="skip timing one step at each of the plan's batch sizes")
        if name == "run":
            p.add_argument("--report-dir", default="report", help="where report.html is written")
            p.add_argument("--only", nargs="*", default=None, help="run only these runs (and their needs)")
            p.add_argument("--devices", default=None, metavar="LIST",
                           help="run independent runs side by side, one per device: GPU indices (0,1,2,3), "
                                "cuda:N, or cpu,cpu for two CPU workers sharing the cores")
            p.add_argument("--kernel-per-run", action="store_true",
                           help="start a fresh Jupyter kernel for every run (default: one kernel, reset "
                                "between runs, saves ~7 s of start-up a run)")
            p.add_argument("--executor", choices=("local", "slurm"), default="local",
                           help="local: this machine (in this process, or --devices workers); slurm: "
                                "one SLURM job per unfinished run, submitted through submitit "
                                "(docs/multi-machine.md)")
            s = p.add_argument_group("SLURM (with --executor slurm)")
            s.add_argument("--partition", default=None, help="the partition every job is submitted to")
            s.add_argument("--account", default=None, help="the account the jobs are charged to")
            s.add_argument("--gpus-per-job", type=int, default=0, metavar="N",
                           help="GPUs per job (a torchrun run asks for its --nproc-per-node instead); "
                                "default 0: CPU jobs")
            s.add_argument("--cpus-per-job", type=int, default=None, metavar="N",
                           help="CPUs per job, also each run's thread count (default: the cluster's)")
            s.add_argument("--time-min", type=int, default=None, metavar="MIN",
                           help="every job's time limit in minutes (default: the run's estimate x1.5 + 10)")
            s.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                           help="a further sbatch option, e.g. --sbatch=--qos=high (repeat for more)")
            s.add_argument("--detach", action="store_true",
                           help="submit the jobs and return; plan show lists their states, plan run "
                                "again renders the report once they have settled")
    pl.set_defaults(func=_plan)

    b = sub.add_parser("bench", help="measure training, augmentation and feature-extraction speed")
    _add_bench_arguments(b, sys.argv[1:] if argv is None else list(argv))
    b.set_defaults(func=_bench)
    return parser


# An error line longer than this is cut: the messages quote paths and values a user gave, and a
# value can be any length (a plan's expanded YAML alias was 80 MB).
MAX_ERROR_CHARS = 2000


def os_error_line(e: OSError) -> str:
    """One line for an ``OSError`` no layer turned into its own error: what failed, on which
    path, and what to do."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f) or "a file"
    what = e.strerror or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free space and run the same command again (finished work and checkpoints are kept)"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "make it writable or choose another path"
    else:
        advice = "check the path and run the same command again"
    return one_line(f"{what}: {where}: {advice}", MAX_ERROR_CHARS)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser(argv)
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except SimpleCLRError as e:  # any layer's error for a person: its one line, no traceback
        print(f"simpleclr: error: {one_line(str(e), MAX_ERROR_CHARS)}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system's refusals a user can cause: a full disk, a read-only
        print(f"simpleclr: error: {os_error_line(e)}", file=sys.stderr)  # folder, a missing file
        return 2
    except KeyboardInterrupt:
        from .study.kernels import quiet

        quiet()  # through the exit too: the interrupted kernel's tasks are collected after this line
        print("simpleclr: interrupted; finished work and checkpoints are kept, run again to resume",
              file=sys.stderr)
        return 130

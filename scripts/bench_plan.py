"""How long validating a large plan takes: ``load_plan`` on a generated plan of N runs, and the
ordering of a long ``needs`` chain. Prints the figures; run it on an idle machine.

    python scripts/bench_plan.py [--runs 10000] [--chain 5000] [--repeat 3]

The generated plan is what a large sweep looks like: half pretraining runs (each its own seed and
temperature), half linear probes each reading one of them through ``{runs.<name>}``, all written
out run by run (no matrix), with defaults for every stage. The chain is N probes, each needing
the one before. Each figure is the best of ``--repeat`` timings, in a fresh temporary folder.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from simpleclr.study.planfile import load_plan  # noqa: E402

HEADER = """name: bench
defaults:
  all: {dataset: "synthetic-cifar100:train=2,test=2", progress: false}
  pretrain: {epochs: 2, warmup_epochs: 0, batch_size: 64}
runs:
"""


def sweep_plan(n: int) -> str:
    """``n`` runs: n/2 pretraining runs and a probe of each."""
    rows = []
    for i in range(n // 2):
        rows.append(f"  - {{name: pre-{i}, notebook: pretrain, params: {{seed: {i}, temperature: "
                    f"{0.1 + (i % 9) / 10:.1f}}}}}\n")
        rows.append(f"  - {{name: probe-{i}, notebook: linear_eval, params: {{encoder: \"{{runs.pre-{i}}}\", "
                    f"seed: {i}}}}}\n")
    return HEADER + "".join(rows)


def chain_plan(n: int) -> str:
    """``n`` probes, each needing the one before (listed last first, so ordering must move each)."""
    rows = [f"  - {{name: c-{i}, notebook: linear_eval, needs: [c-{i - 1}]}}\n" for i in range(n - 1, 0, -1)]
    return HEADER + "".join(rows) + "  - {name: c-0, notebook: linear_eval}\n"


def best_of(text: str, repeat: int) -> tuple[float, float, int]:
    """(best wall seconds, best CPU seconds of ``load_plan``, runs in the plan) over ``repeat``
    fresh loads. The CPU time is this process's alone: on a shared machine the wall time also
    holds the other processes' turns."""
    wall, cpu, runs = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(text)
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            plan = load_plan(path, Path(tmp) / "outputs")
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            runs = len(plan.runs)
    return min(wall), min(cpu), runs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000, help="runs in the generated sweep plan")
    ap.add_argument("--chain", type=int, default=5_000, help="length of the generated needs chain")
    ap.add_argument("--repeat", type=int, default=3, help="timings per figure; the best is shown")
    ns = ap.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{cpu_name()}, {os.cpu_count()} cores, load average {load:.1f}, Python {platform.python_version()}")
    wall, cpu, runs = best_of(sweep_plan(ns.runs), ns.repeat)
    print(f"load_plan, {runs:,}-run sweep: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"({1000 * cpu / runs:.2f} ms CPU a run)")
    wall, cpu, runs = best_of(chain_plan(ns.chain), ns.repeat)
    print(f"load_plan, {runs:,}-long needs chain: {wall:.2f} s wall, {cpu:.2f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Each run's estimate against its measured time, for a plan that has run on this machine.

    python scripts/estimate_check.py quick [--outputs outputs]

The estimates are the ones `simpleclr plan run` prints before a plan starts: timed now on this
machine, as if no run had finished (finished runs would set the rate from themselves). The
measured time is each run's notebook time recorded in the plan's manifest (plan.json). Run it on
an idle machine: the estimate times a training step now. Prints a Markdown table and the totals.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from simpleclr.runs.watch import fmt_seconds  # noqa: E402
from simpleclr.study.estimate import Estimator  # noqa: E402
from simpleclr.study.planfile import load_plan  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", help="plan name or YAML file")
    ap.add_argument("--outputs", default="outputs", help="folder holding the plan's run folders")
    ns = ap.parse_args(argv)
    plan = load_plan(ns.plan, ns.outputs)
    manifest = json.loads((plan.outputs / "plan.json").read_text())["runs"]
    with tempfile.TemporaryDirectory() as empty:
        est = Estimator(Path(empty))  # no finished run: the rate is timed now, as before a first run
        print("| run | stage | estimate | measured | measured / estimate |\n| --- | --- | --- | --- | --- |")
        total_est = total_meas = 0.0
        for name, spec in plan.runs.items():
            state = manifest.get(name) or {}
            if state.get("state") != "done" or state.get("reused"):
                continue
            fresh = dataclasses.replace(spec, path=Path(empty) / name)  # no metrics: nothing done yet
            seconds, _ = est.seconds(fresh)
            measured = float(state["seconds"])
            total_est, total_meas = total_est + (seconds or 0.0), total_meas + measured
            ratio = f"{measured / seconds:.2f}" if seconds else "—"
            print(f"| {name} | {spec.config.stage} | {fmt_seconds(seconds) if seconds else '—'} | "
                  f"{fmt_seconds(measured)} | {ratio} |")
        print(f"| **total** | | {fmt_seconds(total_est)} | {fmt_seconds(total_meas)} | "
              f"{total_meas / max(total_est, 1e-9):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

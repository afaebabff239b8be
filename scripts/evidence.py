"""Write a plan's evidence record (markdown) from its run folders: no number is typed by hand.

    python scripts/evidence.py outputs/recipe > docs/evidence-recipe.md

For each probe (and supervised run tested on CIFAR-100): the encoder's pretraining recipe,
CIFAR-100 top-1/top-5 with 95% Wilson intervals
over the test images, and whether it clears the random encoder's interval; for every run: wall
time, commit, CPU, precision, so each figure traces back to the run that produced it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from simpleclr import stats

RECIPE_KEYS = ("lr", "weight_decay", "jitter_strength", "temperature", "batch_size", "steps",
               "image_size")


def _read(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def runs(plan_dir: Path) -> dict[str, dict]:
    """Finished runs of a plan folder: name -> {config.json, result.json}."""
    out = {}
    for cfg_path in sorted(plan_dir.glob("*/config.json")):
        cfg, res = _read(cfg_path), _read(cfg_path.parent / "result.json")
        if cfg and res:
            out[cfg_path.parent.name] = {"cfg": cfg, "res": res}
    return out


def _encoder_run(run: dict, found: dict[str, dict]) -> Optional[str]:
    enc = str(run["cfg"]["config"].get("encoder") or "")
    name = Path(enc).name
    return name if name in found and found[name]["cfg"]["stage"] == "pretrain" else None


def record(plan_dir: Path) -> str:
    found = runs(plan_dir)
    probes = {n: r for n, r in found.items() if r["cfg"]["stage"] == "linear_eval"
              or (r["cfg"]["stage"] == "supervised" and "top1" in r["res"])}
    random = next((r for r in probes.values() if r["cfg"]["config"].get("encoder") == "random"), None)
    floor = stats.wilson(random["res"]["top1"], random["res"]["n_test"]) if random else None
    lines = [f"# Evidence: `{plan_dir.name}`", "",
             f"Written by `python scripts/evidence.py {plan_dir}` from the run folders.", "",
             "| row | encoder's recipe (" + ", ".join(RECIPE_KEYS) + ") | top-1 % [95%] | "
             "top-5 % [95%] | vs random | labelled | kNN top-1 % | final NT-Xent |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in probes.items():
        res = r["res"]
        t1, t5 = stats.wilson(res["top1"], res["n_test"]), stats.wilson(res["top5"], res["n_test"])
        pre = _encoder_run(r, found)
        recipe, knn, loss = "random init", "", ""
        if r["cfg"]["stage"] == "supervised":
            c = r["cfg"]["config"]
            recipe = (f"supervised {'fine-tuning' if c.get('init') else 'from scratch'}, "
                      f"{c.get('epochs')} epochs, lr {c.get('lr')}, batch {c.get('batch_size')}")
        elif pre:
            c = found[pre]["cfg"]["config"]
            recipe = ", ".join(f"{c.get(k)}" for k in RECIPE_KEYS)
            knn = f"{found[pre]['res'].get('knn_top1', float('nan')):.1f}"
            loss = f"{found[pre]['res'].get('final_loss', float('nan')):.3f}"
        versus = "" if floor is None or r is random else stats.compare(t1, floor)
        lines.append(f"| {name} | {recipe} | {t1.text()} | {t5.text()} | {versus} | "
                     f"{res.get('n_labelled', res.get('n_train'))} | {knn} | {loss} |")
    lines += ["", "| run | stage | wall time | commit | CPU (threads) | precision | started |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in found.items():
        prov = r["cfg"].get("provenance") or {}
        hw = prov.get("hardware") or {}
        runtime = r["res"].get("runtime") or {}
        commit = str(prov.get("git_commit"))
        dirty = "+dirty" if "dirty" in commit else ""
        lines.append(f"| {name} | {r['cfg']['stage']} | {r['res'].get('wall_time_s', 0) / 60:.1f} min | "
                     f"{commit[:8]}{dirty} | {hw.get('cpu')} ({hw.get('torch_threads')}) | "
                     f"{runtime.get('precision', r['cfg']['config'].get('precision'))} | "
                     f"{prov.get('started_at')} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("plan_dir", type=Path, help="a plan's output folder, e.g. outputs/recipe")
    ns = p.parse_args(argv)
    if not ns.plan_dir.is_dir():
        print(f"evidence: {ns.plan_dir} is not a folder: run the plan first "
              f"(simpleclr plan run {ns.plan_dir.name})", file=sys.stderr)
        return 2
    sys.stdout.write(record(ns.plan_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark measures what it says on the objects the trainer builds (figures are never
asserted: speed is judged from its printed ratios, not from a timed test)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from simpleclr.study import bench
from simpleclr import cli


@pytest.mark.slow
def test_bench_reports_every_case_with_its_ratios(capsys):
    rc = cli.main(["bench", "--full", "--batch-size", "8", "--image-size", "16", "--repeats", "1",
                   "--steps", "1", "--warmup", "1", "--json"])  # 16 px: a quarter of 32 px's work
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == set(bench.CASES)
    for case in out["results"].values():
        assert case["images_per_s"] > 0 and case["ms_per_step"] > 0
    ms = out["results"]["model_step"]
    assert abs(ms["views_per_s"] - 2 * ms["images_per_s"]) < 1e-6 * ms["views_per_s"]
    assert set(out["ratios"]) == {"simclr_step / model_step", "features / model_step views",
                                  *(f"{c} / simclr_step" for c in bench.METHOD_CASES)}
    assert out["batch_size"] == 8 and out["image_size"] == 16 and out["peak_memory_mb"] > 0
    assert out["precision"] in ("bf16", "fp32")


def test_bench_table_names_the_unit_and_the_numerics():
    out = bench.run_bench(bench.Setup(batch_size=4), repeats=1, steps=1, warmup=0, only=["augment"])
    table = bench.format_table(out)
    assert "augment" in table and "two views" in table and out["precision"] in table


def test_width_builds_the_benchmarked_encoder_at_that_width_and_is_recorded():
    """--width 32 times the half-width encoder the CPU plans train: its stem has 32 channels."""
    ns = _ns("--width", "32")
    assert ns.width == 32
    inp = bench.make_inputs(bench.Setup(batch_size=4, width=ns.width))
    parts = bench.simclr_parts(inp, "byol")
    assert parts.model.encoder.conv1.out_channels == 32 and inp.cfg.width == 32
    out = bench.run_bench(bench.Setup(batch_size=4, width=32), repeats=1, steps=1, warmup=0, only=["augment"])
    assert out["width"] == 32 and "width 32" in bench.format_table(out)


def _ns(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


def test_the_default_is_the_quick_profile_and_full_is_exhaustive():
    assert bench.resolve_options(_ns()) == bench.PROFILES["quick"]
    assert bench.resolve_options(_ns("--full")) == bench.PROFILES["full"]
    assert set(bench.PROFILES["full"]["only"]) == set(bench.CASES)
    quick = bench.PROFILES["quick"]
    assert set(quick["only"]) < set(bench.CASES) and quick["repeats"] * quick["steps"] <= 3
    # an option given wins over either profile
    opts = bench.resolve_options(_ns("--full", "--batch-size", "8", "--only", "augment"))
    assert opts["batch_size"] == 8 and opts["only"] == ["augment"] and opts["repeats"] == 5


def test_json_output_is_one_object_and_nothing_else_on_stdout():
    cmd = [sys.executable, "-m", "simpleclr", "bench", "--batch-size", "4", "--repeats", "1",
           "--steps", "1", "--warmup", "0", "--only", "augment", "--image-size", "16", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(done.stdout)  # the whole of stdout parses
    assert out["profile"] == "quick" and out["image_size"] == 16 and set(out["results"]) == {"augment"}


def test_every_method_has_its_case_on_the_trainers_own_parts():
    """One case per method (besides simclr_step): the method's module as the stage builds it."""
    assert bench.METHOD_CASES == ("mocov2_step", "byol_step", "simsiam_step", "barlow_step", "vicreg_step")
    inp = bench.make_inputs(bench.Setup(batch_size=4, image_size=8, precision="fp32"))
    for case in bench.METHOD_CASES:
        parts = bench.simclr_parts(inp, case.removesuffix("_step"))
        assert parts.model.name == case.removesuffix("_step")
        assert parts.model.augment.size == 8 and inp.cfg.batch_size == 4

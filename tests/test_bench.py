"""The benchmark measures what it says on the objects the trainer builds (figures are never
asserted: speed is judged from its printed ratios, not from a timed test)."""
from __future__ import annotations

import json

from simpleclr import bench, cli


def test_bench_reports_every_case_with_its_ratios(capsys):
    rc = cli.main(["bench", "--batch-size", "8", "--repeats", "1", "--steps", "1", "--warmup", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["results"]) == set(bench.CASES)
    for case in out["results"].values():
        assert case["images_per_s"] > 0 and case["ms_per_step"] > 0
    ms = out["results"]["model_step"]
    assert abs(ms["views_per_s"] - 2 * ms["images_per_s"]) < 1e-6 * ms["views_per_s"]
    assert set(out["ratios"]) == {"simclr_step / model_step", "features / model_step views"}
    assert out["batch_size"] == 8 and out["image_size"] == 32 and out["peak_memory_mb"] > 0
    assert out["precision"] in ("bf16", "fp32")


def test_bench_table_names_the_unit_and_the_numerics():
    out = bench.run_bench(batch_size=4, repeats=1, steps=1, warmup=0, only=["augment"])
    table = bench.format_table(out)
    assert "augment" in table and "two views" in table and out["precision"] in table

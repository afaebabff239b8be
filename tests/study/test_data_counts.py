"""A dataset whose image counts are not the official ones (a re-packed subset accepted by its
checksum) stops a plan before its first run, unless the plan or the environment declares it
partial; every run records the counts it read, and the report states them and flags the set."""
from __future__ import annotations

import textwrap

import pytest

from helpers.standins import CIFAR_TEST, CIFAR_TRAIN, TINY_TRAIN, TINY_VAL, write_official_standins
from simpleclr import data
from simpleclr.study import plans

PLAN = """
name: t
defaults:
  all: {accept_checksum: "{env.SIMPLECLR_ACCEPT_CHECKSUM}", progress: false}
runs:
  - name: pre
    notebook: pretrain
    params: {dataset: tiny-imagenet, epochs: 1, warmup_epochs: 0, batch_size: 32, image_size: 16}
"""


@pytest.fixture(scope="module")
def wrong_size(tmp_path_factory):
    """Generated stand-ins of both official archives, in their formats, far smaller than the real
    sets (CIFAR-100 15,000 / 1,000, Tiny ImageNet 6,000 / 1,000)."""
    root = tmp_path_factory.mktemp("wrong-size")
    return root, ",".join(write_official_standins(root))


@pytest.fixture
def env(wrong_size, monkeypatch):
    root, sums = wrong_size
    monkeypatch.setenv("SIMPLECLR_DATA", str(root))
    monkeypatch.setenv("SIMPLECLR_ACCEPT_CHECKSUM", sums)
    monkeypatch.delenv(data.PARTIAL_ENV, raising=False)
    return root, sums


def _plan(tmp_path, extra: str = ""):
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(extra + PLAN))
    return path


def test_a_wrong_size_archive_stops_the_plan_with_one_line_before_any_run(env, tmp_path, monkeypatch):
    monkeypatch.setattr(plans, "execute_notebook", lambda *a, **k: pytest.fail("ran a notebook"))
    with pytest.raises(plans.PlanError) as e:
        plans.run_plan(_plan(tmp_path), outputs=tmp_path / "out", report_dir=tmp_path / "r")
    msg = str(e.value)
    assert msg.startswith(f"tiny-imagenet holds {200 * TINY_TRAIN:,} train / {200 * TINY_VAL:,} test images, "
                          "not the official 100,000 / 10,000")
    assert "partial_data: [tiny-imagenet]" in msg and f"{data.PARTIAL_ENV}=tiny-imagenet" in msg
    assert "\n" not in msg and not (tmp_path / "out" / "t" / "pre").exists()


@pytest.mark.parametrize("how", ["plan", "env", "env-all"])
def test_a_declared_partial_set_passes_the_check(env, tmp_path, monkeypatch, how):
    extra = "partial_data: [tiny-imagenet]\n" if how == "plan" else ""
    if how != "plan":
        monkeypatch.setenv(data.PARTIAL_ENV, "cifar100, tiny-imagenet" if how == "env" else "*")
    p = plans.load_plan(_plan(tmp_path, extra), tmp_path / "out")
    plans.check_data(p, list(p.runs))  # no stop
    assert p.partial_data == (("tiny-imagenet",) if how == "plan" else ())


def test_bad_partial_data_is_one_line(tmp_path):
    with pytest.raises(plans.PlanError, match="partial_data must be a list of dataset names"):
        plans.load_plan(_plan(tmp_path, "partial_data: tiny-imagenet\n"), tmp_path / "out")


def test_each_split_records_the_counts_it_was_read_with(env):
    root, sums = env
    split = data.load_split("cifar100", "test", root=root, accept_checksum=sums)
    assert split.provenance["image_counts"] == {"train": 100 * CIFAR_TRAIN, "test": 100 * CIFAR_TEST}
    assert split.provenance["official_counts"] == {"train": 50000, "test": 10000}
    assert split.provenance["partial"] is True
    generated = data.load_split("synthetic-cifar100:train=2,test=2", root=root)
    assert generated.provenance["partial"] is False and generated.provenance["official_counts"] is None
    assert data.count_problem("cifar100", {"train": 50000, "test": 10000}) is None
    assert data.count_problem("tiny-imagenet", {"train": 100000, "val": 10000}) is None


def test_the_report_states_the_counts_and_flags_a_partial_set(tmp_path):
    from helpers.studyfolders import build_study
    from simpleclr.report import prose as rp

    study = rp.load_study(build_study(tmp_path).outputs)
    run = study.runs["tr-pre"]
    run.config_json["data"] = {"name": "tiny-imagenet", "source": "accepted-unofficial", "sha256": "ef" * 32,
                               "image_counts": {"train": 20000, "test": 2000},
                               "official_counts": {"train": 100000, "test": 10000}, "partial": True}
    study.runs = {"tr-pre": run, **{k: v for k, v in study.runs.items() if k != "tr-pre"}}
    flagged = [w for w in rp.warnings(study) if "partial set" in w]
    assert flagged == ["<b>tiny-imagenet</b> is a <b>partial set</b>: the runs read 20,000 train / 2,000 test "
                       "images, where the official set has 100,000 train / 10,000 test images; every row "
                       "trained on it, and the size study's shares of it, had fewer images than the "
                       "published figures'."]
    assert ("tiny-imagenet (accepted-unofficial; 20,000 train / 2,000 test images, a PARTIAL set (official: "
            "100,000 train / 10,000 test images))") in rp.protocol(study)

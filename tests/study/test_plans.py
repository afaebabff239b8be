"""Plan files: parsing, validation (one-line errors before any run), status, estimates, and the
run loop's skip / fail / keep-going behaviour with the notebook execution replaced by a fake."""
from __future__ import annotations

import json
import os
import signal
import time
import socket

import pytest

from simpleclr.study import estimate, plans
from simpleclr.report import model as study
from simpleclr.config import LinearEvalConfig, PretrainConfig, SupervisedConfig
from simpleclr.runs.rundir import RunDir

from helpers.studyfolders import finish, write_plan

BASE = """
name: t
defaults:
  all: {dataset: "synthetic-cifar100:train=2,test=2"}
  pretrain: {epochs: 2, warmup_epochs: 0}
runs:
  - name: pre
    notebook: pretrain
  - name: probe
    notebook: linear_eval
    params: {encoder: "{runs.pre}"}
    report: {row: selfsuper}
"""


def load(tmp_path, text, **kw):
    return plans.load_plan(write_plan(tmp_path, text), tmp_path / "out", **kw)


def test_references_become_run_folders_and_needs(tmp_path):
    p = load(tmp_path, BASE)
    assert list(p.runs) == ["pre", "probe"]
    probe = p.runs["probe"]
    assert probe.needs == ("pre",)
    assert probe.config.encoder == str(tmp_path / "out" / "t" / "pre")
    assert probe.path == tmp_path / "out" / "t" / "probe"
    assert probe.params["out_dir"] == str(probe.path)
    # the notebook gets every field, so its own defaults never decide the fingerprint
    assert set(probe.params) == {f for f in LinearEvalConfig().to_dict()} | {"out_dir"}
    assert LinearEvalConfig.from_dict({k: v for k, v in probe.params.items() if k != "out_dir"}
                                      ).fingerprint() == probe.config.fingerprint()
    # defaults: "all" lands in every stage, a stage section only in its own
    assert p.runs["pre"].config.epochs == 2 and PretrainConfig().epochs != 2
    assert probe.config.weight_decays == LinearEvalConfig().weight_decays


def test_matrix_expands_with_typed_values_and_paired_references(tmp_path):
    p = load(tmp_path, BASE + """
  - name: hp-t{temperature}-s{seed}
    matrix: {temperature: [0.2, 0.5], seed: [0, 1]}
    notebook: pretrain
    params: {temperature: "{temperature}", seed: "{seed}"}
  - name: hp-probe-t{temperature}-s{seed}
    matrix: {temperature: [0.2, 0.5], seed: [0, 1]}
    notebook: linear_eval
    params: {encoder: "{runs.hp-t{temperature}-s{seed}}"}
    report: {hparam: [temperature]}
""")
    names = [n for n in p.runs if n.startswith("hp-t")]
    assert names == ["hp-t0.2-s0", "hp-t0.2-s1", "hp-t0.5-s0", "hp-t0.5-s1"]
    assert p.runs["hp-t0.5-s1"].config.temperature == 0.5 and p.runs["hp-t0.5-s1"].config.seed == 1
    assert p.runs["hp-probe-t0.2-s1"].needs == ("hp-t0.2-s1",)


def test_env_reference_is_none_when_unset(tmp_path, monkeypatch):
    text = BASE.replace('all: {dataset: "synthetic-cifar100:train=2,test=2"}',
                        'all: {dataset: "synthetic-cifar100:train=2,test=2", accept_checksum: "{env.T_SUM}"}')
    monkeypatch.delenv("T_SUM", raising=False)
    assert load(tmp_path, text).runs["pre"].config.accept_checksum is None
    monkeypatch.setenv("T_SUM", "any")
    assert load(tmp_path, text).runs["probe"].config.accept_checksum == "any"


def test_order_puts_needs_first(tmp_path):
    p = load(tmp_path, """
runs:
  - {name: probe, notebook: linear_eval, params: {encoder: "{runs.pre}"}}
  - {name: pre, notebook: pretrain, params: {epochs: 1, warmup_epochs: 0}}
""")
    assert list(p.runs) == ["pre", "probe"]
    assert p.closure(["probe"]) == ["pre", "probe"]


def test_launch_key_becomes_the_stage_launcher_outside_the_fingerprint(tmp_path):
    p = load(tmp_path, """
runs:
  - {name: pre, notebook: pretrain, launch: "torchrun --nproc-per-node 8"}
  - {name: solo, notebook: pretrain}
""")
    pre, solo = p.runs["pre"], p.runs["solo"]
    assert pre.params["launcher"] == "torchrun --nproc-per-node 8"  # what the notebook receives
    assert solo.params["launcher"] is None  # no launcher: the notebook's own process
    assert pre.config.fingerprint() == solo.config.fingerprint()  # the same run, run faster


@pytest.mark.parametrize("text, message", [
    ("runs:\n  - {name: a, notebook: train}\n",
     "unknown notebook 'train'; use one of pretrain, supervised, linear_eval"),
    ("runs:\n  - {name: a, notebook: linear_eval, needs: [b]}\n", "needs 'b', which the plan does not define"),
    ("runs:\n  - {name: a, notebook: linear_eval, params: {encoder: '{runs.b}'}}\n",
     "needs 'b', which the plan does not define"),
    ("runs:\n  - {name: a, notebook: linear_eval, needs: [b]}\n  - {name: b, notebook: linear_eval, needs: [c]}\n"
     "  - {name: c, notebook: linear_eval, needs: [a]}\n", "cycle: a -> b -> c -> a"),
    ("runs:\n  - {name: a, notebook: linear_eval, params: {encoder: '{run.b}'}}\n", "unknown reference {run.b}"),
    ("runs:\n  - {name: a, notebook: linear_eval, params: {encoder: '{standin.imagenet_weights}'}}\n",
     "stand-in the plan does not list"),
    ("runs:\n  - {name: a, notebook: pretrain, params: {temperature: 50.0}}\n",
     "PretrainConfig.temperature=50.0 is invalid"),
    ("runs:\n  - {name: a, notebook: pretrain, params: {temprature: 0.1}}\n", "has no field temprature"),
    ("runs:\n  - {name: a, notebook: linear_eval}\n  - {name: a, notebook: linear_eval}\n", "used twice"),
    ("runs:\n  - {name: a, notebook: linear_eval, report: {row: best}}\n", "not a main-table row"),
    ("runs:\n  - {name: a, notebook: pretrain, report: {row: selfsuper}}\n", "needs a linear_eval or supervised run"),
    ("runs:\n  - {name: a, notebook: linear_eval, matrix: {seed: [0, 1]}}\n", "must contain {seed}"),
    ("runs:\n  - {name: a, notebook: linear_eval, colour: red}\n", "unknown key 'colour'"),
    ("runs: []\n", "non-empty list"),
    ("runs:\n  - {name: a, notebook: pretrain, launch: ''}\n", "launch must be a command"),
    ("runs:\n  - {name: a, notebook: linear_eval\n", "not valid YAML"),
    ("defaults: {all: {tempreature: 1}}\nruns:\n  - {name: a, notebook: linear_eval}\n", "a field of no stage"),
    ("report: {tsne_pionts: 5}\nruns:\n  - {name: a, notebook: linear_eval}\n", "report has unknown parameter"),
    ("runs:\n  - {name: a, notebook: linear_eval, needs: {b: 1}}\n", "needs must be a run name or a list"),
    ("runs:\n  - {name: a, notebook: linear_eval, needs: ab}\n", "needs 'ab', which the plan does not define"),
    ("runs:\n  - {name: a, notebook: pretrain, params: {lr: .nan}}\n", "PretrainConfig.lr=nan is invalid"),
])
def test_bad_plans_fail_with_one_line(tmp_path, text, message):
    with pytest.raises(plans.PlanError) as e:
        load(tmp_path, text)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_needs_as_one_string_is_one_name_and_exponents_are_numbers(tmp_path):
    p = load(tmp_path, """
runs:
  - {name: pre, notebook: pretrain, params: {lr: 1e-3, weight_decay: 1E-5}}
  - {name: probe, notebook: linear_eval, needs: pre}
""")
    assert p.runs["probe"].needs == ("pre",)
    assert p.runs["pre"].config.lr == 0.001 and p.runs["pre"].config.weight_decay == 1e-5


def test_unknown_plan_name_lists_the_known_ones():
    with pytest.raises(plans.PlanError, match="use one of .*quick.*smoke"):
        plans.load_plan("no-such-plan")


@pytest.mark.parametrize("name", ["smoke", "quick", "standard", "full"])
def test_shipped_plans_load_and_fill_every_report_section(name, tmp_path):
    p = plans.load_plan(name, tmp_path)
    roles = [(k, v) for s in p.runs.values() for k, v in s.report.items()]
    rows = {v for k, v in roles if k == "row"}
    assert rows == set(study.ROW_NAMES)
    kinds = {k for k, _ in roles}
    assert {"size_study", "hparam", "features"} <= kinds
    if name not in ("quick", "standard"):  # they leave fine-tuning and label efficiency to full, for time
        assert {"finetune", "label_efficiency"} <= kinds
    # size study: nested subsets of one dataset, trained for the same number of steps; another
    # dataset only as a whole, with as many images as one of the subsets (domain against size)
    pre = [p.runs[s.needs[0]] for s in p.runs.values() if "size_study" in s.report]
    sets = [c.config.dataset for c in pre]
    study_set = max(set(sets), key=sets.count)
    nested = [c for c in pre if c.config.dataset == study_set]
    # (quick: three points, 1%, 10% and 100%; the others three or more)
    assert len({c.config.subset_fraction for c in nested}) >= 3
    assert len({c.config.steps for c in pre}) == 1 and pre[0].config.steps
    assert len({c.config.subset_seed for c in nested}) == 1
    n_study = estimate.dataset_sizes(study_set)
    for other in (c for c in pre if c.config.dataset != study_set):
        assert other.config.subset_fraction == 1.0 and n_study is not None
        n_other = estimate.dataset_sizes(other.config.dataset)[0]
        assert any(n_other == n_study[0] * c.config.subset_fraction for c in nested), other.name
    if name == "full":
        assert sorted(set(sets)) == ["cifar100", "tiny-imagenet"]
    # label efficiency at 1% / 10% (plus 100% from the rows) on the real plans
    fracs = {s.config.label_fraction if s.notebook == "linear_eval" else s.config.subset_fraction
             for s in p.runs.values() if "label_efficiency" in s.report}
    if name == "full":
        assert {0.01, 0.1} <= fracs
    imagenet = [s for s in p.runs.values() if s.report.get("row") == "imagenet-super"]
    if name == "smoke":
        assert all("standin" in s.config.encoder for s in imagenet)
    else:  # the real weights, never a stand-in
        assert not p.standins and all(s.config.encoder == "imagenet" for s in imagenet)
    if name == "full":
        seeds = {s.config.seed for s in p.runs.values() if s.report.get("row") == "selfsuper"}
        assert len(seeds) >= 3


@pytest.mark.parametrize("name", ["methods-quick", "methods"])
def test_the_methods_plans_give_every_method_its_recipe_and_one_budget(name, tmp_path):
    """Six methods, each at its recipe (no recipe field overridden but the plan's batch where it
    sets one for all), the same images through the encoder per row, every pretraining probed, the
    random floor and super beside them; the GPU plan adds three seeds and the transfer from Tiny
    ImageNet."""
    from simpleclr.config import METHOD_NAMES, METHOD_RECIPES

    p = plans.load_plan(name, tmp_path)
    pre = [s for s in p.runs.values() if s.notebook == "pretrain"]
    assert {s.config.method for s in pre} == set(METHOD_NAMES)
    for s in pre:
        recipe = {k: v for k, v in METHOD_RECIPES[s.config.method].items() if k not in ("batch_size", "warmup_epochs")}
        assert {k: getattr(s.config, k) for k in recipe} == recipe, s.name
    images = {(s.config.dataset, s.config.steps * s.config.batch_size) for s in pre}
    assert len({n for _, n in images}) == 1  # one budget for every row
    probed = {s.config.encoder for s in p.runs.values() if s.notebook == "linear_eval"}
    assert {str(s.path) for s in pre} <= probed
    rows = {s.report.get("row") for s in p.runs.values()}
    assert {"random", "super"} <= rows
    if name == "methods":
        assert {d for d, _ in images} == {"cifar100", "tiny-imagenet"}
        seeds = {s.config.seed for s in pre if s.config.dataset == "cifar100"}
        assert len(seeds) >= 3


def fp(plan, run: str, **change) -> str:
    """The fingerprint of a plan run's config with ``change`` applied: equal configs, equal prints."""
    return plan.runs[run].config.replace(**change).fingerprint()


def test_the_quick_plans_main_rows_are_the_evidence_runs(tmp_path):
    # plans/quick.yaml is sized from docs/evidence.md: its SimCLR pretraining, its supervised row
    # and its random floor must be the configs measured there (same fingerprint), at the half
    # width and the length plans/pilot-width.yaml chose, so a drift in either file fails here.
    quick, recipe, curves, width = (plans.load_plan(n, tmp_path / n)
                                    for n in ("quick", "recipe", "curves", "pilot-width"))

    assert fp(quick, "selfsuper-pretrain") == fp(recipe, "published-pretrain", steps=936, width=32)
    assert fp(quick, "selfsuper-pretrain") == fp(width, "w32-s936-pretrain")
    # the pilot's full-width point is the recipe at the length of the same wall time
    assert fp(width, "w64-s312-pretrain") == fp(recipe, "published-pretrain", steps=312)
    # the probe too, but for the encoder's path (each plan probes its own pretraining run)
    assert fp(quick, "selfsuper", encoder="x") == fp(recipe, "published", encoder="x", width=32)
    assert fp(quick, "selfsuper", encoder="x") == fp(width, "w32-s936", encoder="x")
    # the curves' supervised runs held 10% of their images out; the quick plan's `super` trains on
    # all 5,000 (plans/resolution.yaml's super-px16 is its config at full width and 16 epochs)
    assert fp(quick, "super") == fp(curves, "super-e16", val_fraction=0.0, epochs=48, width=32)
    assert fp(quick, "random") == fp(curves, "random", width=32) == fp(width, "random-w32")


def test_the_quick_plans_transfer_rows_and_16px_runs_are_the_pilot_runs(tmp_path):
    # The transfer rows are sized from plans/curves-tiny.yaml and the 16 px choice from
    # plans/resolution.yaml: the quick plan's configs are theirs, at its own step counts.
    quick, tiny, res = (plans.load_plan(n, tmp_path / n) for n in ("quick", "curves-tiny", "resolution"))

    assert fp(quick, "selfsuper-transfer-pretrain") == fp(tiny, "simclr-s200-pretrain", steps=936, width=32)
    # (epochs: unused beside steps, but part of the fingerprint)
    assert fp(quick, "super-transfer-pretrain") == fp(tiny, "super-s400-pretrain", steps=1872, width=32, epochs=48)
    assert fp(quick, "random") == fp(tiny, "random", width=32) == fp(res, "random-px16", width=32)
    assert fp(quick, "selfsuper-pretrain") == fp(res, "simclr-px16-pretrain", steps=936, width=32)
    assert fp(quick, "super") == fp(res, "super-px16", epochs=48, width=32)
    px32 = res.runs["simclr-px32-pretrain"].config
    assert (px32.image_size, px32.steps) == (32, 50)  # a quarter of the steps at four times the pixels


def test_the_quick_plans_trained_rows_get_equal_compute(tmp_path):
    # Every trained row of the main table passes as many images through its encoder (a SimCLR
    # image's two views count twice; `super` runs whole epochs of its 5,000 labelled images).
    quick = plans.load_plan("quick", tmp_path)
    n_labelled = round(estimate.dataset_sizes("cifar100")[0] * quick.runs["super"].config.subset_fraction)

    def passes(run: str) -> int:
        c = quick.runs[run].config
        steps = c.steps or c.epochs * (n_labelled // c.batch_size)
        return steps * c.batch_size * (2 if quick.runs[run].notebook == "pretrain" else 1)

    trained = ["selfsuper-pretrain", "selfsuper-transfer-pretrain", "super-transfer-pretrain", "super"]
    assert {passes(r) for r in trained} == {239_616}
    # the size study's points train as long as its 100% point, selfsuper-transfer
    assert {passes(r) for r in ("size0.01-pretrain", "size0.1-pretrain")} == {239_616}
    # one width for every trained row and the floor; the ImageNet weights keep theirs
    assert {quick.runs[r].config.width for r in trained + ["random"]} == {32}
    assert quick.runs["imagenet-super"].config.width == 64


@pytest.mark.parametrize("name", ["smoke", "quick", "standard", "full"])
def test_compared_runs_draw_their_labelled_images_alike(name, tmp_path):
    # Rows, fine-tuning and label-curve points are compared at a label share and seed, so each
    # must hand data.labelled_split the same validation share and a label seed equal to its seed.
    p = plans.load_plan(name, tmp_path)
    compared = [s for s in p.runs.values() if {"row", "finetune", "label_efficiency"} & set(s.report)
                and s.config.dataset.startswith(("cifar100", "synthetic-cifar100"))]
    shares: dict[float, set] = {}
    for s in compared:
        c = s.config
        share, label_seed = ((c.label_fraction, c.label_seed) if s.notebook == "linear_eval"
                             else (c.subset_fraction, c.subset_seed))
        assert label_seed == c.seed, s.name
        # and they train on the same images: a probe refits on all its labelled images once its
        # weight decay is chosen, fine-tuning once its lr is; a fixed-schedule run holds none out
        chooses = s.notebook == "linear_eval" or len(set(c.encoder_lr_grid)) > 1
        shares.setdefault(share, set()).add(0.0 if chooses else c.val_fraction)
    assert all(len(v) == 1 for v in shares.values()), shares
    main = {s.config.label_fraction if s.notebook == "linear_eval" else s.config.subset_fraction
            for s in compared if "row" in s.report}
    assert len(main) == 1  # the main table compares every row at one label share
    finetune = [s for s in compared if "finetune" in s.report]
    if name != "quick":  # quick keeps one scale to stay within its time; the others choose
        assert all(len(set(s.config.encoder_lr_grid)) > 1 for s in finetune)


def test_status_and_show(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(estimate.Estimator, "measure", lambda self, *a, **k: (0.01, 5.0))
    p = load(tmp_path, BASE)
    assert p.runs["pre"].status() == "todo"
    RunDir(p.runs["pre"].path).start(p.runs["pre"].config)
    assert p.runs["pre"].status() == "partial"
    finish(p.runs["pre"], {"wall_time_s": 30.0})
    assert p.runs["pre"].status() == "done"
    plans.show_plan(write_plan(tmp_path, BASE), outputs=tmp_path / "out")
    out = capsys.readouterr().out
    assert "pre " in out and " done " in out and " todo " in out
    assert "1 done, 0 partial, 1 todo" in out


def test_stale_folder_stops_the_plan_before_running(tmp_path, monkeypatch):
    p = load(tmp_path, BASE)
    other = p.runs["pre"].config.replace(temperature=0.1)
    RunDir(p.runs["pre"].path).start(other)
    monkeypatch.setattr(plans, "execute_notebook", lambda *a, **k: pytest.fail("ran a notebook"))
    with pytest.raises(plans.PlanError, match="holds a run with another config"):
        plans.run_plan(write_plan(tmp_path, BASE), outputs=tmp_path / "out", report_dir=tmp_path / "r")


def test_missing_data_stops_at_once_and_points_to_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLECLR_DATA", str(tmp_path / "nodata"))
    monkeypatch.setenv("SIMPLECLR_MIRROR", "http://127.0.0.1:9")  # nothing listens there
    text = BASE.replace('"synthetic-cifar100:train=2,test=2"', "cifar100")
    monkeypatch.setattr(plans, "execute_notebook", lambda *a, **k: pytest.fail("ran a notebook"))
    with pytest.raises(plans.PlanError) as e:
        plans.run_plan(write_plan(tmp_path, text), outputs=tmp_path / "out", report_dir=tmp_path / "r")
    msg = str(e.value)
    assert "cifar-100-python.tar.gz" in msg and "SIMPLECLR_MIRROR" in msg
    assert "make report PLAN=smoke" in msg and "\n" not in msg
    assert not (tmp_path / "out" / "t" / "pre").exists()


def test_a_run_whose_batch_outgrows_its_images_stops_the_plan_before_any_run(tmp_path, monkeypatch):
    """The size study's smallest subset is checked from the labels before the first run, not when
    the plan reaches it: nothing is written, and the one line names the run and the others."""
    monkeypatch.setenv("SIMPLECLR_DATA", str(tmp_path / "data"))
    text = BASE.replace("{epochs: 2, warmup_epochs: 0}", "{epochs: 2, warmup_epochs: 0, batch_size: 32}") + """
  - name: small-s{seed}
    matrix: {seed: [0, 1]}
    notebook: pretrain
    params: {subset_fraction: 0.25, batch_size: 128, seed: "{seed}"}
"""
    monkeypatch.setattr(plans, "execute_notebook", lambda *a, **k: pytest.fail("ran a notebook"))
    with pytest.raises(plans.PlanError) as e:
        plans.run_plan(write_plan(tmp_path, text), outputs=tmp_path / "out", report_dir=tmp_path / "r")
    msg = str(e.value)
    # synthetic-cifar100:train=2 is 100 classes x 2 images; the kNN monitor holds one a class out
    # and a quarter of the other rounds up to it (at least one a class): 100 images
    assert "run small-s0 cannot start: PretrainConfig.batch_size=128 is larger than the 100 training images" in msg
    assert "(1 more runs fail this check: small-s1)" in msg and "no run was started" in msg and "\n" not in msg
    assert not (tmp_path / "out" / "t" / "pre").exists()


FOUR = """
name: t
defaults:
  all: {dataset: "synthetic-cifar100:train=2,test=2"}
  pretrain: {epochs: 1, warmup_epochs: 0}
runs:
  - {name: pre, notebook: pretrain}
  - {name: probe, notebook: linear_eval, params: {encoder: "{runs.pre}"}, report: {row: selfsuper}}
  - {name: random, notebook: linear_eval, report: {row: random}}
  - {name: imagenet, notebook: linear_eval, params: {encoder: imagenet}, report: {row: imagenet-super}}
"""


class FakeNotebooks:
    """Stands in for papermill: writes a finished run folder, or fails for the names given."""

    def __init__(self, plan, fail=()):
        self.plan, self.fail, self.calls = plan, set(fail), []

    def __call__(self, name, output, parameters, **kw):
        run = "report" if name == "report" else output.parent.name
        self.calls.append(run)
        output.parent.mkdir(parents=True, exist_ok=True)
        if name == "report":
            output.write_text("{}")
            return
        if run in self.fail:
            output.write_text("{}")
            raise RuntimeError(f"{run} broke")
        finish(self.plan.runs[run], {"top1": 1.0, "top5": 2.0, "wall_time_s": 1.0})


def _run(tmp_path, monkeypatch, fake, text=FOUR, weights=None):
    monkeypatch.setattr(plans, "execute_notebook", fake)
    monkeypatch.setattr(plans, "check_data", lambda plan, names: None)
    monkeypatch.setattr(plans, "check_images", lambda plan, names: None)
    monkeypatch.setattr(plans, "check_imagenet_weights", lambda: weights)
    monkeypatch.setattr(plans, "write_standins", lambda plan: None)
    monkeypatch.setattr("simpleclr.report.figures.export_html", lambda nb, html, title=None: html)
    return plans.run_plan(write_plan(tmp_path, text), outputs=tmp_path / "out", report_dir=tmp_path / "r",
                          progress=False)


def test_failed_run_blocks_only_its_dependents_and_the_report_still_renders(tmp_path, monkeypatch, capsys):
    p = load(tmp_path, FOUR)
    fake = FakeNotebooks(p, fail={"pre"})
    code = _run(tmp_path, monkeypatch, fake)
    assert code == 1
    assert fake.calls == ["pre", "random", "imagenet", "report"]  # probe never started
    out = capsys.readouterr().out
    assert "pre (pretrain): FAILED" in out and "RuntimeError: pre broke" in out
    assert f"executed notebook: {p.runs['pre'].path / 'notebook.ipynb'}" in out
    manifest = json.loads((p.outputs / "plan.json").read_text())
    states = {n: (r["state"], r["reason"]) for n, r in manifest["runs"].items()}
    assert states["pre"] == ("failed", "RuntimeError: pre broke")
    assert states["probe"][0] == "blocked" and "needs pre" in states["probe"][1]
    assert states["random"] == ("done", None)


def test_sigterm_stops_the_plan_as_ctrl_c_does_leaving_the_run_partial(tmp_path, monkeypatch):
    p = load(tmp_path, FOUR)

    class Killed(FakeNotebooks):
        def __call__(self, name, output, parameters, **kw):
            if output.parent.name == "random":  # a scheduler cancels the job during this run
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
                raise AssertionError("SIGTERM did not stop the plan")
            return super().__call__(name, output, parameters, **kw)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        _run(tmp_path, monkeypatch, Killed(p))
    assert signal.getsignal(signal.SIGTERM) == before  # put back for the rest of the process
    states = {n: r["state"] for n, r in json.loads((p.outputs / "plan.json").read_text())["runs"].items()}
    assert states["pre"] == "done" and states["random"] == "partial"


def test_second_run_skips_finished_runs(tmp_path, monkeypatch, capsys):
    p = load(tmp_path, FOUR)
    assert _run(tmp_path, monkeypatch, FakeNotebooks(p)) == 0
    fake = FakeNotebooks(p)
    assert _run(tmp_path, monkeypatch, fake) == 0
    assert fake.calls == ["report"]
    assert capsys.readouterr().out.count("done earlier with the same config, skipped") == 4


def test_unavailable_imagenet_weights_mark_the_row_missing_without_failing(tmp_path, monkeypatch):
    p = load(tmp_path, FOUR)
    fake = FakeNotebooks(p)
    code = _run(tmp_path, monkeypatch, fake, weights="ImageNet weights x.pth are not in /cache")
    assert code == 0 and "imagenet" not in fake.calls
    manifest = json.loads((p.outputs / "plan.json").read_text())
    assert manifest["runs"]["imagenet"]["state"] == "unavailable"
    assert "not in /cache" in manifest["runs"]["imagenet"]["reason"]


def test_only_runs_the_named_runs_and_their_needs(tmp_path, monkeypatch):
    p = load(tmp_path, FOUR)
    fake = FakeNotebooks(p)
    monkeypatch.setattr(plans, "execute_notebook", fake)
    monkeypatch.setattr(plans, "check_data", lambda plan, names: None)
    monkeypatch.setattr(plans, "check_images", lambda plan, names: None)
    monkeypatch.setattr("simpleclr.report.figures.export_html", lambda nb, html, title=None: html)
    assert plans.run_plan(write_plan(tmp_path, FOUR), outputs=tmp_path / "out", report_dir=tmp_path / "r",
                          only=["probe"], progress=False) == 0
    assert fake.calls == ["pre", "probe", "report"]


def test_work_units_follow_the_config():
    cfg = PretrainConfig(dataset="cifar100", steps=100, batch_size=256).to_dict()
    assert estimate.work_units("pretrain", cfg) == 100 * 256  # images: the SimCLR step's rate holds both views
    assert estimate.work_text("pretrain", cfg) == "25,600 images x 2 views at 32 px"
    cfg = PretrainConfig(dataset="cifar100", epochs=2, val_fraction=0.1, subset_fraction=0.5,
                         image_size=16, warmup_epochs=0).to_dict()
    assert estimate.work_units("pretrain", cfg) == pytest.approx(2 * 50000 * 0.5 * 0.9 / 4)
    assert estimate.work_text("pretrain", cfg) == "45,000 images x 2 views at 16 px"
    cfg = LinearEvalConfig(dataset="cifar100", label_fraction=0.1).to_dict()
    assert estimate.work_units("linear_eval", cfg) == pytest.approx((5000 + 10000) / 3)
    cfg = LinearEvalConfig(dataset="cifar100", encoder="imagenet", image_size=128).to_dict()
    assert estimate.work_units("linear_eval", cfg) == pytest.approx(60000 / 3)  # its stem: 4x down
    # supervised: 5,000 labelled images, 4,500 trained on and 500 validated each epoch
    cfg = SupervisedConfig(dataset="cifar100", subset_fraction=0.1, epochs=2, warmup_epochs=0).to_dict()
    epoch = 4500 + 500 / 3
    assert estimate.work_units("supervised", cfg) == pytest.approx(2 * epoch + 10000 / 3)
    assert estimate.work_text("supervised", cfg).startswith("9,000 training images (2 epochs of 4,500) at 32 px")
    # choosing the encoder lr among 3 values adds 3 trials of trial_epochs (at most epochs) on the
    # 4,500, then the run refits on all 5,000 with none held out
    tuned = SupervisedConfig(dataset="cifar100", subset_fraction=0.1, epochs=2, warmup_epochs=0,
                             init="runs/pre", encoder_lr_grid=(0.1, 0.3, 1.0), trial_epochs=1).to_dict()
    assert estimate.work_units("supervised", tuned) == pytest.approx(3 * epoch + 2 * 5000 + 10000 / 3)
    one = {**tuned, "encoder_lr_grid": [0.3], "trial_epochs": 5}  # one value: no trials
    assert estimate.work_units("supervised", one) == pytest.approx(2 * epoch + 10000 / 3)


def test_estimates_come_from_recorded_runs_on_this_machine(tmp_path):
    p = load(tmp_path, BASE + """
  - name: pre2
    notebook: pretrain
    params: {epochs: 4, warmup_epochs: 0}
""")
    finish(p.runs["pre"], {"wall_time_s": 100.0}, data={"n_train": 180})
    est = estimate.Estimator(tmp_path / "out")
    assert est.finished and est.finished[0]["sizes"] == (200, 0)  # 180 / (1 - 0.1 val)
    # the same config: its recorded time (plus notebook start-up)
    again = plans.RunSpec("x", "pretrain", p.runs["pre"].config, tmp_path / "elsewhere")
    sec, basis = est.seconds(again)
    assert sec == pytest.approx(100.0 + estimate.NOTEBOOK_OVERHEAD_S) and "same config" in basis
    # twice the epochs at the recorded rate: twice the time
    sec, basis = est.seconds(p.runs["pre2"])
    units = estimate.work_units("pretrain", p.runs["pre2"].config.to_dict())
    rate = 100.0 / estimate.work_units("pretrain", p.runs["pre"].config.to_dict(), (200, 0))
    assert sec == pytest.approx(estimate.NOTEBOOK_OVERHEAD_S + units * rate)
    assert "fastest of 1 finished pretrain run" in basis
    # a run measured under load is slower: the fastest rate is used, not the median
    finish(p.runs["pre2"], {"wall_time_s": 900.0}, data={"n_train": 180})
    slow_too = plans.RunSpec("y", "pretrain", p.runs["pre2"].config.replace(epochs=8), tmp_path / "y")
    sec, basis = estimate.Estimator(tmp_path / "out").seconds(slow_too)
    units8 = estimate.work_units("pretrain", slow_too.config.to_dict())
    assert sec == pytest.approx(estimate.NOTEBOOK_OVERHEAD_S + units8 * rate)
    assert "fastest of 2 finished pretrain run(s)" in basis
    assert socket.gethostname() == est.host


def test_measure_times_steps_once_per_precision(tmp_path, monkeypatch):
    import torch

    # an encoder with the 512 features bench's supervised step (models.Classifier) expects
    tiny = lambda stem, width=64: torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),  # noqa: E731
                                            torch.nn.Flatten(), torch.nn.Linear(4, 512))
    monkeypatch.setattr("simpleclr.training.parts.models.resnet18_encoder", tiny)
    est = estimate.Estimator(tmp_path)
    per_image, warmup = est.measure("fp32")
    assert 0 < per_image < 1 and warmup >= 0
    monkeypatch.setattr("simpleclr.training.parts.models.resnet18_encoder", lambda *a: pytest.fail("timed twice"))
    assert est.measure("fp32") == (per_image, warmup)


def test_repacked_archive_error_says_how_plans_accept_it(tmp_path, monkeypatch):
    from simpleclr.data import write_synthetic_cifar100

    data = tmp_path / "data"
    data.mkdir()
    write_synthetic_cifar100(data / "cifar-100-python.tar.gz", n_train_per_class=1, n_test_per_class=1)
    monkeypatch.setenv("SIMPLECLR_DATA", str(data))
    monkeypatch.delenv(plans.ACCEPT_ENV, raising=False)
    text = BASE.replace('all: {dataset: "synthetic-cifar100:train=2,test=2"}',
                        'all: {dataset: cifar100, accept_checksum: "{env.SIMPLECLR_ACCEPT_CHECKSUM}"}')
    monkeypatch.setattr(plans, "execute_notebook", lambda *a, **k: pytest.fail("ran a notebook"))
    with pytest.raises(plans.PlanError, match="checksum mismatch .* export SIMPLECLR_ACCEPT_CHECKSUM=<sha256>"):
        plans.run_plan(write_plan(tmp_path, text), outputs=tmp_path / "out", report_dir=tmp_path / "r")


def _finished_then_damaged(tmp_path, monkeypatch, run: str, file: str, text: str):
    """The four-run plan finished, then one file of ``run`` overwritten with ``text``."""
    p = load(tmp_path, FOUR)
    assert _run(tmp_path, monkeypatch, FakeNotebooks(p)) == 0
    damaged = p.runs[run].path / file
    damaged.write_text(text)
    return p, damaged


def test_a_damaged_result_json_marks_its_run_broken_and_the_plan_and_report_go_on(
        tmp_path, monkeypatch, capsys):
    from simpleclr.report import prose as report

    # cut short, as a full disk would leave it
    p, damaged = _finished_then_damaged(tmp_path, monkeypatch, "pre", "result.json", '{"final_loss": 4.0, "wall')
    with pytest.raises(ValueError, match="is damaged"):  # what code tolerating a torn file catches
        RunDir(p.runs["pre"].path).read_result()
    capsys.readouterr()
    monkeypatch.setattr(estimate.Estimator, "measure", lambda self, *a, **k: (0.01, 5.0))
    assert plans.show_plan(write_plan(tmp_path, FOUR), outputs=tmp_path / "out") == 0
    shown = capsys.readouterr().out
    assert "3 done, 0 partial, 0 todo, 1 broken" in shown
    row = next(line for line in shown.splitlines() if line.strip().startswith("pre "))
    assert " broken " in row and f"{damaged} is damaged (not valid JSON" in row

    fake = FakeNotebooks(p)
    assert _run(tmp_path, monkeypatch, fake) == 1  # a broken run is a failure to report ...
    assert fake.calls == ["report"]  # ... but nothing reruns over it, and the report renders
    assert damaged.read_text() == '{"final_loss": 4.0, "wall'  # nothing is lost
    out = capsys.readouterr().out
    assert f"pre (pretrain): BROKEN, not run: {damaged} is damaged" in out
    manifest = json.loads((p.outputs / "plan.json").read_text())
    states = {n: (r["state"], r["reason"]) for n, r in manifest["runs"].items()}
    assert states["pre"][0] == "broken" and "delete it and run again" in states["pre"][1]
    assert "\n" not in states["pre"][1]
    assert states["probe"] == ("done", None)  # finished before: its numbers stay in the report

    study = report.load_study(p.outputs)
    assert study.runs["pre"].state == "broken" and not study.runs["pre"].done
    assert str(damaged) in study.runs["pre"].why_missing
    assert study.runs["pre"].config_json["fingerprint"] == p.runs["pre"].config.fingerprint()
    assert report.main_table(study).loc["selfsuper", "top1"] == 1.0


def test_a_damaged_config_json_is_one_line_for_the_stage_and_broken_for_the_report(
        tmp_path, monkeypatch, capsys):
    from simpleclr import cli
    from simpleclr.report import prose as report

    # valid JSON, but not what a run folder holds
    p, damaged = _finished_then_damaged(tmp_path, monkeypatch, "random", "config.json", "[1, 2]")
    assert cli.main(["linear-eval", "--out", str(p.runs["random"].path), "--dataset",
                     "synthetic-cifar100:train=2,test=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{damaged} is damaged (holds [1, 2] instead of a JSON object)" in err
    assert f"delete the folder {p.runs['random'].path}" in err
    study = report.load_study(p.outputs)
    assert study.runs["random"].state == "broken" and study.runs["random"].config_json is None
    # a long reason: its head in the table, the whole of it (the file's path) in the headline's note
    assert "(missing-run note 1, at the top)" in report.main_table(study).loc["random", "missing"]
    assert str(damaged) in study.missing_notes()[0][0] and study.missing_notes()[0][1] == ["random"]
    (p.outputs / "plan.json").write_text("{")
    with pytest.raises(report.ReportError, match="plan.json is damaged .*run the plan again"):
        report.load_study(p.outputs)

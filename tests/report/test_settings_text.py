"""Every report sentence that states a setting (lr scaling, validation, input size, passes,
steps) is composed from the runs' configs: two plans that differ in those settings get
sentences that differ accordingly."""
from __future__ import annotations

from helpers.studyfolders import STUDY_PLAN, build_study
from simpleclr.report import prose as rp


def _protocol(tmp_path, text: str, imagenet_px: int) -> str:
    tmp_path.mkdir()
    study = rp.load_study(build_study(tmp_path, text).outputs)
    run = study.runs["imagenet"]  # failed in the hand-made study: give it a finished probe's record
    run.result = {"fingerprint": run.fingerprint, "input_size": imagenet_px, "top1": 30.0, "n_test": 200}
    run.config_json = {"config": {**run.config, "image_size": imagenet_px},
                       "data": {"train": {"source": "generated", "image_size": 32}}}
    return rp.protocol(study)


def test_the_protocol_follows_two_plans_settings(tmp_path):
    linear = _protocol(tmp_path / "a", STUDY_PLAN, 128)
    other_plan = (STUDY_PLAN
                  .replace("pretrain: {epochs: 2, warmup_epochs: 0}",
                           "pretrain: {epochs: 2, warmup_epochs: 0, lr_scaling: sqrt, lr: 0.0884}")
                  .replace("  - name: super\n    notebook: supervised\n",
                           "  - name: super\n    notebook: supervised\n    params: {val_fraction: 0.0, steps: 7}\n")
                  .replace("params: {subset_fraction: 0.1}", "params: {subset_fraction: 0.1, val_fraction: 0.0}"))
    sqrt = _protocol(tmp_path / "b", other_plan, 224)

    # lr scaling: the rule each plan's pretraining runs used
    assert "the lr scales linearly with the batch B (lr × B/256" in linear and "√B" not in linear
    assert "the lr scales with the square root of the batch B (lr × √B" in sqrt and "B/256" not in sqrt
    # validation: super holds 10% out in one plan, nothing in the other
    assert "supervised training (`super`, its label curve) holds 10% out, evaluated every epoch" in linear
    assert ("supervised training (`super`, its label curve) trains on all of them, none held out "
            "(val_fraction 0: nothing is chosen on validation)") in sqrt
    # input size: below the protocol's 224 px in one, at it in the other; upsampled from 32 px both
    assert "upsampled from its stored 32 px to 128 px, below the 224 px" in linear
    assert "16× the pixels per image" in linear
    assert ("upsampled from its stored 32 px to 224 px, the size the weights were trained at and the input "
            "of SimCLR's transfer protocol (Appendix B.8); behind the ImageNet stem's 4× downsampling that "
            "leaves a 56×56 grid") in sqrt
    assert "49× the pixels per image" in sqrt and "did not probe them at 224" not in sqrt
    # steps and passes: super's length and its passes from its config, against the SimCLR row's
    assert "super: supervised on synthetic-cifar100:train=2,test=2, 2 epochs, batch 256" in linear
    assert "super: supervised on synthetic-cifar100:train=2,test=2, 7 steps, batch 256, 1,792 encoder passes" in sqrt
    assert "against super's 1,792: selfsuper-transfer 5.7×" in sqrt and "Unequal compute" not in linear

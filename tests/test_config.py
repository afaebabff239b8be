"""Config values and ``--config`` files: every bad input is one ConfigError line before any work."""
from __future__ import annotations

import math
from dataclasses import fields

import pytest

from simpleclr import cli
from simpleclr.config import ConfigError, LinearEvalConfig, PretrainConfig, SupervisedConfig, TrainingConfig
from simpleclr.configio import read_config_file

NON_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("cls, field", [
    (LinearEvalConfig, "weight_decays"), (PretrainConfig, "warmup_epochs"),
    (PretrainConfig, "grad_clip"), (SupervisedConfig, "grad_clip"), (PretrainConfig, "lr"),
    (PretrainConfig, "weight_decay"), (PretrainConfig, "temperature"),
    (SupervisedConfig, "label_smoothing"), (LinearEvalConfig, "label_fraction"),
])
def test_non_finite_values_are_refused_for_every_float_field(cls, field, value):
    given = [0.0, value] if field == "weight_decays" else value
    with pytest.raises(ConfigError) as e:
        cls(**{field: given})
    msg = str(e.value)
    assert "\n" not in msg and f"{cls.__name__}.{field}=" in msg and "finite" in msg


def test_finite_values_still_pass():
    assert PretrainConfig(grad_clip=1.0, warmup_epochs=0).grad_clip == 1.0
    assert LinearEvalConfig(weight_decays=(0, 1e-3)).weight_decays == (0.0, 1e-3)


# The checks of TrainingConfig, one bad value each; the message after the class name is the same
# for both training stages.
TRAINING_CHECKS = [
    ("lr", 0.0, "use a value in (0, 100]"),
    ("lr", 101.0, "use a value in (0, 100]"),
    ("batch_size", 0, "use an integer >= 1"),
    ("epochs", 0, "use an integer >= 1"),
    ("optimizer", "adam", "use one of ('lars', 'sgd', 'adamw')"),
    ("lr_scaling", "cubic", "use one of ('linear', 'sqrt', 'none')"),
    ("weight_decay", 2.0, "use a value in [0, 1]"),
    ("momentum", 1.0, "use a value in [0, 1)"),
    ("warmup_epochs", 101.0, "use a value in [0, epochs=100]"),
    ("grad_clip", 0.0, "use None (off) or a value > 0"),
    ("checkpoint_every", 0, "use an integer >= 1 (epochs)"),
    ("stem", "vit", "use one of ('cifar', 'imagenet')"),
    ("subset_fraction", 0.0, "use a fraction in (0, 1]"),
    ("val_fraction", 1.0, "use a fraction in [0, 1)"),
]


@pytest.mark.parametrize("field, value, allowed", TRAINING_CHECKS,
                         ids=[f"{f}={v!r}" for f, v, _ in TRAINING_CHECKS])
def test_the_training_checks_are_the_same_for_both_training_stages(field, value, allowed):
    said = {}
    for cls in (TrainingConfig, PretrainConfig, SupervisedConfig):
        with pytest.raises(ConfigError) as e:
            cls(**{field: value})
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{cls.__name__}.{field}={value!r} is invalid: ")
        said[cls] = msg.split(" is invalid: ", 1)[1]
    assert said[PretrainConfig] == said[SupervisedConfig] == said[TrainingConfig] == allowed


def test_both_training_stages_are_training_configs_with_their_own_recipe():
    shared = {f.name for f in fields(TrainingConfig)}
    for cls in (PretrainConfig, SupervisedConfig):
        assert issubclass(cls, TrainingConfig)
        names = [f.name for f in fields(cls)]
        assert shared <= set(names) and len(names) == len(set(names))
    assert not issubclass(LinearEvalConfig, TrainingConfig)
    pre, sup = PretrainConfig(), SupervisedConfig()
    assert (pre.batch_size, pre.optimizer, pre.lr, pre.weight_decay, pre.warmup_epochs) == (
        512, "lars", 1.0, 1e-4, 10.0)
    assert (sup.batch_size, sup.optimizer, sup.lr, sup.weight_decay, sup.warmup_epochs) == (
        256, "sgd", 0.1, 5e-4, 5.0)
    # the schedule's length: epochs of steps, unless pretraining fixes the steps (size study)
    assert sup.run_steps(7) == pre.run_steps(7) == 700
    assert PretrainConfig(steps=30).run_steps(7) == 30
    # a stage's own checks still come after the shared ones
    with pytest.raises(ConfigError, match="negatives need two images"):
        PretrainConfig(batch_size=1)


def _cli_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("name, text, says", [
    ("bad.yaml", "lr: [0.1\nepochs: 2\n", "is not valid YAML at line"),
    ("bad.json", '{"lr": 0.1,', "is not valid JSON"),
    ("list.yaml", "- lr\n- 0.1\n", "holds ['lr', 0.1] instead of a mapping"),
    ("scalar.json", "3", "holds 3 instead of a mapping"),
    ("nan.json", '{"lr": NaN}', "PretrainConfig.lr=nan is invalid: use a finite number"),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, name, text, says):
    path = tmp_path / name
    path.write_text(text)
    err = _cli_error(capsys, ["pretrain", "--out", str(tmp_path / "run"), "--config", str(path)])
    assert says in err and (str(path) in err or "PretrainConfig" in says)
    assert not (tmp_path / "run").exists()


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    err = _cli_error(capsys, ["pretrain", "--out", str(tmp_path / "run"), "--config",
                              str(tmp_path / "absent.yaml")])
    assert f"config file {tmp_path / 'absent.yaml'} cannot be read (No such file or directory)" in err


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5E-4\ngrad_clip: 1e+1\nseed: 3\ndataset: 1e3-images\n")
    values = read_config_file(str(path))
    assert values == {"lr": 0.001, "weight_decay": 0.0005, "grad_clip": 10.0, "seed": 3,
                      "dataset": "1e3-images"}
    cfg = SupervisedConfig.from_dict(values)
    assert (cfg.lr, cfg.weight_decay, cfg.grad_clip) == (0.001, 0.0005, 10.0)
    assert read_config_file(None) == {} and read_config_file(str(tmp_path / "cfg.yaml")) == values
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(str(tmp_path / "empty.yaml")) == {}

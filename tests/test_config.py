"""Config values and ``--config`` files: every bad input is one ConfigError line before any work."""
from __future__ import annotations

import math

import pytest

from simpleclr import cli
from simpleclr.config import (ConfigError, LinearEvalConfig, PretrainConfig, SupervisedConfig,
                              read_config_file)

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

"""The stage registry (``config.REGISTRY``) is the one place that names the stages: the CLI's
subcommands, the notebooks in notebooks/, the config classes, the launcher's commands and the plans'
notebooks must all agree with it."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from simpleclr import cli, config, configio
from simpleclr.training import launch
from simpleclr.study import planfile, plans
from simpleclr.config import REGISTRY, STAGES, ConfigError, StageConfig, config_from_dict, get_stage

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
COMMANDS = [(s, c) for s in REGISTRY for c in s.commands]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser(["pretrain"])  # not bench: its options need torch
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_the_cli_runs_exactly_the_registry_commands():
    stage_commands = set(_subcommands()) - {"data", "plan", "bench"}
    assert stage_commands == {c.name for _, c in COMMANDS}
    assert len(COMMANDS) == len(stage_commands)  # no command claimed by two stages


@pytest.mark.parametrize("stage, command", COMMANDS, ids=[c.name for _, c in COMMANDS])
def test_each_subcommand_builds_its_stage_config(stage, command):
    p = _subcommands()[command.name]
    ns = p.parse_args(["--out", "x", "--seed", "3"])
    assert ns.stage is stage and ns.stage_command is command
    options = {a.dest for a in p._actions}
    assert {f.name for f in dataclasses.fields(stage.config)} <= options
    cfg = configio.config_from_args(stage.config, ns)
    assert type(cfg) is stage.config and cfg.seed == 3


def test_the_notebooks_are_the_registry_notebooks_and_the_report():
    present = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
    assert present == {s.notebook for s in REGISTRY} | {plans.REPORT_NOTEBOOK}
    assert planfile.NOTEBOOKS == tuple(s.notebook for s in REGISTRY)
    for s in REGISTRY:
        assert config.notebook_stage(s.notebook) is s
    assert config.notebook_stage(plans.REPORT_NOTEBOOK) is None


def test_every_stage_config_class_has_one_entry():
    # every concrete stage config (one that names its stage; TrainingConfig is a shared base)
    classes = {v for v in vars(config).values()
               if inspect.isclass(v) and issubclass(v, StageConfig) and v is not StageConfig
               and "stage" in v.__dict__}
    assert classes == {s.config for s in REGISTRY}
    assert len(REGISTRY) == len(classes)
    assert STAGES == {s.config.stage: s.config for s in REGISTRY}
    for s in REGISTRY:
        assert s.name == s.config.stage and get_stage(s.name) is s
        assert type(config_from_dict(s.name, {})) is s.config
    with pytest.raises(ConfigError, match="unknown stage 'linear-eval'; use one of pretrain, supervised, linear_eval"):
        config_from_dict("linear-eval", {})


@pytest.mark.parametrize("stage", REGISTRY, ids=[s.name for s in REGISTRY])
def test_each_entry_is_a_function_of_config_and_run_folder(stage):
    module, name = stage.entry.split(":")
    fn = getattr(importlib.import_module(module), name)
    assert callable(fn) and list(inspect.signature(fn).parameters)[:2] == ["cfg", "out_dir"]


@pytest.mark.parametrize("stage, command", COMMANDS, ids=[c.name for _, c in COMMANDS])
def test_the_launcher_names_the_command_the_cli_runs(stage, command):
    cfg = stage.config(**({"init": "imagenet"} if command.needs_init else {}))
    assert launch.stage_command(cfg) == command.name
    assert stage.command_for(cfg) is command

"""Every error the library raises on purpose stands on one base, ``SimpleCLRError``, and whoever
reports or acts on errors decides by their type, never by their text."""
from __future__ import annotations

import importlib
import pkgutil

import pytest

import simpleclr
from simpleclr import cli
from simpleclr.study import plans
from simpleclr.data import ChecksumMismatch, DataError
from simpleclr.errors import SimpleCLRError

from helpers.studyfolders import write_plan


def _error_classes() -> list[type]:
    """Every exception class defined at the top of a module of lib/simpleclr, found by importing
    each module (``__main__`` aside: it runs the CLI), so a new class cannot be missed."""
    found = []
    for info in pkgutil.walk_packages(simpleclr.__path__, "simpleclr."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        module = importlib.import_module(info.name)
        found += [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, BaseException)
                  and v.__module__ == module.__name__ and v is not SimpleCLRError]
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


ERRORS = _error_classes()
# Each class's builtin base, so ``except ValueError`` catches the errors about bad values or files;
# the rest are RuntimeError.
BUILTIN_BASES = {"ConfigError": ValueError, "PlanError": ValueError, "BrokenRun": ValueError,
                 "PredictionsError": ValueError}


def test_the_walk_finds_the_known_error_classes():
    """A walk that found nothing would pass every check below."""
    names = {c.__name__ for c in ERRORS}
    assert {"ConfigError", "DataError", "ChecksumMismatch", "LaunchError", "LockHeld", "ReportError",
            "RunConflict", "CheckpointError", "RunLocked", "TorchFileError", "BrokenRun", "PlanError",
            "WeightsError", "TrainingDiverged"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_class_is_a_simpleclr_error_and_keeps_its_builtin_base(cls):
    assert issubclass(cls, SimpleCLRError), (
        f"{cls.__module__}.{cls.__qualname__} does not derive from simpleclr.errors.SimpleCLRError")
    assert issubclass(cls, BUILTIN_BASES.get(cls.__name__, RuntimeError))


def _instance(cls: type, message: str) -> BaseException:
    """``cls`` holding ``message``, whatever its constructor asks for (a pid, a path, ...)."""
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    return e


def test_a_simpleclr_error_is_one_line():
    assert str(SimpleCLRError("cannot read x:\n  line 1\n\tline 2")) == "cannot read x: line 1 line 2"


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_the_cli_turns_any_library_error_raised_deep_down_into_one_line(cls, tmp_path, capsys, monkeypatch):
    """Raised from inside a real stage (its data loading), the CLI prints one line and exits 2."""
    def fail(*args, **kwargs):
        raise _instance(cls, "something is wrong\n  with the data: do this")

    monkeypatch.setattr("simpleclr.data.load_split", fail)
    code = cli.main(["pretrain", "--out", str(tmp_path / "run"), "--dataset", "synthetic-cifar100",
                     "--device", "cpu", "--progress", "false"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "simpleclr: error: something is wrong with the data: do this\n"


def test_an_error_of_no_simpleclr_type_is_not_dressed_up_as_one(tmp_path, monkeypatch):
    """A bug (any other exception) keeps its traceback: the CLI catches our type only."""
    def fail(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("simpleclr.data.load_split", fail)
    with pytest.raises(KeyError):
        cli.main(["pretrain", "--out", str(tmp_path / "run"), "--dataset", "synthetic-cifar100",
                  "--device", "cpu", "--progress", "false"])


PLAN = """
name: t
defaults:
  all: {dataset: cifar100}
runs:
  - name: probe
    notebook: linear_eval
"""


def _check_data(tmp_path, monkeypatch, error: BaseException) -> str:
    def prepare(name, **kwargs):
        raise error

    monkeypatch.setattr("simpleclr.data.prepare", prepare)
    plan = plans.load_plan(write_plan(tmp_path, PLAN), tmp_path / "out")
    with pytest.raises(plans.PlanError) as e:
        plans.check_data(plan, list(plan.runs))
    return str(e.value)


def test_the_plans_checksum_hint_comes_from_the_error_type(tmp_path, monkeypatch):
    msg = _check_data(tmp_path, monkeypatch, ChecksumMismatch("this archive is not the published one",
                                                              sha256="ab12"))
    assert msg.startswith("this archive is not the published one")
    assert f"export {plans.ACCEPT_ENV}=<sha256>" in msg


def test_a_data_error_that_only_mentions_the_option_gets_no_checksum_hint(tmp_path, monkeypatch):
    msg = _check_data(tmp_path, monkeypatch, DataError("no --accept-checksum here: the disk is full"))
    assert msg.startswith("no --accept-checksum here") and plans.ACCEPT_ENV not in msg
    assert "make report PLAN=smoke" in msg  # the data-layer pointer every failure gets


def test_the_data_layer_raises_checksum_mismatch_with_the_digest(tmp_path, monkeypatch):
    """The real path: a re-packed archive placed where the official one belongs."""
    from simpleclr.data import prepare, write_synthetic_cifar100

    write_synthetic_cifar100(tmp_path / "cifar-100-python.tar.gz", n_train_per_class=1, n_test_per_class=1)
    with pytest.raises(ChecksumMismatch) as e:
        prepare("cifar100", root=tmp_path, download=False)
    assert e.value.sha256 and len(e.value.sha256) == 64 and e.value.sha256 in str(e.value)

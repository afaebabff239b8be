"""Small helpers the stage notebooks call, so the notebooks hold no logic of their own."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Type, TypeVar, Union

import pandas as pd

from ..config import StageConfig
from ..runs.rundir import RunDir

T = TypeVar("T", bound=StageConfig)


def stage_config(cls: Type[T], namespace: Mapping[str, Any]) -> T:
    """The stage config from the notebook's parameter variables (its field names, nothing else)."""
    return cls.from_dict({f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})


def result_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """A run's result.json as a two-column table of its scalar figures."""
    rows = [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in result.items()
            if isinstance(v, (int, float, str, bool)) or v is None]
    return pd.DataFrame(rows, columns=["figure", "value"]).set_index("figure")


def plot_run(out_dir: Union[str, Path]) -> Any:
    """Training curves of one pretrain / supervised run folder (loss and monitored accuracy)."""
    from ..report.figures import plot_training_curves
    from ..report.model import RunInfo

    rd = RunDir(out_dir)
    cfg = rd.read_config() or {}
    run = RunInfo(name=Path(out_dir).name, notebook=cfg.get("stage", ""), stage=cfg.get("stage", ""),
                  path=Path(out_dir), role={}, state=rd.status(), reason=None,
                  fingerprint=cfg.get("fingerprint"), config_json=cfg, result=rd.read_result())
    return plot_training_curves([(run.name, run)])


def plot_probe(out_dir: Union[str, Path]) -> Any:
    """Validation top-1 for each weight decay the linear probe tried (the choice is the best)."""
    import matplotlib.pyplot as plt

    rows = [r for r in RunDir(out_dir).read_metrics() if "weight_decay" in r]
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    if not df.empty:
        x = df["weight_decay"].replace(0.0, df["weight_decay"][df["weight_decay"] > 0].min() / 10
                                       if (df["weight_decay"] > 0).any() else 1e-8)
        ax.plot(x, df["val_top1"], marker="o")
        ax.set_xscale("log")
    ax.set_xlabel("probe weight decay (log scale; 0 drawn a decade below the smallest)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Linear probe: weight decay chosen on the validation split")
    fig.tight_layout()
    return fig

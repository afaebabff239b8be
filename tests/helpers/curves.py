"""Reading a run's TensorBoard event files back, with TensorBoard's own reader."""
from __future__ import annotations

from pathlib import Path

from simpleclr.runs.curves import CURVES_DIR


def read_curves(run_path: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} as TensorBoard shows the run (purged events left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run_path) / CURVES_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

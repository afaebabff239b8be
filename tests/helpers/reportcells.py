"""The report notebook's own code cells, executed in this process: what its kernel would run,
in seconds instead of a kernel's start-up, with every displayed object rendered to the HTML or
Markdown the notebook would show."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat

REPORT_NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "report.ipynb"


def rendered(obj: Any) -> str:
    """What a notebook shows for ``obj``: its HTML, else its Markdown, else its repr."""
    for method in ("_repr_html_", "_repr_markdown_"):
        out = getattr(obj, method, lambda: None)()
        if out is not None:
            return out
    return repr(obj)


def execute_report_cells(plan_dir: Path, monkeypatch: Any, **parameters: Any) -> tuple[list[str], dict]:
    """Run notebooks/report.ipynb's code cells on ``plan_dir`` (the parameters cell overridden by
    ``parameters``, as papermill would); return everything they displayed, rendered, and the
    names the cells left (``main``, ``ft``, ``sz``, ...)."""
    import IPython.display

    shown: list[str] = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(map(rendered, objs)))
    namespace: dict[str, Any] = {}
    for cell in nbformat.read(REPORT_NOTEBOOK, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        exec(compile(cell.source, f"report.ipynb cell {cell.get('id')}", "exec"), namespace)  # noqa: S102
        if "parameters" in cell.metadata.get("tags", []):
            namespace.update(plan_dir=str(plan_dir), **parameters)
    return shown, namespace

"""The committed notebooks: no outputs, a `parameters` cell that is exactly the stage config's
fields (plus out_dir) as literals, no logic of their own, and equal to what the generator writes."""
from __future__ import annotations

import ast
import importlib.util
from dataclasses import fields
from pathlib import Path

import nbformat
import pytest

from simpleclr.study import planfile, plans
from simpleclr import fielddocs
from simpleclr.config import STAGES

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ["pretrain", "supervised", "linear_eval", "report"]


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(str(ROOT / "notebooks" / f"{name}.ipynb"), as_version=4)


def parameters(nb: nbformat.NotebookNode) -> dict:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    out = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        out[node.targets[0].id] = ast.literal_eval(node.value)  # literals only
    return out


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.parametrize("name", ["pretrain", "supervised", "linear_eval"])
def test_parameters_are_the_config_fields(name):
    params = parameters(read(name))
    cls = STAGES[name]
    assert sorted(params) == sorted([f.name for f in fields(cls)] + ["out_dir"])
    cfg = cls.from_dict({k: v for k, v in params.items() if k != "out_dir"})  # valid defaults
    assert cfg.dataset.startswith("synthetic-")  # runs by hand with no download


@pytest.mark.parametrize("name", ["pretrain", "supervised", "linear_eval"])
def test_every_parameter_carries_its_documented_line_under_its_group(name):
    """Each field's assignment ends with its fielddocs line; fields sit under '# ---- <group>'."""
    cell = next(c for c in read(name).cells if "parameters" in c.metadata.get("tags", []))
    group = None
    seen = []
    for line in cell.source.splitlines():
        if line.startswith("# ---- "):
            group = line[len("# ---- "):]
            continue
        if not line or line.startswith("#") or line.startswith("out_dir"):
            continue
        field, rest = line.split(" = ", 1)
        assert rest.endswith(f"  # {fielddocs.field_doc(name, field)}"), line
        assert group == fielddocs.group_of(field), (field, group)
        seen.append(field)
    assert sorted(seen) == sorted(f.name for f in fields(STAGES[name]))
    # the stage's own reading of a shared field
    if name == "pretrain":
        assert "(the size study)" in cell.source and "kNN monitor" in cell.source


@pytest.mark.parametrize("name", ["pretrain", "supervised", "linear_eval"])
def test_papermill_reads_every_parameter_and_its_line(name):
    """papermill's own parser (what `papermill --help-notebook` and plan runs use) finds every field,
    with its documented line as the help; a line it cannot parse would warn of unknown parameters."""
    from papermill.translators import PythonTranslator

    cell = next(c for c in read(name).cells if "parameters" in c.metadata.get("tags", []))
    found = {p.name: p.help for p in PythonTranslator.inspect(cell)}
    assert sorted(found) == sorted([f.name for f in fields(STAGES[name])] + ["out_dir"])
    assert all(found[f.name] == fielddocs.field_doc(name, f.name) for f in fields(STAGES[name]))


def test_every_field_of_every_stage_has_a_line_and_a_group():
    for cls in STAGES.values():
        for f in fields(cls):
            doc = fielddocs.field_doc(cls.stage, f.name)
            assert doc and "\n" not in doc and len(doc) <= 110, (cls.stage, f.name, doc)
            assert "=" not in doc, (f.name, "papermill cannot parse a line with two '='")
            fielddocs.group_of(f.name)
    known = {f.name for cls in STAGES.values() for f in fields(cls)}
    assert {k.split(".")[-1] for k in fielddocs.DOCS} == known  # no line for a field that is gone


def test_the_cli_help_shows_the_same_lines(capsys):
    from simpleclr import cli

    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert " ".join(fielddocs.field_doc("pretrain", "warmup_epochs").split()) in text
    assert " ".join(fielddocs.field_doc("pretrain", "subset_fraction").split()) in text
    assert "(default: 10000)" in text  # knn_max_bank; recipe fields read None: the method's


def test_report_parameters_are_what_plans_pass():
    params = parameters(read("report"))
    assert set(params) == {"plan_dir", *planfile.REPORT_PARAMS}


def test_the_report_opens_with_its_answer_the_main_table_then_the_figures():
    """The headline first, then the main table under its heading (its explanation after it), then
    the t-SNE figure; how the rows were compared, references and provenance come last."""
    cells = [c for c in read("report").cells if "parameters" not in c.metadata.get("tags", [])]
    order = []
    for cell in cells:
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        if cell.cell_type == "markdown" and first.startswith("## "):
            order.append(first[3:])
        elif cell.cell_type == "code" and "rp.headline(" in cell.source:
            order.append("headline")
        elif cell.cell_type == "code" and "rp.style_main_table(" in cell.source:
            order.append("main table")
    assert order[:3] == ["headline", "Main table", "main table"], order
    assert order[3].startswith("t-SNE"), order
    assert order.index("What was compared and how") > order.index("Training curves"), order
    assert order[-2:] == ["Published reference figures", "Provenance"], order


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_hold_no_logic(name):
    """Code cells call the library: no functions, classes or loops of their own."""
    for cell in read(name).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.For, ast.While,
                                         ast.Lambda, ast.ListComp, ast.DictComp)), (name, cell.source)


def test_committed_notebooks_match_the_generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in NOTEBOOKS:
        assert (ROOT / "notebooks" / f"{name}.ipynb").read_text() == mod.render(name), (
            f"notebooks/{name}.ipynb is stale: run python scripts/make_notebooks.py")


@pytest.mark.slow
def test_linear_eval_notebook_runs_top_to_bottom_under_papermill(tmp_path, monkeypatch, capfd):
    """The linear-eval notebook top to bottom with a real kernel, on a tiny generated set; the
    kernel talks over IPC, so ipykernel's plain-TCP warning never reaches the terminal."""
    monkeypatch.setenv("SIMPLECLR_DATA", str(tmp_path / "data"))
    out = tmp_path / "run"
    plans.execute_notebook("linear_eval", out / "notebook.ipynb",
                           {"out_dir": str(out), "dataset": "synthetic-cifar100:train=4,test=2",
                            "label_fraction": 1.0, "image_size": 8, "progress": False,
                            "precision": "fp32", "num_threads": 1, "width": 16,
                            "weight_decays": [0.01, 0.1]},  # not the 45-value grid: the notebook is the point
                           cwd=tmp_path, progress=False)
    assert "without encryption" not in capfd.readouterr().err
    nb = nbformat.read(str(out / "notebook.ipynb"), as_version=4)
    result = (out / "result.json").read_text()
    assert '"top1"' in result
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if 'src="data:image/png;base64,' in o.get("data", {}).get("text/html", "")]
    assert len(images) == 1, "the weight-decay figure is shown"
    assert 'alt="Linear probe: weight decay chosen on the validation split' in images[0]["data"]["text/html"]

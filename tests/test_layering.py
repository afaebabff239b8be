"""The import graph of ``lib/simpleclr`` keeps the package rules of docs/architecture.md.

Every module is parsed (not imported) with ``ast``; every ``import`` counts, the ones inside
functions too, since a lazy import is still an arrow. A module is named by its dotted path under
``simpleclr`` (``training.trainer``, ``data.cache``); its package is the first part (``training``,
``data``; ``cli``, ``config``, ``configio``, ``fielddocs``, ``errors`` and ``types`` are their own).
The CLI imports each stage's entry function by the path the stage registry gives (``config.REGISTRY``): those count as
arrows from ``cli`` too. A failure names the file and line of the import that breaks the rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "simpleclr"
OUTSIDE = {"notebooks", "plans", "tests", "scripts"}  # repository folders, not importable parts of lib

# What each package may import besides itself (and ``types``, the shared type aliases, which every
# module may import and which imports nothing of ours). ``study`` (plans, estimate, bench, notebook helpers)
# drives everything below it, so it may import any package but ``cli``.
ALLOWED = {
    "types": set(),
    "errors": set(),
    "fielddocs": set(),
    "config": {"errors"},
    "configio": {"config", "fielddocs", "errors"},
    "runs": {"errors"},
    "data": {"runs", "errors"},
    "training": {"data", "runs", "config", "errors"},
    "report": {"runs", "config", "errors"},
    "study": {"training", "data", "runs", "report", "config", "configio", "fielddocs", "errors"},
    "cli": {"training", "data", "runs", "study", "config", "configio", "fielddocs", "errors"},
    "__main__": {"cli"},
    "__init__": set(),
}
# Inside training/: the parts a loop is made of never import the trainer, a method or a stage;
# the methods never import a stage; the trainer never imports a method or a stage.
# (the sets are read from the graph below: ``training.parts.*``, ``training.methods.*``, ...)


def _module(path: Path) -> str:
    """``lib/simpleclr/data/cache.py`` -> ``data.cache``; ``lib/simpleclr/cli.py`` -> ``cli``;
    a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(LIB).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def package(module: str) -> str:
    return module.split(".")[0]


def _package_parts(path: Path) -> list[str]:
    """The dotted package a module's relative imports start from, e.g. ``simpleclr.data``."""
    return ["simpleclr", *path.relative_to(LIB).parent.parts]


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute dotted name, line) of everything ``path`` imports, a from-import's names included
    (``from . import augment`` imports the module ``simpleclr.training.parts.augment``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = _package_parts(path)
                base = pkg[:len(pkg) - node.level + 1] + (node.module.split(".") if node.module else [])
            else:
                base = node.module.split(".")
            out.append((".".join(base), node.lineno))
            out += [(".".join(base + [a.name]), node.lineno) for a in node.names]
    return out


def _known(dotted: list[str], modules: set[str]) -> str | None:
    """The longest prefix of ``dotted`` (without ``simpleclr``) that is one of our modules."""
    for n in range(len(dotted), 0, -1):
        name = ".".join(dotted[:n])
        if name in modules:
            return name
    return None


def import_graph(lib: Path = LIB) -> tuple[dict[str, set[str]], dict[tuple[str, str], str], list[str]]:
    """(edges between simpleclr's modules, where each edge is made, outside imports)."""
    paths = sorted(lib.rglob("*.py"))
    modules = {_module(p) for p in paths}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], str] = {}
    outside = []
    for path in paths:
        src = _module(path)
        for name, line in _imports(path):
            parts = name.split(".")
            if parts[0] in OUTSIDE:
                outside.append(f"{path.relative_to(lib.parent)}:{line} imports {name}")
            if parts[0] != "simpleclr" or len(parts) < 2:
                continue
            dst = _known(parts[1:], modules)
            if dst is None or dst == src or dst == package(src) and "." in src:
                continue  # a package's own __init__ reached through a relative import is no arrow
            graph[src].add(dst)
            where.setdefault((src, dst), f"{path.relative_to(lib.parent)}:{line}")
    return graph, where, outside


def registry_arrows(graph: dict[str, set[str]], where: dict[tuple[str, str], str]) -> None:
    """Add cli -> the module of every stage's entry (named in config.REGISTRY, imported by path)."""
    from simpleclr.config import REGISTRY

    for stage in REGISTRY:
        module = stage.entry.split(":")[0].removeprefix("simpleclr.")
        graph["cli"].add(module)
        where.setdefault(("cli", module), f"simpleclr/config.py (REGISTRY: {stage.name} -> {stage.entry})")


GRAPH, WHERE, OUTSIDE_IMPORTS = import_graph()
registry_arrows(GRAPH, WHERE)


def _reach(start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(GRAPH.get(start, ()))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += GRAPH.get(m, ())
    return seen


def _cycle() -> list[str]:
    """One import cycle as a path ``[a, b, ..., a]``, or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return []


def _arrows(src: str, targets: set[str]) -> list[str]:
    return [f"{src} -> {t} ({WHERE[(src, t)]})" for t in sorted(GRAPH.get(src, set()) & targets)]


def test_the_graph_is_read():
    """A parser that saw nothing would pass every rule: check arrows that must be there."""
    assert {"data.cache", "training.trainer", "training.stages.pretrain", "report.prose", "study.plans"} <= set(GRAPH)
    assert {"training.probe", "training.methods", "training.parts.models",
            "training.trainer"} <= GRAPH["training.stages.pretrain"]
    assert {"data", "training.launch", "runs.rundir"} <= GRAPH["training.trainer"]
    assert {"training.methods.simclr", "training.methods.base"} <= GRAPH["training.methods"]
    assert "runs.rundir" in GRAPH["data.cache"]
    assert "report.figures" in GRAPH["study.plans"] and "report.tables" in GRAPH["report.prose"]
    assert {"training.stages.pretrain", "training.stages.supervised", "training.stages.linear_eval"} <= GRAPH["cli"]


def test_no_import_cycles():
    cycle = _cycle()
    assert not cycle, "import cycle: " + " -> ".join(
        f"{a} ({WHERE[(a, b)]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_every_package_imports_only_what_its_rule_allows():
    """The package rules: training/ never reaches study/ or report/, report/ reads only runs/
    (and config, errors), data/ and runs/ stand on errors, nothing imports cli."""
    bad = []
    for src in sorted(GRAPH):
        allowed = ALLOWED[package(src)] | {package(src), "types"}
        bad += [a for a in _arrows(src, {d for d in GRAPH[src] if package(d) not in allowed})]
    assert not bad, "arrows the package rules forbid: " + "; ".join(bad)


def _training(prefix: str) -> set[str]:
    return {m for m in GRAPH if m == prefix or m.startswith(prefix + ".")}


def test_the_parts_of_a_training_loop_never_import_the_loop_or_a_stage():
    """parts/ -> nothing above it; methods/ -> parts and the trainer, never a stage or the probe;
    the trainer -> parts and launch, never a method or a stage (a method is handed to it)."""
    above_parts = (_training("training.methods") | _training("training.stages") | {"training.trainer",
                   "training.launch", "training.probe", "training.preflight"})
    bad = [a for m in sorted(_training("training.parts")) for a in _arrows(m, above_parts)]
    bad += [a for m in sorted(_training("training.methods"))
            for a in _arrows(m, _training("training.stages") | {"training.probe", "training.preflight"})]
    bad += _arrows("training.trainer", _training("training.methods") | _training("training.stages"))
    assert not bad, "; ".join(bad)


def test_the_command_reaches_a_methods_loss_through_four_files():
    """cli -> the pretrain stage -> the trainer (train_step) -> the method's file (its loss)."""
    assert "training.stages.pretrain" in GRAPH["cli"]
    assert {"training.trainer", "training.methods"} <= GRAPH["training.stages.pretrain"]
    assert "training.methods.simclr" in GRAPH["training.methods"]


def test_the_report_never_trains_or_evaluates():
    reached = set().union(*(_reach(m) for m in GRAPH if package(m) == "report"))
    assert not {package(m) for m in reached} & {"training", "study", "cli"}, sorted(reached)


def test_only_the_prose_imports_the_tables():
    """``tables`` is the report's half that aggregates and formats: below the sections (prose,
    methods), above the model."""
    sections = {"report.prose", "report.methods"}
    bad = [a for m in sorted(GRAPH) if m not in sections for a in _arrows(m, {"report.tables"})]
    assert not bad, "only the report's sections (prose, methods) may import report.tables: " + "; ".join(bad)


def test_the_study_model_reads_run_folders_only():
    # the run folder, its locks, its optional sidecars and the checks of its files; the stage
    # configs recompute a folder's fingerprint
    assert _reach("report.model") <= {"runs.rundir", "runs.locks", "runs.sidecars", "runs.checks",
                                      "runs.predictions", "config", "errors", "types"}, \
        _arrows("report.model", set(GRAPH))


def test_estimate_times_with_bench_and_never_reaches_plans():
    assert {"study.bench", "data"} <= GRAPH["study.estimate"] and "study.estimate" in GRAPH["study.plans"]
    bad = _reach("study.estimate") & {"study.plans", "study.planfile", "report.prose", "report.model", "cli"}
    assert not bad, f"estimate reaches {sorted(bad)}"


def test_plan_files_are_read_without_running_or_timing_anything():
    allowed = {"config", "configio", "fielddocs", "runs.rundir", "runs.locks", "runs.sidecars", "runs.checks",
               "runs.predictions", "report.model", "errors", "types"}
    assert _reach("study.planfile") <= allowed, _arrows("study.planfile", set(GRAPH))


def test_the_errors_module_is_the_bottom_and_every_error_stands_on_it():
    assert not GRAPH["errors"], "errors imports " + "; ".join(_arrows("errors", set(GRAPH)))
    users = {m for m in GRAPH if "errors" in GRAPH[m]}
    assert {"config", "runs.locks", "runs.rundir", "data.errors", "training.parts.models", "report.model",
            "study.planfile", "training.launch", "training.trainer"} <= users


def test_lib_imports_nothing_from_the_repository_folders():
    assert not OUTSIDE_IMPORTS, "; ".join(OUTSIDE_IMPORTS)

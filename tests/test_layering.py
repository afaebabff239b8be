"""The import graph of ``lib/simpleclr`` keeps the layering of docs/architecture.md.

Every module is parsed (not imported) with ``ast``; every ``import`` counts, the ones inside
functions too, since a lazy import is still an arrow. Modules of the ``data`` package count as
``data``. The CLI imports each stage's entry function by the name the stage registry gives
(``config.REGISTRY``): those count as arrows from ``cli`` too. A failure names the file and line of
the import that breaks the rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "simpleclr"
LOW = {"data", "augment", "models", "losses"}
HIGH = {"train", "pretrain", "supervised", "evaluate", "plans", "planfile", "estimate", "report", "tables",
        "cli", "study", "figures"}
OUTSIDE = {"notebooks", "plans", "tests", "scripts"}  # repository folders, not importable parts of lib


def _module(path: Path) -> str:
    """``lib/simpleclr/data/cache.py`` -> ``data``; ``lib/simpleclr/report.py`` -> ``report``."""
    parts = path.relative_to(LIB).with_suffix("").parts
    return parts[0]


def _package(path: Path) -> list[str]:
    """The dotted package a module's relative imports start from, e.g. ``simpleclr.data``."""
    return ["simpleclr", *path.relative_to(LIB).parent.parts]


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute dotted name, line) of everything ``path`` imports, a from-import's names included
    (``from . import augment`` imports the module ``simpleclr.augment``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = _package(path)
                base = pkg[:len(pkg) - node.level + 1] + (node.module.split(".") if node.module else [])
            else:
                base = node.module.split(".")
            out.append((".".join(base), node.lineno))
            out += [(".".join(base + [a.name]), node.lineno) for a in node.names]
    return out


def import_graph(lib: Path = LIB) -> tuple[dict[str, set[str]], dict[tuple[str, str], str], list[str]]:
    """(edges between simpleclr's top-level modules, where each edge is made, outside imports)."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    outside = []
    for path in sorted(lib.rglob("*.py")):
        src = _module(path)
        graph.setdefault(src, set())
        for name, line in _imports(path):
            parts = name.split(".")
            if parts[0] in OUTSIDE:
                outside.append(f"{path.relative_to(lib.parent)}:{line} imports {name}")
            if parts[0] != "simpleclr" or len(parts) < 2:
                continue
            dst = parts[1]
            if dst == src or not (lib / dst).exists() and not (lib / f"{dst}.py").exists():
                continue  # itself, or a name inside a module (from .x import y counted x already)
            graph[src].add(dst)
            where.setdefault((src, dst), f"{path.relative_to(lib.parent)}:{line}")
    return graph, where, outside


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return seen


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path ``[a, b, ..., a]``, or [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def registry_arrows(graph: dict[str, set[str]], where: dict[tuple[str, str], str]) -> None:
    """Add cli -> the module of every stage's entry (named in config.REGISTRY, imported by name)."""
    from simpleclr.config import REGISTRY

    for stage in REGISTRY:
        module = stage.entry.split(":")[0].split(".")[0]
        graph["cli"].add(module)
        where.setdefault(("cli", module), f"simpleclr/config.py (REGISTRY: {stage.name} -> {stage.entry})")


GRAPH, WHERE, OUTSIDE_IMPORTS = import_graph()
registry_arrows(GRAPH, WHERE)


def _arrows(src: str, targets: set[str]) -> list[str]:
    return [f"{src} -> {t} ({WHERE[(src, t)]})" for t in sorted(GRAPH.get(src, set()) & targets)]


def test_the_graph_is_read():
    """A parser that saw nothing would pass every rule: check arrows that must be there."""
    assert {"data", "train", "pretrain", "supervised", "report", "plans", "study", "figures"} <= set(GRAPH)
    assert {"evaluate", "augment", "losses", "runs", "train"} <= GRAPH["pretrain"]
    assert {"evaluate", "augment", "runs", "train"} <= GRAPH["supervised"]
    assert {"data", "launch", "runs"} <= GRAPH["train"]
    assert "runs" in GRAPH["data"]  # data/cache.py: from ..runs import atomic_write_json
    assert "study" in GRAPH["report"] and "figures" in GRAPH["plans"]
    assert "tables" in GRAPH["report"] and "study" in GRAPH["tables"]
    assert {"pretrain", "supervised", "evaluate"} <= GRAPH["cli"]  # the stages' entries, through the registry


def test_no_import_cycles():
    cycle = _cycle(GRAPH)
    assert not cycle, "import cycle: " + " -> ".join(
        f"{a} ({WHERE[(a, b)]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_lowest_layer_imports_nothing_above_it():
    bad = [a for m in sorted(LOW) for a in _arrows(m, HIGH)]
    assert not bad, "data/augment/models/losses import a higher module: " + "; ".join(bad)


def test_nothing_but_the_cli_imports_the_report():
    bad = [a for m in sorted(GRAPH) if m != "cli" for a in _arrows(m, {"report"})]
    assert not bad, "only cli may import report: " + "; ".join(bad)


def test_only_the_report_imports_its_tables():
    """``tables`` is the report's half that aggregates and formats: below report, above study."""
    bad = [a for m in sorted(GRAPH) if m != "report" for a in _arrows(m, {"tables"})]
    assert not bad, "only report may import tables: " + "; ".join(bad)
    assert "report" not in _reach(GRAPH, "tables"), _arrows("tables", set(GRAPH))


def test_the_report_never_trains_or_evaluates():
    reached = _reach(GRAPH, "report")
    stages = {"train", "pretrain", "supervised", "evaluate"}
    assert not reached & stages, f"report reaches {sorted(reached & stages)}"


def test_study_and_figures_read_run_folders_only():
    assert _reach(GRAPH, "study") <= {"runs", "locks", "errors"}, _arrows("study", set(GRAPH))
    assert _reach(GRAPH, "figures") <= {"study", "runs", "locks", "errors"}, _arrows("figures", set(GRAPH))


def test_the_errors_module_is_the_bottom_and_every_error_stands_on_it():
    """``errors`` imports nothing of ours; the modules that define error classes import it."""
    assert not GRAPH["errors"], "errors imports " + "; ".join(_arrows("errors", set(GRAPH)))
    assert {"config", "locks", "runs", "data", "models", "study", "planfile", "launch", "train"} <= {
        m for m in GRAPH if "errors" in GRAPH[m]}


def test_estimate_times_with_bench_and_sizes_from_data_and_never_reaches_plans():
    """plans imports estimate, never the other way; estimate reads no study and draws nothing."""
    assert {"bench", "data"} <= GRAPH["estimate"] and "estimate" in GRAPH["plans"]
    bad = _reach(GRAPH, "estimate") & {"plans", "planfile", "report", "study", "figures", "cli"}
    assert not bad, f"estimate reaches {sorted(bad)}: " + "; ".join(_arrows("estimate", set(GRAPH)))


def test_plan_files_are_read_without_running_or_timing_anything():
    allowed = {"config", "configio", "runs", "locks", "study", "errors"}
    assert _reach(GRAPH, "planfile") <= allowed, _arrows("planfile", set(GRAPH))


def test_lib_imports_nothing_from_the_repository_folders():
    assert not OUTSIDE_IMPORTS, "; ".join(OUTSIDE_IMPORTS)

"""No function in study/ takes more than six parameters: state that would be threaded by hand
through a scheduler's helpers belongs to an object (the plan executor owns a plan's execution)."""
from __future__ import annotations

import ast
from pathlib import Path

STUDY = Path(__file__).resolve().parents[2] / "lib" / "simpleclr" / "study"
LIMIT = 6


def _count(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> int:
    a = fn.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    return n - (1 if method and a.args and a.args[0].arg in ("self", "cls") else 0)


def _functions(tree: ast.AST, prefix: str = "", method: bool = False):
    """(qualified name, parameter count) of every function, method and nested function."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.", True)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", _count(node, method)
            yield from _functions(node, f"{prefix}{node.name}.", False)
        else:
            yield from _functions(node, prefix, method)


def test_no_function_in_study_takes_more_than_six_parameters():
    over = [f"{path.name}:{name} takes {count}"
            for path in sorted(STUDY.glob("*.py"))
            for name, count in _functions(ast.parse(path.read_text())) if count > LIMIT]
    assert not over, "; ".join(over)


def test_the_counter_sees_every_kind_of_parameter():
    tree = ast.parse("def f(a, /, b, *c, d, **e):\n    def g(x): pass\n"
                     "class K:\n    def m(self, a, b): pass\n    @staticmethod\n    def s(a): pass\n")
    assert dict(_functions(tree)) == {"f": 5, "f.g": 1, "K.m": 2, "K.s": 1}

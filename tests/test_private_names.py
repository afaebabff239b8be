"""No module reaches into another's underscored names: what crosses a module boundary in lib/ and
tests/ is public (documented, in ``__all__`` or the module's interface), so a private name can
change without breaking its neighbours."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ("simpleclr", "helpers")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _crossings(path: Path, root: Path = ROOT) -> list[str]:
    """Every ``from <ours> import _x``, ``<our module>._x`` and ``setattr(<our module>, "_x", ...)``."""
    tree = ast.parse(path.read_text(), str(path))
    ours: set[str] = set()  # local names bound to our modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and not (node.module or "").startswith(OURS):
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: imports {alias.name}")
                ours.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            ours.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith(OURS))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in ours):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.id}.{node.attr}")
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
                ("setattr", "delattr") and len(node.args) >= 2 and isinstance(node.args[0], ast.Name)
                and node.args[0].id in ours and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str) and _private(node.args[1].value)):
            found.append(f"{path.relative_to(root)}:{node.lineno}: sets {node.args[0].id}.{node.args[1].value}")
    return found


def test_no_underscored_name_crosses_a_module():
    files = sorted(p for d in ("lib", "tests", "scripts") for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 50
    found = [c for p in files for c in _crossings(p)]
    assert found == []


def test_the_check_sees_each_kind_of_crossing(tmp_path):
    """The three forms the check looks for are each found; another package's private name is not."""
    src = tmp_path / "x.py"
    src.write_text("from simpleclr.training.trainer import _a\nfrom simpleclr.training import loop\n"
                   "loop._b()\nmonkeypatch.setattr(loop, '_c', 1)\nimport os\nos._exit(0)\n")
    assert sorted(c.split(": ", 1)[1] for c in _crossings(src, tmp_path)) == ["imports _a", "loop._b",
                                                                             "sets loop._c"]

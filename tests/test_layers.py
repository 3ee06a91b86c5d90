"""The layers of DESIGN.md hold: imports point downward only, and siblings don't import each other.

    faces    cli | serving
    loop     federated → training → evaluation → generation | feedback → knowledge
    core     store → models | data → tokenizers → config | atomic → errors
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "genloop"

RANK = {
    "errors": 0, "config": 1, "atomic": 1, "tokenizers": 2, "data": 3, "models": 3, "store": 4,
    "knowledge": 5, "generation": 6, "feedback": 6, "evaluation": 7, "training": 8,
    "federated": 9, "serving": 10, "cli": 11,  # the CLI starts the server: `genloop serve`
}
# Besides the ranks: the API never trains in-process; it writes a job row a worker picks up.
FORBIDDEN = {"serving": {"training", "federated"}}


def package_of(path: Path) -> str | None:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) >= 1 else None


def imported_packages(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "genloop" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_every_package_has_a_layer() -> None:
    for path in SRC.rglob("*.py"):
        pkg = package_of(path)
        if pkg != "__init__":
            assert pkg in RANK, f"{path}: package {pkg!r} is not placed in a layer"


def test_imports_point_downward_only() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        pkg = package_of(path)
        if pkg == "__init__":
            continue  # the top-level Python face may reach every verb
        for dep in imported_packages(path):
            if dep == pkg or dep not in RANK:
                continue
            if RANK[dep] >= RANK[pkg]:
                bad.append(f"{path.relative_to(SRC)} imports genloop.{dep}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_serving_never_imports_training() -> None:
    bad = [f"{path.relative_to(SRC)} imports genloop.{dep}"
           for pkg, banned in FORBIDDEN.items() for path in sorted((SRC / pkg).rglob("*.py"))
           for dep in imported_packages(path) & banned]
    assert not bad, "\n".join(bad)

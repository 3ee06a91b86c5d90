"""The layers of DESIGN.md hold: imports point downward only, and siblings don't import each other.

    faces    cli → serving                  (serving never imports cli)
    loop     federated → training → evaluation → generation → hub | knowledge | safety
                                            feedback (beside generation: store and below only)
    core     store → models | data → tokenizers → config | atomic → errors

The top-level package (``genloop/__init__.py``, the Python face: ``train``, ``load``, ...)
reaches every verb, so only the CLI may use it: ``from genloop import load`` counts as an import
of that face. Importing a subpackage through it (``from genloop import store``) counts as that
subpackage.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "genloop"
TOP = "__init__"  # the top-level package: genloop/__init__.py

RANK = {
    "errors": 0, "version": 0, "config": 1, "atomic": 1, "tokenizers": 2, "data": 3, "models": 3,
    "store": 4, "hub": 5, "knowledge": 5, "safety": 5, "generation": 6, "feedback": 6, "evaluation": 7,
    "training": 8, "federated": 9, TOP: 10, "serving": 10,
    "cli": 11,  # the CLI starts the server and the worker: `genloop serve`
}
# The highest rank a package may import, where that is below its own: feedback sits beside
# generation (so neither imports the other, and the loop above may use both) but needs only
# the store and what lies under it.
REACH = {"feedback": RANK["store"]}
# Besides the ranks: the API never trains in-process; it writes a job row a worker picks up.
FORBIDDEN = {"serving": {"training", "federated"}}


def package_of(path: Path) -> str:
    """The layer a source file belongs to: its top-level subpackage or module of genloop."""
    first = path.relative_to(SRC).parts[0]
    return first.removesuffix(".py")


def module_of(path: Path, root: Path = SRC) -> list[str]:
    """``genloop/serving/app.py`` → ["genloop", "serving", "app"] (a package without __init__)."""
    parts = ["genloop", *path.relative_to(root).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _target(dotted: list[str], name: str | None, root: Path) -> str | None:
    """The genloop package an import reaches; ``name`` is what ``from dotted import name`` takes."""
    if dotted[:1] != ["genloop"]:
        return None
    if len(dotted) > 1:
        return dotted[1]
    # `import genloop` or `from genloop import name`: a subpackage, or a name of the top face
    if name is not None and ((root / name).is_dir() or (root / f"{name}.py").is_file()):
        return name
    return TOP


def imported_packages(path: Path, root: Path = SRC) -> set[str]:
    """Every genloop package ``path`` imports, relative and TYPE_CHECKING imports included."""
    here = module_of(path, root)
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.add(_target(alias.name.split("."), None, root) or "")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package, one level up per extra dot
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                dotted = base + (node.module.split(".") if node.module else [])
            else:
                dotted = (node.module or "").split(".")
            for alias in node.names:
                out.add(_target(dotted, alias.name, root) or "")
    out.discard("")
    return out


def violations(pkg: str, deps: set[str]) -> list[str]:
    ceiling = REACH.get(pkg, RANK[pkg] - 1)
    return [dep for dep in sorted(deps) if dep != pkg and dep in RANK and RANK[dep] > ceiling]


def test_every_package_has_a_layer() -> None:
    for path in SRC.rglob("*.py"):
        assert package_of(path) in RANK, f"{path}: package {package_of(path)!r} is not placed in a layer"


def test_imports_point_downward_only() -> None:
    bad = [f"{path.relative_to(SRC)} imports {'the top-level genloop' if dep == TOP else 'genloop.' + dep}"
           for path in sorted(SRC.rglob("*.py"))
           for dep in violations(package_of(path), imported_packages(path))]
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_serving_never_imports_training() -> None:
    bad = [f"{path.relative_to(SRC)} imports genloop.{dep}"
           for pkg, banned in FORBIDDEN.items() for path in sorted((SRC / pkg).rglob("*.py"))
           for dep in imported_packages(path) & banned]
    assert not bad, "\n".join(bad)


# --- the checker itself, on small sources --------------------------------------------------------


def _imports(tmp_path: Path, rel: str, source: str) -> set[str]:
    """``imported_packages`` of ``source`` as if it were ``src/genloop/<rel>`` (a copy of the
    tree's top-level names beside it, so subpackages are told from names of the top face)."""
    root = tmp_path / "genloop"
    root.mkdir(exist_ok=True)
    for p in SRC.iterdir():
        if p.is_dir():
            (root / p.name).mkdir(exist_ok=True)
        elif p.suffix == ".py":
            (root / p.name).touch()
    fake = root / rel
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(source, encoding="utf-8")
    return imported_packages(fake, root)


def test_the_top_level_face_counts(tmp_path: Path) -> None:
    assert _imports(tmp_path, "serving/app.py", "from genloop import __version__\n") == {TOP}
    assert _imports(tmp_path, "serving/app.py", "import genloop\n") == {TOP}
    assert _imports(tmp_path, "serving/app.py", "from genloop import store\n") == {"store"}
    assert _imports(tmp_path, "serving/app.py", "from genloop.version import __version__\n") == {"version"}
    assert _imports(tmp_path, "serving/routers/x.py", "from ... import load\n") == {TOP}
    assert _imports(tmp_path, "serving/routers/x.py", "from .. import deps\n") == {"serving"}
    assert _imports(tmp_path, "serving/__init__.py", "from ..training import loop\n") == {"training"}
    assert violations("serving", {TOP}) == [TOP]
    assert violations("training", {TOP}) == [TOP]
    assert violations("cli", {TOP, "serving"}) == []


def test_the_picture_of_design_md() -> None:
    assert violations("serving", {"cli"}) == ["cli"]
    assert violations("cli", {"serving", "training"}) == []
    # the loop, top to bottom
    assert violations("federated", {"training", "evaluation", "generation", "knowledge", "safety"}) == []
    assert violations("generation", {"evaluation"}) == ["evaluation"]
    assert violations("generation", {"knowledge", "safety", "store"}) == []
    # feedback beside generation: neither imports the other; feedback reaches the store only
    assert violations("feedback", {"generation"}) == ["generation"]
    assert violations("generation", {"feedback"}) == ["feedback"]
    assert violations("feedback", {"knowledge", "safety"}) == ["knowledge", "safety"]
    assert violations("feedback", {"store", "data", "errors"}) == []
    assert violations("evaluation", {"feedback", "generation"}) == []
    # siblings
    assert violations("knowledge", {"safety"}) == ["safety"]
    assert violations("models", {"data"}) == ["data"] and violations("data", {"models"}) == ["models"]
    assert violations("config", {"atomic"}) == ["atomic"]
    # the core
    assert violations("store", {"models", "data", "tokenizers", "config", "atomic", "errors"}) == []
    assert violations("models", {"store"}) == ["store"]
    assert violations("tokenizers", {"data"}) == ["data"]

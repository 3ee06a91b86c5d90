"""The shape of the source tree: no modality switch outside the kinds, small files, no import
circle (lazy imports inside functions included), no global seeding in library code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "genloop"
# the registries that map a kind's name to its piece in each layer: the only places a kind's
# name may be spelled as a key
KIND_REGISTRIES = {"data/kinds.py", "training/kinds.py", "evaluation/kinds.py", "generation/kinds.py"}
KIND_NAMES = ("text", "image", "images", "image_text", "pairs", "preferences")


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_modality_string_is_compared_outside_the_kinds():
    names = "|".join(KIND_NAMES)
    compare = re.compile(rf"""(==|!=|\bis\b)\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    bad = []
    for path in sources():
        rel = path.relative_to(SRC).as_posix()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            if "modality" in code and not rel.startswith("serving/"):
                bad.append(f"{rel}:{n}: {line.strip()}")
            elif rel not in KIND_REGISTRIES and compare.search(code):
                bad.append(f"{rel}:{n}: {line.strip()}")
    assert not bad, "dispatch through a kind registry instead:\n" + "\n".join(bad)


def test_the_modality_grep_catches_a_switch():
    compare = re.compile(r"""(==|!=)\s*["'](text|images)["']""")
    assert compare.search('if family.kinds[0] == "text":')


def test_no_source_file_is_over_600_lines():
    long = [f"{p.relative_to(SRC)}: {n} lines" for p in sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600]
    assert not long, "\n".join(long)


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every genloop module ``path`` imports, at module level or inside functions."""
    me = _module(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule; ``from pkg import name``, the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name and name != me:
                out.add(name)
    return out


def test_no_import_circle():
    paths = {_module(p): p for p in sources()}
    known = set(paths)
    graph = {m: _imports(p, known) for m, p in paths.items()}
    # the top-level package is the Python face: its verbs import the layers lazily, and nothing
    # below the faces imports it (tests/test_layers.py), so edges into it are not followed
    graph = {m: {d for d in deps if d != "genloop"} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(" → ".join([*stack[stack.index(d):], d]))
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(cycles[:10])


def test_no_global_seeding_in_library_code():
    hits = [f"{p.relative_to(SRC)}:{n}" for p in sources()
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
            if "torch.manual_seed(" in line.split("#", 1)[0]]
    assert not hits, "randomness is passed in (a torch.Generator):\n" + "\n".join(hits)

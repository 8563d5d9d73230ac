"""The floor plan: every import inside jaxdream points down (DESIGN.md's layout), and nothing imports in a circle.

Imports are read from the source (module level and inside functions alike; only `if TYPE_CHECKING:` blocks, which
never run, are left out), so a lazy import cannot hide a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Floors from the ground up; a module may import its own floor or lower ones (never in a circle).
FLOORS = [
    ("jaxdream.errors", "jaxdream.progress", "jaxdream.interrupts", "jaxdream.weights"),
    ("jaxdream.checks", "jaxdream.files", "jaxdream.environment", "jaxdream.imagenet", "jaxdream.resample"),
    ("jaxdream.image", "jaxdream.ops", "jaxdream.objectives", "jaxdream.outputs"),
    ("jaxdream.compiled", "jaxdream.manifests"),
    ("jaxdream.protocol",),
    ("jaxdream.converted",),
    ("jaxdream.darknet", "jaxdream.keras", "jaxdream.onnx"),
    ("jaxdream.model",),
    ("jaxdream.dream",),
    ("jaxdream.visual",),
    ("jaxdream.batch", "jaxdream.sweep", "jaxdream.video", "jaxdream.timing", "jaxdream.atlas", "jaxdream.shards",
     "jaxdream.records", "jaxdream.evaluation", "jaxdream.ray"),
    ("jaxdream.commands",),
    ("jaxdream.cli",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("cli", "weights"):  # mapped into the package (pyproject's package-dir)
        parts = ["jaxdream", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    files = [*ROOT.glob("jaxdream/**/*.py"), *ROOT.glob("cli/**/*.py"), *ROOT.glob("weights/*.py")]
    return {module_name(path): path for path in files}


def imports(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in known}


def floor(name: str) -> int:
    for level, names in enumerate(FLOORS):
        if any(name == n or name.startswith(n + ".") for n in names):
            return level
    raise AssertionError(f"{name} is on no floor: add it to FLOORS (and DESIGN.md's layout)")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, set(known)) - {name} for name, path in known.items() if name != "jaxdream"}


def test_every_import_points_down():
    upward = [f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
              for a, deps in graph().items() for b in deps if b != "jaxdream" and floor(b) > floor(a)]
    assert not upward, "\n".join(upward)


def test_no_module_imports_the_package_root():
    """`jaxdream/__init__.py` is the top: it names the public API lazily; importing it from below is a circle."""
    assert not [a for a, deps in graph().items() if "jaxdream" in deps and not a.startswith("jaxdream.cli")]


def test_no_import_circles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above can fail: a planted upward import and a circle are both found."""
    package = tmp_path / "jaxdream"
    (package / "dream").mkdir(parents=True)
    (package / "errors.py").write_text("from jaxdream.dream import core\n")
    (package / "dream" / "__init__.py").write_text("")
    (package / "dream" / "core.py").write_text("from jaxdream import errors\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    edges = graph()
    assert edges["jaxdream.errors"] == {"jaxdream.dream.core"}
    assert floor("jaxdream.dream.core") > floor("jaxdream.errors")
    try:
        test_no_import_circles()
    except AssertionError as err:
        assert "jaxdream.dream.core -> jaxdream.errors -> jaxdream.dream.core" in str(err)
    else:
        raise AssertionError("the circle was not found")

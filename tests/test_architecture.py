"""The house drawn from its imports (DESIGN.md): no import cycle, and no arrow pointing up a floor.

Floors, from the ground up: pure pieces that import nothing of the package above them; the gateway to the data
and the run folder; the engine (every module not named here lands there); the faces (command line, napari).
A module imports its own floor and those below. Read from the source (ast), so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "crl_napari"
GROUND = {"", "ids", "atomic", "settings", "selection", "unet", "sgd", "device", "noise", "postprocess", "image_files",
          "phantom_drawing", "runs.names", "runs.errors"}
GATEWAY = {"data", "data_folder", "native", "events", "checkpoint", "runs"}  # runs: the package and all of it
FACES = {"cli", "__main__", "_qt", "_sample_data", "user_errors"}  # a package here: all of it
FLOORS = ("ground", "gateway", "engine", "faces")


def _name(py: Path) -> str:
    """The module's name inside the package ("" is the package's own __init__: only its version)."""
    parts = list(py.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> str:
    top = module.split(".")[0]
    if module in GROUND:
        return "ground"
    if module in GATEWAY or top == "runs":
        return "gateway"
    if module in FACES or top in FACES:
        return "faces"
    return "engine"


def _imports(deferred: bool) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``deferred``: also inside functions; never those only under
    ``if TYPE_CHECKING``)."""
    modules = {_name(py): py for py in PACKAGE.rglob("*.py")}
    graph = {}
    for module, py in modules.items():
        tree = ast.parse(py.read_text(), str(py))
        nodes = ast.walk(tree) if deferred else iter(tree.body)
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and ast.unparse(node.test).endswith("TYPE_CHECKING") for n in ast.walk(node)}
        here = module.split(".") if py.name == "__init__.py" else module.split(".")[:-1]
        found = set()
        for node in nodes:
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1] + ([node.module] if node.module else [])
                    target = ".".join(p for p in ".".join(base).split(".") if p)
                elif (node.module or "").startswith("crl_napari"):
                    target = node.module.removeprefix("crl_napari").lstrip(".")
                else:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}".lstrip(".")
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("crl_napari").lstrip(".") for a in node.names
                          if a.name.startswith("crl_napari")}
        graph[module] = {m for m in found if m in modules and m != module}
    return graph


def test_the_floors_name_modules_that_exist():
    graph = _imports(deferred=False)
    named = GROUND | GATEWAY | FACES
    assert named <= set(graph), sorted(named - set(graph))


def test_no_import_cycle():
    graph = _imports(deferred=False)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module], path = 1, [*path, module]
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                cycles.append(" -> ".join([*path[path.index(other):], other]))
            elif other not in state:
                visit(other, path)
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_no_arrow_points_up_a_floor():
    """Deferred imports (inside a function) count too: they are arrows of the house all the same."""
    upward = [f"{m} ({_floor(m)}) -> {o} ({_floor(o)})"
              for m, others in sorted(_imports(deferred=True).items()) for o in sorted(others)
              if FLOORS.index(_floor(o)) > FLOORS.index(_floor(m))]
    assert upward == []

"""The floors of DESIGN.md ("Floors: who may import whom"), read from every module's imports (function-level
imports included): no script imports another script, each package imports only the floors below it, and the
project's import graph has no cycle."""
import ast

import pytest
from conftest import ROOT

PACKAGES = ("utils", "measures", "models", "datasets", "training", "pipeline", "reports")
ALLOWED = {  # package -> the project packages it may import (besides itself)
    "utils": set(),
    "measures": {"utils"},
    "models": {"utils"},
    "datasets": {"utils"},
    "training": {"models", "datasets", "measures", "utils"},
    "pipeline": {"models", "datasets", "measures", "utils"},
    "reports": {"pipeline", "datasets", "measures", "utils"},
}
SCRIPTS = sorted(p.stem for p in ROOT.glob("*.py"))


def project_modules() -> dict[str, set[str]]:
    """module name -> the project modules it imports."""
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")] + list(ROOT.glob("*.py"))
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}
    graph = {}
    for name, path in paths.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from package import submodule` imports the submodule; `from module import name` the module
                imported |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                             for a in node.names}
        graph[name] = {m for m in imported if m in paths and m != name}
    return graph


GRAPH = project_modules()


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_floors_below_it(package):
    wrong = {(name, target) for name, targets in GRAPH.items() if name.split(".")[0] == package
             for target in targets
             if target.split(".")[0] != package and target.split(".")[0] not in ALLOWED[package]}
    assert not wrong, f"{package} imports above its floor: {sorted(wrong)}"


def test_no_script_imports_another_script():
    wrong = {(name, target) for name, targets in GRAPH.items() for target in targets if target in SCRIPTS}
    assert not wrong, sorted(wrong)


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(target):], target]))
            if target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])

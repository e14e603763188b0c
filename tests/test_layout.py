"""The package's shape: folders in layers, imports only downward, no cycles, no private imports
across modules, and a README whose Layout section names every folder.

``LAYERS`` is the declared order, lowest first. A module may import modules of its own layer and
of the layers below it, never above: the grid knows no store, the store no trainer, the trainer
no executor, nothing but the command line knows the publishing layer's formats. The methods (a
separate package) may use only what a loss needs: the utilities, the components and the schema.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Lowest first; each entry: the layer's name and the module prefixes (under ``harness.``) in it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("utils", ("utils",)),
    ("components", ("", "registry", "method_code", "data", "models", "attacks")),
    ("schema", ("schema",)),
    ("grid", ("grid",)),
    ("store", ("store",)),
    ("evaluation", ("evaluation",)),
    ("training", ("training",)),
    ("execution", ("execution",)),
    ("publishing", ("publishing",)),
    ("cli", ("cli", "scaffold")),
]
#: What a method may import: a method knows no grid, store, trainer or evaluation.
METHOD_LAYERS = {"utils", "components", "schema"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of ``harness.<...>``: its longest matching prefix."""
    rest = module.removeprefix("harness").removeprefix(".")
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = rest == prefix or (prefix and rest.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every ``harness`` import of a file (lazy ones inside functions too): (module, names,
    line)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "harness" or node.module.startswith("harness."):
                names = [a.name for a in node.names]
                if node.module == "harness":  # ``from harness import suites``: the submodules
                    subs = [n for n in names if (ROOT / "harness" / n).exists()]
                    subs += [n for n in names if (ROOT / "harness" / f"{n}.py").exists()]
                    for n in subs:
                        out.append((f"harness.{n}", [], node.lineno))
                    names = [n for n in names if n not in subs]
                out.append((node.module, names, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "harness" or alias.name.startswith("harness."):
                    out.append((alias.name, [], node.lineno))
    return out


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_module_is_in_a_layer() -> None:
    for path in sources("harness"):
        layer_of(module_name(path))


def test_imports_only_point_downward() -> None:
    upward = []
    for path in sources("harness"):
        here = module_name(path)
        mine = layer_of(here)
        for target, _, line in imports(path):
            if layer_of(target) > mine:
                upward.append(
                    f"{path.relative_to(ROOT)}:{line}: {here} ({LAYERS[mine][0]}) imports "
                    f"{target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "\n".join(upward)


def test_methods_know_no_grid_store_trainer_or_evaluation() -> None:
    allowed = {i for i, (name, _) in enumerate(LAYERS) if name in METHOD_LAYERS}
    found = [
        f"{path.relative_to(ROOT)}:{line}: {target}"
        for path in sources("methods")
        for target, _, line in imports(path)
        if layer_of(target) not in allowed
    ]
    assert not found, "\n".join(found)


def test_module_imports_have_no_cycle() -> None:
    """Between modules (lazy imports included): a cycle would make the layers a fiction."""
    graph: dict[str, set[str]] = {}
    modules = {module_name(p) for p in sources("harness")}
    for path in sources("harness"):
        here = module_name(path)
        graph[here] = set()
        for target, names, _ in imports(path):
            for name in names:  # ``from harness.grid import suites``: the module, if it is one
                if f"{target}.{name}" in modules:
                    graph[here].add(f"{target}.{name}")
            if target in modules and target != here:
                graph[here].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + ".") and nxt == "harness":
                continue  # a package and its own submodules, or the public API's root
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_names_imported_across_modules() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: from {target} import {name}"
        for package in ("harness", "methods", "benchmarks")
        for path in sources(package)
        for target, names, line in imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not found, "\n".join(found)


def test_readme_layout_names_every_folder() -> None:
    """One line per folder of the package and of the repository's top level, and no line for a
    folder that is gone."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed = {m.group(1).rstrip("/") for m in re.finditer(r"^(\S+/)\s", section, re.M)}
    folders = {
        f"harness/{p.name}"
        for p in (ROOT / "harness").iterdir()
        if p.is_dir() and not p.name.startswith(("_", "."))
    }
    top = {"harness", "methods", "leaderboards", "reports", "tests", "benchmarks"}
    assert listed == folders | top


#: The most lines of code a function of ``harness/`` or ``methods/`` may have (its signature and
#: docstring not counted): a longer one does more than one job.
MAX_FUNCTION_LINES = 60
#: Functions allowed over the limit, each named with its length (none today; the test fails both
#: for a new long function and for a listed one that became short).
LONG_FUNCTIONS: dict[str, int] = {}


def function_lengths(paths: list[Path]) -> dict[str, int]:
    """``path:name`` → lines of code of every function (nested ones too) in ``paths``."""
    out = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body
                if ast.get_docstring(node) is not None and len(body) > 1:
                    body = body[1:]
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                key = f"{where}:{node.name}"
                out[key] = max(out.get(key, 0), node.end_lineno - body[0].lineno + 1)
    return out


def test_no_function_is_longer_than_the_limit() -> None:
    lengths = function_lengths(sources("harness") + sources("methods"))
    long = {k: n for k, n in lengths.items() if n > MAX_FUNCTION_LINES}
    new = sorted(f"{k}: {n} lines" for k, n in long.items() if k not in LONG_FUNCTIONS)
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines: {new}"
    gone = sorted(set(LONG_FUNCTIONS) - set(long))
    assert not gone, f"no longer over the limit, remove from LONG_FUNCTIONS: {gone}"


def test_the_length_check_counts_code_lines(tmp_path: Path) -> None:
    """Code lines are counted, nested functions too; signature and docstring are not."""
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    inner = "\n".join(f"        y{i} = {i}" for i in range(3))
    path = tmp_path / "m.py"
    path.write_text(
        f'def f(\n    a: int,\n) -> None:\n    """Doc.\n\n    More."""\n{body}\n'
        f"    def g():\n{inner}\n"
    )
    assert function_lengths([path]) == {"m.py:f": 65, "m.py:g": 3}

"""The package's shape, checked from its source: layers point down, no cycles, small modules.

The import graph is built with ``ast`` from every ``import`` statement in ``collabemb/``,
including imports inside functions and under ``TYPE_CHECKING``: a lazy import is still an edge.
The layers are those drawn in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "collabemb"

#: Layer of every module (docs/architecture.md); a module may import its own layer or below.
_LAYER_MODULES = (
    "registry models atomic schema store huge_pages",  # 0 core
    "data text_input inputs splits movielens sample interactions ratings_dataset",  # 1 data
    "settings settings_file engines engines.fast engines.autograd engines.newton engines.svdpp engines.dsgd",  # 2 engines and their settings
    "side_info history fitted model_card artifact model_view",  # 3 the fitted model and its artifact
    "train implicit_mf distributed",  # 4 fitting
    "faiss_parts faiss_files faiss_shards index",  # 5 search
    "fold_solvers coldstart tuning export features sklearn_features fastai_import metrics plots explorer explorer_page",  # 6 uses
    "cli_options cli cli_model __main__ serve serve_app serve_model serve_metrics",  # 7 the command line and the server
)
LAYERS = {name: layer for layer, names in enumerate(_LAYER_MODULES) for name in names.split()}
LAYERS[""] = len(_LAYER_MODULES)  # the package's __init__: the front door re-exports everything, nothing inside imports it
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts) if parts else ""


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The collabemb modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "collabemb" or name.startswith("collabemb."):
                target = name.removeprefix("collabemb").removeprefix(".")
                if target in known:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, known) - {name} for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package_not_even_a_lazy_one():
    edges = graph()
    assert edges["train"], "the graph builder found no imports at all"
    cycle = find_cycle({k: v for k, v in edges.items() if k})  # the package __init__ only re-exports
    assert cycle is None, " -> ".join(cycle)


def test_every_module_has_a_layer_and_imports_only_its_layer_or_below():
    edges = graph()
    unplaced = sorted(set(edges) - set(LAYERS))
    assert not unplaced, f"modules without a layer in docs/architecture.md: {unplaced}"
    upward = [
        f"{a} (layer {LAYERS[a]}) -> {b or 'collabemb'} (layer {LAYERS[b]})" for a, bs in edges.items() for b in bs if LAYERS[b] > LAYERS[a]
    ]
    assert not upward, "imports pointing up: " + "; ".join(upward)


def test_the_torch_module_knows_no_files_index_training_or_exports():
    assert graph()["models"] <= {"registry"}


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_600_lines(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name}: {lines} lines"


def test_no_function_over_80_lines_outside_the_numba_kernel():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                jitted = any(isinstance(d, ast.Name) and d.id == "_jit" for d in node.decorator_list)
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and not jitted:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, "; ".join(long)


def test_the_formatter_is_never_told_to_skip_a_line():
    skipped = [f"{name}" for name, path in modules().items() if "fmt: skip" in path.read_text(encoding="utf-8")]
    assert not skipped, f"'# fmt: skip' in {skipped}"


def test_no_optional_attribute_is_read_back_with_getattr_none():
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) == 3:
                default = node.args[2]
                if isinstance(default, ast.Constant) and default.value is None:
                    found.append(f"{name}:{node.lineno}")
    assert not found, f"getattr(..., None) in {found}"

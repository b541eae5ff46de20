"""The package's import layers point one way only (issue #18), read statically from the source: every `import`
and `from ... import` of `src/aim`, including those inside functions (a lazy import is still a dependency).

    entry points    aim.run  aim.flops  aim.bench  aim.search (the search sweeper's logic and its CLI)
    library         aim.budget  aim.tradeoff  aim.sweep  aim.analysis  aim.eval  aim.tracking
    validation      aim.config  (looks the schemas up in the families' registries)
    cost model      aim.efficiency  (tokens per layer, analytic FLOPs, roofline)
    families        aim.models  aim.data  aim.merging  aim.pruning
    registry        aim.registry  aim.plugins (loads the plugins installed from outside the repo)
    leaves          aim.checks  aim.paths  aim.tokens  aim.prompts (a task's prompt text: data builds it, models wrap it)
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(package: str = "aim") -> dict[str, Path]:
    """Dotted module name -> file; a package is its __init__.py."""
    out = {}
    for f in (SRC / package).rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph(package: str = "aim") -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (a dotted name resolves to its longest
    known prefix; a submodule importing its own package is no edge: Python imports the package first)."""
    files = module_files(package)

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in files.items():
        anchor = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                if target and target != module and not module.startswith(target + "."):
                    edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def in_family(module: str, families) -> bool:
    return any(module == f or module.startswith(f + ".") for f in families)


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    described = ["; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in found]
    assert not found, "import cycles in src/aim:\n" + "\n".join(described)


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("entry_point", ["aim.run", "aim.flops", "aim.bench", "aim.search"])
def test_no_library_module_imports_an_entry_point(entry_point):
    importers = sorted(m for m, edges in import_graph().items() if entry_point in edges)
    assert importers == [], f"{entry_point} is a command-line entry point, imported by {importers}"


LEAVES = ("aim.checks", "aim.paths", "aim.tokens", "aim.prompts")


@pytest.mark.parametrize("leaf", LEAVES)
def test_the_leaf_modules_import_nothing_of_the_package(leaf):
    assert import_graph()[leaf] == set()


def test_the_registry_and_its_plugin_loader_import_only_leaves():
    graph = import_graph()
    allowed = set(LEAVES) | {"aim.registry", "aim.plugins"}
    assert {m: graph[m] - allowed for m in ("aim.registry", "aim.plugins")} == {"aim.registry": set(), "aim.plugins": set()}


FAMILIES = ("aim.models", "aim.data", "aim.merging", "aim.pruning")
ABOVE_FAMILIES = ("aim.config", "aim.efficiency", "aim.budget", "aim.tradeoff", "aim.sweep", "aim.analysis", "aim.eval",
                  "aim.tracking", "aim.run", "aim.flops", "aim.bench", "aim.search")


def test_the_plugin_families_import_nothing_above_them():
    """A plugin's schema checks its fields with aim.checks; aim.config (validation) sits above the families."""
    upward = sorted(f"{m} -> {t}" for m, edges in import_graph().items() if in_family(m, FAMILIES)
                    for t in edges if in_family(t, ABOVE_FAMILIES))
    assert upward == []


def test_no_plugin_family_imports_another():
    """Models, datasets, mergers and pruners are independent plugin families (the pruning hooks read the token
    roles from the leaf aim.tokens, not from the model family)."""
    sideways = sorted(f"{m} -> {t}" for m, edges in import_graph().items() for t in edges
                      if in_family(m, FAMILIES) and in_family(t, FAMILIES) and t.split(".")[1] != m.split(".")[1])
    assert sideways == []


def test_the_cost_model_imports_no_validation_and_no_entry_point():
    """aim.efficiency (the analytic cost model) is used by aim.config, the budget planner, the search and
    the analysis; it sees only the families and the leaves."""
    upward = sorted(f"{m} -> {t}" for m, edges in import_graph().items() if in_family(m, ("aim.efficiency",))
                    for t in edges if in_family(t, ABOVE_FAMILIES) and not in_family(t, ("aim.efficiency",)))
    assert upward == []

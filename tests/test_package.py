"""The package's shape: one-way imports, a reading order, no private names across modules.

The import graph is read from the source with ``ast`` (module-level and
function-level imports alike), so an import hidden inside a function to
dodge a cycle is still an edge. The reading order is the numbered list in
``lvae_np/__init__.py``'s docstring: every module at the top of the package
is in it (or among the modules "beside" it, or one of the command aliases),
and each numbered module builds only on those before it.
"""
import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lvae_np"
COMMAND_ALIASES = {"train", "evaluate", "plots"}   # python -m lvae_np.train: lvae_np.training's


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``from X import ...`` statement names."""
    if node.level == 0:
        return node.module or ""
    base = module if _is_package(module) else module.rsplit(".", 1)[0]
    for _ in range(node.level - 1):
        base = base.rsplit(".", 1)[0]
    return f"{base}.{node.module}" if node.module else base


def _imports(module: str):
    """(imported module, imported name or None, line) for every lvae_np import of ``module``."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lvae_np":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source.split(".")[0] != "lvae_np":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:          # "from . import layers": the module itself
                    yield sub, None, node.lineno
                else:
                    yield source, alias.name, node.lineno


def import_graph() -> dict:
    """module -> set of lvae_np modules it imports (a package's import runs its __init__)."""
    graph = {}
    for module in MODULES:
        edges = set()
        for target, _, _ in _imports(module):
            if target in MODULES and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict):
    """One cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_uses_a_private_name_of_another():
    found = []
    for module in MODULES:
        tree = ast.parse(MODULES[module].read_text())
        module_aliases = {}
        for target, name, line in _imports(module):
            if name is not None and _private(name):
                found.append(f"{module}:{line} imports {name} from {target}")
        for node in ast.walk(tree):  # names bound to lvae_np modules, then ``alias._name``
            if isinstance(node, ast.ImportFrom):
                source = _resolve(module, node)
                for alias in node.names:
                    if f"{source}.{alias.name}" in MODULES:
                        module_aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "lvae_np" and alias.asname:
                        module_aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and _private(node.attr)
                    and module_aliases[node.value.id] != module):
                found.append(f"{module}:{node.lineno} uses "
                             f"{module_aliases[node.value.id]}.{node.attr}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_says_its_job(module):
    doc = ast.get_docstring(ast.parse(MODULES[module].read_text()))
    assert doc and doc.split("\n")[0].strip(), f"{module} has no docstring saying its job"


def reading_order():
    """(numbered, beside): the module names of lvae_np/__init__.py's reading order."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    numbered = re.findall(r"^\d+\. ``(\w+)``", doc, flags=re.M)
    beside = re.findall(r"``(\w+)``", doc.split("Beside them:", 1)[1].split("\n\n", 1)[0])
    return numbered, beside


def test_the_reading_order_names_every_module_at_the_top():
    numbered, beside = reading_order()
    top = {name.split(".")[1] for name in MODULES
           if name.count(".") == 1 and not _is_package(name)}
    assert len(numbered) >= 8 and not set(numbered) & set(beside)
    assert set(numbered) | set(beside) | COMMAND_ALIASES == top, (
        sorted(top ^ (set(numbered) | set(beside) | COMMAND_ALIASES)))


def test_each_module_in_the_reading_order_builds_only_on_those_before_it():
    numbered, beside = reading_order()
    graph = import_graph()
    for k, name in enumerate(numbered):
        allowed = {f"lvae_np.{m}" for m in numbered[:k] + beside} | {"lvae_np"}
        used = graph[f"lvae_np.{name}"] - {f"lvae_np.{name}"}
        assert used <= allowed, (f"lvae_np.{name} imports {sorted(used - allowed)}, which come "
                                 "after it in the reading order")


def test_the_reading_order_check_finds_a_module_out_of_order(monkeypatch):
    numbered, beside = reading_order()
    moved = ["likelihoods"] + [m for m in numbered if m != "likelihoods"]   # before layers
    monkeypatch.setattr(sys.modules[__name__], "reading_order", lambda: (moved, beside))
    with pytest.raises(AssertionError, match="after it in the reading order"):
        test_each_module_in_the_reading_order_builds_only_on_those_before_it()


def test_the_checks_see_every_module():
    # The tests above pass vacuously if the package is not found.
    assert {"lvae_np.models", "lvae_np.steps", "lvae_np.layers"} <= set(MODULES)

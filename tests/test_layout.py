"""The package layout: no import cycles among analytic/, solvers/ and bench/, imports of the project's own
modules only at module level (a function-level import hides a cycle; the CLI's lazy command imports
excepted), and the layers import downwards: analytic and solvers know nothing of bench; inside bench,
cli -> report -> studies -> sweep -> measure."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("analytic", "solvers", "bench")
# bench's layers, lowest first: a module may import its own layer and those below
LAYERS = ("bench.measure", "bench.sweep", "bench.studies", "bench.report", "bench.cli")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(name: str) -> str | None:
    """The project module an import of `name` loads (the longest known prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def _imports(module: str, path: Path) -> tuple[set[str], list[str]]:
    """(project modules imported at module level, project imports made inside functions)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    top, inner = set(), []

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + [base]).strip(".")
            return [f"{base}.{a.name}" if _target(f"{base}.{a.name}") == f"{base}.{a.name}" else base
                    for a in node.names]
        return []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            for name in names(child):
                target = _target(name)
                if target is None or target == module:
                    continue
                if in_function:
                    inner.append(f"{module} -> {target} (line {child.lineno})")
                elif not _type_checking(child, tree):
                    top.add(target)
            visit(child, inside)

    visit(tree, False)
    return top, inner


def _type_checking(node: ast.AST, tree: ast.Module) -> bool:
    for block in ast.walk(tree):
        guarded = isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        if guarded and node in ast.walk(block):
            return True
    return False


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    graph, inner = {}, []
    for module, path in MODULES.items():
        top, found = _imports(module, path)
        graph[module] = top
        inner += found
    return graph, inner


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _layer(module: str) -> int | None:
    return next((i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + ".")),
                None)


def test_no_import_cycles():
    cycles = _cycles(_graph()[0])
    assert not cycles, f"import cycles: {cycles}"


def test_project_imports_are_at_module_level():
    """Imports inside functions are for optional heavy dependencies only (torch-fidelity, diffusers, ...),
    never for the project's own modules; the one exception is the command line, whose commands load
    their study (and with it torch) only when they run, so that `bench --help` starts at once."""
    assert [i for i in _graph()[1] if not i.startswith("bench.cli")] == []


def test_layers_import_downwards():
    graph = _graph()[0]
    upward = []
    for module, targets in graph.items():
        for target in targets:
            if module.startswith(("analytic", "solvers")) and target.startswith("bench"):
                upward.append(f"{module} -> {target}")
            if module.startswith("analytic") and target.startswith("solvers"):
                upward.append(f"{module} -> {target}")
            lm, lt = _layer(module), _layer(target)
            if lm is not None and lt is not None and lt > lm:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_the_checks_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _target("bench.measure.orders.fit_order") == "bench.measure.orders"

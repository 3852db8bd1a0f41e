"""psjax's layers import one way, and no generic module branches on a method's name.

The import graph is read from the source (every ``import`` and ``from ... import``, at module level or inside
a function, and ``importlib.import_module`` of a literal name). Layers, bottom to top: the field rules, the
schema, the registry and shared containers; envs and nets; sharing and evaluation; learners; the catalog of
built-in methods; config validation; the loop and the logging backends; the host runner; compare, the runs it
trains (method_runs) and the export; the CLI.
"""

from __future__ import annotations

import ast
import pathlib
import re

from psjax import catalog, registry  # noqa: F401  (the built-in methods registered)

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "psjax"
RANKS = (  # module prefix -> layer (an import may only point to the same layer or below)
    ("psjax.fields", 0), ("psjax.schema", 1), ("psjax.sweep", 1), ("psjax.registry", 2), ("psjax.types", 2),
    ("psjax.logrows", 2),
    ("psjax.bootstrap", 3), ("psjax.envs", 3), ("psjax.nets", 3), ("psjax.shard", 3),
    ("psjax.sharing", 4), ("psjax.agent_model", 4), ("psjax.evaluate", 4),
    ("psjax.learners", 5), ("psjax.catalog", 6), ("psjax.config", 7),
    ("psjax.train", 8), ("psjax.backends", 8), ("psjax.memory", 8),
    ("psjax.run", 9), ("psjax.plan", 9), ("psjax.logs", 9), ("psjax.checkpoints", 9), ("psjax.resume", 9),
    ("psjax.run_folder", 9), ("psjax.plots", 9), ("psjax.placement", 9),
    ("psjax.compare", 10), ("psjax.method_runs", 10), ("psjax.reproduce", 10), ("psjax.export", 10), ("psjax.cli", 11),
    ("psjax.__main__", 12), ("psjax", 12),
)
# Modules that serve every method: none of them may compare with a method's name or key a table by it.
GENERIC = ("fields", "schema", "sweep", "registry", "types", "config", "train", "run", "compare", "cli", "evaluate",
           "logrows", "bootstrap", "agent_model", "method_runs", "plan", "logs", "checkpoints", "resume", "run_folder",
           "plots", "placement",
           "shard", "backends", "export", "memory",
           "envs/", "nets/", "learners/__init__", "learners/qmix", "learners/actor_critic", "learners/replay",
           "learners/batches",
           "sharing/methods", "sharing/bank", "sharing/bank_ops", "sharing/mapd", "sharing/report", "sharing/kmeans")


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> {psjax modules it imports}`` (a name that is not a module resolves to its module)."""
    modules = _modules()

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("psjax"):
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("psjax")]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args
                  and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("psjax")):
                targets = [node.args[0].value]
            graph[mod] |= {t for t in map(resolve, targets) if t and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def rank(module: str) -> int:
    return next(r for prefix, r in RANKS if module == prefix or module.startswith(prefix + "."))


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down_the_layers():
    upward = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
              if m != "psjax" and rank(t) > rank(m)]
    assert upward == []


def _method_branches(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """``(line, name)`` where code compares with a method's name (``alg == "x"``, ``alg in ("x", ...)``) or keys a
    table by it (``{"x": ...}``, ``table["x"]``). Defaults (``alg="fups"``) are values, not branches."""

    def literals(node):
        if isinstance(node, ast.Constant) and node.value in names:
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [v for elt in node.elts for v in literals(elt)]
        return []

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            hits = [v for side in (node.left, *node.comparators) for v in literals(side)]
        elif isinstance(node, ast.Dict):
            hits = [v for key in node.keys if key is not None for v in literals(key)]
        elif isinstance(node, ast.Subscript):
            hits = literals(node.slice)
        else:
            continue
        found += [(node.lineno, v) for v in hits]
    return found


def test_method_branch_finder():
    code = ('if alg == "fups": pass\nx = alg in ("nops", "other")\nt = {"bdps": 1}\ny = t["madps"]\n'
            'def f(a="fups"): pass')
    assert [v for _, v in _method_branches(ast.parse(code), {"fups", "nops", "bdps", "madps"})] == \
        ["fups", "nops", "bdps", "madps"]


def test_no_generic_module_branches_on_a_method():
    names = set(registry.names())
    assert {"fups_id", "bdps", "madps"} <= names
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("").as_posix()
        if any(rel == g or (g.endswith("/") and rel.startswith(g)) for g in GENERIC):
            found += [f"{rel}:{line} {name!r}" for line, name in _method_branches(ast.parse(path.read_text()), names)]
    assert found == []


def test_layers_are_selected_by_block_not_by_flax_module_name():
    """Only ``psjax.nets.agents`` (where ``blocks`` maps the two) and ``psjax.nets.init`` name flax's modules;
    every method selects an agent network's layers by block."""
    name = re.compile(r"(Dense|GRUCell|ConvTorso)_\d+.*")  # a module name, or a prefix of one in code
    found = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}" for path in PACKAGE.rglob("*.py")
             if path.relative_to(PACKAGE).as_posix() not in ("nets/agents.py", "nets/init.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and name.fullmatch(node.value)]
    assert found == []
    assert name.fullmatch("Dense_0") and name.fullmatch("GRUCell_0") and not name.fullmatch("a Dense_0 layer")

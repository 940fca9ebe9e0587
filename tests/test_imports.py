"""The import graph of tf_frcnn/, read from the AST: no cycle, and no function-level import of a
tf_frcnn module unless it is listed below with its reason."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "tf_frcnn"

# (importing module, imported module): why it is inside a function. The CLI parses its arguments
# outside the package (tf_frcnn_cli.py), so no module of the package needs one.
ALLOWED = {}


def module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node):
    """The tf_frcnn modules an import statement names (``from a import b``: ``a.b`` when
    ``b`` is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "tf_frcnn"]
    if node.level or not (node.module or "").startswith("tf_frcnn"):
        return []
    names = []
    for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        known = (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
            ROOT.parent / sub.replace(".", "/") / "__init__.py"
        ).exists()
        names.append(sub if known else node.module)
    return names


def graph():
    """({module: {imported module}} of module-level imports, [(module, imported, line)] of
    function-level ones)."""
    edges, nested = {}, []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        edges.setdefault(name, set())
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                top.add(id(node))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node):
                    if id(node) in top:
                        edges[name].add(target)
                    else:
                        nested.append((name, target, node.lineno))
    return edges, nested


def cycles(edges):
    """Every cycle found by a depth-first search, as a list of modules."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            # Importing a.b.c runs a/__init__ and a/b/__init__ first: they count as edges too.
            for target in [nxt] + [nxt.rsplit(".", k)[0] for k in range(1, nxt.count("."))]:
                if target in ("tf_frcnn", node) or node.startswith(target + "."):
                    continue  # a package's own __init__ is running already
                if state.get(target) == "open":
                    found.append(stack[stack.index(target) :] + [target])
                elif target not in state and target in edges:
                    visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_the_import_graph_has_no_cycle():
    edges, _ = graph()
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} module-level imports")
    found = cycles(edges)
    print("\n".join(" -> ".join(cycle) for cycle in found))
    assert found == []


def test_function_level_imports_are_listed_with_their_reason():
    _, nested = graph()
    unlisted = [f"{m}:{line} imports {t}" for m, t, line in nested if (m, t) not in ALLOWED]
    print(f"{len(nested)} function-level tf_frcnn imports, all listed: {not unlisted}")
    print("\n".join(unlisted))
    assert unlisted == []

"""Count function-level tf_frcnn imports and the largest function per area (AST):
`python benchmarks/code_shape.py .` (docs/design.md)."""

import ast
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
pkg = root / "tf_frcnn"
count = {}
largest = {}


def area(rel):
    s = str(rel)
    for a in ("cli.py", "config.py"):
        if s == f"tf_frcnn/{a}":
            return a
    for a in ("training", "data", "evaluation", "export"):
        if s.startswith(f"tf_frcnn/{a}/"):
            return a + "/"
    return None


for f in sorted(pkg.rglob("*.py")):
    rel = f.relative_to(root)
    tree = ast.parse(f.read_text())
    # An import statement inside a function (at any depth) counts once.

    def visit(node, depth):
        global_n = 0
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                global_n += visit(child, depth + 1)
            elif (
                depth > 0
                and isinstance(child, ast.ImportFrom)
                and child.level == 0
                and (child.module or "").split(".")[0] == "tf_frcnn"
            ):
                global_n += 1
            elif (
                depth > 0
                and isinstance(child, ast.Import)
                and any(a.name.split(".")[0] == "tf_frcnn" for a in child.names)
            ):
                global_n += 1
            else:
                global_n += visit(child, depth)
        return global_n

    n = visit(tree, 0)
    if n:
        count[str(rel)] = n
    a = area(rel)
    if a:
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = fn.end_lineno - fn.lineno + 1
                if lines > largest.get(a, (0,))[0]:
                    largest[a] = (
                        lines,
                        f"{rel}:{fn.lineno} {fn.name}",
                        len(fn.args.args) + len(fn.args.kwonlyargs),
                    )
print("function-level tf_frcnn imports:", sum(count.values()))
for k, v in sorted(count.items(), key=lambda kv: -kv[1]):
    print(f"  {v:3d} {k}")
print("largest function per area (lines, where, params):")
for a, v in sorted(largest.items()):
    print(f"  {a:12s} {v[0]:4d}  {v[1]}  ({v[2]} params)")

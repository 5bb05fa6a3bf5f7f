"""Import structure of the package: cycles between its modules (subpackages and top-level modules),
imports inside functions counted, and the number of function-local imports.

    python tools/import_layers.py [--json]

A unit is `wmfast.X` for a subpackage or top-level module X (wmfast.rollout, wmfast.cli, ...) and
`export` / `kernels`. An arrow A -> B means some file of A imports some module of B, at any depth.
"""
import argparse
import ast
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"wmfast": "wmfast", "export": "wmfast.export", "kernels": "wmfast.kernels"}   # folder -> import name


def unit_of(module: str):
    """wmfast.rollout.world -> wmfast.rollout; wmfast.export.graphs -> export; others -> None."""
    parts = module.split(".")
    if parts[0] != "wmfast":
        return None
    if len(parts) > 1 and parts[1] in ("export", "kernels"):
        return parts[1]
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return None
    return "wmfast." + parts[1]


def python_files():
    for folder, name in PACKAGES.items():
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in sorted(files):
                if f.endswith(".py"):
                    path = os.path.join(base, f)
                    rel = os.path.relpath(path, os.path.join(ROOT, folder))[:-3].replace(os.sep, ".")
                    yield path, name + ("" if rel == "__init__" else "." + rel.removesuffix(".__init__"))


def imports_of(path: str, module: str):
    """(modules one import statement may load, inside a function?) for every import in the file."""
    tree = ast.parse(open(path).read(), path)
    is_package = path.endswith("__init__.py")
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.append(([a.name for a in child.names], in_function))
            elif isinstance(child, ast.ImportFrom):
                target = child.module or ""
                if child.level:
                    parts = module.split(".")
                    base = parts[:len(parts) - child.level + (1 if is_package else 0)]
                    target = ".".join(base + ([child.module] if child.module else []))
                out.append(([target] + [f"{target}.{a.name}" for a in child.names], in_function))
            visit(child, inner)
    visit(tree, False)
    return out


def graph():
    """(unit -> units it imports, number of function-local import statements of the package)."""
    arrows, local = {}, 0
    for path, module in python_files():
        src = unit_of(module)
        for targets, in_function in imports_of(path, module):
            local += in_function and targets[0].startswith("wmfast")
            for dst in {unit_of(t) for t in targets} - {None, src}:
                if src:
                    arrows.setdefault(src, set()).add(dst)
    return arrows, local


def cycles(arrows):
    """Strongly connected components with more than one unit (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(arrows.get(v, ())):
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
    sys.setrecursionlimit(10000)
    for v in sorted(set(arrows) | {w for ws in arrows.values() for w in ws}):
        if v not in index:
            strong(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args(argv)
    arrows, local = graph()
    found = cycles(arrows)
    report = {"units": len(set(arrows) | {w for ws in arrows.values() for w in ws}),
              "arrows": sum(len(v) for v in arrows.values()),
              "function_local_package_imports": int(local), "cycles": found}
    if a.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['units']} units, {report['arrows']} arrows, {report['function_local_package_imports']} "
          f"function-local imports of the package")
    for comp in found:
        ties = [f"{s} -> {d}" for s in comp for d in sorted(arrows.get(s, ())) if d in comp]
        print(f"cycle of {len(comp)}: {', '.join(comp)}\n  " + "\n  ".join(ties))
    if not found:
        print("no import cycles between units")
    return 0


if __name__ == "__main__":
    sys.exit(main())

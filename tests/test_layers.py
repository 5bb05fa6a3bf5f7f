"""The layers point one way (docs: architecture.md "Layers"):

    cli -> apps (demo, bench, serve, viz, eval, lapa, policy) -> engine (rollout, export,
    train, loader) -> models -> nn -> ops -> base (errors, config, validate, device, data, ...)

The CLI is the package wmfast/cli/ (one module per command group, listed in its GROUPS) and the
`python -m` entry points; nothing imports it, and only it uses argparse (library functions take
plain arguments, never a Namespace).

Every `import` of a wmfast module in wmfast/, export/ and kernels/ (module level and inside
functions alike: a lazy import is still a dependency) must go to the same layer or a lower one,
and the modules must not import each other in a cycle. Read from the source with ast, so the test
imports nothing it checks.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_layers():
    """tools/import_layers.py (not a package): its Tarjan cycle finder serves the tests too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("import_layers", os.path.join(ROOT, "tools", "import_layers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
SOURCES = {"wmfast": "wmfast", "export": "wmfast.export", "kernels": "wmfast.kernels"}   # folder -> package

BASE, OPS, NN, MODELS, ENGINE, APPS, CLI = range(7)
# Module-name prefix -> layer; the longest matching prefix wins.
LAYERS = {
    "wmfast.errors": BASE, "wmfast.validate": BASE, "wmfast.device": BASE, "wmfast.config": BASE,
    "wmfast.version": BASE, "wmfast.data": BASE, "wmfast.run_data": BASE,
    "wmfast.ops": OPS, "wmfast.kernels": OPS, "wmfast._C": OPS,
    "wmfast.measure": OPS,          # timing and machine facts (reads the ops' extension flag)
    "wmfast.nn": NN,
    "wmfast.models": MODELS, "wmfast.checkpoint": MODELS, "wmfast.compat": MODELS,
    "wmfast.rollout": ENGINE, "wmfast.export": ENGINE, "wmfast.train": ENGINE, "wmfast.loader": ENGINE,
    "wmfast.latent_actions": ENGINE,   # a run's held-out split and the LAM's codes per transition
    # LAPA's trainer (with its validation and code classifier) is an engine like wmfast.train
    "wmfast.lapa.train": ENGINE, "wmfast.lapa.classifier": ENGINE, "wmfast.lapa.data": ENGINE,
    "wmfast.lapa.evaluate": ENGINE,
    "wmfast": APPS,                 # the package facade (wmfast.load, wmfast.World) and the apps below
    "wmfast.demo": APPS, "wmfast.bench": APPS, "wmfast.serve": APPS, "wmfast.viz": APPS,
    "wmfast.evaluate": APPS, "wmfast.lapa": APPS, "wmfast.policy": APPS,
    "wmfast.cli": CLI, "wmfast.__main__": CLI,
}
NAMES = ("base", "ops", "nn", "models", "engine", "apps", "cli")


def modules() -> dict:
    """{dotted module name: source path} for every .py file of the package."""
    out = {}
    for folder, package in SOURCES.items():
        top = os.path.join(ROOT, folder)
        for dirpath, dirnames, files in os.walk(top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and d != "assets"]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), top)[:-3].replace(os.sep, ".")
                    rel = rel[: -len("__init__")].rstrip(".") if rel.endswith("__init__") else rel
                    out[package + ("." + rel if rel else "")] = os.path.join(dirpath, f)
    return out


def statements(tree, at_import: bool):
    """Every node of the tree, or (at_import) only those that run when the module is imported
    (not inside function bodies)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not (at_import and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))):
                todo.append(child)


def imports(name: str, path: str, known: set, at_import: bool = False) -> list:
    """(imported wmfast module, line) for every import statement in the file, at any depth (or,
    at_import, those that run at import time)."""
    is_package = path.endswith("__init__.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in statements(tree, at_import):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against this module's package
                parts = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known or a.name == "_C"]
            # `from pkg import submodule` depends on the submodule; `from pkg import name` on pkg itself
            found += [(m, node.lineno) for m in subs + ([base] if len(subs) < len(node.names) else [])]
    return [(m, line) for m, line in found if m == "wmfast" or m.startswith("wmfast.")]


def command_modules() -> set:
    """The CLI's command-group modules: wmfast.cli.GROUP for every GROUP in wmfast/cli/__init__.py's
    GROUPS (plus `bench`, which it adds itself), each a file of the package."""
    cli = os.path.join(ROOT, "wmfast", "cli")
    with open(os.path.join(cli, "__init__.py")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "GROUPS" for t in node.targets):
            groups = set(ast.literal_eval(node.value)) | {"bench"}
            missing = sorted(g for g in groups if not os.path.isfile(os.path.join(cli, f"{g}.py")))
            assert not missing, f"wmfast/cli/__init__.py lists command groups without a module: {missing}"
            return {f"wmfast.cli.{g}" for g in groups}
    raise AssertionError("wmfast/cli/__init__.py has no GROUPS tuple")


def layer(module: str, commands: set) -> int:
    if module in commands or module.endswith(".__main__"):
        return CLI
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} has no layer: add it to LAYERS in tests/test_layers.py"
    return LAYERS[max(prefixes, key=len)]


def edges(at_import: bool = False) -> list:
    mods = modules()
    known = set(mods)
    out = []
    for name, path in sorted(mods.items()):
        for target, line in imports(name, path, known, at_import):
            if target != name:
                out.append((name, target, line))
    return out


def upward(all_edges, commands) -> list:
    """Imports from a lower layer to a higher one (a package importing its own submodules is fine)."""
    bad = []
    for src, dst, line in all_edges:
        if dst.startswith(src + "."):
            continue
        if layer(dst, commands) > layer(src, commands):
            bad.append(f"{src}:{line} ({NAMES[layer(src, commands)]}) imports {dst} "
                       f"({NAMES[layer(dst, commands)]})")
    return bad


def cycles(all_edges) -> list:
    """Strongly connected groups of more than one module (Tarjan), ignoring a package's imports of
    its own submodules (the package is its own submodules' parent, not a peer)."""
    graph = {}
    for src, dst, _ in all_edges:
        if not dst.startswith(src + ".") and not src.startswith(dst + "."):
            graph.setdefault(src, set()).add(dst)
    return import_layers().cycles(graph)


def test_no_upward_imports():
    bad = upward(edges(), command_modules())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def package_of(module: str) -> str:
    """wmfast.export.runtime -> wmfast.export; top-level modules (wmfast.loader) stand alone."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_across_packages():
    """No cycle through modules of different packages (wmfast.rollout and wmfast.export, models and
    compat, ...), lazy imports included: a function-level import is a dependency too. Inside one
    package, lazy imports may go both ways (the exporter runs parity, the runtime re-exports on
    demand)."""
    found = cycles([(a, b, line) for a, b, line in edges() if package_of(a) != package_of(b)])
    assert not found, "import cycles across packages:\n" + "\n".join(" <-> ".join(g) for g in found)


def test_no_import_time_cycles_between_modules():
    found = cycles(edges(at_import=True))
    assert not found, "modules that import each other at import time:\n" + "\n".join(" <-> ".join(g) for g in found)


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The checks themselves: a model importing the trainer, nn importing the viz app, and a
    two-module cycle are all reported (synthetic edges, so the real tree need not be broken)."""
    commands = command_modules()
    fake = [("wmfast.models.dynamics", "wmfast.train.trainer", 1), ("wmfast.nn.transformer", "wmfast.viz", 2),
            ("wmfast.rollout.world", "wmfast.export.runtime", 3), ("wmfast.export.runtime", "wmfast.rollout.world", 4),
            ("wmfast.bench.export", "wmfast.rollout.world", 5)]
    bad = upward(fake, commands)
    assert len(bad) == 2 and "wmfast.models.dynamics:1 (models) imports wmfast.train.trainer (engine)" in bad
    assert cycles(fake) == [["wmfast.export.runtime", "wmfast.rollout.world"]]
    # the CLI package is the top layer: a library module (an app even) importing it is reported
    assert layer("wmfast.cli.train", commands) == layer("wmfast.cli.common", commands) == CLI
    assert layer("wmfast.bench.train", commands) == APPS and layer("wmfast.serve.app", commands) == APPS
    assert upward([("wmfast.bench.train", "wmfast.cli.common", 6)], commands) == [
        "wmfast.bench.train:6 (apps) imports wmfast.cli.common (cli)"]


def test_every_command_group_is_a_module_of_the_cli_package():
    commands = command_modules()
    assert {"wmfast.cli.train", "wmfast.cli.serve", "wmfast.cli.bench", "wmfast.cli.export"} <= commands
    assert commands <= set(modules())
    for name in commands:    # each group registers its commands with add_commands(sub)
        with open(modules()[name]) as f:
            tree = ast.parse(f.read())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "add_commands" for n in tree.body), name


def test_nothing_but_the_entry_points_imports_the_cli():
    bad = [f"{src}:{line} imports {dst}" for src, dst, line in edges()
           if dst.startswith("wmfast.cli") and not (src.startswith("wmfast.cli") or src.endswith(".__main__"))]
    assert not bad, "the CLI is the top layer; nothing imports it:\n" + "\n".join(bad)


def test_only_the_cli_uses_argparse():
    """Library functions take plain arguments: no module outside wmfast/cli/ imports argparse (an
    argparse Namespace reaching the library would need it)."""
    bad = []
    for name, path in sorted(modules().items()):
        if name.startswith("wmfast.cli"):
            continue
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names) \
                    or isinstance(node, ast.ImportFrom) and node.module == "argparse":
                bad.append(f"{name}:{node.lineno}")
    assert not bad, "argparse outside wmfast/cli/:\n" + "\n".join(bad)


@pytest.mark.parametrize("module,expected", [("wmfast.nn.collectives", NN), ("wmfast.nn.capture_flag", NN),
                                             ("wmfast.export.parity", ENGINE), ("wmfast.models.policy", MODELS)])
def test_shared_helpers_sit_below_their_users(module, expected):
    assert module in modules()
    assert layer(module, command_modules()) == expected

"""The import structure the code promises, read from the source with `ast`: nothing that computes or samples imports
train.py, the project's own modules import each other without a cycle, and the top-level files import at the top only."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_TRAIN = ("medim", "tokenizer", "sample", "eval", "eval_text", "eval_image")  # + every module of data/


def project_modules() -> dict:
    """{module name: path} for the top-level files, the data package and the bench scripts (which put bench/ on
    sys.path, so they import each other by bare name)."""
    mods = {}
    for folder, package in (("", ""), ("data", "data"), ("bench", "")):
        for f in sorted(os.listdir(os.path.join(ROOT, folder))):
            if f.endswith(".py"):
                name = f[:-3] if f != "__init__.py" else package
                mods[f"{package}.{name}" if package and name != package else name] = os.path.join(ROOT, folder, f)
    return mods


MODULES = project_modules()


def imports(path: str, module: str, top_level_only: bool):
    """(line, imported module name) for every import of a file; relative imports resolved inside its package."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    if top_level_only:  # module level includes `if` / `try` blocks, never function or class bodies
        nodes = [n for top in tree.body for n in (ast.walk(top) if isinstance(top, (ast.If, ast.Try)) else [top])]
    else:
        nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(filter(None, [base, node.module]))
            yield node.lineno, name
            for a in node.names:  # `from data import synthetic` imports the module data.synthetic
                if f"{name}.{a.name}" in MODULES:
                    yield node.lineno, f"{name}.{a.name}"


def project_edges(module: str) -> set:
    """The project modules `module` imports at module level. Importing data.common from outside the package runs
    data/__init__.py first, so that counts as importing `data` too; inside the package it is the package itself."""
    out = set()
    for _, name in imports(MODULES[module], module, top_level_only=True):
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            target = ".".join(parts[:k])
            inside = module == "data" or module.startswith("data.")
            if target in MODULES and target != module and not (inside and target == "data"):
                out.add(target)
    return out


@pytest.mark.parametrize("module", [m for m in MODULES if m in NOT_TRAIN or m == "data" or m.startswith("data.")])
def test_nothing_that_computes_or_samples_imports_train(module):
    bad = [line for line, name in imports(MODULES[module], module, top_level_only=False) if name == "train"]
    assert not bad, f"{MODULES[module]} imports train.py at line(s) {bad}"


def test_the_project_modules_import_each_other_without_a_cycle():
    graph = {m: project_edges(m) for m in MODULES}
    done, on_path = set(), []

    def visit(m):
        if m in on_path:
            cycle = on_path[on_path.index(m):] + [m]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if m in done:
            return
        on_path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        on_path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
    assert graph["train"] >= {"eval", "medim", "tokenizer"} and "train" not in graph["eval"]  # the graph is real


@pytest.mark.parametrize("module", [m for m in MODULES if os.path.dirname(MODULES[m]) == ROOT])
def test_top_level_files_import_at_the_top_only(module):
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read())
    inside = [(node.lineno, ast.unparse(sub)) for node in ast.walk(tree)
              if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
              for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))]
    assert not inside, f"{MODULES[module]}: imports inside functions: {inside}"


def test_the_structure_checks_can_fail(tmp_path):
    """The readers above see a cycle, an import of train and a function-level import when there is one."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import b\nfrom train import main\n")
    b.write_text("import os\n\ndef f():\n    import a\n")
    MODULES.update(a=str(a), b=str(b))
    try:
        assert project_edges("a") == {"b", "train"} and project_edges("b") == set()   # f's import is not module level
        assert [n for _, n in imports(str(b), "b", top_level_only=False)] == ["os", "a"]
        b.write_text("import a\n")
        with pytest.raises(AssertionError, match="import cycle"):
            test_the_project_modules_import_each_other_without_a_cycle()
    finally:
        del MODULES["a"], MODULES["b"]

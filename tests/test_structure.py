"""The shape of the source tree: no import cycle among genlab's modules, the training loop free of the
command line, `genlab --help` without torch, files of a readable size.

The import graph is read from the source (an AST walk over src/genlab, nothing is imported): an edge
A -> B for every `import B` / `from B import x` (x a module of B: -> B.x) in A, at module level AND
inside functions (a lazy import is still a dependency; it only moves the moment it runs). Importing
a submodule is not counted as importing its parent package's __init__ (as import-linter does), but
naming the package itself (`from . import METRICS`) is.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "genlab"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imports(name: str, path: Path, module_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    nodes = tree.body if module_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            subs = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
            out |= subs or {target}
            if subs and len(subs) < len(node.names):
                out.add(target)
    return {m for m in out if m in MODULES and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "with-function-level"])
def test_no_import_cycle(module_level_only):
    graph = {n: imports(n, p, module_level_only) for n, p in MODULES.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += imports(n, MODULES[n])
    return seen


def test_train_imports_nothing_of_the_command_line():
    cli = {m for m in MODULES if m == "genlab.cli" or m.startswith("genlab.cli.")}
    assert cli, "the command line modules moved: update this test"
    assert not reachable("genlab.train") & cli
    assert not reachable("genlab.evaluate") & cli   # the scoring library neither


def test_files_stay_readable():
    long = {str(p.relative_to(SRC)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"files over 300 lines: {long}"


def test_help_lists_the_commands_without_importing_torch():
    code = ("import sys, runpy; sys.argv = ['genlab', '--help']\n"
            "try:\n    runpy.run_module('genlab.cli', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().endswith("NO-TORCH"), out.stdout
    for command in ("list", "info", "train", "sample", "eval"):
        assert f"    {command}" in out.stdout

"""The shape of the code: helpers.py only gathers the names the notebooks use from the package ex2 beside it, which
never imports the modules that build on it; ex2/layers.py is the student's small, torch-only file and the only one
with solution regions; every module stays small enough to read, and no function is longer than a screen."""
import ast
import re
import sys
from pathlib import Path

import pytest

from assignment.questions import QUESTIONS

ROOT = Path(__file__).resolve().parents[2]
GRADED_FUNCTIONS = sum(len(spec["replace"]) for spec in QUESTIONS.values() if "replace" in spec)
PACKAGES = ("ex2", "experiments", "grader", "assignment", "tools", "benchmarks")
MODULES = ["helpers.py", "plots.py", *sorted(str(p.relative_to(ROOT)) for package in PACKAGES
                                             for p in (ROOT / package).rglob("*.py"))]
LIMITS = {"helpers.py": 400, "ex2/layers.py": 400}
"""Lines a module may have: these two, 500 for every other one."""


def limit(path: str) -> int:
    return LIMITS.get(path, 500)


def imported_modules(path: str) -> set[str]:
    """The top-level names of the modules `path` imports (a relative import counts as "")."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    return names | {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


@pytest.mark.parametrize("path", MODULES)
def test_no_function_is_longer_than_40_lines(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    long = {f"{node.name} ({node.end_lineno - node.lineno + 1} lines, from line {node.lineno})"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > 40}
    assert not long, f"{path}: split {', '.join(sorted(long))}"


@pytest.mark.parametrize("path", MODULES)
def test_every_module_stays_small_enough_to_read(path):
    lines = len((ROOT / path).read_text(encoding="utf-8").splitlines())
    assert lines <= limit(path), f"{path} has {lines} lines (at most {limit(path)})"


def test_helpers_defines_nothing_and_names_what_it_gathers():
    """helpers.py is the notebooks' face: a docstring, imports from ex2 and `__all__`, nothing defined; every name in
    `__all__` is imported, and every name imported is in `__all__`."""
    tree = ast.parse((ROOT / "helpers.py").read_text(encoding="utf-8"))
    body = tree.body[1:] if isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant) \
        else tree.body
    defined = [ast.unparse(node).splitlines()[0] for node in body if not isinstance(node, ast.ImportFrom)
               and not (isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"])]
    assert not defined, defined
    assert all(node.module and node.module.startswith("ex2.") for node in body if isinstance(node, ast.ImportFrom))
    imported = [alias.asname or alias.name for node in body if isinstance(node, ast.ImportFrom) for alias in node.names]
    (listing,) = [node for node in body if isinstance(node, ast.Assign)]
    exported = [element.value for element in listing.value.elts]
    assert sorted(exported) == sorted(set(exported)) == sorted(imported)


def names_notebooks_use() -> dict[str, set[str]]:
    """Each `helpers.<name>` the notebooks name, with the notebooks that name it: in their code, or in prose that
    sends the student to it (`helpers.TRAIN_SETTINGS`)."""
    import nbformat

    used: dict[str, set[str]] = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            for name in re.findall(r"\bhelpers\.(?!py\b)(\w+)", cell.source):
                used.setdefault(name, set()).add(path.name[:2])
    return used


def test_helpers_exports_exactly_what_the_notebooks_use():
    """The face holds only what a notebook names: every other module and test imports from its ex2 module."""
    import helpers

    used = names_notebooks_use()
    unused = sorted(set(helpers.__all__) - set(used))
    assert not unused, f"helpers.__all__ names what no notebook uses (import it from ex2 instead): {unused}"
    assert not set(used) - set(helpers.__all__), sorted(set(used) - set(helpers.__all__))


def test_ex2_never_imports_the_modules_that_build_on_it():
    for path in ["helpers.py", *(m for m in MODULES if m.startswith("ex2/"))]:
        assert not imported_modules(path) & {"helpers", "experiments", "plots", "tools", "grader", "assignment"}, path


def test_ex2_modules_call_each_other_by_module():
    """Inside ex2 a module imports the others whole (`from ex2 import data`) and calls `data.load_imdb(...)`, so that
    patching the one place a computation is defined changes every caller."""
    for path in (m for m in MODULES if m.startswith("ex2/")):
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        names = [(node.module, [a.name for a in node.names]) for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ex2") or
                 isinstance(node, ast.ImportFrom) and node.level]
        assert all(module == "ex2" for module, _ in names), (path, names)


def test_the_students_file_is_small_torch_only_and_the_only_one_with_solutions():
    """ex2/layers.py is what a student writes and the one file the grader imports on its own: it imports only the
    standard library and torch, holds one solution region per function the grader replaces (assignment/questions.py),
    and no other module holds one."""
    def regions(path: str) -> int:
        return len(re.findall(r"^[ \t]*### BEGIN SOLUTION", (ROOT / path).read_text(encoding="utf-8"), re.M))

    assert imported_modules("ex2/layers.py") <= {"torch", "__future__"} | set(sys.stdlib_module_names)
    assert regions("ex2/layers.py") == GRADED_FUNCTIONS
    assert not [m for m in MODULES if m != "ex2/layers.py" and regions(m)]

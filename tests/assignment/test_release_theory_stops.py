"""The student release's theory notebooks (01 and 02), executed as a student runs them: an unwritten stub stops the
notebook with one red line naming the missing function, also further down once the first parts are written; a
notebook whose parts are all written (with a `backprop` that reuses `vjp`) runs to the end; and without plots.py
(as when a submission's notebooks run alone) the stop still names the function."""
import os
import re
from pathlib import Path

import nbformat
import pytest

from assignment import make_release
from ex2 import runtime
from grader.notebooks import run_notebook

NB01 = "01_derivatives_backprop_skip_connections.ipynb"
NB02 = "02_architectures_and_text_to_image.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("theory") / "ex2"
    make_release.make_release(out)
    return out


def solution(grade_id: str) -> str:
    """The reference's source of a solution code cell of notebook 01 or 02, by its nbgrader grade_id."""
    for name in (NB01, NB02):
        for cell in nbformat.read(runtime.ROOT / "notebooks" / name, as_version=4).cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                return cell.source
    raise KeyError(grade_id)


def run(release: Path, name: str, written: dict | None = None, first: str | None = None):
    """Execute the release's notebook `name` in a quick run (SMOKE_TEST=1), with the cells of `written` (grade_id ->
    source) filled in and `first` as an extra first cell; returns (its errors, where it stopped)."""
    path = release / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in (written or {}):
            cell.source = written[grade_id]
    if first is not None:
        nb.cells.insert(0, nbformat.v4.new_code_cell(first))
    copy = path.with_name(f"run-{name}")
    nbformat.write(nb, copy)
    env = {**os.environ, "SMOKE_TEST": "1", "PYTHONPATH": str(release)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        executed, _, stopped = run_notebook(copy, timeout=600)
    copy.unlink()
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    return errors, stopped


def assert_one_red_line(errors, stopped, function: str, notebook: str):
    assert len(errors) == 1, [e["ename"] for e in errors]
    (error,) = errors
    assert error["ename"] == "NotImplementedError", (error["ename"], error["evalue"])
    assert error["evalue"].startswith(f"{function} is not written yet (notebook {notebook}, cell In["), error["evalue"]
    assert len(error["traceback"]) == 1 and error["traceback"][0].startswith("\x1b[31m"), error["traceback"]
    assert ANSI.sub("", error["traceback"][0]) == f"NotImplementedError: {error['evalue']}"
    assert f"NotImplementedError: {function} is not written yet" in stopped, stopped


@pytest.mark.slow  # makes the release and runs its two theory notebooks five times in quick mode (about a minute)
def test_an_unwritten_stub_stops_the_theory_notebooks_with_one_line_naming_it(release):
    errors, stopped = run(release, NB01)  # nothing written: the first check cell stops
    assert_one_red_line(errors, stopped, "dF_dx_formula", "01")
    assert stopped.startswith("stopped at code cell ") and "(q1a_check)" in stopped, stopped

    done = {gid: solution(gid) for gid in ("q1a_dF_dx", "q1b_backprop")}  # (a) and (b) written, (d) not yet
    errors, stopped = run(release, NB01, done)
    assert_one_red_line(errors, stopped, "nested_derivative_recursion", "01")

    errors, stopped = run(release, NB02)
    assert_one_red_line(errors, stopped, "scaled_dot_product_attention", "02")


@pytest.mark.slow  # runs the release's notebook 01 twice in quick mode
def test_written_parts_run_to_the_end_and_a_missing_plots_module_still_names_the_stub(release):
    """A correct backprop that reuses vjp (not the reference's way) passes every cell: no rule the notebook does not
    state. Without plots.py the notebook still starts and the stop names the function, from the traceback."""
    reusing = re.sub(r"v = delta @ W.*", "v = vjp((W, b), h, v)  # the VJP of layer i, reused",
                     solution("q1b_backprop"))
    assert reusing != solution("q1b_backprop")
    written = {gid: solution(gid) for gid in ("q1a_dF_dx", "q1d_recursion", "q1e_residual")}
    errors, stopped = run(release, NB01, {**written, "q1b_backprop": reusing})
    assert errors == [] and stopped is None, stopped

    errors, stopped = run(release, NB01, first="import sys\nsys.modules['plots'] = None  # as without plots.py")
    assert [e["ename"] for e in errors] == ["NotImplementedError"], [(e["ename"], e["evalue"]) for e in errors]
    assert "NotImplementedError: dF_dx_formula is not written yet" in stopped, stopped

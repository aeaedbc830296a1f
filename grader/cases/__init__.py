"""The grader's hidden tests: for each question, the inputs the submission's code is run on and the check of what it
returns. They stay with the reference: the student release leaves the grader out.

Every test is a `case_<question>(gen, ref, source)` (layers.py: the Python file a student writes; cells.py: the
notebooks' graded cells) that returns `(request, check)`:
- `request`: what the sandboxed child (grader/child.py) runs: the submission's functions (or the notebook cell's
  `source`, read by the grader from the submitted .ipynb) called on inputs drawn here from `gen` (seeded per
  submission). It carries no expected value.
- `check(values)`: compares the values the child sent back (already decoded to plain NumPy arrays) with the ones
  computed here, by the reference (`ref`, the reference `helpers`) or by torch and autograd; it raises
  AssertionError with a message meant for the student.

Where a part builds on another (BPTT on the cell's forward pass, the committed GRU on the cell), the child gets the
reference's values as data (the caches, the weights), so one mistake costs one question. Each test checks only what
the release states (the stub's docstring or the notebook cell): e.g. the rows of padding queries in attention are
free, and the RNN's bypass gradient may be None, 0 or zeros.
"""
from __future__ import annotations

import functools
import json

from ex2.runtime import ROOT
from grader.cases import cells, layers

CASES = {name.removeprefix("case_"): case for module in (layers, cells) for name, case in vars(module).items()
         if name.startswith("case_") and callable(case)}
"""Question id -> its test, found by name: every `case_<question>` function of layers.py and cells.py."""


@functools.lru_cache(maxsize=1)
def manual_questions() -> dict:
    """Written answers, from the reference notebooks' metadata (markdown cells that are nbgrader solution + grade
    cells): grade_id -> points, notebook, and a title from the heading above the cell. The grader lists them as
    graded by hand, with the reference answer in the instructor's report only."""
    found = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        heading = ""
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            text = "".join(cell["source"])
            if cell["cell_type"] != "markdown":
                continue
            if meta.get("solution") and meta.get("grade"):
                found[meta["grade_id"]] = {"points": meta["points"], "notebook": f"notebooks/{path.name}",
                                           "title": f"notebook {path.name[:2]}, {heading}"}
            else:
                heading = next((line.lstrip("#").strip() for line in reversed(text.splitlines())
                                if line.startswith("#")), heading)
    return found

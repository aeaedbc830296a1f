"""A notebook's main path reads in about a quarter of an hour: at most MAX_WORDS words of prose outside the sections
whose heading begins "Going further". Counted as a student reads it: every markdown cell of the main path, the graded
answer cells (markdown cells nbgrader marks as a graded solution) left out, words split at whitespace, LaTeX
included."""
import json
import re

import pytest

from ex2 import runtime

MAX_WORDS = 2500
NOTEBOOKS = sorted((runtime.ROOT / "notebooks").glob("0[1-4]_*.ipynb"))
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def is_answer_cell(cell: dict) -> bool:
    """A graded written answer: a markdown cell whose nbgrader metadata marks it a solution with points."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell["cell_type"] == "markdown" and bool(meta.get("solution")) and bool(meta.get("grade"))


def main_path_words(cells: list[dict]) -> int:
    """Words of prose on the main path: markdown lines outside a "Going further" section (which runs from its
    heading to the next heading of the same or a higher level), answer cells excluded."""
    count = 0
    going_further_level = None  # the heading level of the "Going further" section we are in, if any
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        answer = is_answer_cell(cell)
        for line in "".join(cell["source"]).splitlines():
            heading = HEADING.match(line.strip())
            if heading:
                level = len(heading.group(1))
                if going_further_level is not None and level <= going_further_level:
                    going_further_level = None
                if going_further_level is None and heading.group(2).startswith("Going further"):
                    going_further_level = level
            if going_further_level is None and not answer:
                count += len(line.split())
    return count


def test_the_counter_skips_going_further_and_answers():
    md = [{"cell_type": "markdown", "metadata": {}, "source": ["## 1. Main\n", "four words of prose"]},
          {"cell_type": "markdown", "metadata": {"nbgrader": {"solution": True, "grade": True}},
           "source": ["an answer is not counted"]},
          {"cell_type": "code", "metadata": {}, "source": ["x = 1  # code is not counted"]},
          {"cell_type": "markdown", "metadata": {}, "source": ["## Going further: depth\n", "not counted\n",
                                                               "### a subsection, not counted either"]},
          {"cell_type": "markdown", "metadata": {}, "source": ["## Back $x^2$ counted"]}]
    assert main_path_words(md) == 3 + 4 + 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_main_path_prose_fits_the_reading_budget(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    words = main_path_words(cells)
    assert words <= MAX_WORDS, (
        f"{path.name}: {words:,} words of prose on the main path (outside 'Going further', answers excluded); "
        f"at most {MAX_WORDS:,}")

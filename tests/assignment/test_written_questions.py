"""Every written answer the course grades by hand asks its question: the markdown cell just above each answer cell
asks what assignment/questions.py's WRITTEN entry asks and states its points, and the entry's rubric adds up to the
points nbgrader records; no entry is left without an answer cell."""
import json
import re

import pytest

from assignment import questions
from ex2 import runtime
from grader import marking

NOTEBOOKS = sorted((runtime.ROOT / "notebooks").glob("*.ipynb"))


def answer_cells() -> dict[str, tuple[str, dict, str]]:
    """grade_id -> (notebook name, the answer cell's nbgrader metadata, the text of the cell just above it)."""
    found = {}
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell["cell_type"] == "markdown" and meta.get("solution") and meta.get("grade"):
                above = "".join(cells[i - 1]["source"]) if i else ""
                found[meta["grade_id"]] = (path.name, meta, above)
    return found


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


ANSWERS = answer_cells()


def test_every_answer_cell_has_a_rubric_and_every_rubric_an_answer_cell():
    assert sorted(ANSWERS) == sorted(questions.WRITTEN) == sorted(marking.MISTAKES)


@pytest.mark.parametrize("grade_id", sorted(ANSWERS))
def test_the_cell_above_asks_the_question_and_states_the_points(grade_id):
    name, meta, above = ANSWERS[grade_id]
    entry = questions.WRITTEN[grade_id]
    rubric_points = sum(points for _, points in entry["criteria"])
    assert rubric_points == meta["points"], (
        f"{name}, {grade_id}: the rubric's criteria give {rubric_points} points, nbgrader records {meta['points']}")
    stated = re.findall(r"\((\d+) points?\)", above)
    assert stated == [str(meta["points"])], (
        f"{name}, {grade_id}: the cell above states {stated}, not ({meta['points']} points)")
    question = " ".join(words(entry["question"]))
    assert question and question in " ".join(words(above)), (
        f"{name}, {grade_id}: the cell above does not ask the rubric's question {entry['question']!r}")
    assert marking.MISTAKES[grade_id], f"{grade_id}: grader/marking.py names no common mistake"


def test_the_readme_states_how_many_written_answers_and_points():
    points = sum(p for entry in questions.WRITTEN.values() for _, p in entry["criteria"])
    readme = " ".join((runtime.ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"{len(questions.WRITTEN)} answers, {points} points" in readme, (
        f"README.md does not say '{len(questions.WRITTEN)} answers, {points} points' for the written answers")

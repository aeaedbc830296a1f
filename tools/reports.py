"""What the grader writes: grades.json, the student's feedback.md, the instructor's instructor.md, the gradebook, and
Gradescope's results.json. Every file is written atomically (complete or absent)."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

MAX_MESSAGE = 600
"""Characters of a failing check's message kept in the feedback."""


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def feedback(grades: dict) -> str:
    """The student's report: points per question with the failing check's message; written answers listed."""
    lines = [f"# Feedback: {grades['auto_points']} / {grades['auto_max']} automatic points", "",
             "| question | points | result |", "|---|---|---|"]
    for q, e in grades["questions"].items():
        result = "✓" if e["status"] == "passed" else _cell(f"{e['status']}: {e['message']}")
        lines.append(f"| {e['title']} (`{q}`, {e['where']}) | {e['points']} / {e['max']} | {result} |")
    for q, m in grades["manual"].items():
        lines.append(f"| {m['title']} (`{q}`) | – / {m['max']} | graded by hand |")
    if grades.get("notebooks"):
        lines += ["", "Your notebooks, executed on a 1,000-review subset (feedback, no points):", "",
                  "| notebook | result | seconds |", "|---|---|---|"]
        for name, r in grades["notebooks"].items():
            result = "ran to the end" if r["status"] == "ran" else _cell(f"{r['status']}: {r['message']}")
            lines.append(f"| {name} | {result} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def instructor_report(grades: dict, reference_answers: dict[str, str]) -> str:
    """The feedback, how it was graded (sandbox, input seed), then each written answer beside the reference answer
    (never given to students)."""
    parts = [feedback(grades), "## How this was graded", "",
             f"- sandbox: {grades['sandbox']}", f"- input seed: {grades['seed']} (`--seed {grades['seed']}` "
             f"regrades on the same inputs)", "", "## Written answers (graded by hand)"]
    for q, m in grades["manual"].items():
        parts += [f"### {m['title']} (`{q}`, {m['max']} points)", "**Submitted:**", "", m["answer"], "",
                  "**Reference answer:**", "", reference_answers.get(q, "(none)"), ""]
    return "\n".join(parts) + "\n"


def write_reports(out: Path, grades: dict, reference_answers: dict[str, str]) -> None:
    write_atomic(out / "grades.json", json.dumps(grades, indent=1, ensure_ascii=False) + "\n")
    write_atomic(out / "feedback.md", feedback(grades))
    write_atomic(out / "instructor.md", instructor_report(grades, reference_answers))


def write_gradebook(path: Path, rows: list[dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def gradescope_results(grades: dict, visibility: str = "after_due_date") -> dict:
    """Gradescope's results.json: one test per automatically graded question (score, max_score, status, output),
    the written answers as tests of 0 points that say they are graded by hand (their points are entered as manual
    questions), the notebooks' runs as feedback. `visibility` applies to the hidden tests' messages."""
    tests = []
    for q, e in grades["questions"].items():
        tests.append({"name": f"{e['title']} ({e['where']})", "name_format": "text", "number": q,
                      "score": e["points"], "max_score": e["max"], "status": "passed" if e["status"] == "passed"
                      else "failed", "output": "✓" if e["status"] == "passed" else f"{e['status']}: {e['message']}",
                      "output_format": "text", "visibility": visibility})
    for q, m in grades["manual"].items():
        tests.append({"name": f"{m['title']}: graded by hand", "number": q, "score": 0, "max_score": 0,
                      "output": f"A written answer ({m['max']} points), graded by hand.", "visibility": "visible"})
    for name, r in grades.get("notebooks", {}).items():
        tests.append({"name": f"{name} runs on a 1,000-review subset (feedback, no points)", "score": 0,
                      "max_score": 0, "status": "passed" if r["status"] == "ran" else "failed",
                      "output": "ran to the end" if r["status"] == "ran" else f"{r['status']}: {r['message']}",
                      "visibility": "visible"})
    return {"score": grades["auto_points"], "output": f"{grades['auto_points']} / {grades['auto_max']} automatic "
            f"points; the written answers are graded by hand.", "output_format": "text", "visibility": "visible",
            "stdout_visibility": "hidden", "tests": tests}

"""What the grader writes: grades.json, the student's feedback.md, the instructor's instructor.md, the gradebook, and
Gradescope's results.json. Every file is written atomically (complete or absent). What a submission wrote (a
message, a written answer, a folder name) reaches them only as text: escaped in tables, inside a fenced code block
longer than any backtick run it holds, and in the gradebook with a leading `'` where a spreadsheet would read a
formula."""
from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

from ex2.runtime import atomic_path
from grader import untrusted

MAX_MESSAGE = 600
"""Characters of a failing check's message kept in the feedback."""


def write_atomic(path: Path, text: str) -> None:
    """`text` written to `path` complete or not at all, readable by this user only (a report holds the reference's
    answers); a lone surrogate is written as its escape."""
    with atomic_path(path, mode=0o600) as tmp:
        tmp.write_text(text.encode("utf-8", "backslashreplace").decode("utf-8"), encoding="utf-8", newline="")


def _cell(text: str) -> str:
    """Text in a Markdown table cell, shown as text: HTML escaped, Markdown's own characters backslashed, one line."""
    text = html.escape(untrusted.text(text), quote=False).replace("\n", " ").replace("\r", " ")
    return re.sub(r"([\\`*_\[\]!|~])", r"\\\1", text)


def fenced(text: str, info: str = "text") -> str:
    """`text` in a fenced code block whose fence is longer than any backtick run inside (Markdown shows it as
    text: no heading, link, HTML or fence of its own can come out of it)."""
    text = untrusted.text(text)
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{fence}{info}\n{text}\n{fence}"


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


def _rubric(entry: dict | None) -> list[str]:
    """A written answer's rubric (assignment/questions.py's WRITTEN entry) as Markdown lines; a note when none."""
    if not isinstance(entry, dict):
        return ["*Rubric:* none written for this answer yet (assignment/questions.py, WRITTEN)."]
    lines = []
    if entry.get("question"):
        lines += [f"*Question:* {entry['question']}", ""]
    criteria = entry.get("criteria") or []
    if criteria:
        lines += ["*Rubric:*", ""]
        for item in criteria:
            text, points = (item if isinstance(item, (list, tuple)) and len(item) == 2 else (item, "?"))
            lines.append(f"- ({points} {'point' if points == 1 else 'points'}) {text}")
        lines.append("")
    mistakes = entry.get("mistakes") or []
    if mistakes:
        lines += ["*Common mistakes:*", "", *(f"- {m}" for m in mistakes), ""]
    return lines


def instructor_report(grades: dict, reference_answers: dict[str, str], written: dict | None = None) -> str:
    """The feedback, how it was graded (sandbox, input seed), then each written answer: the student's text in a
    fenced block (shown as text, whatever it holds), then, after a rule, the rubric (assignment/questions.py's
    WRITTEN, where an entry exists, with marking.py's common mistakes) and the reference answer (never given to
    students)."""
    if written is None:
        from assignment.questions import WRITTEN
        from grader.marking import MISTAKES

        written = {q: {**entry, "mistakes": MISTAKES.get(q, [])} for q, entry in WRITTEN.items()}
    parts = [feedback(grades), "## How this was graded", "",
             f"- sandbox: {grades['sandbox']}", f"- input seed: {grades['seed']} (`--seed {grades['seed']}` "
             f"regrades on the same inputs)", "", "## Written answers (graded by hand)"]
    for q, m in grades["manual"].items():
        parts += [f"### {m['title']} (`{q}`, {m['max']} points)", "", "**Submitted** (the student's text, shown as "
                  "text):", "", fenced(m["answer"]), "", "---", "", f"**For the marker: `{q}`**", "",
                  *_rubric(written.get(q)), "**Reference answer:**", "",
                  *(f"> {line}" for line in reference_answers.get(q, "(none)").splitlines()), ""]
    return "\n".join(parts) + "\n"


def write_reports(out: Path, grades: dict, reference_answers: dict[str, str]) -> None:
    grades = untrusted.clean(grades)
    write_atomic(out / "grades.json", json.dumps(grades, indent=1, ensure_ascii=False) + "\n")
    write_atomic(out / "feedback.md", feedback(grades))
    write_atomic(out / "instructor.md", instructor_report(grades, reference_answers))


def spreadsheet_safe(value):
    """A gradebook cell a spreadsheet shows as text: one that begins with =, +, -, @, a tab or a carriage return
    gets a leading ' (numbers stay numbers)."""
    if isinstance(value, str):
        value = untrusted.text(value)
        if value[:1] in ("=", "+", "-", "@", "\t", "\r") or value.startswith("\\x09") or value.startswith("\\x0d"):
            return "'" + value
    return value


def write_gradebook(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    write_atomic(path, buffer.getvalue())


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

"""Run the public self-checks (tests/) and print a table: each part you write in ex2/layers.py, its points, passed or
what is missing.

    python self_check_summary.py     # in GitHub Actions the table also goes to the job summary

The parts and their points are the grader's own list, assignment/questions.py. A part passes when every self-check of
it passes (a check belongs to the part its name starts with: test_rnn_cell_..., test_bptt_...); a failing part
shows its first failure's message. Exits 1 while a check fails. Passing the self-checks is a good sign, not the
grade; the notebook questions are checked in their cells.
"""
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from assignment.questions import QUESTIONS

ROOT = Path(__file__).resolve().parent
# the parts of ex2/layers.py, in the grader's order
PARTS = {question: (f"{spec['title']} — {spec['where']}", spec["points"])
         for question, spec in QUESTIONS.items() if "replace" in spec}
"""Question id (the prefix of its self-checks' names) -> (what you write, points at stake in the grade)."""


def part_of(test: str) -> str | None:
    """The part a self-check belongs to: the longest question id its name starts with (after `test_`)."""
    name = test.removeprefix("test_")
    return max((q for q in PARTS if name == q or name.startswith(q + "_")), key=len, default=None)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", f"--junitxml={report}", "tests"], cwd=ROOT)
        cases = list(ET.parse(report).getroot().iter("testcase")) if report.exists() else []
    lines = ["| part | points | self-checks |", "|---|---|---|"]
    failed = 0
    for question, (part, points) in PARTS.items():
        mine = [case for case in cases if part_of(case.get("name", "")) == question]
        bad = [case for case in mine if case.findall("failure") or case.findall("error")]
        problems = [p for case in bad for p in case.findall("failure") + case.findall("error")]
        if not mine:
            result, failed = "✗ did not run", failed + 1
        elif not problems:
            result = f"✓ ({len(mine)} of {len(mine)})"
        else:
            failed += 1
            message = (problems[0].get("message") or "failed").splitlines()[0].replace("|", "\\|")[:200]
            result = f"✗ {len(mine) - len(bad)} of {len(mine)} pass: {message}"
        lines.append(f"| {part} | {points} | {result} |")
    table = "\n".join(["### Self-checks", "", *lines, "",
                       f"{len(PARTS) - failed} of {len(PARTS)} pass. Notebook questions are checked in their cells."])
    print(table)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as fh:
            fh.write(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the public self-checks (tests/) and print a table: which part, its points, passed or what is missing.

    python tools/self_check_summary.py     # in GitHub Actions the table also goes to the job summary

Exits 1 while a check fails. Passing the self-checks is a good sign, not the grade.
"""
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = {  # self-check -> (what you write, points at stake in the grade)
    "test_cell_matches_torch[rnn]": ("RNNCell.update (notebook 03, section 1)", 2),
    "test_cell_matches_torch[gru]": ("GRUCell.update (notebook 03, section 1)", 3),
    "test_bptt_matches_autograd": ("back-propagation through time (notebook 03, section 2)", 4),
    "test_pooling_sum_and_weighted": ("pool_token_scores (notebook 04, section 1)", 2),
    "test_attention_rows_and_window": ("SelfAttention.forward (notebook 04, section 1)", 3),
}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", f"--junitxml={report}", "tests"], cwd=ROOT)
        cases = {case.get("name"): case for case in ET.parse(report).getroot().iter("testcase")}
    lines = ["| part | points | self-check |", "|---|---|---|"]
    failed = 0
    for test, (part, points) in PARTS.items():
        case = cases.get(test)
        problem = None if case is None else next(iter(case.findall("failure") + case.findall("error")), None)
        if case is None:
            result, failed = "✗ did not run", failed + 1
        elif problem is None:
            result = "✓"
        else:
            failed += 1
            result = "✗ " + (problem.get("message") or "failed").splitlines()[0].replace("|", "\\|")[:200]
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

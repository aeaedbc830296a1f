"""Submissions that attack the grader, graded for real (`python -m grader`, in its sandbox): each scores nothing on
what it attacks, every other question is graded, the machine is unharmed (no process of a sandbox user survives, the
grader finishes) and the submission's folder is unchanged. Also: the reference 23 / 23 and the untouched release 0 / 23.

Cheating attacks sit in a release-like submission (the reference's ex2/layers.py with its solutions stubbed, the student
notebooks): they get points only if they work. Resource attacks sit in one function of an otherwise correct submission:
that question is lost, no other. They are graded in one run with test_attacks.py's (graded_class.py, the
`graded_class` fixture)."""
import csv

import pytest
from graded_class import BROKEN, CLASS_SLOTS, MUTANTS, RESOURCE_ATTACKS
from submissions import CHEATS, FULL, lost, sandbox_processes, tree_digest

from assignment.questions import QUESTIONS

pytestmark = pytest.mark.slow


def test_the_release_scores_zero_and_the_reports_keep_the_answers_private(graded_class):
    graded, folders, out = graded_class.grades, graded_class.folders, graded_class.out
    full = sum(FULL.values())
    assert graded["reference"]["auto_points"] == graded["reference"]["auto_max"] == full
    zero = graded["release"]
    assert zero["auto_points"] == 0 and zero["auto_max"] == full
    for q, entry in zero["questions"].items():
        assert entry["status"] == "missing" and "implement" in entry["message"], (q, entry)
    with open(out / "gradebook.csv") as fh:
        rows = {r["submission"]: int(r["auto_points"]) for r in csv.DictReader(fh)}
    assert rows["reference"] == full and rows["release"] == 0 and len(rows) == len(folders)
    assert {f.name for f in folders.values() if f.name.isidentifier()} < set(rows)  # test_attacks: the odd names
    assert "✓" in (out / "reference" / "feedback.md").read_text()
    report = (out / "release" / "instructor.md").read_text()
    assert "YOUR ANSWER HERE" in report and "**Reference answer:**" in report and "multivariate chain rule" in report
    assert "seed" in report and "sandbox" in report.lower()
    assert "multivariate chain rule" not in (out / "release" / "feedback.md").read_text()
    assert zero["manual"]["q1a_derivation"]["status"] == "graded by hand"


def test_cheating_scores_nothing(graded_class):
    graded = graded_class.grades
    for name in [*CHEATS, "forged_in_a_cell", "symbolic_links"]:
        grades = graded[name]
        passed = {q: e for q, e in grades["questions"].items() if e["points"]}
        assert grades["auto_points"] == 0 and not passed, (name, passed)
        assert all(e["status"] in ("missing", "error", "failed") for e in grades["questions"].values()), name
    assert "symbolic link" in graded["symbolic_links"]["questions"]["q1a"]["message"]
    assert all(m["answer"].startswith("(no answer") for m in graded["symbolic_links"]["manual"].values())


def test_resource_attacks_cost_only_their_question(graded_class):
    graded = graded_class.grades
    for question in RESOURCE_ATTACKS:
        assert lost(graded[f"attacks_{question}"]) == {question}, (question, graded[f"attacks_{question}"]["questions"])
    assert lost(graded["lies_pooling"]) == {"pooling"}
    assert "differs from the reference" in graded["lies_pooling"]["questions"]["pooling"]["message"]
    messages = {q: graded[f"attacks_{q}"]["questions"][q]["message"] for q in RESOURCE_ATTACKS}
    assert "BlockingIOError" in messages["pooling"], messages  # the process limit stopped the fork storm
    assert "MemoryError" in messages["attention"], messages
    assert "File too large" in messages["rnn_cell"], messages
    assert "No space left" in messages["gru_cell"], messages
    assert "Operation not permitted" in messages["bptt"], messages  # it cannot signal the processes it runs under


def test_the_reference_scores_full_marks_and_each_mutant_loses_exactly_its_question(graded_class):
    graded = graded_class.grades
    assert graded["reference"]["auto_points"] == graded["reference"]["auto_max"] == sum(FULL.values())
    assert set(MUTANTS) == set(QUESTIONS)
    for q in MUTANTS:
        assert lost(graded[f"mutant_{q}"]) == {q}, (q, graded[f"mutant_{q}"]["questions"][q])
        assert graded[f"mutant_{q}"]["questions"][q]["status"] == "failed", graded[f"mutant_{q}"]["questions"][q]


def test_broken_submissions_are_graded_to_the_end(graded_class):
    graded = graded_class.grades
    helpers_questions = {q for q, spec in QUESTIONS.items() if "replace" in spec}
    for name, (_, losing) in BROKEN.items():
        assert lost(graded[f"broken_{name}"]) == (helpers_questions if losing == "helpers" else losing), name
    qs = {name: graded[f"broken_{name}"]["questions"] for name in BROKEN}
    assert all("syntax error" in qs["syntax"][q]["message"] for q in helpers_questions)
    assert "q1a_dF_dx" in qs["cell_deleted"]["q1a"]["message"]
    assert "ZeroDivisionError" in qs["raises"]["gru_cell"]["message"]
    assert qs["hangs"]["pooling"]["status"] == "timeout"
    assert "printed more than" in qs["floods"]["attention"]["message"]
    assert "SystemExit" in qs["exits"]["rnn_cell"]["message"]
    empty = graded["empty"]
    assert lost(empty) == set(QUESTIONS)
    assert all("no ex2/layers.py" in empty["questions"][q]["message"] for q in helpers_questions)
    assert "no notebooks/01" in empty["questions"]["q1a"]["message"]


def test_the_machine_and_the_submissions_are_unharmed(graded_class):
    before, folders = graded_class.before, graded_class.folders
    assert {name: tree_digest(folders[name]) for name in before} == before, "the grader changed a submission"
    assert not graded_class.processes_left, "a process of a sandbox user survived its grading"
    assert not sandbox_processes(CLASS_SLOTS)

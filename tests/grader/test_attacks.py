"""Submissions that attack the grader's own process, its clock, its neighbours and its reports, graded for real
(`python -m grader` in its sandbox, one batch): each loses what it attacks and nothing more, the correct submissions
graded before and after every one of them keep full marks, the gradebook is written and no sandbox process is left.
Fast tests beside them check the one reader of untrusted bytes (grader/untrusted.py) on the same attacks.

Every attack is built from one cheap base: the reference's ex2/layers.py and notebooks with one edit (graded_class.py),
and graded in one run with test_submissions.py's submissions (the `graded_class` fixture)."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from graded_class import ATTACKS, FORGED_OBJECTIVE, POOL
from submissions import (
    FULL,
    NB01,
    NB03,
    lost,
    reference_with,
    release_like,
    sandbox_processes,
    tree_digest,
)

import helpers
from assignment import make_release
from assignment.questions import QUESTIONS
from ex2 import runtime
from grader import batch, cases, child, grade, sandbox, wire

ROOT = runtime.ROOT


@pytest.mark.slow
def test_each_attack_loses_what_it_attacks_and_the_neighbours_keep_full_marks(graded_class):
    graded, folders, out = graded_class.grades, graded_class.folders, graded_class.out
    full = sum(FULL.values())
    assert list(folders)[0] == "reference" and list(folders)[-1] == "correct_last"  # before and after every attack
    for name in ("reference", "correct_last", "not_utf8", "formula", "fake_reference"):
        assert graded[name]["auto_points"] == full, (name, graded[name]["questions"])
    for name, (_, losing) in ATTACKS.items():
        assert lost(graded[name]) == losing, (name, {q: e["message"] for q, e in graded[name]["questions"].items()
                                                     if e["points"] == 0})
        assert not any("internal error" in e["message"] for e in graded[name]["questions"].values()), name
    nb01 = {q for q, spec in QUESTIONS.items() if spec.get("notebook") == NB01}
    assert lost(graded["deep_notebook"]) == nb01
    assert "not a readable notebook" in graded["deep_notebook"]["questions"]["q1a"]["message"]
    assert lost(graded["fifo"]) == {"q3b"} and "regular file" in graded["fifo"]["questions"]["q3b"]["message"]
    assert lost(graded["objective_forger"]) == {"objective"}, graded["objective_forger"]["questions"]["objective"]
    messages = {name: {q: e["message"] for q, e in graded[name]["questions"].items()} for name in ATTACKS}
    assert "not an .npy array" in messages["zip_array"]["rnn_cell"]
    assert "more than" in messages["impossible_shape"]["gru_cell"]
    assert "CPU" in messages["restarts_the_clock"]["attention"]
    assert graded["restarts_the_clock"]["questions"]["attention"]["status"] == "timeout"
    assert "\\ud800" in messages["forged_heading"]["rnn_cell"]
    with open(out / "gradebook.csv", encoding="utf-8") as fh:
        rows = {r["submission"]: r for r in csv.DictReader(fh)}
    assert len(rows) == len(folders) and "'=HYPERLINK(1)" in rows and "caf\\xe9-\\xff" in rows, list(rows)
    assert {name: tree_digest(folders[name]) for name in graded_class.before} == graded_class.before
    assert "fifo" not in graded_class.before  # reading it would wait for a writer
    assert not graded_class.processes_left, "a process of a sandbox user survived its grading"
    assert not graded_class.work_left, "a work folder was left behind"


@pytest.mark.slow
def test_what_a_submission_wrote_reaches_the_reports_as_text(graded_class):
    out = graded_class.out
    feedback = (out / "forged_heading" / "feedback.md").read_text(encoding="utf-8")
    assert [line for line in feedback.splitlines() if line.startswith("#")] == [
        "# Feedback: 21 / 23 automatic points"], feedback
    assert "<img" not in feedback and "&lt;img" in feedback
    report = (out / "fake_reference" / "instructor.md").read_text(encoding="utf-8")
    submitted, rest = report.split("(`q1a_derivation`, 2 points)")[1].split("\n---\n", 1)
    marker = rest.split("\n### ")[0]
    assert "FAKE REFERENCE" in submitted and "FAKE REFERENCE" not in marker and "**Reference answer:**" in marker
    fence = next(line for line in submitted.splitlines() if line.startswith("```")).removesuffix("text")
    assert len(fence) > 4 and submitted.rstrip().endswith("\n" + fence), submitted  # longer than the student's ````
    assert "multivariate chain rule" in marker


def test_the_stub_objective_gets_nothing_even_where_other_code_forges_its_record(tmp_path, monkeypatch):
    """The forger in ex2/layers.py works when it runs before the objective (a positive control, in this process),
    and the grader asks for the objective before any other code of the submission runs."""
    import nbformat

    released = make_release.student_notebook(nbformat.read(ROOT / NB03, as_version=4))
    stub = next(c.source for c in released.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q6_objective")
    request, check = cases.CASES["objective"](torch.Generator().manual_seed(0), helpers, stub)
    question = wire.decode(wire.encode(request))
    import optuna

    real = optuna.Study.optimize
    try:
        assert grade.judge("objective", child.answer(question, str(tmp_path)), check)["status"] != "passed"
        exec(compile(FORGED_OBJECTIVE, "forger", "exec"), {})
        assert grade.judge("objective", child.answer(question, str(tmp_path)), check)["status"] == "passed"
    finally:
        optuna.Study.optimize = real
    kinds = {q: "cell" if "cell" in spec else "helpers" for q, spec in QUESTIONS.items()}
    monkeypatch.setattr(cases, "CASES", {q: (lambda q: lambda gen, ref, source: (
        {"id": q, "kind": kinds[q]}, None))(q) for q in QUESTIONS})
    order = [r["kind"] for r in grade.prepare(ROOT, 0)[0]]
    assert grade.prepare(ROOT, 0)[0][0]["id"] == "objective" and order == sorted(order), order  # cells first


@pytest.mark.slow
def test_a_killed_grader_leaves_no_work_folder_and_no_process(tmp_path):
    """The work folders are private while a submission is graded, and removed when the grader is stopped."""
    if os.geteuid() != 0:
        pytest.skip("sandbox users (and /run/idl-ex2-grader) are the root grader's")
    sub = reference_with(tmp_path / "hangs", "ex2/layers.py", POOL, "    import time\n    time.sleep(600)\n" + POOL)
    child = subprocess.Popen([sys.executable, "-m", "grader", str(sub), "--out", str(tmp_path / "out"),
                              "--notebooks", "none"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = Path("/run/idl-ex2-grader")
        for _ in range(600):  # until the child runs (its folders are then its user's)
            slots = list(base.glob(f"grade-{child.pid}-*/slot*/submission"))
            if slots and slots[0].stat().st_uid >= sandbox.FIRST_UID:
                break
            time.sleep(0.1)
        assert slots, "no work folder appeared"
        mine = slots[0]
        assert mine.stat().st_mode & 0o777 == 0o700 and mine.stat().st_uid >= sandbox.FIRST_UID
        assert base.stat().st_mode & 0o077 in (0o011, 0) and mine.parent.parent.stat().st_mode & 0o066 == 0
        time.sleep(3)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
    assert not list(base.glob(f"grade-{child.pid}-*")), "the work folder outlived the grader"
    for _ in range(50):
        if not sandbox_processes():
            break
        time.sleep(0.1)
    assert not sandbox_processes()


CLASSMATE_THIEF = '''
import importlib.util as _util, os as _os
for _top in ("/run/idl-ex2-grader", "/tmp", "/var/tmp", "/dev/shm"):
    for _folder, _dirs, _files in _os.walk(_top):
        _path = _os.path.join(_folder, "layers.py")
        if "layers.py" not in _files or _os.path.realpath(_path) == _os.path.realpath(__file__):
            continue
        try:
            _spec = _util.spec_from_file_location("_stolen", _path)
            _ref = _util.module_from_spec(_spec)
            _spec.loader.exec_module(_ref)
            _ref.RNNCell.update(*[__import__("torch").zeros(1, 1)] * 3)
        except Exception:
            continue
        RNNCell.update = staticmethod(_ref.RNNCell.update)
        GRUCell.update = staticmethod(_ref.GRUCell.update)
        pool_token_scores = _ref.pool_token_scores
        SelfAttention.forward = _ref.SelfAttention.forward
        break
_os.makedirs(_os.path.expanduser("~/.ipython/profile_default/startup"), exist_ok=True)
with open(_os.path.expanduser("~/.ipython/profile_default/startup/00-planted.py"), "w") as _fh:
    _fh.write("raise SystemExit('planted')\\n")
'''


@pytest.mark.slow
def test_user_mode_hides_the_classmates_work_folder(tmp_path, python_for_other_users):
    """In Gradescope's "user" sandbox, with --jobs 2: a submission that looks for a classmate's ex2/layers.py in the
    grader's work folders and the shared temporary folders, graded beside a correct one, gets nothing; the file it
    plants in its HOME reaches no one."""
    subs = [reference_with(tmp_path / "classmate"), release_like(tmp_path / "thief", CLASSMATE_THIEF)]
    done = subprocess.run([sys.executable, "-m", "grader", *map(str, subs), "--out", str(tmp_path / "grades"),
                           "--notebooks", "none", "--sandbox", "user", "--jobs", "2", "--time-limit", "20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    points = {s.name: json.loads((tmp_path / "grades" / s.name / "grades.json").read_text())["auto_points"]
              for s in subs}
    assert points == {"classmate": sum(FULL.values()), "thief": 0}, points
    assert not Path("/tmp/.ipython/profile_default/startup/00-planted.py").exists()  # HOME was its own
    assert not sandbox_processes()


@pytest.mark.slow
def test_a_submission_whose_grading_process_fails_gets_an_internal_error_and_the_others_are_graded(tmp_path,
                                                                                                     monkeypatch):
    """The guard around each submission: its process raising, being killed, passing the memory ceiling or the
    deadline costs that submission only (an internal error on every question, with the reason)."""
    def stand_in(sub, out, sb, limit, notebooks, seed, slot):  # what each submission's process does
        if sub.name == "raises":
            raise RecursionError("deep")
        if sub.name == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if sub.name == "hog":
            hog = bytearray(400 * 2**20)  # noqa: F841 - zero-filled, so resident
            time.sleep(30)
        if sub.name == "slow":
            time.sleep(60)
        return grade._report(sub, out, sb, 0, {q: {"status": "passed", "message": ""} for q in QUESTIONS}, {})

    monkeypatch.setattr(grade, "grade", stand_in)
    monkeypatch.setattr(batch, "_warm", lambda: None)
    monkeypatch.setattr(batch, "MEMORY_CEILING", batch._rss(os.getpid()) + 200 * 2**20)
    subs = [tmp_path / name for name in ("first", "raises", "killed", "hog", "slow", "last")]
    for sub in subs:
        sub.mkdir()
    graded = batch.grade_guarded(subs, [tmp_path / "out" / s.name for s in subs], sandbox.Sandbox("none"), 10, (),
                                 0, 2, deadline=8)
    full = sum(FULL.values())
    assert [g["auto_points"] for g in graded] == [full, 0, 0, 0, 0, full]
    reasons = [g["questions"]["q1a"]["message"] for g in graded[1:5]]
    assert all("internal error" in r for r in reasons), reasons
    assert "exit code 1" in reasons[0] and "SIGKILL" in reasons[1] and "GB of memory" in reasons[2], reasons
    assert "more than 8 s" in reasons[3], reasons
    assert all((tmp_path / "out" / s.name / "feedback.md").is_file() for s in subs)

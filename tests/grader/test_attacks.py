"""Submissions that attack the grader's own process, its clock, its neighbours and its reports, graded for real
(`python -m grader` in its sandbox, one batch): each loses what it attacks and nothing more, the correct submissions
graded before and after every one of them keep full marks, the gradebook is written and no sandbox process is left.
Fast tests beside them check the one reader of untrusted bytes (grader/untrusted.py) on the same attacks.

Every attack is built from one cheap base: the reference's ex2/layers.py and notebooks with one edit."""
import base64
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
from submissions import (
    FULL,
    NB01,
    NB03,
    lost,
    npy_header,
    reference_with,
    release_like,
    sandbox_processes,
    tree_digest,
    zip_bytes,
)

import helpers
from assignment import make_release
from assignment.questions import QUESTIONS
from ex2 import runtime
from grader import batch, cases, child, grade, sandbox, wire

ROOT = runtime.ROOT
NB02 = QUESTIONS["q3b"]["notebook"]
FD = "int(__import__('sys').argv[-1])"  # the child's value channel, as the submission's code can find it


def _npy_line(question: str, data: bytes) -> str:
    return json.dumps({"question": question, "values": {"$npy": base64.b64encode(data).decode()}})


def _send_once(line: str) -> str:
    """Code that writes `line` to the value channel the first time it runs."""
    return (f"        if not getattr(__import__('builtins'), '_sent', False):\n"
            f"            __import__('builtins')._sent = True\n"
            f"            __import__('os').write({FD}, ({line!r} + '\\n').encode())\n")


RNN = "        ### BEGIN SOLUTION\n        h_new = torch.tanh"
GRU = "        ### BEGIN SOLUTION\n        H = h.shape[-1]"
POOL = "    ### BEGIN SOLUTION\n    scores = out[..., 0]"
ATTENTION = "        ### BEGIN SOLUTION\n        scores = (q @ k"


ATTACKS = {  # name -> (ex2/layers.py edit (where, inserted before it), the questions it must lose)
    # a result whose array bytes are a zip file (numpy.load would open it as an .npz)
    "zip_array": ((RNN, _send_once(_npy_line("rnn_cell", zip_bytes()))), {"rnn_cell"}),
    # an .npy header that declares 2^80 floats
    "impossible_shape": ((GRU, _send_once(_npy_line("gru_cell", npy_header((2**40, 2**40))))), {"gru_cell"}),
    # a 60 MB line of tiny JSON arrays, under the 64 MB file limit
    "huge_line": ((POOL, "    import os, sys\n    os.write(int(sys.argv[-1]), "
                         "b'{\"question\": \"pooling\", \"values\": ['"
                         " + b'[],' * 20_000_000 + b'[]]}\\n')\n    os._exit(0)\n"), {"pooling"}),
    # an error message with a lone surrogate, Markdown and HTML in it
    "forged_heading": ((RNN, "        raise ValueError('\\ud800 | <img src=x onerror=alert(1)> ``` | \\n"
                             "# Feedback: 23 / 23 automatic points')\n"), {"rnn_cell"}),
    # keeps telling the grader it is (re)starting the question, while it loops
    "restarts_the_clock": ((ATTENTION, "        import os, sys, json\n        while True:\n"
                                       "            os.write(int(sys.argv[-1]), (json.dumps({'start': 'attention'})"
                                       " + '\\n').encode())\n            sum(range(100000))\n"), {"attention"}),
    # 55 busy processes beside the neighbours' grading
    "busy_processes": ((POOL, "    import os\n    for _ in range(55):\n        if os.fork() == 0:\n"
                              "            while True:\n                pass\n"), {"pooling"}),
}


FORGED_OBJECTIVE = '''
import optuna as _optuna, sys as _sys, numpy as _np
_real_optimize = _optuna.Study.optimize


def _forged_optimize(self, func, *args, **kwargs):
    """The objective done here, whatever the graded cell's make_objective does (the trial log then looks right)."""
    g = getattr(func, "__globals__", {})
    plan = _sys._getframe(1).f_locals.get("plan")
    if "SEARCH" not in g or not isinstance(plan, dict):
        return _real_optimize(self, func, *args, **kwargs)
    S, h, study, cell = g["SEARCH"], g["helpers"], self, plan["cell"]
    config, settings = h.recipe(cell)

    def objective(trial):
        hidden = trial.suggest_int("hidden", S["low"], S["high"])
        for old in study.get_trials(deepcopy=False, states=(_optuna.trial.TrialState.COMPLETE,)):
            if old.params.get("hidden") == hidden and old.user_attrs.get("repeat_of") is None:
                trial.set_user_attr("seed_values", list(old.user_attrs.get("seed_values") or []))
                trial.set_user_attr("repeat_of", old.number)
                return old.value

        def report(epoch, history):
            trial.report(history.val_acc[-1], epoch)
            if epoch < S["epochs"] and trial.should_prune():
                raise _optuna.TrialPruned()
        values = []
        for i, seed in enumerate(S["seeds"]):
            extra = {"callback": report} if i == 0 else {}
            _, history = h.train_model(cell, g["search_data"], seed=seed, config={**config, "hidden": hidden},
                                       **{**settings, "epochs": S["epochs"], **extra})
            values.append(history.best_val_acc)
            trial.set_user_attr("seed_values", values)
        return float(_np.mean(values))
    return _real_optimize(self, objective, *args, **kwargs)


_optuna.Study.optimize = _forged_optimize
'''


def _stub_objective(folder: Path) -> None:
    """The release's (stubbed) notebook 03 in place of the reference's: make_objective is the untouched stub."""
    import nbformat

    nb = make_release.student_notebook(nbformat.read(ROOT / NB03, as_version=4))
    nbformat.write(nb, folder / NB03)


def _build(tmp: Path) -> dict[str, Path]:
    folders = {"correct_first": reference_with(tmp / "correct_first")}
    for name, ((where, attack), _) in ATTACKS.items():
        folders[name] = reference_with(tmp / name, "ex2/layers.py", where, attack + where)
    deep = folders["deep_notebook"] = reference_with(tmp / "deep_notebook")
    (deep / NB01).write_text("[" * 100_000 + "]" * 100_000)
    fifo = folders["fifo"] = reference_with(tmp / "fifo")
    (fifo / NB02).unlink()
    os.mkfifo(fifo / NB02)
    os.mkfifo(fifo / "pipe")
    forger = folders["objective_forger"] = reference_with(tmp / "objective_forger")
    _stub_objective(forger)
    with open(forger / "ex2" / "layers.py", "a", encoding="utf-8") as fh:
        fh.write(FORGED_OBJECTIVE)
    fake = folders["fake_reference"] = reference_with(tmp / "fake_reference")
    nb = json.loads((fake / NB01).read_text())
    cell = next(c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "q1a_derivation")
    cell["source"] = ["My answer.\n", "````\n", "\n", "**Reference answer:**\n", "\n", "FAKE REFERENCE\n", "\n",
                      "### the next heading\n"]
    (fake / NB01).write_text(json.dumps(nb))
    folders["not_utf8"] = reference_with(tmp / os.fsdecode(b"caf\xe9-\xff"))
    folders["formula"] = reference_with(tmp / "=HYPERLINK(1)")
    folders["correct_last"] = reference_with(tmp / "correct_last")
    return folders


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """The attacks graded in one batch, --jobs 2, between two correct submissions."""
    try:
        sandbox.find()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"no sandbox here: {exc}")
    tmp = tmp_path_factory.mktemp("attacks")
    folders = _build(tmp)
    before = {name: tree_digest(f) for name, f in folders.items() if name != "fifo"}
    out = tmp / "grades"
    done = subprocess.run([sys.executable, "-m", "grader", *map(str, folders.values()), "--out", str(out),
                           "--time-limit", "10", "--notebooks", "none", "--jobs", "2"],
                          cwd=ROOT, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    graded = {name: json.loads((out / f.name / "grades.json").read_text()) for name, f in folders.items()}
    return graded, folders, out, before


@pytest.mark.slow
def test_each_attack_loses_what_it_attacks_and_the_neighbours_keep_full_marks(attacked):
    graded, folders, out, before = attacked
    full = sum(FULL.values())
    for name in ("correct_first", "correct_last", "not_utf8", "formula", "fake_reference"):
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
    assert {name: tree_digest(f) for name, f in folders.items() if name != "fifo"} == before
    assert not sandbox_processes(), "a process of a sandbox user survived its grading"
    assert not list((Path("/run/idl-ex2-grader") if os.geteuid() == 0 else Path("/nonexistent")).glob(
        "grade-*/slot*")), "a work folder was left behind"


@pytest.mark.slow
def test_what_a_submission_wrote_reaches_the_reports_as_text(attacked):
    graded, folders, out, _ = attacked
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

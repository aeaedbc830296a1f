"""Submissions that attack the grader, graded for real (tools/grade.py, in its sandbox): each scores nothing on what it
attacks, every other question is graded, the machine is unharmed (no process of a sandbox user survives, the grader
finishes) and the submission's folder is unchanged. Also: the reference 23 / 23, the untouched release 0 / 23 and the
Gradescope autograder on Gradescope's folder layout.

Cheating attacks sit in a release-like submission (the reference's ex2/layers.py with its solutions stubbed, the student
notebooks): they get points only if they work. Resource attacks sit in one function of an otherwise correct submission:
that question is lost, no other."""
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import nbformat
import pytest

import helpers

ROOT = helpers.ROOT
from tools import make_assignment, make_autograder, sandbox
from tools.questions import QUESTIONS

pytestmark = pytest.mark.slow
FULL = {q: spec["points"] for q, spec in QUESTIONS.items()}
NB01, NB03 = QUESTIONS["q1a"]["notebook"], QUESTIONS["objective"]["notebook"]
MUTANTS = {  # question -> (file, reference text, mutated text): one plausible student mistake each
    "rnn_cell": ("ex2/layers.py", "h_new = torch.tanh(x_proj + gh)", "h_new = torch.tanh(x_proj) + gh"),
    "gru_cell": ("ex2/layers.py", "r, z = rz[..., :H], rz[..., H:]", "z, r = rz[..., :H], rz[..., H:]"),  # gates swapped
    "bptt": ("ex2/layers.py", "dh = dh * (1 - m) + direct + d_gh[t] @ w_hh", "dh = dh * (1 - m) + d_gh[t] @ w_hh"),  # no z ⊙ h
    "pooling": ("ex2/layers.py", "weights = weights * mask", "weights = weights * 1"),  # an empty review gets weights
    "attention": ("ex2/layers.py", "allowed = mask[:, None, :] & mask[:, :, None]",
                  "allowed = torch.ones_like(mask)[:, None, :] & torch.ones_like(mask)[:, :, None]"),  # no padding mask
    "q1a": (NB01, "return d1f + 2 * d2f", "return d1f + d2f"),  # the factor 2 forgotten
    "q1b": (NB01, "delta = v * (1 - torch.tanh(W @ h + b) ** 2)", "delta = v"),  # s_i forgotten
    "q1d": (NB01, "D = dfdx if D is None else dfdx + dfdu @ D", "D = dfdx if D is None else dfdu @ D"),  # one path
    "q1e": (NB01, "return df_b * (1 + dg_a * (1 + dh_x))", "return df_b * dg_a * dh_x"),  # the plain chain
    "q3b": ("notebooks/02_architectures_and_text_to_image.ipynb", "A = torch.softmax(Q @ K.T / Q.shape[-1] ** 0.5, dim=-1)",
            "A = torch.softmax(Q @ K.T / Q.shape[-1] ** 0.5, dim=0)"),  # softmax over the queries
    "objective": (NB03, 'config={**config, \\"hidden\\": hidden}', "config=config"),  # the trial's size ignored
}
BROKEN = {  # name -> (file, old, new), and the questions it must lose
    "syntax": (("ex2/layers.py", "def pool_token_scores(", "def pool_token_scores(("), "helpers"),
    "raises": (("ex2/layers.py", "H = h.shape[-1]", "H = h.shape[-1] // 0"), {"gru_cell"}),
    "hangs": (("ex2/layers.py", "scores = out[..., 0].masked_fill(~mask, 0.0)", "while True:\n        pass"), {"pooling"}),
    "floods": (("ex2/layers.py", "        T = x.shape[1]\n        xp =",
                "        T = x.shape[1]\n        while True:\n            print('x' * 100000)\n        xp ="), {"attention"}),
    "exits": (("ex2/layers.py", "h_new = torch.tanh(x_proj + gh)", "raise SystemExit(3)"), {"rnn_cell"}),
    "cell_deleted": ((NB01, '"grade_id": "q1a_dF_dx"', '"grade_id": "mine"'), {"q1a"}),
}

CHEATS = {
    # the old grader's events file was named in sys.argv: forge a "passed" verdict (and values) for every question
    "forged_verdicts": """
import json as _json, os as _os, sys as _sys
for _q in {questions!r}:
    for _event in ({{"question": _q, "status": "passed", "message": ""}},
                   {{"question": _q, "values": [[1.0]], "status": "passed"}}):
        for _fd in range(3, 12):
            try:
                _os.write(_fd, (_json.dumps(_event) + "\\n").encode())
            except OSError:
                pass
""",
    # call into the reference module that the old child process had loaded
    "reference_in_memory": """
import sys as _sys
for _name in ("reference_helpers", "helpers", "ex2.layers", "hidden_tests"):
    _ref = _sys.modules.get(_name)
    if _ref is not None and getattr(_ref, "__file__", None) != __file__:
        RNNCell.update = staticmethod(_ref.RNNCell.update)
        GRUCell.update = staticmethod(_ref.GRUCell.update)
        pool_token_scores = _ref.pool_token_scores
        SelfAttention.forward = _ref.SelfAttention.forward
""",
    # load the reference ex2/layers.py from disk (beside the grader, above sys.argv[0], at its known path)
    "reference_on_disk": """
import importlib.util as _util, sys as _sys
from pathlib import Path as _Path
for _path in (_Path(_sys.argv[0]).resolve().parent.parent / "ex2" / "layers.py", _Path({root!r}) / "ex2" / "layers.py",
              _Path("/autograder/source/ex2/layers.py")):
    try:
        _spec = _util.spec_from_file_location("_stolen", _path)
        _ref = _util.module_from_spec(_spec)
        _spec.loader.exec_module(_ref)
    except Exception:
        continue
    RNNCell.update = staticmethod(_ref.RNNCell.update)
    GRUCell.update = staticmethod(_ref.GRUCell.update)
    RNNCell.update_backward = staticmethod(_ref.RNNCell.update_backward)
    GRUCell.update_backward = staticmethod(_ref.GRUCell.update_backward)
    RecurrentBPTT.backward = _ref.RecurrentBPTT.backward
    pool_token_scores = _ref.pool_token_scores
    SelfAttention.forward = _ref.SelfAttention.forward
    break
""",
    # replace the hidden tests with functions that pass
    "hidden_tests_patched": """
import sys as _sys
_hidden = _sys.modules.get("hidden_tests")
if _hidden is not None:
    for _name in dir(_hidden):
        if _name.startswith(("test_", "case_", "_check", "_close")):
            setattr(_hidden, _name, lambda *a, **k: None)
""",
}


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def release_like(folder: Path, appended: str = "") -> Path:
    """The release's ex2/layers.py (solutions stubbed) with `appended` at its end, and the student notebooks."""
    (folder / "notebooks").mkdir(parents=True)
    (folder / "ex2").mkdir()
    text, _ = make_assignment.stub_python((ROOT / "ex2" / "layers.py").read_text(encoding="utf-8"))
    (folder / "ex2" / "layers.py").write_text(text + appended, encoding="utf-8")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nbformat.write(make_assignment.student_notebook(nbformat.read(nb, as_version=4)), folder / "notebooks" / nb.name)
    return folder


def reference_with(folder: Path, rel: str = "ex2/layers.py", old: str = "", new: str = "") -> Path:
    """The reference's ex2/layers.py and notebooks with one (file, old, new) edit (none when `old` is empty)."""
    (folder / "notebooks").mkdir(parents=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, folder / "notebooks" / nb.name)
    (folder / "ex2").mkdir()
    shutil.copy2(ROOT / "ex2" / "layers.py", folder / "ex2" / "layers.py")
    if old:
        text = (folder / rel).read_text(encoding="utf-8")
        assert text.count(old) == 1, old
        (folder / rel).write_text(text.replace(old, new), encoding="utf-8")
    return folder


def grade(*folders: Path, out: Path, limit: float = 60, extra: tuple = ()) -> dict:
    done = subprocess.run([sys.executable, "-m", "tools.grade", *map(str, folders), "--out", str(out),
                           "--time-limit", str(limit), "--notebooks", "none", "--jobs", "2", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    if len(folders) == 1:
        return {folders[0].name: json.loads((out / "grades.json").read_text())}
    return {f.name: json.loads((out / f.name / "grades.json").read_text()) for f in folders}


def sandbox_processes() -> list[str]:
    """Processes of the sandbox users still alive (as root; elsewhere the pid namespace ends them)."""
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid >= sandbox.FIRST_UID:
                alive.append(entry.name)
        except OSError:
            pass
    return alive


@pytest.fixture(scope="module", autouse=True)
def needs_a_sandbox():
    try:
        sandbox.find()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"no sandbox here: {exc}")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Every submission of this file graded in one run of the grader (as a course grades a class: --jobs 2)."""
    tmp = tmp_path_factory.mktemp("submissions")
    folders = {"reference": reference_with(tmp / "reference"), "empty": tmp / "empty"}
    folders["empty"].mkdir()
    folders["release"] = release_like(tmp / "release")  # the untouched release: every stub left
    for q, edit in MUTANTS.items():
        folders[f"mutant_{q}"] = reference_with(tmp / f"mutant_{q}", *edit)
    for name, (edit, _) in BROKEN.items():
        folders[f"broken_{name}"] = reference_with(tmp / f"broken_{name}", *edit)
    for name, code in CHEATS.items():
        folders[name] = release_like(tmp / name, code.format(questions=list(QUESTIONS), root=str(ROOT)))
    cell = folders["forged_in_a_cell"] = release_like(tmp / "forged_in_a_cell")  # the forgery inside a notebook cell
    nb = nbformat.read(cell / NB01, as_version=4)
    target = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q1a_dF_dx")
    target.source = CHEATS["forged_verdicts"].format(questions=list(QUESTIONS), root="") + target.source
    nbformat.write(nb, cell / NB01)
    for question, (where, attack) in RESOURCE_ATTACKS.items():
        folders[f"attacks_{question}"] = reference_with(tmp / f"attacks_{question}", "ex2/layers.py", where, attack + where)
    folders["lies_pooling"] = reference_with(tmp / "lies_pooling", "ex2/layers.py", *LIAR)
    links = folders["symbolic_links"] = tmp / "symbolic_links"  # links to the grader's own files
    (links / "notebooks").mkdir(parents=True)
    (links / "ex2").mkdir()
    (links / "ex2" / "layers.py").symlink_to(ROOT / "ex2" / "layers.py")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        (links / "notebooks" / nb.name).symlink_to(nb)
    before = {name: tree_digest(folder) for name, folder in folders.items()}
    return grade(*folders.values(), out=tmp / "grades", limit=20), before, folders


def lost(grades: dict) -> set:
    return {q for q, e in grades["questions"].items() if e["points"] != FULL[q]}


def test_the_release_scores_zero_and_the_reports_keep_the_answers_private(batch):
    graded, _, folders = batch
    out = folders["reference"].parent / "grades"
    full = sum(FULL.values())
    assert graded["reference"]["auto_points"] == graded["reference"]["auto_max"] == full
    zero = graded["release"]
    assert zero["auto_points"] == 0 and zero["auto_max"] == full
    for q, entry in zero["questions"].items():
        assert entry["status"] == "missing" and "implement" in entry["message"], (q, entry)
    with open(out / "gradebook.csv") as fh:
        rows = {r["submission"]: int(r["auto_points"]) for r in csv.DictReader(fh)}
    assert rows["reference"] == full and rows["release"] == 0 and set(rows) == set(folders)
    assert "✓" in (out / "reference" / "feedback.md").read_text()
    report = (out / "release" / "instructor.md").read_text()
    assert "YOUR ANSWER HERE" in report and "**Reference answer:**" in report and "multivariate chain rule" in report
    assert "seed" in report and "sandbox" in report.lower()
    assert "multivariate chain rule" not in (out / "release" / "feedback.md").read_text()
    assert zero["manual"]["q1a_derivation"]["status"] == "graded by hand"


def test_cheating_scores_nothing(batch):
    graded, _, _ = batch
    for name in [*CHEATS, "forged_in_a_cell", "symbolic_links"]:
        grades = graded[name]
        passed = {q: e for q, e in grades["questions"].items() if e["points"]}
        assert grades["auto_points"] == 0 and not passed, (name, passed)
        assert all(e["status"] in ("missing", "error", "failed") for e in grades["questions"].values()), name
    assert "symbolic link" in graded["symbolic_links"]["questions"]["q1a"]["message"]
    assert all(m["answer"].startswith("(no answer") for m in graded["symbolic_links"]["manual"].values())


RESOURCE_ATTACKS = {  # the question attacked: (where, what the function does first)
    "pooling": ("    ### BEGIN SOLUTION\n    scores = out[..., 0]",  # a fork storm of sleeping children, bounded
                "    import os, time\n    for _ in range(3000):\n        if os.fork() == 0:\n"
                "            time.sleep(30)\n            os._exit(0)\n"),
    "attention": ("        ### BEGIN SOLUTION\n        scores = (q @ k",  # more memory than the limit
                  "        _hog = bytearray(16 * 2**30)\n"),
    "rnn_cell": ("        ### BEGIN SOLUTION\n        h_new = torch.tanh",  # one file past the file-size limit
                 "        with open('/tmp/fill', 'wb') as _fh:\n            for _ in range(200):\n"
                 "                _fh.write(b'x' * 2**20)\n"),
    "gru_cell": ("        ### BEGIN SOLUTION\n        H = h.shape[-1]",  # many files: fill the disk it can write
                 "        for _i in range(40):\n            with open(f'/tmp/fill{_i}', 'wb') as _fh:\n"
                 "                _fh.write(b'x' * 60 * 2**20)\n"),
    "bptt": ("            ### BEGIN SOLUTION\n            m = keep",  # signal everything it can, then its parent
             "            import os, signal\n            try:\n                os.kill(-1, signal.SIGKILL)\n"
             "            except OSError:\n                pass\n            os.kill(os.getppid(), signal.SIGKILL)\n"),
}
LIAR = ("    weights = weights * mask  # an empty review gets all-zero weights, not NaN\n",
        "    weights = weights * mask  # an empty review gets all-zero weights, not NaN\n"
        "    class Liar(torch.Tensor):\n"
        "        def __eq__(self, other): return True\n"
        "        def __array__(self, *a, **k): import numpy; return numpy.zeros(self.shape)\n"
        "        def allclose(self, *a, **k): return True\n"
        "    weights = (weights * 0).as_subclass(Liar)\n")


def test_resource_attacks_cost_only_their_question(batch):
    graded, _, _ = batch
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


def test_the_reference_scores_full_marks_and_each_mutant_loses_exactly_its_question(batch):
    graded, _, _ = batch
    assert graded["reference"]["auto_points"] == graded["reference"]["auto_max"] == sum(FULL.values())
    assert set(MUTANTS) == set(QUESTIONS)
    for q in MUTANTS:
        assert lost(graded[f"mutant_{q}"]) == {q}, (q, graded[f"mutant_{q}"]["questions"][q])
        assert graded[f"mutant_{q}"]["questions"][q]["status"] == "failed", graded[f"mutant_{q}"]["questions"][q]


def test_broken_submissions_are_graded_to_the_end(batch):
    graded, _, _ = batch
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


def test_the_machine_and_the_submissions_are_unharmed(batch):
    _, before, folders = batch
    assert {name: tree_digest(folder) for name, folder in folders.items()} == before, "the grader changed a submission"
    assert not sandbox_processes(), "a process of a sandbox user survived its grading"


RESULTS_SCHEMA = {  # Gradescope's results.json, as its autograder specification documents it
    "type": "object", "required": ["tests"],
    "properties": {
        "score": {"type": "number"}, "execution_time": {"type": "number"}, "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "stdout_visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "tests": {"type": "array", "items": {
            "type": "object", "required": ["score", "max_score", "name"], "additionalProperties": False,
            "properties": {
                "score": {"type": "number"}, "max_score": {"type": "number"}, "status": {"enum": ["passed", "failed"]},
                "name": {"type": "string"}, "name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                "number": {"type": "string"}, "output": {"type": "string"},
                "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                "tags": {"type": "array"}, "visibility": {"enum": ["hidden", "after_due_date", "after_published",
                                                                   "visible"]}, "extra_data": {"type": "object"}}}},
    },
}


@pytest.fixture
def python_for_other_users():
    """As root, let other users traverse the folders above this Python (e.g. /root, 0700 here) for the test's
    duration, as on a machine whose Python is installed system-wide; restored afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the 'user' sandbox (Gradescope's) needs the grader to run as root")
    changed = []
    for folder in Path(sys.prefix).resolve().parents:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)
            changed.append((folder, mode))
    try:
        yield
    finally:
        for folder, mode in changed:
            folder.chmod(mode)


def test_gradescope_autograder_as_gradescope_runs_it(tmp_path, request, python_for_other_users):
    """make_autograder's zip, unpacked as Gradescope does (the grader in /autograder/source, the upload in
    /autograder/submission, here under a temporary root every user can reach) and run as Gradescope's container
    allows: no namespaces, so the child runs as a separate user. From a readable source the grader refuses; from a
    source only root can read (as setup.sh leaves it) the reference's upload (a repository in a folder, notebooks
    flat) gets full marks in a results.json valid against Gradescope's schema, hidden-test messages visible after
    the due date, notebook 02 executed as feedback; the release and a submission that loads the reference from the
    autograder's folder get nothing."""
    import jsonschema

    names = make_autograder.make_autograder(tmp_path / "autograder.zip", notebooks="02")
    assert {"setup.sh", "run_autograder", "requirements.txt", "tools/hidden_tests.py"} <= set(names)
    assert "tools/make_assignment.py" not in names and not any(n.startswith("tests/") for n in names)
    root = Path(tempfile.mkdtemp(prefix="autograder-"))  # /tmp: every user can reach it (tmp_path is root's)
    request.addfinalizer(lambda: shutil.rmtree(root))
    root.chmod(0o755)
    source = root / "source"
    with zipfile.ZipFile(tmp_path / "autograder.zip") as zf:
        zf.extractall(source)
    for path in [source, *source.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.name == "run_autograder" else 0o644)
    upload = reference_with(root / "submission" / "my-repo")
    for nb in (upload / "notebooks").glob("*.ipynb"):
        nb.rename(upload / nb.name)
    (upload / "notebooks").rmdir()
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable, "GRADER_SANDBOX_KIND": "user"}

    def run_autograder(**extra):
        return subprocess.run(["bash", str(source / "run_autograder")], env={**env, **extra}, capture_output=True,
                              text=True, timeout=600)

    readable = run_autograder(GRADER_NO_MOUNT_NAMESPACE="1")  # as in Gradescope's container: no mount namespace
    assert readable.returncode == 2 and "can read" in readable.stderr and "chmod 700" in readable.stderr, readable.stderr
    source.chmod(0o700)  # what setup.sh does: the grader's files are root's alone
    done = run_autograder(GRADER_NO_MOUNT_NAMESPACE="1")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    graded = [t for t in results["tests"] if t["max_score"] > 0]
    assert [t["number"] for t in graded] == list(QUESTIONS) and results["score"] == sum(FULL.values())
    assert all(t["visibility"] == "after_due_date" and t["status"] == "passed" for t in graded)
    assert sum(t["max_score"] for t in graded) == sum(FULL.values())
    assert any("graded by hand" in t["name"] for t in results["tests"] if t["max_score"] == 0)
    (feedback,) = [t for t in results["tests"] if "02_architectures" in t["name"]]
    assert feedback["status"] == "passed" and feedback["output"] == "ran to the end", feedback
    graded_as = json.loads((root / "results" / "grades" / "grades.json").read_text())["sandbox"]
    assert "separate unprivileged user" in graded_as, graded_as

    subs = [release_like(tmp_path / "release"),
            release_like(tmp_path / "thief", CHEATS["reference_on_disk"].format(root=str(source)))]
    done = subprocess.run([sys.executable, "-m", "tools.grade", *map(str, subs), "--out",
                           str(tmp_path / "grades"), "--notebooks", "02", "--sandbox", "user", "--jobs", "2"],
                          cwd=source, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    points = {s.name: json.loads((tmp_path / "grades" / s.name / "grades.json").read_text()) for s in subs}
    assert points["release"]["auto_points"] == points["thief"]["auto_points"] == 0
    stopped = points["release"]["notebooks"]["02_architectures_and_text_to_image.ipynb"]
    assert stopped["status"] == "error", stopped  # at the first cell that calls the unwritten function
    assert "NotImplementedError: scaled_dot_product_attention is not written yet" in stopped["message"], stopped
    assert not sandbox_processes()

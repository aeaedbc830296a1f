"""Submissions that attack the grader, graded for real (`python -m grader`, in its sandbox): each scores nothing on
what it attacks, every other question is graded, the machine is unharmed (no process of a sandbox user survives, the
grader finishes) and the submission's folder is unchanged. Also: the reference 23 / 23 and the untouched release 0 / 23.

Cheating attacks sit in a release-like submission (the reference's ex2/layers.py with its solutions stubbed, the student
notebooks): they get points only if they work. Resource attacks sit in one function of an otherwise correct submission:
that question is lost, no other."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from submissions import CHEATS, FULL, NB01, NB03, lost, reference_with, release_like, sandbox_processes, tree_digest

from assignment.questions import QUESTIONS
from ex2 import runtime
from grader import sandbox

ROOT = runtime.ROOT
pytestmark = pytest.mark.slow


MUTANTS = {  # question -> (file, reference text, mutated text): one plausible student mistake each
    "rnn_cell": ("ex2/layers.py", "h_new = torch.tanh(x_proj + gh)", "h_new = torch.tanh(x_proj) + gh"),
    "gru_cell": ("ex2/layers.py", "r, z = rz[..., :H], rz[..., H:]",
                 "z, r = rz[..., :H], rz[..., H:]"),  # gates swapped
    "bptt": ("ex2/layers.py", "dh = dh * (1 - m) + direct + d_gh[t] @ w_hh",
             "dh = dh * (1 - m) + d_gh[t] @ w_hh"),  # no z ⊙ h
    "pooling": ("ex2/layers.py", "weights = weights * mask", "weights = weights * 1"),  # an empty review gets weights
    "attention": ("ex2/layers.py", "allowed = mask[:, None, :] & mask[:, :, None]",
                  "allowed = torch.ones_like(mask)[:, None, :] & torch.ones_like(mask)[:, :, None]"),  # no padding mask
    "q1a": (NB01, "return d1f + 2 * d2f", "return d1f + d2f"),  # the factor 2 forgotten
    "q1b": (NB01, "delta = v * (1 - torch.tanh(W @ h + b) ** 2)", "delta = v"),  # s_i forgotten
    "q1d": (NB01, "D = dfdx if D is None else dfdx + dfdu @ D", "D = dfdx if D is None else dfdu @ D"),  # one path
    "q1e": (NB01, "return df_b * (1 + dg_a * (1 + dh_x))", "return df_b * dg_a * dh_x"),  # the plain chain
    "q3b": ("notebooks/02_architectures_and_text_to_image.ipynb",
            "A = torch.softmax(Q @ K.T / Q.shape[-1] ** 0.5, dim=-1)",
            "A = torch.softmax(Q @ K.T / Q.shape[-1] ** 0.5, dim=0)"),  # softmax over the queries
    "objective": (NB03, 'config={**config, \\"hidden\\": hidden}', "config=config"),  # the trial's size ignored
}


BROKEN = {  # name -> (file, old, new), and the questions it must lose
    "syntax": (("ex2/layers.py", "def pool_token_scores(", "def pool_token_scores(("), "helpers"),
    "raises": (("ex2/layers.py", "H = h.shape[-1]", "H = h.shape[-1] // 0"), {"gru_cell"}),
    "hangs": (("ex2/layers.py", "scores = out[..., 0].masked_fill(~mask, 0.0)", "while True:\n        pass"),
              {"pooling"}),
    "floods": (("ex2/layers.py", "        T = x.shape[1]\n        xp =",
                "        T = x.shape[1]\n        while True:\n            print('x' * 100000)\n        xp ="),
               {"attention"}),
    "exits": (("ex2/layers.py", "h_new = torch.tanh(x_proj + gh)", "raise SystemExit(3)"), {"rnn_cell"}),
    "cell_deleted": ((NB01, '"grade_id": "q1a_dF_dx"', '"grade_id": "mine"'), {"q1a"}),
}


def grade(*folders: Path, out: Path, limit: float = 60, extra: tuple = ()) -> dict:
    done = subprocess.run([sys.executable, "-m", "grader", *map(str, folders), "--out", str(out),
                           "--time-limit", str(limit), "--notebooks", "none", "--jobs", "2", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    if len(folders) == 1:
        return {folders[0].name: json.loads((out / "grades.json").read_text())}
    return {f.name: json.loads((out / f.name / "grades.json").read_text()) for f in folders}


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
        folders[f"attacks_{question}"] = reference_with(tmp / f"attacks_{question}", "ex2/layers.py", where,
                                                        attack + where)
    folders["lies_pooling"] = reference_with(tmp / "lies_pooling", "ex2/layers.py", *LIAR)
    links = folders["symbolic_links"] = tmp / "symbolic_links"  # links to the grader's own files
    (links / "notebooks").mkdir(parents=True)
    (links / "ex2").mkdir()
    (links / "ex2" / "layers.py").symlink_to(ROOT / "ex2" / "layers.py")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        (links / "notebooks" / nb.name).symlink_to(nb)
    before = {name: tree_digest(folder) for name, folder in folders.items()}
    return grade(*folders.values(), out=tmp / "grades", limit=20), before, folders


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

"""The class the grader's tests grade for real: every submission of test_submissions.py (the reference, the
untouched release, one plausible mistake per question, broken, cheating and resource-hungry submissions) and of
test_attacks.py (attacks on the grader's own process, clock, neighbours and reports), graded together in one run of
`python -m grader` (as a course grades a class: --jobs 2) by the session fixture `graded_class` (conftest.py), the
reference first and again last, so that every attack is graded between correct submissions."""
import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from submissions import (
    CHEATS,
    CLASS_FIRST_SLOT,
    NB01,
    NB03,
    npy_header,
    reference_with,
    release_like,
    sandbox_processes,
    tree_digest,
    zip_bytes,
)

from assignment import make_release
from assignment.questions import QUESTIONS
from ex2 import runtime
from grader import sandbox

ROOT = runtime.ROOT
NB02 = QUESTIONS["q3b"]["notebook"]
TIME_LIMIT = 5
"""Seconds (of CPU) per question in the class's run: the reference's questions need a few, an endless loop burns
all of them."""
CLASS_SLOTS = range(CLASS_FIRST_SLOT, sandbox.MAX_SLOTS)
"""The sandbox users of the class's run: the checks after it look at these alone."""
WORK = Path("/run/idl-ex2-grader")
"""Where the root grader keeps its work folders (grader/sandbox.py `work_base`)."""


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


def _mistakes(tmp: Path, folders: dict) -> None:
    """test_submissions.py's submissions."""
    folders["empty"] = tmp / "empty"
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


def _attacks(tmp: Path, folders: dict) -> None:
    """test_attacks.py's submissions."""
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


@dataclass
class Graded:
    """The class's run: grades and folders by name, the output folder, each folder's digest before grading (the
    FIFO's left out), and what was left right after the run: sandbox users' processes, the grader's work folders."""
    grades: dict
    folders: dict
    out: Path
    before: dict
    processes_left: list
    work_left: list


def grade_class(tmp: Path) -> Graded:
    """Build the class in `tmp` (the reference first, test_submissions.py's, test_attacks.py's, the reference again
    last) and grade it in one run of the grader."""
    folders = {"reference": reference_with(tmp / "reference")}
    _mistakes(tmp, folders)
    _attacks(tmp, folders)
    folders["correct_last"] = reference_with(tmp / "correct_last")
    before = {name: tree_digest(f) for name, f in folders.items() if name != "fifo"}
    out = tmp / "grades"
    grader = subprocess.Popen([sys.executable, "-m", "grader", *map(str, folders.values()), "--out", str(out),
                               "--time-limit", str(TIME_LIMIT), "--notebooks", "none", "--jobs", "2",
                               "--first-slot", str(CLASS_FIRST_SLOT)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = grader.communicate(timeout=900)
    assert grader.returncode == 0, stderr[-3000:]
    left = sandbox_processes(CLASS_SLOTS)
    work = list(WORK.glob(f"grade-{grader.pid}-*/slot*")) if os.geteuid() == 0 else []
    grades = {name: json.loads((out / f.name / "grades.json").read_text()) for name, f in folders.items()}
    return Graded(grades, folders, out, before, left, work)

"""The submissions the grader's tests build (the reference with one edit, the release with code appended), and
what they read of a graded batch (the questions a submission lost, the sandbox users' processes left)."""
import hashlib
import io
import os
import shutil
import zipfile
from pathlib import Path

import nbformat

from assignment import make_release
from assignment.questions import QUESTIONS
from ex2 import runtime
from grader import sandbox

ROOT = runtime.ROOT
FULL = {q: spec["points"] for q, spec in QUESTIONS.items()}
NB01, NB03 = QUESTIONS["q1a"]["notebook"], QUESTIONS["objective"]["notebook"]


CHEATS = {
    # forge a "passed" verdict (and values) for every question, on every file descriptor it can reach
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
    # call into a reference module, if the child process has one loaded
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


def student_code(folder: Path) -> None:
    """What a student's repository holds beside ex2/layers.py and the notebooks, as the release ships it: the face
    (helpers.py), plots.py and the other modules of ex2/ (the notebooks the grader runs for feedback import them)."""
    (folder / "ex2").mkdir(parents=True)
    for rel in ("helpers.py", "plots.py", *(str(p.relative_to(ROOT)) for p in (ROOT / "ex2").glob("*.py"))):
        if rel != "ex2/layers.py":
            shutil.copy2(ROOT / rel, folder / rel)


def release_like(folder: Path, appended: str = "") -> Path:
    """The release's ex2/layers.py (solutions stubbed) with `appended` at its end, the student notebooks and the
    rest of the student's code."""
    (folder / "notebooks").mkdir(parents=True)
    student_code(folder)
    text, _ = make_release.stub_python((ROOT / "ex2" / "layers.py").read_text(encoding="utf-8"))
    (folder / "ex2" / "layers.py").write_text(text + appended, encoding="utf-8")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nbformat.write(make_release.student_notebook(nbformat.read(nb, as_version=4)), folder / "notebooks" / nb.name)
    return folder


def reference_with(folder: Path, rel: str = "ex2/layers.py", old: str = "", new: str = "") -> Path:
    """The reference's ex2/layers.py and notebooks, with the rest of the student's code, and one (file, old, new)
    edit (none when `old` is empty)."""
    (folder / "notebooks").mkdir(parents=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, folder / "notebooks" / nb.name)
    student_code(folder)
    shutil.copy2(ROOT / "ex2" / "layers.py", folder / "ex2" / "layers.py")
    if old:
        text = (folder / rel).read_text(encoding="utf-8")
        assert text.count(old) == 1, old
        (folder / rel).write_text(text.replace(old, new), encoding="utf-8")
    return folder


CLASS_FIRST_SLOT = 256
"""The class's run (graded_class.py) takes its sandbox users from this slot up (`--first-slot`), every other grader
of the tests below it, so that the two can run at once on two workers and each checks only its own users."""


def sandbox_processes(slots: range = range(CLASS_FIRST_SLOT)) -> list[str]:
    """Processes of the sandbox users of `slots` still alive (as root; elsewhere the pid namespace ends them)."""
    uids = range(sandbox.FIRST_UID + slots.start, sandbox.FIRST_UID + slots.stop)
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid in uids:
                alive.append(entry.name)
        except OSError:
            pass
    return alive


def lost(grades: dict) -> set:
    return {q for q, e in grades["questions"].items() if e["points"] != FULL[q]}


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("arr_0.npy", b"x" * 100)
    return buffer.getvalue()


def npy_header(shape, descr="<f8") -> bytes:
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode() + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text

"""Grade student submissions of exercise 2: the submission's code runs sandboxed and sends back values; this process
alone decides the points.

    python -m tools.grade SUBMISSION --out DIR            # DIR/grades.json, feedback.md, instructor.md
    python -m tools.grade sub1 sub2 ... --out DIR         # DIR/<name>/... for each, and DIR/gradebook.csv

A SUBMISSION is a student's copy of the release (a folder with ex2/layers.py and notebooks/). For each question
(tools/questions.py) the hidden tests (tools/hidden_tests.py) choose inputs (random, from a seed drawn per
submission and written to the instructor's report) and compute the expected values here; a child process runs the
submission's functions, or the notebook cell's source read from the .ipynb as text, on those inputs inside the
sandbox (tools/sandbox.py: it sees the submission's ex2/layers.py, the public harness tools/harness.py and Python,
nothing of this repository), and sends back only values (JSON and .npy bytes, read by tools/untrusted.py with
limits, never unpickled). Nothing the child says counts as a verdict: its exit code, its output and any "status"
it writes decide nothing, and the clock is this process's. The submission's folder is only read. A syntax error,
an exception, a hang, a crash, a memory or output flood costs the questions it touches, with the reason; the
others are still graded. Each submission is graded in a process of its own (forked from this one, with a deadline
and a memory ceiling): whatever happens to it costs that submission alone, and the gradebook is always written. Without a sandbox the grader refuses to run
(the message names the fix) unless --no-sandbox is given, which every report then states.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent
import torch

import helpers as reference  # the reference: expected values
from tools import harness  # the wire format's decoder; the parent never runs the harness itself
from tools import hidden_tests, reports, sandbox, untrusted
from tools.questions import QUESTIONS

TIME_LIMIT = 90.0
"""Seconds one question may run (loading the modules included): CPU seconds of the child's processes where the
sandbox gives it a user of its own (a neighbour's load then costs it nothing), else wall time."""
WALL_FACTOR = 3.0
"""Where the limit counts CPU seconds, the wall-time backstop per question: this many times the limit."""
MEMORY_CEILING = 1_500_000_000
"""Bytes of memory (resident) the grader's own process for one submission may use; past it that submission gets
an internal error and the others are graded."""
MAX_VALUE_ITEMS = 2_000_000
"""JSON items the grader reads from one child, all its lines together."""
MAX_FILE = 50_000_000
"""Bytes a submitted file may have; a larger one is treated as missing."""
NOTEBOOK_LIMIT = 600.0
"""Seconds one notebook may run when the grader executes it."""
_REFERENCE = threading.Lock()
"""Held while the reference computes (torch's default dtype is global, and submissions are graded in threads)."""
STUDENT_FILE = "ex2/layers.py"
"""The one file of a submission the child imports: what the student writes (every solution region)."""
HARNESS_FILES = ("harness.py", "untrusted.py", "execute_notebooks.py")
"""What the child gets of tools/: the public harness, its reader and the notebook runner (no hidden test, no
reference)."""
FIRST = ("objective",)
"""Questions a child answers before it runs any other code of the submission (the objective's trial record is kept
by the harness in the child's memory, which code run earlier could change); the other notebook cells come next,
ex2/layers.py's questions last, so no stub cell is answered after the submission's ex2/layers.py has run."""


class _Failure(Exception):
    """A question that cannot be graded for a reason the student should read (a missing file or cell)."""


def _inside(path: Path, folder: Path) -> bool:
    """True if `path` is a regular file of `folder` (not a FIFO or device) with no symbolic link on the way (a link
    could name the reference)."""
    return untrusted.regular_file(path, MAX_FILE) and os.path.realpath(path) == os.path.join(
        os.path.realpath(folder), os.path.relpath(path, folder))


_CELLS: dict[tuple, dict] = {}


def _submitted_cells(notebook: Path, folder: Path | None = None) -> dict:
    """{grade_id: source} of a submitted notebook, read as JSON through the untrusted reader (nothing in it runs);
    read once while the file stays the same."""
    try:
        info = os.lstat(notebook)
        key = (str(notebook), str(folder), info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _CELLS:
        return _CELLS[key]
    cells = _read_cells(notebook, folder)
    if key is not None:
        _CELLS[key] = cells
    return cells


def _read_cells(notebook: Path, folder: Path | None = None) -> dict:
    label = f"{untrusted.name(notebook.parent)}/{untrusted.name(notebook)}"
    if folder is not None and os.path.lexists(notebook) and not _inside(notebook, folder):
        if os.path.islink(notebook) or os.path.realpath(notebook) != os.path.join(
                os.path.realpath(folder), os.path.relpath(notebook, folder)):
            raise _Failure(f"{label} is a symbolic link (submit the file itself)")
        raise _Failure(f"{label} is not a regular file of at most {MAX_FILE // 1_000_000} MB")
    if not os.path.lexists(notebook):
        raise _Failure(f"no {label} in the submission")
    try:
        cells = untrusted.json_document(untrusted.read_bytes(notebook, MAX_FILE), MAX_FILE)["cells"]
        return {c["metadata"]["nbgrader"]["grade_id"]: _source(c.get("source", "")) for c in cells
                if isinstance(c, dict) and isinstance(c.get("metadata"), dict)
                and isinstance(c["metadata"].get("nbgrader"), dict) and isinstance(c["metadata"]["nbgrader"].get(
                    "grade_id"), str)}
    except untrusted.Refused as exc:
        raise _Failure(f"{untrusted.name(notebook)} is not a readable notebook ({exc})") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise _Failure(f"{untrusted.name(notebook)} is not a readable notebook ({type(exc).__name__})") from None


def _source(source) -> str:
    """A cell's source (a string or a list of strings) as one string; anything else is refused."""
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    raise TypeError("a cell's source is not text")


def _cell_source(submission: Path, question: str) -> str:
    spec = QUESTIONS[question]
    cells = _submitted_cells(submission / spec["notebook"], submission)
    if spec["cell"] not in cells:
        raise _Failure(f"{Path(spec['notebook']).name} has no cell {spec['cell']!r} (its nbgrader metadata names it; "
                       f"was the cell deleted?)")
    return cells[spec["cell"]]


def prepare(submission: Path, seed: int) -> tuple[list[dict], dict, dict]:
    """The requests for the child (FIRST's questions, then the other cells, then ex2/layers.py's), the checks by
    question, and the questions settled here (a missing cell)."""
    gen = torch.Generator().manual_seed(seed)
    requests, checks, settled = [], {}, {}
    for q, spec in QUESTIONS.items():
        try:
            source = _cell_source(submission, q) if "cell" in spec else None
        except _Failure as exc:
            settled[q] = {"status": "error", "message": str(exc)}
            continue
        request, checks[q] = hidden_tests.CASES[q](gen, reference, source)
        requests.append(harness.encode(request))
    requests.sort(key=lambda r: (r["id"] not in FIRST, r["kind"] != "cell"))
    return requests, checks, settled


class _Events:
    """The child's value channel, read as it grows, through the untrusted reader: complete JSON lines only, never
    more than `budget` bytes nor MAX_VALUE_ITEMS items in all (a refused line is dropped, and its reason kept)."""

    def __init__(self, path: Path, budget: int, items: int = MAX_VALUE_ITEMS):
        self.path, self.offset, self.buffer, self.events = path, 0, bytearray(), []
        self.budget, self.items, self.refused = budget, items, None

    def poll(self) -> list[dict]:
        if self.offset >= self.budget:
            return self.events
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(self.budget - self.offset)
        self.offset += len(chunk)
        start = len(self.buffer)
        self.buffer += chunk
        end = self.buffer.rfind(b"\n", start)
        if end < 0:
            return self.events
        lines, self.buffer = bytes(self.buffer[:end]).split(b"\n"), self.buffer[end + 1:]
        for line in lines:
            try:
                event = untrusted.json_document(line, self.budget, max_items=self.items)
            except untrusted.Refused as exc:
                self.refused = f"a line it sent back was refused: {exc}"
                continue
            self.items -= untrusted.items(line)
            if isinstance(event, dict):
                event.pop("timeout", None)  # the parent's word alone
                self.events.append(event)
        return self.events


def _run_child(sb: sandbox.Sandbox, workdir: Path, requests: list[dict], limit: float, slot: int) -> dict:
    """Run the harness until every request has an event. The clock is the parent's: a question's time starts when
    the child starts or the previous question's result arrives (nothing the child sends restarts it), counted in
    the CPU seconds of the slot's processes where the slot has a user of its own (with WALL_FACTOR times the limit
    of wall time as a backstop), else in wall time. A question over its limit, or the one running when the child
    dies, is recorded with the reason, and a new child takes the questions left."""
    events: dict[str, dict] = {}
    io = workdir / "io"
    out_path, values_path, request_path = io / "output.txt", io / "values.jsonl", io / "request.json"
    file_limit = sb.limits.file_bytes
    while pending := [r for r in requests if r["id"] not in events]:
        request_path.write_text(json.dumps({"questions": pending}), encoding="utf-8")
        home = _fresh(workdir / "home", slot, sb)
        with open(request_path, "rb") as stdin, open(values_path, "wb") as values, open(out_path, "wb") as out:
            child = sb.popen([sys.executable, "-I", f"{sb.path('/harness', workdir / 'harness')}/harness.py",
                              sb.path("/submission", workdir / "submission"), str(values.fileno())],
                             read_only={"/harness": workdir / "harness", "/submission": workdir / "submission"},
                             slot=slot, home=None if sb.kind == "bwrap" else str(home), stdin=stdin, stdout=out,
                             stderr=subprocess.STDOUT, pass_fds=(values.fileno(),))
            channel = _Events(values_path, file_limit)
            reason, current = _watch(child, channel, events, pending, limit, slot)
        current = _current(channel.poll(), events, pending) or current
        if out_path.stat().st_size >= file_limit:
            reason = f"stopped: it printed more than {file_limit // 2**20} MB"
            for event in events.values():  # a print that hit the limit raised "File too large" in the student's code
                if "Errno 27" in str(event.get("error")) and "values" not in event:
                    event["error"] = f"{reason} ({event['error']})"
        elif values_path.stat().st_size >= file_limit:
            reason = f"stopped: it sent back more than {file_limit // 2**20} MB"
        left = [r["id"] for r in pending if r["id"] not in events]
        if left:
            victim = current if current in left else left[0]
            ended = (f"the grading process ended without a result ({_how_it_ended(child.returncode)}): "
                     f"{_tail(out_path)}")
            events[victim] = {"error": reason or (f"{channel.refused}; {ended}" if channel.refused else ended),
                              "timeout": reason is not None and reason.startswith("stopped after")}
    return events


def _watch(child: subprocess.Popen, channel: _Events, events: dict, pending: list[dict], limit: float,
           slot: int) -> tuple[str | None, str | None]:
    """Wait for the child, stopping it when a question passes its limit; (the reason it was stopped, the
    question it was on)."""
    cpu = sandbox.cpu_seconds(slot)
    wall_limit = limit * WALL_FACTOR if cpu is not None else limit
    current, reason, answered = None, None, len(events)
    started, cpu_start, checked = time.monotonic(), cpu, 0.0
    while child.poll() is None:
        time.sleep(0.05)
        current = _current(channel.poll(), events, pending) or current
        now = time.monotonic()
        if len(events) != answered:  # a new result: the next question's clock starts now
            answered, started = len(events), now
            cpu_start = sandbox.cpu_seconds(slot) if cpu is not None else None
        if cpu_start is not None and now - checked > 0.5:
            checked, used = now, (sandbox.cpu_seconds(slot) or 0.0) - cpu_start
            if used > limit:
                reason = f"stopped after {limit:.0f} s of CPU time: an endless loop, or far too slow"
        if reason is None and now - started > wall_limit:
            reason = (f"stopped after {wall_limit:.0f} s: an endless loop, or far too slow" if cpu is None else
                      f"stopped after {wall_limit:.0f} s of wall time (it waited, or used less than {limit:.0f} s "
                      f"of CPU in all that time)")
        if reason is not None:
            _stop(child, slot)
    _stop(child, slot)  # whatever it left running
    return reason, current


def _current(seen: list[dict], events: dict, pending: list[dict]) -> str | None:
    """Record the first result event per question; return the question that started last and has none yet."""
    ids, current = {r["id"] for r in pending}, None
    for event in seen:
        q = event.get("question")
        if isinstance(q, str) and q in ids:
            events.setdefault(q, event)
        elif isinstance(event.get("start"), str) and event["start"] in ids and event["start"] not in events:
            current = event["start"]
    return current


def _stop(child: subprocess.Popen, slot: int) -> None:
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.wait()
    sandbox.kill_user(slot)


def _how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if code is not None and code > 128 and code - 128 in signal.valid_signals():
        return f"killed by {signal.Signals(code - 128).name}"
    return f"exit code {code}"


def _tail(path: Path, n: int = 300) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(path.stat().st_size - n, 0))
        return untrusted.text(fh.read().decode(errors="replace").strip().replace("\n", " | ")) or "(no output)"


def judge(question: str, event: dict, check) -> dict:
    """Points from the values the child sent back, checked here; an error event only explains a zero."""
    if "values" not in event:
        message = event.get("error")
        message = untrusted.text(message, reports.MAX_MESSAGE) if isinstance(message, str) and message else \
            "no values came back"
        if event.get("timeout"):
            return {"status": "timeout", "message": message}
        if event.get("missing") is True:
            return {"status": "missing", "message": f"not implemented yet: {message} ({QUESTIONS[question]['where']})"}
        return {"status": "error", "message": message}
    try:
        values = harness.decode(event["values"])
    except (harness.WireError, RecursionError, MemoryError) as exc:
        return {"status": "error", "message": f"the values sent back were refused: {untrusted.text(exc, 300)}"}
    try:
        check(values)
    except AssertionError as exc:
        return {"status": "failed", "message": untrusted.text(str(exc) or "a check failed", reports.MAX_MESSAGE)}
    except Exception as exc:  # noqa: BLE001 - values of an unexpected shape or structure
        return {"status": "failed", "message": f"the values sent back are not what was asked for "
                                               f"({type(exc).__name__}: {untrusted.text(str(exc), 200)})"}
    return {"status": "passed", "message": ""}


# --- the grader's private work folders ---

_WORK: dict[str, Path] = {}


def work_base() -> Path:
    """This grader's folder for the children's files: made by this process, only root (or this user) can list
    it, named with this process's id; removed when the grader ends (atexit, and SIGTERM / SIGHUP / SIGINT), and
    one left by a grader that was killed outright is removed by the next (`_remove_stale`)."""
    if "base" not in _WORK:  # made once; the per-submission processes forked from this one use it too
        container = Path("/run/idl-ex2-grader") if os.geteuid() == 0 and os.access("/run", os.W_OK) else \
            Path(tempfile.gettempdir()) / f"idl-ex2-grader-{os.geteuid()}"
        container.mkdir(mode=0o711, exist_ok=True)
        info = container.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o066:
            raise sandbox.SandboxUnavailable(f"{container} must be a folder of this user that others cannot list "
                                             f"or write (remove it and rerun)")
        _remove_stale(container)
        base = Path(tempfile.mkdtemp(prefix=f"grade-{os.getpid()}-", dir=container))
        base.chmod(0o711)  # the sandbox users reach their own folders inside (each 0700), never list the others
        _WORK.update(pid=os.getpid(), base=base)
        atexit.register(_remove_work, base, os.getpid())
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _exit_on_signal)
    return _WORK["base"]


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def _remove_work(base: Path, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(base, ignore_errors=True)


def _remove_stale(container: Path) -> None:
    """Remove the folders of graders that are no longer running."""
    for entry in container.glob("grade-*"):
        try:
            pid = int(entry.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def _own(path: Path, slot: int, sb: sandbox.Sandbox, mode: int = 0o700) -> None:
    """`path` (and all in it) given to the slot's sandbox user (as root), private to it: `mode` for folders, read
    and write for the owner only for files."""
    for p in [path, *path.rglob("*")]:
        if p.is_symlink():
            p.unlink()
            continue
        if os.geteuid() == 0 and sb.kind != "none":
            os.chown(p, sandbox.FIRST_UID + slot, sandbox.FIRST_UID + slot)
        p.chmod(mode if p.is_dir() else 0o600)


def _fresh(folder: Path, slot: int, sb: sandbox.Sandbox) -> Path:
    """An empty folder of the slot's user (a fresh HOME for each child)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    _own(folder, slot, sb)
    return folder


def _workdir(submission: Path, tmp: Path, slot: int, sb: sandbox.Sandbox) -> Path:
    """The child's files, in a folder only root and the slot's user can enter: the public harness and the
    submission's ex2/layers.py (the slot user's, 0700), and the grader's own files in io/ (root's: the child gets
    them as open file descriptors only)."""
    tmp.chmod(0o711)
    (tmp / "io").mkdir(mode=0o700)
    (tmp / "harness").mkdir(mode=0o700)
    for name in HARNESS_FILES:
        shutil.copyfile(TOOLS / name, tmp / "harness" / name)
    (tmp / "submission").mkdir(mode=0o700)
    source = submission / STUDENT_FILE
    if _inside(source, submission):
        try:
            data = untrusted.read_bytes(source, MAX_FILE)
            (tmp / "submission" / STUDENT_FILE).parent.mkdir(mode=0o700)
            (tmp / "submission" / STUDENT_FILE).write_bytes(data)
        except untrusted.Refused:
            pass
    _own(tmp / "harness", slot, sb)
    _own(tmp / "submission", slot, sb)
    return tmp


def grade(submission: Path, out: Path, sb: sandbox.Sandbox, limit: float = TIME_LIMIT, notebooks: tuple = (),
          seed: int | None = None, slot: int | None = None) -> dict:
    """Grade one submission folder; write out/grades.json, feedback.md and instructor.md; return the grades.
    `notebooks` (e.g. ("01", "02")) are also executed, sandboxed, as feedback without points. `slot`: the sandbox
    user (`sandbox.reserve_slots`; by default this process's first)."""
    submission = Path(submission)
    slot = sandbox.reserve_slots(1)[0] if slot is None else slot
    seed = secrets.randbelow(2**31) if seed is None else seed
    results: dict[str, dict] = {}
    executed = {}
    if not submission.is_dir() or submission.is_symlink():
        results = {q: {"status": "missing", "message": f"no submission folder {untrusted.name(submission)}"}
                   for q in QUESTIONS}
    else:
        with _REFERENCE:
            requests, checks, results = prepare(submission, seed)
        workdir = Path(tempfile.mkdtemp(prefix=f"slot{slot}-", dir=work_base()))
        try:
            _workdir(submission, workdir, slot, sb)
            events = _run_child(sb, workdir, requests, limit, slot)
            with _REFERENCE:
                results.update({q: judge(q, events[q], checks[q]) for q in checks})
            executed = {name: run_notebook(sb, submission, name, workdir, slot) for name in _notebooks(notebooks)}
        finally:
            sandbox.kill_user(slot)
            shutil.rmtree(workdir, ignore_errors=True)
    return _report(submission, out, sb, seed, results, executed)


def _report(submission: Path, out: Path, sb: sandbox.Sandbox, seed: int, results: dict, executed: dict,
            read_answers: bool = True) -> dict:
    """Write the reports of one submission from its results; return the grades."""
    entries = {}
    for q, spec in QUESTIONS.items():
        r = results[q]
        entries[q] = {"title": spec["title"], "where": spec["where"], "max": spec["points"],
                      "points": spec["points"] if r["status"] == "passed" else 0, "status": r["status"],
                      "message": untrusted.text(r["message"], reports.MAX_MESSAGE)}
    manual = {q: {"title": m["title"], "max": m["points"], "points": None, "status": "graded by hand",
                  "answer": _answer(submission / m["notebook"], q, submission) if read_answers else
                  "(not read: the grader could not finish this submission)"}
              for q, m in hidden_tests.manual_questions().items()}
    grades = {"submission": untrusted.text(str(submission)), "auto_points": sum(e["points"] for e in entries.values()),
              "auto_max": sum(e["max"] for e in entries.values()), "questions": entries, "manual": manual,
              "notebooks": executed, "sandbox": sb.describe(), "seed": seed}
    answers = {q: _answer(ROOT / m["notebook"], q) for q, m in hidden_tests.manual_questions().items()}
    reports.write_reports(out, grades, answers)
    return grades


def internal_error(submission: Path, out: Path, sb: sandbox.Sandbox, seed: int | None, reason: str) -> dict:
    """The reports of a submission the grader could not finish (its own process died, ran out of time or of
    memory): every question 0 with the reason, the batch goes on."""
    message = f"internal error: the grader could not finish this submission ({reason}); ask your instructor"
    results = {q: {"status": "error", "message": message} for q in QUESTIONS}
    return _report(Path(submission), out, sb, seed if seed is not None else -1, results, {}, read_answers=False)


def _skip(folder: str, names: list[str]) -> list[str]:
    """What a copy of a submission leaves out: what is large, generated, a link, a FIFO or device (anything but a
    regular file or folder), or a shortcut past its code."""
    skipped = []
    for n in names:
        try:
            info = os.lstat(os.path.join(folder, n))
        except OSError:
            skipped.append(n)
            continue
        if (n in (".git", "data", "checkpoints", "__pycache__", ".ipynb_checkpoints")
                or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode))
                or (stat.S_ISREG(info.st_mode) and info.st_size > MAX_FILE)):
            skipped.append(n)
    return skipped


def _copy_tree(source: Path, target: Path) -> None:
    """A copy of a submission's tree, less what `_skip` leaves out; a file that cannot be copied is left out too."""
    try:
        shutil.copytree(source, target, symlinks=False, ignore=_skip, dirs_exist_ok=True)
    except shutil.Error:
        pass  # what could be copied is there


def gather(upload: Path, tmp: Path) -> Path:
    """A submission folder (ex2/layers.py, notebooks/0*.ipynb) from an upload that may nest them (a repository in
    a folder) or put the notebooks beside ex2/. Every path is resolved: a link, or a folder on the way that
    is a link (to the autograder's source, say), is never followed; the files are copied."""
    upload = Path(os.path.realpath(upload))
    found = sorted((p for p in upload.rglob("layers.py") if p.parent.name == "ex2" and _inside(p, upload)),
                   key=lambda p: len(p.parts))
    base = found[0].parent.parent if found else upload
    folder = tmp / "submission"
    folder.mkdir(parents=True)
    _copy_tree(base, folder)
    (folder / "notebooks").mkdir(exist_ok=True)
    for name in _notebooks(("0",)):
        if (folder / "notebooks" / name).is_file():
            continue
        candidates = [base / "notebooks" / name, base / name, *sorted(upload.rglob(name))]
        source = next((p for p in candidates if _inside(p, upload)), None)
        if source is not None:
            shutil.copyfile(source, folder / "notebooks" / name)
    return folder


def _answer(notebook: Path, grade_id: str, folder: Path | None = None) -> str:
    """A written answer's text from a notebook (a missing one is said so)."""
    try:
        cells = _submitted_cells(notebook, folder)
    except _Failure as exc:
        return f"(no answer: {exc})"
    return untrusted.text(cells[grade_id].strip()) or "(empty)" if grade_id in cells else \
        f"(no answer: no cell {grade_id!r})"


def _notebooks(selection) -> list[str]:
    names = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    return [n for n in names if any(n.startswith(prefix) for prefix in selection)]


def run_notebook(sb: sandbox.Sandbox, submission: Path, name: str, workdir: Path, slot: int = 0,
                 limit: float = NOTEBOOK_LIMIT) -> dict:
    """Execute one of the submission's notebooks in the sandbox, on a copy of the submission (no committed results,
    SMOKE_TEST=1: a 1,000-review subset) and say whether it ran, or where it stopped."""
    if not _inside(submission / "notebooks" / name, submission):
        return {"status": "missing", "message": f"no notebooks/{name}", "seconds": 0.0}
    tree = workdir / "tree"
    if not tree.exists():  # the submission, less what is large, generated or a shortcut past its code
        tree.mkdir(mode=0o700)
        _copy_tree(submission, tree)
        _own(tree, slot, sb)
    env = {"SMOKE_TEST": "1", "HELPERS_PROGRESS": "0", "PYTHONPATH": "/work"}
    read_only = {"/harness": workdir / "harness", "/submission": tree}
    try:
        imdb = reference.find_imdb(download=False)
        read_only["/data/" + imdb.name] = imdb
        env["IMDB_PATH"] = sb.path("/data/" + imdb.name, imdb)
    except reference.ImdbError:
        pass  # the notebooks that need IMDB stop and say so
    home = None
    if sb.kind == "bwrap":
        work, scratch = "/work", "/work"
    else:  # a copy on disk, owned by the sandbox user, with a fresh HOME of its own
        work, scratch = str(workdir / f"run-{name}"), None
        shutil.copytree(tree, work)
        _own(Path(work), slot, sb)
        home = str(_fresh(workdir / "home", slot, sb))
        env["PYTHONPATH"] = work
    script = (f'cp -r /submission/. {work}/ 2>/dev/null; ' if scratch else "") + f'cd {work}/notebooks && exec "$@"'
    result_path = workdir / "io" / f"{name}.result"
    start = time.monotonic()
    with open(result_path, "wb") as result, open(workdir / "io" / f"{name}.output", "wb") as out:
        child = sb.popen(["sh", "-c", script, "sh", sys.executable, "-I",
                          f"{sb.path('/harness', workdir / 'harness')}/harness.py", "--notebook",
                          f"{work}/notebooks/{name}", str(result.fileno()), str(limit)],
                         read_only=read_only, env=env, slot=slot, scratch=scratch, loopback=True, home=home,
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, pass_fds=(result.fileno(),))
        try:
            child.wait(timeout=limit + 30)
        except subprocess.TimeoutExpired:
            _stop(child, slot)
            return {"status": "timeout", "message": f"stopped after {limit:.0f} s", "seconds": round(limit, 1)}
        _stop(child, slot)
    seconds = round(time.monotonic() - start, 1)
    event = _Events(result_path, 1_000_000).poll()
    event = event[0] if event else {}
    status, message = event.get("notebook"), event.get("message")
    if status not in ("ran", "error") or not isinstance(message, str):
        return {"status": "error", "message": "the notebook's process ended without a result", "seconds": seconds}
    return {"status": status, "message": untrusted.text(message, reports.MAX_MESSAGE), "seconds": seconds}


# --- each submission in a process of its own ---

def _warm() -> None:
    """Compute what every submission shares once, in this process, before the per-submission processes are
    forked from it (they inherit it): the reference's cells, the GRU checkpoint's expected values."""
    torch.set_num_threads(1)  # one thread: no thread pool that a forked process would inherit half-made
    with _REFERENCE:
        prepare(ROOT, 0)
    hidden_tests.manual_questions()


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _deadline(limit: float, selection: tuple) -> float:
    """Seconds one submission may take in all: every question at its wall backstop, every notebook, and slack."""
    return len(QUESTIONS) * limit * WALL_FACTOR + len(_notebooks(selection)) * (NOTEBOOK_LIMIT + 60) + 300


def grade_guarded(subs: list[Path], outs: list[Path], sb, time_limit: float, selection: tuple, seed: int | None,
                  jobs: int, deadline: float | None = None) -> list[dict]:
    """Grade each submission in a process of its own, forked from this one, `jobs` at once (each with its own
    sandbox slot), under an overall deadline and MEMORY_CEILING: whatever happens to one (its process crashes,
    is killed, runs out of time or memory), it gets an internal error in its reports and the others are graded.
    Returns the grades, in the order given."""
    slots = sandbox.reserve_slots(max(jobs, 1))
    deadline = _deadline(time_limit, selection) if deadline is None else deadline
    _warm()
    work_base()
    free, running, grades = list(slots), {}, [None] * len(subs)
    todo = list(range(len(subs)))
    try:
        while todo or running:
            while todo and free:
                i, slot = todo.pop(0), free.pop(0)
                running[_fork(subs[i], outs[i], sb, time_limit, selection, seed, slot)] = (i, slot, time.monotonic())
            time.sleep(0.1)
            for pid, (i, slot, began) in list(running.items()):
                reason = _check_worker(pid, began, deadline)
                if reason is False:
                    continue
                del running[pid]
                for left in work_base().glob(f"slot{slot}-*"):  # what a killed process could not remove
                    shutil.rmtree(left, ignore_errors=True)
                free.append(slot if sandbox.kill_user(slot) else sandbox.another_slot())  # never a slot still busy
                grades[i] = _collected(subs[i], outs[i], sb, seed, reason)
                print(f"{untrusted.name(subs[i])}: {grades[i]['auto_points']} / {grades[i]['auto_max']}", flush=True)
    finally:
        for pid, (i, slot, _) in running.items():
            _kill(pid)
            sandbox.kill_user(slot)
    return grades


def _fork(sub: Path, out: Path, sb, time_limit: float, selection: tuple, seed: int | None, slot: int) -> int:
    """Start grading one submission in a child process of this grader; its pid."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "grades.json").unlink(missing_ok=True)
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        grade(sub, out, sb, time_limit, selection, seed, slot)
        code = 0
    except BaseException:  # noqa: BLE001 - reported by the parent as this submission's internal error
        traceback.print_exc()
    finally:
        os._exit(code)


def _check_worker(pid: int, began: float, deadline: float):
    """False while the process runs within its deadline and memory; else None (it ended by itself) or why it was
    stopped, or how it ended."""
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        code = os.waitstatus_to_exitcode(status)
        return None if code == 0 else f"its grading process {_how_it_ended(code)}"
    if _rss(pid) > MEMORY_CEILING:
        _kill(pid)
        return f"its grading process used more than {MEMORY_CEILING / 1e9:.1f} GB of memory"
    if time.monotonic() - began > deadline:
        _kill(pid)
        return f"its grading took more than {deadline:.0f} s in all"
    return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _collected(sub: Path, out: Path, sb, seed: int | None, reason: str | None) -> dict:
    """The grades a submission's process wrote, or an internal error (with `reason`) when it wrote none."""
    try:
        if reason is None:
            return json.loads((out / "grades.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    return internal_error(sub, out, sb, seed, reason or "its grading process wrote no grades")


def grade_many(subs: list[Path], out: Path, sb, time_limit: float, selection: tuple, seed: int | None,
               jobs: int) -> list[dict]:
    """Grade several submissions, `jobs` at once (each in its own process and sandbox slot, into out/<name>/);
    the gradebook rows, in the order given."""
    graded = grade_guarded(subs, [out / sub.name for sub in subs], sb, time_limit, selection, seed, jobs)
    return [{"submission": untrusted.name(sub), **{q: e["points"] for q, e in grades["questions"].items()},
             "auto_points": grades["auto_points"], "auto_max": grades["auto_max"]}
            for sub, grades in zip(subs, graded)]


def make_parser() -> argparse.ArgumentParser:
    """The command line of grade.py."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", help="submission folders")
    parser.add_argument("--out", type=Path, required=True, help="where grades.json / feedback.md (and gradebook.csv) go")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, help="seconds per question (CPU seconds "
                        "where the sandbox gives each job a user of its own)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions graded at once")
    parser.add_argument("--notebooks", default="all",
                        help="which of the submission's notebooks to execute: all, none, or prefixes such as 01,02")
    parser.add_argument("--seed", type=int, help="the inputs' seed (default: a new one per submission, reported)")
    parser.add_argument("--sandbox", choices=("bwrap", "user"), help="use this sandbox only (default: the first "
                        "that works)")
    parser.add_argument("--gradescope", type=Path, metavar="RESULTS_JSON", help="also write Gradescope's "
                        "results.json there (one submission; its files may sit anywhere in the folder)")
    parser.add_argument("--visibility", default="after_due_date", help="Gradescope: when students see the hidden "
                        "tests' messages (hidden, after_due_date, after_published, visible)")
    parser.add_argument("--no-sandbox", action="store_true", help="run submission code WITHOUT a sandbox (trusted "
                        "code only; every report says so)")
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        sb = sandbox.find(unsafe=args.no_sandbox, prefer=args.sandbox)
    except sandbox.SandboxUnavailable as exc:
        parser.exit(2, f"grade.py: {exc}\n")
    subs = [Path(s) for s in args.submissions]
    selection = () if args.notebooks == "none" else ("0",) if args.notebooks == "all" else tuple(args.notebooks.split(","))
    if sb.kind == "none":
        print("WARNING: grading without a sandbox (--no-sandbox): submission code runs as this user", file=sys.stderr)
    if args.gradescope:
        if len(subs) != 1:
            parser.error("--gradescope grades one submission")
        with tempfile.TemporaryDirectory(prefix="submission-") as tmp:
            (grades,) = grade_guarded([gather(subs[0], Path(tmp))], [args.out], sb, args.time_limit, selection,
                                      args.seed, 1)
        reports.write_atomic(args.gradescope, json.dumps(reports.gradescope_results(grades, args.visibility), indent=1,
                                                         ensure_ascii=False) + "\n")
        print(f"{untrusted.name(subs[0])}: {grades['auto_points']} / {grades['auto_max']} -> {args.gradescope}")
        return 0
    if len(subs) == 1:
        (grades,) = grade_guarded(subs, [args.out], sb, args.time_limit, selection, args.seed, 1)
        print(f"-> {args.out / 'grades.json'}")
        return 0
    if len({sub.name for sub in subs}) < len(subs):
        parser.error("two submissions have the same folder name; their grades would share DIR/<name>/")
    rows = grade_many(subs, args.out, sb, args.time_limit, selection, args.seed, args.jobs)
    reports.write_gradebook(args.out / "gradebook.csv", rows)
    print(f"gradebook: {args.out / 'gradebook.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

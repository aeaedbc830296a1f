"""Grade one submission of exercise 2: the submission's code runs sandboxed and sends back values; this process
alone decides the points.

A SUBMISSION is a student's copy of the release (a folder with ex2/layers.py and notebooks/). For each question
(assignment/questions.py) the hidden tests (cases/) choose inputs (random, from a seed drawn per submission and
written to the instructor's report) and compute the expected values here; a child process runs the submission's
functions, or the notebook cell's source read from the .ipynb as text, on those inputs inside the sandbox
(sandbox.py: it sees the submission's ex2/layers.py, the child program of `child_files` and Python, nothing else of this
repository), and sends back only values (wire.py; JSON and .npy bytes, read by untrusted.py with limits, never
unpickled). Nothing the child says counts as a verdict: its exit code, its output and any "status" it writes decide
nothing, and the clock is this process's. The submission's folder is only read. A syntax error, an exception, a
hang, a crash, a memory or output flood costs the questions it touches, with the reason; the others are still
graded. The command line (`python -m grader`) is __main__.py; batch.py grades each submission in a process of its
own.
"""
from __future__ import annotations

import ast
import functools
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
from pathlib import Path

import torch

import helpers as reference  # the reference: expected values
from assignment.questions import QUESTIONS
from ex2.data import ImdbError, find_imdb
from ex2.runtime import ROOT
from grader import cases, reports, sandbox, untrusted, wire
from grader.notebooks import nbgrader_cells

HERE = Path(__file__).resolve().parent
TIME_LIMIT = 90.0
"""Seconds one question may run (loading the modules included): CPU seconds of the child's processes where the
sandbox gives it a user of its own (a neighbour's load then costs it nothing), else wall time."""
WALL_FACTOR = 3.0
"""Where the limit counts CPU seconds, the wall-time backstop per question: this many times the limit."""
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
FIRST = ("objective",)
"""Questions a child answers before it runs any other code of the submission (the objective's trial record is kept
by the child program in its memory, which code run earlier could change); the other notebook cells come next,
ex2/layers.py's questions last, so no stub cell is answered after the submission's ex2/layers.py has run."""


@functools.lru_cache(maxsize=1)
def child_files() -> tuple[str, ...]:
    """What the sandboxed child gets of the grader: child.py and the grader's modules it imports, followed from
    module to module (`from grader import ...`); never a hidden test nor the reference."""
    found, todo = [], ["child"]
    while todo:
        name = todo.pop(0)
        if name in found:
            continue
        found.append(name)
        for node in ast.walk(ast.parse((HERE / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "grader":
                todo += [alias.name for alias in node.names]
    return tuple(f"{name}.py" for name in found)


class _Failure(Exception):
    """A question that cannot be graded for a reason the student should read (a missing file or cell)."""


def inside(path: Path, folder: Path) -> bool:
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
    if folder is not None and os.path.lexists(notebook) and not inside(notebook, folder):
        if os.path.islink(notebook) or os.path.realpath(notebook) != os.path.join(
                os.path.realpath(folder), os.path.relpath(notebook, folder)):
            raise _Failure(f"{label} is a symbolic link (submit the file itself)")
        raise _Failure(f"{label} is not a regular file of at most {MAX_FILE // 1_000_000} MB")
    if not os.path.lexists(notebook):
        raise _Failure(f"no {label} in the submission")
    try:
        return nbgrader_cells(untrusted.json_document(untrusted.read_bytes(notebook, MAX_FILE), MAX_FILE))
    except untrusted.Refused as exc:
        raise _Failure(f"{untrusted.name(notebook)} is not a readable notebook ({exc})") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise _Failure(f"{untrusted.name(notebook)} is not a readable notebook ({type(exc).__name__})") from None


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
        request, checks[q] = cases.CASES[q](gen, reference, source)
        requests.append(wire.encode(request))
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
    """Run the child until every request has an event. The clock is the parent's: a question's time starts when
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
        home = sandbox.fresh(workdir / "home", slot, sb)
        with open(request_path, "rb") as stdin, open(values_path, "wb") as values, open(out_path, "wb") as out:
            child = sb.popen([sys.executable, "-I", f"{sb.path('/child', workdir / 'child')}/child.py",
                              sb.path("/submission", workdir / "submission"), str(values.fileno())],
                             read_only={"/child": workdir / "child", "/submission": workdir / "submission"},
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
            ended = (f"the grading process ended without a result ({how_it_ended(child.returncode)}): "
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


def how_it_ended(code: int | None) -> str:
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
        values = wire.decode(event["values"])
    except (wire.WireError, RecursionError, MemoryError) as exc:
        return {"status": "error", "message": f"the values sent back were refused: {untrusted.text(exc, 300)}"}
    try:
        check(values)
    except AssertionError as exc:
        return {"status": "failed", "message": untrusted.text(str(exc) or "a check failed", reports.MAX_MESSAGE)}
    except Exception as exc:  # noqa: BLE001 - values of an unexpected shape or structure
        return {"status": "failed", "message": f"the values sent back are not what was asked for "
                                               f"({type(exc).__name__}: {untrusted.text(str(exc), 200)})"}
    return {"status": "passed", "message": ""}


def _workdir(submission: Path, tmp: Path, slot: int, sb: sandbox.Sandbox) -> Path:
    """The child's files, in a folder only root and the slot's user can enter: the child program (`child_files`)
    and the submission's ex2/layers.py (the slot user's, 0700), and the grader's own files in io/ (root's: the
    child gets them as open file descriptors only)."""
    tmp.chmod(0o711)
    (tmp / "io").mkdir(mode=0o700)
    (tmp / "child").mkdir(mode=0o700)
    for name in child_files():
        shutil.copyfile(HERE / name, tmp / "child" / name)
    (tmp / "submission").mkdir(mode=0o700)
    source = submission / STUDENT_FILE
    if inside(source, submission):
        try:
            data = untrusted.read_bytes(source, MAX_FILE)
            (tmp / "submission" / STUDENT_FILE).parent.mkdir(mode=0o700)
            (tmp / "submission" / STUDENT_FILE).write_bytes(data)
        except untrusted.Refused:
            pass
    sandbox.own(tmp / "child", slot, sb)
    sandbox.own(tmp / "submission", slot, sb)
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
        workdir = Path(tempfile.mkdtemp(prefix=f"slot{slot}-", dir=sandbox.work_base()))
        try:
            _workdir(submission, workdir, slot, sb)
            events = _run_child(sb, workdir, requests, limit, slot)
            with _REFERENCE:
                results.update({q: judge(q, events[q], checks[q]) for q in checks})
            executed = {name: run_notebook(sb, submission, name, workdir, slot) for name in notebook_names(notebooks)}
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
              for q, m in cases.manual_questions().items()}
    grades = {"submission": untrusted.text(str(submission)), "auto_points": sum(e["points"] for e in entries.values()),
              "auto_max": sum(e["max"] for e in entries.values()), "questions": entries, "manual": manual,
              "notebooks": executed, "sandbox": sb.describe(), "seed": seed}
    answers = {q: _answer(ROOT / m["notebook"], q) for q, m in cases.manual_questions().items()}
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


def copy_tree(source: Path, target: Path) -> None:
    """A copy of a submission's tree, less what `_skip` leaves out; a file that cannot be copied is left out too."""
    try:
        shutil.copytree(source, target, symlinks=False, ignore=_skip, dirs_exist_ok=True)
    except shutil.Error:
        pass  # what could be copied is there


def _answer(notebook: Path, grade_id: str, folder: Path | None = None) -> str:
    """A written answer's text from a notebook (a missing one is said so)."""
    try:
        cells = _submitted_cells(notebook, folder)
    except _Failure as exc:
        return f"(no answer: {exc})"
    return untrusted.text(cells[grade_id].strip()) or "(empty)" if grade_id in cells else \
        f"(no answer: no cell {grade_id!r})"


def notebook_names(selection) -> list[str]:
    names = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    return [n for n in names if any(n.startswith(prefix) for prefix in selection)]


def _notebook_run(sb: sandbox.Sandbox, submission: Path, name: str, workdir: Path, slot: int):
    """Where and how a submitted notebook runs: (environment, read-only mounts, its working folder, the sandbox's
    scratch folder or None, a fresh HOME or None). The submission is copied once, less what is large, generated
    or a shortcut past its code; the IMDB archive is mounted where there is one."""
    tree = workdir / "tree"
    if not tree.exists():
        tree.mkdir(mode=0o700)
        copy_tree(submission, tree)
        sandbox.own(tree, slot, sb)
    env = {"SMOKE_TEST": "1", "HELPERS_PROGRESS": "0", "PYTHONPATH": "/work"}
    read_only = {"/child": workdir / "child", "/submission": tree}
    try:
        imdb = find_imdb(download=False)
        read_only["/data/" + imdb.name] = imdb
        env["IMDB_PATH"] = sb.path("/data/" + imdb.name, imdb)
    except ImdbError:
        pass  # the notebooks that need IMDB stop and say so
    if sb.kind == "bwrap":
        return env, read_only, "/work", "/work", None
    work = str(workdir / f"run-{name}")  # a copy on disk, owned by the sandbox user, with a fresh HOME of its own
    shutil.copytree(tree, work)
    sandbox.own(Path(work), slot, sb)
    env["PYTHONPATH"] = work
    return env, read_only, work, None, str(sandbox.fresh(workdir / "home", slot, sb))


def run_notebook(sb: sandbox.Sandbox, submission: Path, name: str, workdir: Path, slot: int = 0,
                 limit: float = NOTEBOOK_LIMIT) -> dict:
    """Execute one of the submission's notebooks in the sandbox, on a copy of the submission (no committed results,
    SMOKE_TEST=1: a 250-review subset) and say whether it ran, or where it stopped."""
    if not inside(submission / "notebooks" / name, submission):
        return {"status": "missing", "message": f"no notebooks/{name}", "seconds": 0.0}
    env, read_only, work, scratch, home = _notebook_run(sb, submission, name, workdir, slot)
    script = (f'cp -r /submission/. {work}/ 2>/dev/null; ' if scratch else "") + f'cd {work}/notebooks && exec "$@"'
    result_path = workdir / "io" / f"{name}.result"
    start = time.monotonic()
    with open(result_path, "wb") as result, open(workdir / "io" / f"{name}.output", "wb") as out:
        child = sb.popen(["sh", "-c", script, "sh", sys.executable, "-I",
                          f"{sb.path('/child', workdir / 'child')}/child.py", "--notebook",
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

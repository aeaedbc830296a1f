"""Grade student submissions of exercise 2: the submission's code runs sandboxed and sends back values; this process
alone decides the points.

    python -m tools.grade SUBMISSION --out DIR            # DIR/grades.json, feedback.md, instructor.md
    python -m tools.grade sub1 sub2 ... --out DIR         # DIR/<name>/... for each, and DIR/gradebook.csv

A SUBMISSION is a student's copy of the release (a folder with helpers.py and notebooks/). For each question
(tools/questions.py) the hidden tests (tools/hidden_tests.py) choose inputs (random, from a seed drawn per
submission and written to the instructor's report) and compute the expected values here; a child process runs the
submission's functions, or the notebook cell's source read from the .ipynb as text, on those inputs inside the
sandbox (tools/sandbox.py: it sees the submission's helpers.py, the public harness tools/harness.py and Python,
nothing of this repository), and sends back only values (JSON and .npy bytes, read without pickle). Nothing the
child says counts as a verdict: its exit code, its output and any "status" it writes decide nothing. The
submission's folder is only read. A syntax error, an exception, a hang, a crash, a memory or output flood costs the
questions it touches, with the reason; the others are still graded. Without a sandbox the grader refuses to run
(the message names the fix) unless --no-sandbox is given, which every report then states.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent
import torch

import helpers as reference  # the reference: expected values
from tools import harness  # the wire format's decoder; the parent never runs the harness itself
from tools import hidden_tests, reports, sandbox
from tools.questions import QUESTIONS

TIME_LIMIT = 90.0
"""Seconds one question may run (loading the modules included)."""
MAX_FILE = 50_000_000
"""Bytes a submitted file may have; a larger one is treated as missing."""
NOTEBOOK_LIMIT = 600.0
"""Seconds one notebook may run when the grader executes it."""
_REFERENCE = threading.Lock()
"""Held while the reference computes (torch's default dtype is global, and submissions are graded in threads)."""
HARNESS_FILES = ("harness.py", "execute_notebooks.py")
"""What the child gets of tools/: the public harness and the notebook runner (no hidden test, no reference)."""


class _Failure(Exception):
    """A question that cannot be graded for a reason the student should read (a missing file or cell)."""


def _inside(path: Path, folder: Path) -> bool:
    """True if `path` is a real file of `folder`: no symbolic link on the way (a link could name the reference)."""
    return path.is_file() and os.path.realpath(path) == os.path.join(os.path.realpath(folder),
                                                                     os.path.relpath(path, folder))


def _submitted_cells(notebook: Path, folder: Path | None = None) -> dict:
    """{grade_id: source} of a submitted notebook, read as JSON (nothing in it runs here)."""
    if folder is not None and notebook.exists() and not _inside(notebook, folder):
        raise _Failure(f"{notebook.parent.name}/{notebook.name} is a symbolic link (submit the file itself)")
    if not notebook.is_file():
        raise _Failure(f"no {notebook.parent.name}/{notebook.name} in the submission")
    if notebook.stat().st_size > MAX_FILE:
        raise _Failure(f"{notebook.name} is larger than {MAX_FILE // 1_000_000} MB")
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        return {c["metadata"]["nbgrader"]["grade_id"]: "".join(c.get("source", "")) for c in cells
                if isinstance(c, dict) and "grade_id" in c.get("metadata", {}).get("nbgrader", {})}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise _Failure(f"{notebook.name} is not a readable notebook ({type(exc).__name__})") from None


def _cell_source(submission: Path, question: str) -> str:
    spec = QUESTIONS[question]
    cells = _submitted_cells(submission / spec["notebook"], submission)
    if spec["cell"] not in cells:
        raise _Failure(f"{Path(spec['notebook']).name} has no cell {spec['cell']!r} (its nbgrader metadata names it; "
                       f"was the cell deleted?)")
    return cells[spec["cell"]]


def prepare(submission: Path, seed: int) -> tuple[list[dict], dict, dict]:
    """The requests for the child, the checks by question, and the questions settled here (a missing cell)."""
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
    return requests, checks, settled


class _Events:
    """The child's value channel, read as it grows: complete JSON lines only, never more than the size limit."""

    def __init__(self, path: Path):
        self.path, self.offset, self.buffer, self.events = path, 0, b"", []

    def poll(self) -> list[dict]:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        self.offset += len(chunk)
        lines = (self.buffer + chunk).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(event, dict):
                self.events.append(event)
        return self.events


def _run_child(sb: sandbox.Sandbox, workdir: Path, requests: list[dict], limit: float, slot: int) -> dict:
    """Run the harness until every request has an event; a question over its time limit, or the one running when
    the child dies, is recorded with the reason, and a new child takes the questions left."""
    events: dict[str, dict] = {}
    out_path, values_path, request_path = workdir / "output.txt", workdir / "values.jsonl", workdir / "request.json"
    file_limit = sb.limits.file_bytes
    while pending := [r for r in requests if r["id"] not in events]:
        request_path.write_text(json.dumps({"questions": pending}), encoding="utf-8")
        with open(request_path, "rb") as stdin, open(values_path, "wb") as values, open(out_path, "wb") as out:
            child = sb.popen([sys.executable, "-I", f"{sb.path('/harness', workdir / 'harness')}/harness.py",
                              sb.path("/submission", workdir / "submission"), str(values.fileno())],
                             read_only={"/harness": workdir / "harness", "/submission": workdir / "submission"},
                             slot=slot, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, pass_fds=(values.fileno(),))
            channel = _Events(values_path)
            current, started, reason = None, time.monotonic(), None
            while child.poll() is None:
                time.sleep(0.05)
                now = _current(channel.poll(), events, pending)
                if now != current:
                    current, started = now, time.monotonic()
                if time.monotonic() - started > limit:
                    reason = f"stopped after {limit:.0f} s: an endless loop, or far too slow"
                    _stop(child, slot)
            _stop(child, slot)  # whatever it left running
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
            events[victim] = {"error": reason or f"the grading process ended without a result "
                                                 f"({_how_it_ended(child.returncode)}): {_tail(out_path)}",
                              "timeout": reason is not None}
    return events


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
        return fh.read().decode(errors="replace").strip().replace("\n", " | ") or "(no output)"


def judge(question: str, event: dict, check) -> dict:
    """Points from the values the child sent back, checked here; an error event only explains a zero."""
    if "values" not in event:
        message = event.get("error")
        message = message if isinstance(message, str) and message else "no values came back"
        if event.get("timeout"):
            return {"status": "timeout", "message": message}
        if event.get("missing") is True:
            return {"status": "missing", "message": f"not implemented yet: {message} ({QUESTIONS[question]['where']})"}
        return {"status": "error", "message": message}
    try:
        values = harness.decode(event["values"])
    except (harness.WireError, RecursionError) as exc:
        return {"status": "error", "message": f"the values sent back were refused: {exc}"}
    try:
        check(values)
    except AssertionError as exc:
        return {"status": "failed", "message": str(exc) or "a check failed"}
    except Exception as exc:  # noqa: BLE001 - values of an unexpected shape or structure
        return {"status": "failed", "message": f"the values sent back are not what was asked for "
                                               f"({type(exc).__name__}: {str(exc)[:200]})"}
    return {"status": "passed", "message": ""}


def _workdir(submission: Path, tmp: Path) -> Path:
    """The child's files: the submission's helpers.py and the public harness, readable by the sandbox user."""
    (tmp / "harness").mkdir()
    for name in HARNESS_FILES:
        shutil.copyfile(TOOLS / name, tmp / "harness" / name)
    (tmp / "submission").mkdir()
    source = submission / "helpers.py"
    if _inside(source, submission) and source.stat().st_size <= MAX_FILE:
        shutil.copyfile(source, tmp / "submission" / "helpers.py")
    _readable(tmp)
    return tmp


def _readable(folder: Path) -> None:
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


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
    if not submission.is_dir():
        results = {q: {"status": "missing", "message": f"no submission folder {submission}"} for q in QUESTIONS}
    else:
        with _REFERENCE:
            requests, checks, results = prepare(submission, seed)
        with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
            workdir = _workdir(submission, Path(tmp))
            events = _run_child(sb, workdir, requests, limit, slot)
            with _REFERENCE:
                results.update({q: judge(q, events[q], checks[q]) for q in checks})
            executed = {name: run_notebook(sb, submission, name, workdir, slot) for name in _notebooks(notebooks)}
    entries = {}
    for q, spec in QUESTIONS.items():
        r = results[q]
        entries[q] = {"title": spec["title"], "where": spec["where"], "max": spec["points"],
                      "points": spec["points"] if r["status"] == "passed" else 0, "status": r["status"],
                      "message": r["message"][:reports.MAX_MESSAGE]}
    manual = {q: {"title": m["title"], "max": m["points"], "points": None, "status": "graded by hand",
                  "answer": _answer(submission / m["notebook"], q, submission)}
              for q, m in hidden_tests.manual_questions().items()}
    grades = {"submission": str(submission), "auto_points": sum(e["points"] for e in entries.values()),
              "auto_max": sum(e["max"] for e in entries.values()), "questions": entries, "manual": manual,
              "notebooks": executed, "sandbox": sb.describe(), "seed": seed}
    answers = {q: _answer(ROOT / m["notebook"], q) for q, m in hidden_tests.manual_questions().items()}
    reports.write_reports(out, grades, answers)
    return grades


def _skip(folder: str, names: list[str]) -> list[str]:
    """What a copy of a submission leaves out: what is large, generated, a link, or a shortcut past its code."""
    return [n for n in names if n in (".git", "data", "checkpoints", "__pycache__", ".ipynb_checkpoints")
            or (Path(folder) / n).is_symlink()
            or ((Path(folder) / n).is_file() and (Path(folder) / n).stat().st_size > MAX_FILE)]


def gather(upload: Path, tmp: Path) -> Path:
    """A submission folder (helpers.py, notebooks/0*.ipynb) from an upload that may nest them (a repository in a
    folder) or put the notebooks beside helpers.py; the files are copied, symbolic links skipped."""
    found = sorted((p for p in upload.rglob("helpers.py") if p.is_file() and not p.is_symlink()),
                   key=lambda p: len(p.parts))
    base = found[0].parent if found else upload
    folder = tmp / "submission"
    shutil.copytree(base, folder, symlinks=False, ignore=_skip)
    (folder / "notebooks").mkdir(exist_ok=True)
    for name in _notebooks(("0",)):
        if (folder / "notebooks" / name).is_file():
            continue
        candidates = [base / "notebooks" / name, base / name, *sorted(upload.rglob(name))]
        source = next((p for p in candidates if p.is_file() and not p.is_symlink()), None)
        if source is not None:
            shutil.copyfile(source, folder / "notebooks" / name)
    return folder


def _answer(notebook: Path, grade_id: str, folder: Path | None = None) -> str:
    """A written answer's text from a notebook (a missing one is said so)."""
    try:
        cells = _submitted_cells(notebook, folder)
    except _Failure as exc:
        return f"(no answer: {exc})"
    return cells[grade_id].strip() or "(empty)" if grade_id in cells else f"(no answer: no cell {grade_id!r})"


def _notebooks(selection) -> list[str]:
    names = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    return [n for n in names if any(n.startswith(prefix) for prefix in selection)]


def run_notebook(sb: sandbox.Sandbox, submission: Path, name: str, workdir: Path, slot: int = 0,
                 limit: float = NOTEBOOK_LIMIT) -> dict:
    """Execute one of the submission's notebooks in the sandbox, on a copy of the submission (no committed results,
    SMOKE_TEST=1: a 1,000-review subset) and say whether it ran, or where it stopped."""
    if not (submission / "notebooks" / name).is_file():
        return {"status": "missing", "message": f"no notebooks/{name}", "seconds": 0.0}
    tree = workdir / "tree"
    if not tree.exists():  # the submission, less what is large, generated or a shortcut past its code
        shutil.copytree(submission, tree, symlinks=False, ignore=_skip)
        _readable(tree)
    env = {"SMOKE_TEST": "1", "HELPERS_PROGRESS": "0", "PYTHONPATH": "/work"}
    read_only = {"/harness": workdir / "harness", "/submission": tree}
    try:
        imdb = reference.find_imdb(download=False)
        read_only["/data/" + imdb.name] = imdb
        env["IMDB_PATH"] = sb.path("/data/" + imdb.name, imdb)
    except reference.ImdbError:
        pass  # the notebooks that need IMDB stop and say so
    if sb.kind == "bwrap":
        work, scratch = "/work", "/work"
    else:  # a copy on disk, owned by the sandbox user
        work, scratch = str(workdir / f"run-{name}"), None
        shutil.copytree(tree, work)
        if os.geteuid() == 0 and sb.kind == "user":
            for path in [Path(work), *Path(work).rglob("*")]:
                os.chown(path, sandbox.FIRST_UID + slot, sandbox.FIRST_UID + slot)
        env["PYTHONPATH"] = work
    script = (f'cp -r /submission/. {work}/ 2>/dev/null; ' if scratch else "") + f'cd {work}/notebooks && exec "$@"'
    result_path = workdir / f"{name}.result"
    start = time.monotonic()
    with open(result_path, "wb") as result, open(workdir / f"{name}.output", "wb") as out:
        child = sb.popen(["sh", "-c", script, "sh", sys.executable, "-I",
                          f"{sb.path('/harness', workdir / 'harness')}/harness.py", "--notebook",
                          f"{work}/notebooks/{name}", str(result.fileno()), str(limit)],
                         read_only=read_only, env=env, slot=slot, scratch=scratch, loopback=True,
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, pass_fds=(result.fileno(),))
        try:
            child.wait(timeout=limit + 30)
        except subprocess.TimeoutExpired:
            _stop(child, slot)
            return {"status": "timeout", "message": f"stopped after {limit:.0f} s", "seconds": round(limit, 1)}
        _stop(child, slot)
    seconds = round(time.monotonic() - start, 1)
    event = _Events(result_path).poll()
    event = event[0] if event else {}
    status, message = event.get("notebook"), event.get("message")
    if status not in ("ran", "error") or not isinstance(message, str):
        return {"status": "error", "message": "the notebook's process ended without a result", "seconds": seconds}
    return {"status": status, "message": message[:reports.MAX_MESSAGE], "seconds": seconds}


def grade_many(subs: list[Path], out: Path, sb, time_limit: float, selection: tuple, seed: int | None,
               jobs: int) -> list[dict]:
    """Grade several submissions, `jobs` at once (each in its own sandbox slot, into out/<name>/); the gradebook
    rows, in the order given."""
    slots: queue.Queue = queue.Queue()
    for slot in sandbox.reserve_slots(max(jobs, 1)):
        slots.put(slot)

    def one(sub: Path) -> dict:
        slot = slots.get()
        try:
            return grade(sub, out / sub.name, sb, time_limit, selection, seed, slot)
        finally:
            slots.put(slot)

    rows = []
    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:  # each grade runs its own sandboxed children
        for sub, grades in zip(subs, pool.map(one, subs)):
            print(f"{sub}: {grades['auto_points']} / {grades['auto_max']}", flush=True)
            rows.append({"submission": sub.name, **{q: e["points"] for q, e in grades["questions"].items()},
                         "auto_points": grades["auto_points"], "auto_max": grades["auto_max"]})
    return rows


def make_parser() -> argparse.ArgumentParser:
    """The command line of grade.py."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", help="submission folders")
    parser.add_argument("--out", type=Path, required=True, help="where grades.json / feedback.md (and gradebook.csv) go")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, help="seconds per question")
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
            grades = grade(gather(subs[0], Path(tmp)), args.out, sb, args.time_limit, selection, args.seed)
        reports.write_atomic(args.gradescope, json.dumps(reports.gradescope_results(grades, args.visibility), indent=1,
                                                         ensure_ascii=False) + "\n")
        print(f"{subs[0]}: {grades['auto_points']} / {grades['auto_max']} -> {args.gradescope}")
        return 0
    if len(subs) == 1:
        grades = grade(subs[0], args.out, sb, args.time_limit, selection, args.seed)
        print(f"{subs[0]}: {grades['auto_points']} / {grades['auto_max']} -> {args.out / 'grades.json'}")
        return 0
    if len({sub.name for sub in subs}) < len(subs):
        parser.error("two submissions have the same folder name; their grades would share DIR/<name>/")
    rows = grade_many(subs, args.out, sb, args.time_limit, selection, args.seed, args.jobs)
    reports.write_gradebook(args.out / "gradebook.csv", rows)
    print(f"gradebook: {args.out / 'gradebook.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

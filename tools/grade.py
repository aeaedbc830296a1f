"""Grade student submissions of exercise 2 with the hidden tests (tools/hidden_tests.py).

    python tools/grade.py SUBMISSION --out DIR            # DIR/grades.json and DIR/feedback.md
    python tools/grade.py sub1 sub2 ... --out DIR         # DIR/<name>/... for each, and DIR/gradebook.csv

A SUBMISSION is a student's copy of the release (a folder with helpers.py). `grades.json` holds `auto_points`,
`auto_max` and one entry per question (points, max, status, the failing check's message). Each question is
graded on the reference with only that question's functions taken from the submission, so one mistake costs one
question. The submission's folder is never written to: its helpers.py is copied to a temporary folder and run
there, in a child process without network access (where `unshare` allows), with a time limit per question; a
syntax error, an exception, a hang, a missing file or a flood of output costs the affected questions, with the
reason, and the other questions are still graded. The grader runs student code: for a class, run it in a
container (README, "For instructors").
"""
from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tools"), str(ROOT)]
import helpers  # noqa: E402  (the reference: atomic writes)
import hidden_tests  # noqa: E402
from hidden_tests import QUESTIONS  # noqa: E402

TIME_LIMIT = 90.0
"""Seconds one question may run (loading the modules included)."""
MAX_OUTPUT = 50_000_000
"""Bytes of output a submission may print before it is stopped."""
MAX_FILE = 50_000_000
"""Bytes a submitted file may have; a larger one is treated as missing."""
MAX_MESSAGE = 600
"""Characters of a failing check's message kept in the feedback."""
NOTEBOOK_LIMIT = 600.0
"""Seconds one notebook may run when the grader executes it."""


# --- the child: grade questions in this process, one line of JSON per event ---

class _Failure(Exception):
    """A submission that cannot be graded for a reason the student should read (a missing file, a syntax error)."""


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def _submission(submission: Path):
    """The submission's helpers.py as a module, imported once per child; why it cannot be, as a _Failure."""
    if not (submission / "helpers.py").is_file():
        return _Failure("no helpers.py in the submission")
    try:
        return _load(submission / "helpers.py", "submission_helpers")
    except SyntaxError as exc:
        return _Failure(f"helpers.py has a syntax error (line {exc.lineno}: {exc.msg})")
    except BaseException as exc:  # noqa: BLE001 - anything a student's module does at import
        return _Failure(f"helpers.py fails when imported: {_last_line(exc)}")


def _hybrid(submission: Path, question: str, n: int):
    """A fresh copy of the reference helpers with `question`'s functions replaced by the submission's."""
    sub = _submission(submission)
    if isinstance(sub, _Failure):
        raise _Failure(str(sub))
    hybrid = _load(ROOT / "helpers.py", f"graded_{n}")
    for qualified in QUESTIONS[question]["replace"]:
        owner, _, attr = qualified.rpartition(".")
        source = getattr(sub, owner, None) if owner else sub
        found = vars(source).get(attr) if source is not None else None
        if found is None:
            raise _Failure(f"helpers.py has no {qualified}")
        setattr(getattr(hybrid, owner) if owner else hybrid, attr, found)
    return hybrid


def _graded_cells(notebook: Path) -> dict | _Failure:
    """{grade_id: source} of a notebook's nbgrader cells (read once); why it cannot be read, as a _Failure."""
    if not notebook.is_file():
        return _Failure(f"no {notebook.parent.name}/{notebook.name} in the submission")
    if notebook.stat().st_size > MAX_FILE:
        return _Failure(f"{notebook.name} is larger than {MAX_FILE // 1_000_000} MB")
    try:
        return hidden_tests.graded_cells(notebook)
    except (ValueError, KeyError, TypeError) as exc:
        return _Failure(f"{notebook.name} is not a readable notebook ({type(exc).__name__})")


def notebook_cell(notebook: Path, grade_id: str) -> str:
    """The source of the cell whose nbgrader grade_id is `grade_id`."""
    cells = _graded_cells(notebook)
    if isinstance(cells, _Failure):
        raise _Failure(str(cells))
    if grade_id not in cells:
        raise _Failure(f"{notebook.name} has no cell {grade_id!r} (its nbgrader metadata names it; was the cell "
                       f"deleted?)")
    return cells[grade_id]


def _graded(submission: Path, question: str, n: int):
    spec = QUESTIONS[question]
    if "cell" in spec:
        source = notebook_cell(submission / spec["notebook"], spec["cell"])
        try:
            compile(source, spec["cell"], "exec")
        except SyntaxError as exc:
            raise _Failure(f"cell {spec['cell']} has a syntax error (line {exc.lineno}: {exc.msg})") from None
        return source
    return _hybrid(submission, question, n)


def _last_line(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "submission" in f.filename
              or f.filename.endswith("helpers.py")]
    where = f" (helpers.py line {frames[-1].lineno})" if frames else ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}{where}"


def run_questions(submission: Path, questions: list[str], log) -> None:
    import torch

    torch.set_num_threads(1)
    reference = _load(ROOT / "helpers.py", "reference_helpers")
    for n, question in enumerate(questions):
        print(json.dumps({"start": question}), file=log, flush=True)
        try:
            getattr(hidden_tests, f"test_{question}")(_graded(submission, question, n), reference)
            result = {"status": "passed", "message": ""}
        except _Failure as exc:
            result = {"status": "error", "message": str(exc)}
        except AssertionError as exc:
            result = {"status": "failed", "message": str(exc) or "a check failed"}
        except NotImplementedError as exc:
            result = {"status": "missing", "message": f"not implemented yet: {exc or QUESTIONS[question]['where']}"}
        except BaseException as exc:  # noqa: BLE001 - a student's code may raise anything, SystemExit included
            result = {"status": "error", "message": _last_line(exc)}
        print(json.dumps({"question": question, **result}), file=log, flush=True)


# --- the parent: copy, run the child under a time limit, collect, report ---

@functools.lru_cache(maxsize=2)
def _network_off(loopback: bool = False) -> list[str]:
    """`unshare -rn` (a private network namespace: no network) when this platform allows it; with `loopback` its
    own 127.0.0.1 is brought up (a Jupyter kernel talks to its client over it), or nothing if that cannot be done."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if not unshare or subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode != 0:
        return []
    if not loopback:
        return [unshare, "-rn"]
    if not ip or subprocess.run([unshare, "-rn", ip, "link", "set", "lo", "up"], capture_output=True).returncode:
        return []
    return [unshare, "-rn", "sh", "-c", f'"{ip}" link set lo up && exec "$@"', "sh"]


def _run_child(helpers_copy: Path, questions: list[str], workdir: Path, limit: float) -> dict:
    """Run the child until every question has a result. A question that passes its time limit, floods the
    output or kills the child is recorded with the reason; the child restarts with the questions left."""
    results: dict[str, dict] = {}
    prefix = _network_off()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HELPERS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    log_path, out_path = workdir / "events.jsonl", workdir / "output.txt"

    def collect() -> str | None:
        current = None
        for event in _events(log_path):
            if "question" in event:
                results.setdefault(event["question"], {"status": event["status"], "message": event["message"]})
            elif event.get("start") not in results:
                current = event["start"]
        return current

    while pending := [q for q in questions if q not in results]:
        log_path.write_text("")
        with open(out_path, "wb") as out:
            child = subprocess.Popen([*prefix, sys.executable, str(Path(__file__).resolve()), "--child",
                                      str(helpers_copy), "--log", str(log_path), *pending], cwd=workdir,
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            current, started, reason = None, time.monotonic(), None
            while child.poll() is None:
                time.sleep(0.1)
                now = collect()
                if now != current:
                    current, started = now, time.monotonic()
                if time.monotonic() - started > limit:
                    reason = f"stopped after {limit:.0f} s: an endless loop, or far too slow"
                elif out_path.stat().st_size > MAX_OUTPUT:
                    reason = f"stopped: it printed more than {MAX_OUTPUT // 1_000_000} MB"
                if reason:
                    child.kill()
                    child.wait()
        current = collect() or current
        left = [q for q in pending if q not in results]
        if left:
            victim = current if current in left else left[0]
            results[victim] = {"status": "timeout" if reason else "error", "message": reason or
                               f"the grading process ended without a result (exit code {child.returncode}): "
                               f"{_tail(out_path)}"}
    return results


def _events(path: Path) -> list[dict]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written
    return events


def _tail(path: Path, n: int = 300) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(path.stat().st_size - n, 0))
        return fh.read().decode(errors="replace").strip().replace("\n", " | ") or "(no output)"


def grade(submission: Path, out: Path, limit: float = TIME_LIMIT, notebooks: tuple = ()) -> dict:
    """Grade one submission folder; write out/grades.json, feedback.md and instructor.md; return the grades.
    `notebooks` (e.g. ("01", "02")) are also executed, as feedback without points."""
    submission = Path(submission)
    out.mkdir(parents=True, exist_ok=True)
    questions = list(QUESTIONS)
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        workdir = Path(tmp)
        copy = workdir / "submission"
        for rel in ["helpers.py", *sorted({spec["notebook"] for spec in QUESTIONS.values() if "notebook" in spec})]:
            source = submission / rel
            if source.is_file() and source.stat().st_size <= MAX_FILE:
                (copy / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy / rel)
        copy.mkdir(exist_ok=True)
        if submission.is_dir():
            results = _run_child(copy, questions, workdir, limit)
            executed = {name: run_notebook(submission, name, workdir) for name in _notebooks(notebooks)}
        else:
            results = {q: {"status": "missing", "message": f"no submission folder {submission}"} for q in questions}
            executed = {}
    entries = {}
    for q in questions:
        r = results[q]
        entries[q] = {"title": QUESTIONS[q]["title"], "where": QUESTIONS[q]["where"], "max": QUESTIONS[q]["points"],
                      "points": QUESTIONS[q]["points"] if r["status"] == "passed" else 0,
                      "status": r["status"], "message": r["message"][:MAX_MESSAGE]}
    manual = {q: {"title": m["title"], "max": m["points"], "points": None, "status": "graded by hand",
                  "answer": _answer(submission / m["notebook"], q)} for q, m in hidden_tests.manual_questions().items()}
    grades = {"submission": str(submission), "auto_points": sum(e["points"] for e in entries.values()),
              "auto_max": sum(e["max"] for e in entries.values()), "questions": entries, "manual": manual,
              "notebooks": executed}
    for name, text in (("grades.json", json.dumps(grades, indent=1, ensure_ascii=False) + "\n"),
                       ("feedback.md", feedback(grades)), ("instructor.md", instructor_report(grades))):
        with helpers.atomic_path(out / name) as tmp:  # a report is complete or absent
            tmp.write_text(text, encoding="utf-8")
    return grades


def _notebooks(selection) -> list[str]:
    names = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    return [n for n in names if any(n.startswith(prefix) for prefix in selection)]


def run_notebook(submission: Path, name: str, workdir: Path, limit: float = NOTEBOOK_LIMIT) -> dict:
    """Execute one of the submission's notebooks on a copy of it (its helpers.py first on the path, SMOKE_TEST=1,
    no committed results, no network where `unshare` allows) and say whether it ran, or where it stopped."""
    if not (submission / "notebooks" / name).is_file():
        return {"status": "missing", "message": f"no notebooks/{name}", "seconds": 0.0}
    run = workdir / "run"
    if not run.exists():  # the whole submission, less what is large, generated or a shortcut past its code
        shutil.copytree(submission, run, ignore=lambda folder, names: [
            n for n in names if n in (".git", "data", "checkpoints", "__pycache__", ".ipynb_checkpoints")
            or ((Path(folder) / n).is_file() and (Path(folder) / n).stat().st_size > MAX_FILE)])
    result_path = workdir / f"{name}.json"
    env = {**os.environ, "SMOKE_TEST": "1", "HELPERS_PROGRESS": "0", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(run), os.environ.get("PYTHONPATH", "")])}
    start = time.monotonic()
    try:
        subprocess.run([*_network_off(loopback=True), sys.executable, str(Path(__file__).resolve()), "--execute",
                        str(run / "notebooks" / name), "--log", str(result_path)], cwd=run, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"stopped after {limit:.0f} s", "seconds": round(limit, 1)}
    seconds = round(time.monotonic() - start, 1)
    try:
        return {**json.loads(result_path.read_text()), "seconds": seconds}
    except (OSError, ValueError):
        return {"status": "error", "message": "the notebook's process ended without a result", "seconds": seconds}


def execute_notebook(path: Path, log: Path) -> None:
    """The child: run a notebook top to bottom and write {"status", "message"} (the first failing cell)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    result = {"status": "ran", "message": ""}
    try:
        NotebookClient(nb, timeout=NOTEBOOK_LIMIT, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as exc:
        result = {"status": "error", "message": _where_it_stopped(nb) or f"CellExecutionError: {str(exc)[:300]}"}
    except Exception as exc:  # noqa: BLE001 - a kernel that dies, a notebook that does not parse
        result = {"status": "error", "message": f"{type(exc).__name__}: {str(exc)[:300]}"}
    log.write_text(json.dumps(result), encoding="utf-8")


def _where_it_stopped(nb) -> str | None:
    """'stopped at code cell N (grade_id): ename: evalue' for the first code cell with an error output; a bare
    NotImplementedError (nbgrader's stub) is named after the function that raised it."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code, 1):
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        if error is None:
            continue
        what = f"{error.get('ename')}: {error.get('evalue', '')[:300]}"
        if error.get("ename") == "NotImplementedError" and not error.get("evalue"):
            plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.get("traceback", [])))  # without ANSI colours
            frames = re.findall(r", in (\w+)\(", plain)
            what = f"NotImplementedError: {frames[-1]} is not written yet" if frames else what
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        return f"stopped at code cell {number}{f' ({grade_id})' if grade_id else ''}: {what}"
    return None


def _answer(notebook: Path, grade_id: str) -> str:
    """A written answer's text from a notebook (a missing one is said so)."""
    try:
        return notebook_cell(notebook, grade_id).strip() or "(empty)"
    except _Failure as exc:
        return f"(no answer: {exc})"


def feedback(grades: dict) -> str:
    lines = [f"# Feedback: {grades['auto_points']} / {grades['auto_max']} automatic points", "",
             "| question | points | result |", "|---|---|---|"]
    for q, e in grades["questions"].items():
        result = "✓" if e["status"] == "passed" else f"{e['status']}: {e['message']}".replace("|", "\\|")
        lines.append(f"| {e['title']} (`{q}`, {e['where']}) | {e['points']} / {e['max']} | {result} |")
    for q, m in grades["manual"].items():
        lines.append(f"| {m['title']} (`{q}`) | – / {m['max']} | graded by hand |")
    if grades.get("notebooks"):
        lines += ["", "Your notebooks, executed on a 1,000-review subset (feedback, no points):", "",
                  "| notebook | result | seconds |", "|---|---|---|"]
        for name, r in grades["notebooks"].items():
            result = "ran to the end" if r["status"] == "ran" else f"{r['status']}: {r['message']}".replace("|", "\\|")
            lines.append(f"| {name} | {result} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def instructor_report(grades: dict) -> str:
    """The feedback, then each written answer beside the reference answer (never given to students)."""
    parts = [feedback(grades), "## Written answers (graded by hand)"]
    for q, m in grades["manual"].items():
        reference = _answer(ROOT / hidden_tests.manual_questions()[q]["notebook"], q)
        parts += [f"### {m['title']} (`{q}`, {m['max']} points)", "**Submitted:**", "", m["answer"], "",
                  "**Reference answer:**", "", reference, ""]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="*", help="submission folders (or, with --child, questions)")
    parser.add_argument("--out", type=Path, help="where grades.json / feedback.md (and gradebook.csv) go")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT, help="seconds per question")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="submissions graded at once")
    parser.add_argument("--notebooks", default="all",
                        help="which of the submission's notebooks to execute: all, none, or prefixes such as 01,02")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--execute", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.execute:
        execute_notebook(args.execute, args.log)
        return 0
    if args.child:
        with open(args.log, "a", encoding="utf-8") as log:
            run_questions(args.child, args.submissions, log)
        return 0
    if args.out is None or not args.submissions:
        parser.error("give one or more SUBMISSION folders and --out DIR")
    subs = [Path(s) for s in args.submissions]
    selection = () if args.notebooks == "none" else ("0",) if args.notebooks == "all" else tuple(args.notebooks.split(","))
    if len(subs) == 1:
        grades = grade(subs[0], args.out, args.time_limit, selection)
        print(f"{subs[0]}: {grades['auto_points']} / {grades['auto_max']} -> {args.out / 'grades.json'}")
        return 0
    if len({sub.name for sub in subs}) < len(subs):
        parser.error("two submissions have the same folder name; their grades would share DIR/<name>/")
    rows = []
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:  # each grade runs in its own child process
        for sub, grades in zip(subs, pool.map(lambda s: grade(s, args.out / s.name, args.time_limit, selection), subs)):
            print(f"{sub}: {grades['auto_points']} / {grades['auto_max']}", flush=True)
            rows.append({"submission": sub.name, **{q: e["points"] for q, e in grades["questions"].items()},
                         "auto_points": grades["auto_points"], "auto_max": grades["auto_max"]})
    with helpers.atomic_path(args.out / "gradebook.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"gradebook: {args.out / 'gradebook.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Each submission graded in a process of its own, forked from the grader after it computed what all share: with a
deadline and a memory ceiling, so that whatever happens to one (its process crashes, is killed, runs out of time or
memory) costs that submission alone, with an internal error in its reports, and the gradebook is always written."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
import traceback
from pathlib import Path

import torch

from assignment.questions import QUESTIONS
from grader import cases, grade, sandbox, untrusted

MEMORY_CEILING = 1_500_000_000
"""Bytes of memory (resident) the grader's own process for one submission may use; past it that submission gets
an internal error and the others are graded."""


def _warm() -> None:
    """Compute what every submission shares once, in this process, before the per-submission processes are
    forked from it (they inherit it): the reference's cells, the GRU checkpoint's expected values."""
    torch.set_num_threads(1)  # one thread: no thread pool that a forked process would inherit half-made
    with grade._REFERENCE:
        grade.prepare(grade.ROOT, 0)
    cases.manual_questions()


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _deadline(limit: float, selection: tuple) -> float:
    """Seconds one submission may take in all: every question at its wall backstop, every notebook, and slack."""
    notebooks = len(grade.notebook_names(selection))
    return len(QUESTIONS) * limit * grade.WALL_FACTOR + notebooks * (grade.NOTEBOOK_LIMIT + 60) + 300


def grade_guarded(subs: list[Path], outs: list[Path], sb, time_limit: float, selection: tuple, seed: int | None,
                  jobs: int, deadline: float | None = None) -> list[dict]:
    """Grade each submission in a process of its own, forked from this one, `jobs` at once (each with its own
    sandbox slot), under an overall deadline and MEMORY_CEILING: whatever happens to one (its process crashes,
    is killed, runs out of time or memory), it gets an internal error in its reports and the others are graded.
    Returns the grades, in the order given."""
    slots = sandbox.reserve_slots(max(jobs, 1))
    deadline = _deadline(time_limit, selection) if deadline is None else deadline
    _warm()
    sandbox.work_base()
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
                for left in sandbox.work_base().glob(f"slot{slot}-*"):  # what a killed process could not remove
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
        grade.grade(sub, out, sb, time_limit, selection, seed, slot)
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
        return None if code == 0 else f"its grading process {grade.how_it_ended(code)}"
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
    return grade.internal_error(sub, out, sb, seed, reason or "its grading process wrote no grades")


def grade_many(subs: list[Path], out: Path, sb, time_limit: float, selection: tuple, seed: int | None,
               jobs: int) -> list[dict]:
    """Grade several submissions, `jobs` at once (each in its own process and sandbox slot, into out/<name>/);
    the gradebook rows, in the order given."""
    graded = grade_guarded(subs, [out / sub.name for sub in subs], sb, time_limit, selection, seed, jobs)
    return [{"submission": untrusted.name(sub), **{q: e["points"] for q, e in grades["questions"].items()},
             "auto_points": grades["auto_points"], "auto_max": grades["auto_max"]}
            for sub, grades in zip(subs, graded)]

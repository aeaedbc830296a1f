"""Grade student submissions of exercise 2 (how each is graded: grade.py).

    python -m grader SUBMISSION --out DIR            # DIR/grades.json, feedback.md, instructor.md
    python -m grader sub1 sub2 ... --out DIR         # DIR/<name>/... for each, and DIR/gradebook.csv

Each submission is graded in a process of its own (batch.py), `--jobs` at once. Without a sandbox the grader refuses
to run (the message names the fix) unless --no-sandbox is given, which every report then states.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grader import batch, grade, reports, sandbox, untrusted


def gather(upload: Path, tmp: Path) -> Path:
    """A submission folder (ex2/layers.py, notebooks/0*.ipynb) from an upload that may nest them (a repository in
    a folder) or put the notebooks beside ex2/. Every path is resolved: a link, or a folder on the way that is a
    link (to the autograder's source, say), is never followed; the files are copied."""
    upload = Path(os.path.realpath(upload))
    found = sorted((p for p in upload.rglob("layers.py") if p.parent.name == "ex2" and grade.inside(p, upload)),
                   key=lambda p: len(p.parts))
    base = found[0].parent.parent if found else upload
    folder = tmp / "submission"
    folder.mkdir(parents=True)
    grade.copy_tree(base, folder)
    (folder / "notebooks").mkdir(exist_ok=True)
    for name in grade.notebook_names(("0",)):
        if (folder / "notebooks" / name).is_file():
            continue
        candidates = [base / "notebooks" / name, base / name, *sorted(upload.rglob(name))]
        source = next((p for p in candidates if grade.inside(p, upload)), None)
        if source is not None:
            shutil.copyfile(source, folder / "notebooks" / name)
    return folder


def make_parser() -> argparse.ArgumentParser:
    """The command line of `python -m grader`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", help="submission folders")
    parser.add_argument("--out", type=Path, required=True,
                        help="where grades.json / feedback.md (and gradebook.csv) go")
    parser.add_argument("--time-limit", type=float, default=grade.TIME_LIMIT, help="seconds per question (CPU seconds "
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
    parser.add_argument("--first-slot", type=int, default=0, metavar="N",
                        help=f"the lowest sandbox user this grader takes (uid {sandbox.FIRST_UID} + N; 0 to "
                             f"{sandbox.MAX_SLOTS - 1}): graders on one machine never share a user, and a range "
                             f"of their own keeps their processes apart by uid")
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        sandbox.first_slot(args.first_slot)
    except ValueError as exc:
        parser.error(f"--first-slot {args.first_slot}: {exc}")
    try:
        sb = sandbox.find(unsafe=args.no_sandbox, prefer=args.sandbox)
    except sandbox.SandboxUnavailable as exc:
        parser.exit(2, f"grader: {exc}\n")
    subs = [Path(s) for s in args.submissions]
    selection = (() if args.notebooks == "none" else ("0",) if args.notebooks == "all"
                 else tuple(args.notebooks.split(",")))
    if sb.kind == "none":
        print("WARNING: grading without a sandbox (--no-sandbox): submission code runs as this user", file=sys.stderr)
    if args.gradescope:
        if len(subs) != 1:
            parser.error("--gradescope grades one submission")
        with tempfile.TemporaryDirectory(prefix="submission-") as tmp:
            (grades,) = batch.grade_guarded([gather(subs[0], Path(tmp))], [args.out], sb, args.time_limit, selection,
                                      args.seed, 1)
        reports.write_atomic(args.gradescope, json.dumps(reports.gradescope_results(grades, args.visibility), indent=1,
                                                         ensure_ascii=False) + "\n")
        print(f"{untrusted.name(subs[0])}: {grades['auto_points']} / {grades['auto_max']} -> {args.gradescope}")
        return 0
    if len(subs) == 1:
        (grades,) = batch.grade_guarded(subs, [args.out], sb, args.time_limit, selection, args.seed, 1)
        print(f"-> {args.out / 'grades.json'}")
        return 0
    if len({sub.name for sub in subs}) < len(subs):
        parser.error("two submissions have the same folder name; their grades would share DIR/<name>/")
    rows = batch.grade_many(subs, args.out, sb, args.time_limit, selection, args.seed, args.jobs)
    reports.write_gradebook(args.out / "gradebook.csv", rows)
    print(f"gradebook: {args.out / 'gradebook.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

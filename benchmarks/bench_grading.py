"""How long the grader takes (`python -m grader`, hidden tests only, in its sandbox): one submission, then a class of
submissions graded with --jobs 1 and --jobs 2. Prints a table.

    python benchmarks/bench_grading.py                    # 20 submissions
    python benchmarks/bench_grading.py --submissions 6    # a quicker look

The class is half correct submissions (the reference's ex2/layers.py and notebooks) and half untouched releases (the
solutions stubbed), so both the passing and the failing paths are timed. The times include starting the grader
(imports, the sandbox probe, the reference's expected values and the IMDB test subset for the GRU checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the repository root holds the packages
import nbformat  # noqa: E402

from assignment import make_release  # noqa: E402


def make_class(folder: Path, n: int) -> list[Path]:
    reference = (ROOT / "ex2" / "layers.py").read_text(encoding="utf-8")
    stubbed, _ = make_release.stub_python(reference)
    subs = []
    for i in range(n):
        sub = folder / f"student{i:02d}"
        (sub / "notebooks").mkdir(parents=True)
        correct = i % 2 == 0
        (sub / "ex2").mkdir()
        (sub / "ex2" / "layers.py").write_text(reference if correct else stubbed, encoding="utf-8")
        for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
            if correct:
                shutil.copy2(nb, sub / "notebooks" / nb.name)
            else:
                nbformat.write(make_release.student_notebook(nbformat.read(nb, as_version=4)),
                               sub / "notebooks" / nb.name)
        subs.append(sub)
    return subs


def run(subs: list[Path], out: Path, jobs: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "grader", *map(str, subs), "--out", str(out),
                           "--notebooks", "none", "--jobs", str(jobs)], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    paths = [out / "grades.json"] if len(subs) == 1 else [out / s.name / "grades.json" for s in subs]
    return seconds, [json.loads(p.read_text())["auto_points"] for p in paths]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        subs = make_class(tmp / "class", args.submissions)
        rows = []
        seconds, points = run(subs[:1], tmp / "one", 1)
        rows.append(("one submission (correct)", 1, 1, seconds, seconds, points))
        for jobs in (1, 2):
            seconds, points = run(subs, tmp / f"jobs{jobs}", jobs)
            rows.append((f"{len(subs)} submissions", len(subs), jobs, seconds, seconds / len(subs), points))
    print(f"grading times, hidden tests only, sandboxed; {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}\n")
    print("| what | submissions | --jobs | wall s | s per submission | points (correct / release) |")
    print("|---|---|---|---|---|---|")
    for what, n, jobs, seconds, each, points in rows:
        scores = f"{sorted(set(points[0::2]))} / {sorted(set(points[1::2])) or '-'}"
        print(f"| {what} | {n} | {jobs} | {seconds:.1f} | {each:.1f} | {scores} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

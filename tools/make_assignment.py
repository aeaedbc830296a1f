"""Write the student release of exercise 2: a complete repository in which the marked solutions are stubs.

    python tools/make_assignment.py OUT            # OUT must not exist (or use --force to replace it)

What it does, from the files git tracks here:
- helpers.py: every region between `### BEGIN SOLUTION` and `### END SOLUTION` becomes nbgrader's stub,
  `# YOUR CODE HERE` + `raise NotImplementedError()` at the marker's indentation; the function's
  `@exercise(...)` turns that into a message naming what to write and where.
- notebooks: nbgrader's own preprocessors (as `nbgrader generate_assignment`, without its database): solution
  regions stubbed, written answers "YOUR ANSWER HERE", hidden tests removed, every output cleared.
- left out: the committed checkpoints and results (the notebooks would otherwise skip the student's code), the
  hidden tests and the grader, the reference's tests, benchmarks, CI and README; in their place the student
  README, the public self-checks (tests/) and their CI from tools/student/.
It refuses to write a release that still contains a solution line, or a helpers.py that does not compile.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "tools" / "student"
"""Files that exist only in the release (README, public self-checks, their CI), copied over the tree."""
LEFT_OUT = ("checkpoints/", "benchmarks/", "tests/", ".github/", ".ci/", "README.md", "tools/grade.py",
            "tools/hidden_tests.py", "tools/make_assignment.py", "tools/readme_table.py", "tools/student/")
"""Tracked paths (prefixes) that never reach the release."""
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")


def stub_python(text: str, name: str = "helpers.py") -> tuple[str, list[list[str]]]:
    """`text` with each solution region replaced by the stub (nbgrader's rule for code cells: a line that
    contains a marker is dropped with the region); returns the new text and the removed regions' lines."""
    out, regions, region, indent = [], [], None, ""
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if BEGIN in line:
            if region is not None:
                raise ValueError(f"{name}:{number}: {BEGIN} inside another region")
            region, indent = [], line[: len(line) - len(line.lstrip())]
            out.extend(f"{indent}{stub}\n" for stub in STUB)
        elif END in line:
            if region is None:
                raise ValueError(f"{name}:{number}: {END} without {BEGIN}")
            regions.append(region)
            region = None
        elif region is not None:
            region.append(line.rstrip("\n"))
        else:
            out.append(line)
    if region is not None:
        raise ValueError(f"{name}: a region that starts with {BEGIN} is not closed")
    return "".join(out), regions


def student_notebook(nb):
    """nbgrader's generate_assignment pipeline without the database step (SaveCells): the same notebook
    `nbgrader generate_assignment` writes (a test compares them)."""
    from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput,
                                        ClearSolutions, ComputeChecksums, IncludeHeaderFooter, InstantiateTests,
                                        LockCells)

    nb, resources = copy.deepcopy(nb), {}
    for step in (IncludeHeaderFooter, InstantiateTests, LockCells, ClearSolutions, ClearOutput, CheckCellMetadata,
                 ComputeChecksums, ClearHiddenTests, ClearMarkScheme, ComputeChecksums, CheckCellMetadata):
        nb, resources = step().preprocess(nb, resources)
    return nb


def notebook_solutions(nb) -> list[list[str]]:
    """The lines a student must not see: code between the solution markers of solution cells, and the whole of each
    written answer (a markdown solution cell). (Hidden tests leave with nbgrader's ClearHiddenTests; their setup
    lines may repeat the public check's.)"""
    regions = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and cell.cell_type == "markdown":
            regions.append(cell.source.splitlines())
        elif meta.get("solution") and BEGIN in cell.source:
            regions += stub_python(cell.source + "\n", "a notebook cell")[1]
    return regions


def tracked_files() -> list[str]:
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"make_assignment reads the file list from git: run it in a clone ({exc})") from exc
    return [p for p in listing.decode().split("\0") if p and not p.startswith(LEFT_OUT)]


def make_assignment(out: Path, force: bool = False) -> dict:
    """Write the release to `out`; returns {"files": n, "regions": [removed lines per region]}."""
    import nbformat

    out = Path(out)
    if out.exists():
        if not force:
            raise SystemExit(f"{out} exists: choose a new folder or pass --force to replace it")
        shutil.rmtree(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    regions: list[list[str]] = []
    files = tracked_files()
    for rel in files:
        src, dst = ROOT / rel, staging / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".py") and BEGIN in (text := src.read_text(encoding="utf-8")):
            text, removed = stub_python(text, rel)
            compile(text, rel, "exec")  # a stub must leave valid Python
            regions += removed
            dst.write_text(text, encoding="utf-8")
        elif rel.endswith(".ipynb"):
            nb = nbformat.read(src, as_version=4)
            regions += notebook_solutions(nb)
            nbformat.write(student_notebook(nb), dst)
        else:
            shutil.copy2(src, dst)
    shutil.copytree(STUDENT, staging, dirs_exist_ok=True)
    released = "\n".join(readable_text(p) for p in staging.rglob("*") if p.is_file() and p.suffix in (".py", ".ipynb", ".md"))
    leaked = [line for region in regions for line in region if distinctive(line) and line.strip() in released]
    if leaked:
        shutil.rmtree(staging)
        raise SystemExit(f"the release would still contain solution lines, e.g. {leaked[0].strip()!r}")
    staging.rename(out)
    return {"files": len(files), "regions": regions}


def readable_text(path: Path) -> str:
    """A file's text as a reader sees it: a notebook's cell sources (its JSON escapes quotes and backslashes)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":
        return "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
    return text


GENERIC = re.compile(r"(#|(for|if|elif|else|while|with|try|except)\b)")
"""Lines that say nothing of a solution even when they also stand elsewhere: comments and control-flow headers."""


def distinctive(line: str) -> bool:
    """A solution line that would give something away if found in the release: code or prose with at least three
    words or names, not a comment, a control-flow header (`for _ in range(n):`) or a table rule."""
    text = line.strip()
    return not GENERIC.match(text) and len(re.findall(r"[A-Za-z_]{3,}", text)) >= 3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write the student repository to")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    made = make_assignment(args.out, args.force)
    print(f"wrote {args.out}: {made['files']} files, {len(made['regions'])} solution regions replaced by stubs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

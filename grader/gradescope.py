"""Write a Gradescope autograder for exercise 2: the same hidden tests and sandbox as `python -m grader`.

    python -m grader.gradescope autograder.zip                     # hidden tests' messages after the due date
    python -m grader.gradescope autograder.zip --visibility visible

The zip follows Gradescope's autograder specification: `setup.sh` (run once, as root, when Gradescope builds the
image: Debian/Ubuntu packages, the pinned Python packages, the IMDB archive) and `run_autograder` (run for each
submission: it grades /autograder/submission into /autograder/results/results.json), beside the grader's source
(`source_files`: the grader, the reference's modules and notebooks, the list of questions, the committed GRU
checkpoint).

Inside Gradescope's container the boundary holds as on one machine: `setup.sh` makes the grader's files private
(`chmod 700`), and the submission's code runs as a separate unprivileged user (bubblewrap where the container allows
namespaces, otherwise sandbox.py's "user" mode, which the grader refuses unless that user can read nothing of
the grader's tree), so it cannot read the hidden tests or write results.json. The upload is gathered with every
path resolved: a link that leaves it (its `notebooks/` pointing at the autograder's, say) is never followed.
`run_autograder` honours AUTOGRADER_ROOT (default /autograder) so that the layout can be tested under a temporary
folder (the grader's tests do).
"""
from __future__ import annotations

import argparse
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

from ex2.runtime import ROOT

PACKAGES = ("grader", "ex2", "experiments")
"""Folders whose Python files the zip holds whole: the grader, and the reference it computes expected values with."""
FILES = ("pyproject.toml", "checkpoints/gru.pt", "assignment/__init__.py", "assignment/questions.py")
"""Single files beside them: the project file, the committed GRU the grader checks a submission's cell on, and the
list of questions (the release maker and the students' files stay out)."""


def source_files(root: Path = ROOT) -> list[str]:
    """The grader's source, relative to the repository root (it lands in /autograder/source): every module at the
    top (helpers.py and its neighbours), every Python file of PACKAGES, FILES, and the reference notebooks (the
    written answers' reference and the given code of the graded cells); of a git clone, the files git tracks."""
    found = list(root.glob("*.py"))
    found += [p for package in PACKAGES for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts]
    found += [root / name for name in FILES if (root / name).is_file()]
    found += list((root / "notebooks").glob("*.ipynb"))
    names = sorted(str(p.relative_to(root)) for p in found)
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True)
    if listing.returncode != 0:  # not a clone: the files as they are
        return names
    tracked = set(listing.stdout.decode().split("\0"))
    return [name for name in names if name in tracked]


SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-pip python3-venv bubblewrap util-linux iproute2
python3 -m venv /opt/grader
/opt/grader/bin/pip install --quiet -r /autograder/source/requirements.txt
# the IMDB archive for the notebooks' runs and the GRU checkpoint's test reviews (world-readable: the sandbox user
# reads it; Stanford's archive, its MD5 checked by ex2.data)
mkdir -p /autograder/data && cd /autograder/source
/opt/grader/bin/python -c "from ex2.data import download_imdb
download_imdb(dest='/autograder/data/aclImdb_v1.tar.gz')" \\
  || echo "IMDB not downloaded: the GRU checkpoint is checked on four reviews, notebooks 03/04 stop at the data"
# the GRU checkpoint's 1,000 test reviews, tokenized once into data/cache/ here rather than in every submission's run
IMDB_PATH=/autograder/data/aclImdb_v1.tar.gz /opt/grader/bin/python -c "from grader.cases.layers import warm_cache
warm_cache()" || echo "no test reviews cached: each run tokenizes them (or checks the GRU on four reviews)"
chmod -R a+rX /autograder/data /opt/grader
# the grader's own files: private to root, so the submission's user cannot read the hidden tests or the reference
chmod -R go-rwx /autograder/source
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission (as root): grade /autograder/submission into results/results.json.
set -uo pipefail
AG="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{GRADER_PYTHON:-/opt/grader/bin/python}}"
mkdir -p "$AG/results" && chmod 700 "$AG/results"
export IMDB_PATH="${{IMDB_PATH:-$(ls -d "$AG"/data/aclImdb* 2>/dev/null | head -n 1)}}"
cd "$AG/source" && "$PYTHON" -m grader "$AG/submission" --out "$AG/results/grades" \\
  --gradescope "$AG/results/results.json" --visibility {visibility} --notebooks {notebooks} --jobs 1 \\
  ${{GRADER_SANDBOX_KIND:+--sandbox "$GRADER_SANDBOX_KIND"}}
"""
"""GRADER_SANDBOX_KIND (bwrap or user) forces one kind of sandbox; the tests set "user" to grade as Gradescope's
container allows (no namespaces there)."""


def make_autograder(out: Path, visibility: str = "after_due_date", notebooks: str = "all") -> list[str]:
    """Write the zip; returns the names it holds."""
    requirements = [line for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
                    if line.strip() and not line.startswith("-e")]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", SETUP), ("run_autograder", RUN.format(visibility=visibility,
                                                                              notebooks=notebooks))):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            zf.writestr(info, text)
        zf.writestr("requirements.txt", "\n".join(requirements) + "\n")
        for rel in source_files():
            zf.write(ROOT / rel, rel)
        names = zf.namelist()
    partial.replace(out)
    return names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the zip to write (upload it as the assignment's autograder)")
    parser.add_argument("--visibility", default="after_due_date", choices=("hidden", "after_due_date",
                        "after_published", "visible"), help="when students see the hidden tests' messages")
    parser.add_argument("--notebooks", default="all", help="which submitted notebooks to execute as feedback "
                        "(all, none, or prefixes such as 01,02)")
    args = parser.parse_args(argv)
    names = make_autograder(args.out, args.visibility, args.notebooks)
    print(f"wrote {args.out}: {len(names)} files (setup.sh, run_autograder, requirements.txt, the grader's source)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

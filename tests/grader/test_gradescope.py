"""The Gradescope autograder (grader/gradescope.py), unpacked and run as Gradescope runs it."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from submissions import CHEATS, FULL, reference_with, release_like, sandbox_processes

from assignment.questions import QUESTIONS
from ex2 import runtime
from grader import gradescope
from grader.cases.layers import warm_cache

ROOT = runtime.ROOT
pytestmark = pytest.mark.slow


RESULTS_SCHEMA = {  # Gradescope's results.json, as its autograder specification documents it
    "type": "object", "required": ["tests"],
    "properties": {
        "score": {"type": "number"}, "execution_time": {"type": "number"}, "output": {"type": "string"},
        "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
        "visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "stdout_visibility": {"enum": ["hidden", "after_due_date", "after_published", "visible"]},
        "tests": {"type": "array", "items": {
            "type": "object", "required": ["score", "max_score", "name"], "additionalProperties": False,
            "properties": {
                "score": {"type": "number"}, "max_score": {"type": "number"}, "status": {"enum": ["passed", "failed"]},
                "name": {"type": "string"}, "name_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                "number": {"type": "string"}, "output": {"type": "string"},
                "output_format": {"enum": ["text", "html", "simple_format", "md", "ansi"]},
                "tags": {"type": "array"}, "visibility": {"enum": ["hidden", "after_due_date", "after_published",
                                                                   "visible"]}, "extra_data": {"type": "object"}}}},
    },
}


def test_gradescope_autograder_as_gradescope_runs_it(tmp_path, request, python_for_other_users):
    """make_autograder's zip, unpacked as Gradescope does (the grader in /autograder/source, the upload in
    /autograder/submission, here under a temporary root every user can reach) and run as Gradescope's container
    allows: no namespaces, so the child runs as a separate user. From a readable source the grader refuses; from a
    source only root can read (as setup.sh leaves it) the reference's upload (a repository in a folder, notebooks
    flat) gets full marks in a results.json valid against Gradescope's schema, hidden-test messages visible after
    the due date, notebook 01 executed as feedback, to the end; the release and a submission that loads the reference
    from the autograder's folder get nothing, and the release's notebook 01, executed as feedback, stops at its first
    stub."""
    import jsonschema

    names = gradescope.make_autograder(tmp_path / "autograder.zip", notebooks="01")
    assert {"setup.sh", "run_autograder", "requirements.txt", "grader/cases/__init__.py", "grader/child.py",
            "assignment/questions.py", "helpers.py"} <= set(names)
    assert "assignment/make_release.py" not in names and not any(n.startswith(("tests/", "tools/",
                                                                                "assignment/student/")) for n in names)
    root = Path(tempfile.mkdtemp(prefix="autograder-"))  # /tmp: every user can reach it (tmp_path is root's)
    request.addfinalizer(lambda: shutil.rmtree(root))
    root.chmod(0o755)
    source = root / "source"
    with zipfile.ZipFile(tmp_path / "autograder.zip") as zf:
        zf.extractall(source)
    for path in [source, *source.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.name == "run_autograder" else 0o644)
    warm_cache()  # what setup.sh leaves in the image: the GRU's test reviews tokenized, here this repository's
    (source / "data" / "cache").mkdir(parents=True)
    for cached in (ROOT / "data" / "cache").glob("grader-test-subset-*.npz"):
        shutil.copy2(cached, source / "data" / "cache" / cached.name)
    upload = reference_with(root / "submission" / "my-repo")
    for nb in (upload / "notebooks").glob("*.ipynb"):
        nb.rename(upload / nb.name)
    (upload / "notebooks").rmdir()
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable, "GRADER_SANDBOX_KIND": "user"}

    def run_autograder(**extra):
        return subprocess.run(["bash", str(source / "run_autograder")], env={**env, **extra}, capture_output=True,
                              text=True, timeout=600)

    readable = run_autograder(GRADER_NO_MOUNT_NAMESPACE="1")  # as in Gradescope's container: no mount namespace
    assert readable.returncode == 2, readable.stderr
    assert "can read" in readable.stderr and "chmod 700" in readable.stderr, readable.stderr
    source.chmod(0o700)  # what setup.sh does: the grader's files are root's alone
    done = run_autograder(GRADER_NO_MOUNT_NAMESPACE="1")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, RESULTS_SCHEMA)
    graded = [t for t in results["tests"] if t["max_score"] > 0]
    assert [t["number"] for t in graded] == list(QUESTIONS) and results["score"] == sum(FULL.values())
    assert all(t["visibility"] == "after_due_date" and t["status"] == "passed" for t in graded)
    assert sum(t["max_score"] for t in graded) == sum(FULL.values())
    assert any("graded by hand" in t["name"] for t in results["tests"] if t["max_score"] == 0)
    (feedback,) = [t for t in results["tests"] if "01_derivatives" in t["name"]]
    assert feedback["status"] == "passed" and feedback["output"] == "ran to the end", feedback
    graded_as = json.loads((root / "results" / "grades" / "grades.json").read_text())["sandbox"]
    assert "separate unprivileged user" in graded_as, graded_as

    subs = [release_like(tmp_path / "release"),
            release_like(tmp_path / "thief", CHEATS["reference_on_disk"].format(root=str(source)))]
    done = subprocess.run([sys.executable, "-m", "grader", *map(str, subs), "--out",
                           str(tmp_path / "grades"), "--notebooks", "01", "--sandbox", "user", "--jobs", "2"],
                          cwd=source, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    points = {s.name: json.loads((tmp_path / "grades" / s.name / "grades.json").read_text()) for s in subs}
    assert points["release"]["auto_points"] == points["thief"]["auto_points"] == 0
    stopped = points["release"]["notebooks"]["01_derivatives_backprop_skip_connections.ipynb"]
    assert stopped["status"] == "error", stopped  # at the first cell that calls the unwritten function
    assert "(q1a_check): NotImplementedError: dF_dx_formula is not written yet" in stopped["message"], stopped
    assert not sandbox_processes()

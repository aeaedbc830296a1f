"""Fixtures of the grader's tests."""
import os
import sys
from pathlib import Path

import pytest
from graded_class import Graded, grade_class

from grader import sandbox


@pytest.fixture
def python_for_other_users():
    """As root, let other users traverse the folders above this Python (e.g. /root, 0700 here) for the test's
    duration, as on a machine whose Python is installed system-wide; restored afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the 'user' sandbox (Gradescope's) needs the grader to run as root")
    changed = []
    for folder in Path(sys.prefix).resolve().parents:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)
            changed.append((folder, mode))
    try:
        yield
    finally:
        for folder, mode in changed:
            folder.chmod(mode)


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory) -> Graded:
    """Every submission of test_submissions.py and test_attacks.py graded in one run of the grader (graded_class.py):
    one grader start, one reference before and one after, for the whole class; skipped where there is no sandbox."""
    try:
        sandbox.find()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(f"no sandbox here: {exc}")
    return grade_class(tmp_path_factory.mktemp("class"))

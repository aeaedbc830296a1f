"""Fixtures of the grader's tests."""
import os
import sys
from pathlib import Path

import pytest


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

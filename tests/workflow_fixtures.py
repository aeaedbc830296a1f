"""What the workflow tests share (tests/repo/test_ci_workflow.py, tests/assignment/test_release.py): the actionlint
binary."""
import shutil
import sys
from pathlib import Path


def actionlint() -> str | None:
    """The actionlint binary: on PATH, or beside this Python (a venv that is not activated)."""
    scripts = Path(sys.executable).parent
    return shutil.which("actionlint") or shutil.which("actionlint", path=str(scripts))

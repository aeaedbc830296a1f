"""pytest's configuration shared by the notebooks and the tests: which tests must run on one worker under the
README's `python -m pytest -n 2 --dist loadgroup` (here, at the root, so that it applies whichever paths are given:
a notebook run alone with `-n 2` still runs all its cells in one kernel)."""
import pytest

SANDBOXED = ("tests/grader/",)
"""Test folders whose tests share one sandbox user's processes (tests/grader/test_attacks.py checks that none
survives its grading run), so they must not run at the same time on two workers."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n 2 --dist loadgroup` (the README's test command) one worker runs each group: a test file
    (a notebook's cells in order, a module's fixtures built once) or the sandboxed folders together. Without
    pytest-xdist the marker is inert."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = "sandbox" if path.startswith(SANDBOXED) else path
        item.add_marker(pytest.mark.xdist_group(group))
    # the sandboxed group is the longest one worker runs alone: handed out first, it runs beside the rest instead
    # of after it (a stable sort: every other test keeps its order, a notebook's cells theirs)
    items.sort(key=lambda item: not item.nodeid.startswith(SANDBOXED))

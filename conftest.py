"""pytest's configuration shared by the notebooks and the tests: which tests must run on one worker under the
README's `python -m pytest -n 2 --dist loadgroup`, and in which order the workers get them (here, at the root, so
that it applies whichever paths are given: a notebook run alone with `-n 2` still runs all its cells in one kernel)."""
import pytest

SANDBOXED = ("tests/grader/",)
"""Test folders whose tests run the grader and then check that no process of its sandbox users survived, so that
two of them must not run at the same time on two workers. The tests of the class's run (the fixture graded_class)
are the exception: that run takes sandbox users of its own (`--first-slot`) and checks only those, so they form a
group of their own, which runs beside the other grader tests."""
LONG_NOTEBOOKS = ("notebooks/03_", "notebooks/04_")
"""Notebooks whose smoke run trains models (a minute or more of CPU each); the other notebooks' checks are quick."""


def pytest_configure(config):
    """pytest-xdist hands out the groups largest first by their number of tests unless told otherwise; that put the
    release tests (a few tests, minutes of notebook runs) last, on one worker while the other waited. The order of
    `pytest_collection_modifyitems` is kept instead."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _weight(item) -> int:
    """0: the sandboxed groups (the longest), 1: a group that starts processes (a test marked slow, a notebook that
    trains), 2: the rest (unit tests: short, they fill the end of the run on both workers)."""
    path = item.nodeid.split("::", 1)[0]
    if path.startswith(SANDBOXED):
        return 0
    return 1 if path.startswith(LONG_NOTEBOOKS) or item.get_closest_marker("slow") else 2


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under `pytest -n 2 --dist loadgroup` (the README's test command) one worker runs each group: a test file
    (a notebook's cells in order, a module's fixtures built once), the class's run with the tests that read it, or
    the other grader tests together. Without pytest-xdist the marker is inert."""
    group_of, weight = {}, {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = path
        if path.startswith(SANDBOXED):
            group = "sandbox-class" if "graded_class" in getattr(item, "fixturenames", ()) else "sandbox"
        group_of[item] = group
        item.add_marker(pytest.mark.xdist_group(group))
        weight[group] = min(weight.get(group, 2), _weight(item))
    # the long groups are handed out first, the two sandboxed ones before all (a stable sort of whole groups: every
    # group keeps its tests' order, a notebook its cells', and a group's weight is its heaviest test's)
    items.sort(key=lambda item: weight[group_of[item]])

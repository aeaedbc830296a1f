"""The student release's notebook 04 can be worked section by section: run top to bottom in the test command's
smoke mode, it stops at the first section whose part is still a stub, with one red line naming that part, and every
cell before it has run. The release untouched stops in section 1 (pool_token_scores); with everything written but
SelfAttention.forward it passes section 1 and stops in section 2, the attention section."""
import os
import re
from pathlib import Path

import pytest

from assignment import make_release
from ex2 import runtime

NB04 = "notebooks/04_token_scores_and_attention.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def only_stub(text: str, cls: str, method: str) -> str:
    """`text` (the reference ex2/layers.py) with one solution region stubbed, the one inside `cls.method`, as the
    release stubs it; every other part keeps its reference solution."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"class {cls}("))
    start = next(i for i in range(start, len(lines)) if re.match(rf"\s+def {method}\(", lines[i]))
    begin = next(i for i in range(start, len(lines)) if lines[i].strip() == make_release.BEGIN)
    end = next(i for i in range(begin, len(lines)) if lines[i].strip() == make_release.END)
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    return "".join(lines[:begin] + [f"{indent}{line}\n" for line in make_release.STUB] + lines[end + 1:])


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("release04") / "ex2"
    make_release.make_release(out)
    return out


def run_smoke(release: Path):
    """Notebook 04 of `release`, executed in the test command's smoke mode; returns (notebook, stopped)."""
    from grader.notebooks import run_notebook

    env = {**os.environ, "PYTHONPATH": str(release), "SMOKE_TEST": "1", "HELPERS_PROGRESS": "0"}
    for name in ("RUN_MODE", "RETRAIN", "FULL", "RESULTS"):
        env.pop(name, None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        nb, _, stopped = run_notebook(release / NB04, timeout=600)
    return nb, stopped


def section_of(nb, index: int) -> str:
    """The `## ` heading of the section that cell `index` belongs to."""
    headings = [line for cell in nb.cells[:index] if cell.cell_type == "markdown"
                for line in cell.source.splitlines() if line.startswith("## ")]
    return headings[-1] if headings else ""


def check_stop(nb, stopped: str, part: str, section: str) -> None:
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert len(errors) == 1, f"expected one error, got {[(i, o.get('ename')) for i, o in errors]}"
    (index, error), = errors
    assert section_of(nb, index).startswith(section), (
        f"stopped in {section_of(nb, index)!r}, expected the section that needs {part}: {section}")
    assert stopped.split(": ", 1)[1].startswith(f"Unimplemented: implement {part} "), stopped
    assert len(error["traceback"]) == 1 and "\x1b[31m" in error["traceback"][0], error["traceback"]  # one red line
    line = ANSI.sub("", error["traceback"][0])
    assert line == f"Unimplemented: {error['evalue']}" and part in line and "notebook 04" in line, line
    ran = [c for c in nb.cells[:index] if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in ran), "a cell before the stop did not run"
    later = [c for c in nb.cells[index + 1:] if c.cell_type == "code"]
    assert not any(c.get("outputs") for c in later), "the notebook went on past the stop"
    text = "".join(o.get("text", "") for c in [*ran, nb.cells[index]] for o in c.get("outputs", []))
    assert "Traceback" not in text and "RuntimeError" not in text


@pytest.mark.slow  # makes the release and runs two kernels (about 40 s)
def test_the_untouched_release_stops_at_the_pooling_section(release):
    nb, stopped = run_smoke(release)
    check_stop(nb, stopped, "pool_token_scores", "## 1.")
    assert stopped.startswith("stopped at code cell 3: "), stopped


@pytest.mark.slow
def test_with_only_the_attention_left_it_stops_at_the_attention_section(release, tmp_path):
    import shutil

    solved = tmp_path / "ex2"
    shutil.copytree(release, solved)
    reference = (runtime.ROOT / "ex2" / "layers.py").read_text(encoding="utf-8")
    stubbed = only_stub(reference, "SelfAttention", "forward")
    assert stubbed.count("raise NotImplementedError()") == reference.count("raise NotImplementedError()") + 1
    (solved / "ex2" / "layers.py").write_text(stubbed, encoding="utf-8")
    nb, stopped = run_smoke(solved)
    check_stop(nb, stopped, "SelfAttention.forward", "## 2.")
    passed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert passed.count("checks passed") == 2, passed  # section 1 ran: sum and weighted on the toy review

"""Notebook 03 of the student release can be worked section by section: executed in the test command's smoke mode
with the parts written so far, it runs every section before the first one that needs a missing part and stops
there, with one red line that names the part (and nothing else: no traceback)."""
import os
import re
import shutil
from pathlib import Path

import pytest

from ex2 import runtime

NB03 = "notebooks/03_rnn_gru_tpe_search.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
needs_imdb = pytest.mark.skipif(os.environ.get("IMDB_PATH") is None and not any(
    (runtime.DATA_DIR / name).exists() for name in ("aclImdb_v1.tar.gz", "aclImdb")),
    reason="needs the IMDB dataset (IMDB_PATH)")


def layers_with_one_stub(function: str) -> str:
    """The reference ex2/layers.py with every solution written except the region inside `function` (a qualified name,
    e.g. "RecurrentBPTT.backward"), which becomes the release's stub."""
    from assignment import make_release

    out, region, keep, scope = [], False, True, []
    for line in (runtime.ROOT / "ex2" / "layers.py").read_text(encoding="utf-8").splitlines(keepends=True):
        match = re.match(r"(\s*)(?:class|def) (\w+)", line)
        if match and not region:
            depth = len(match.group(1))
            scope = [s for s in scope if s[0] < depth] + [(depth, match.group(2))]
        if make_release.BEGIN in line:
            region, keep = True, ".".join(name for _, name in scope) != function
            indent = line[: len(line) - len(line.lstrip())]
            if not keep:
                out.extend(f"{indent}{stub}\n" for stub in make_release.STUB)
        elif make_release.END in line:
            region = False
        elif not region or keep:
            out.append(line)
    text = "".join(out)
    assert text.count(make_release.STUB[1]) == 1, f"no solution region in {function}"
    return text


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from assignment import make_release

    out = tmp_path_factory.mktemp("stops") / "ex2"
    make_release.make_release(out)
    (out / "data" / "cache").mkdir(parents=True, exist_ok=True)
    for cache in runtime.CACHE_DIR.glob("imdb-*.pt"):  # the tokenized IMDB, so the notebook does not tokenize again
        shutil.copy2(cache, out / "data" / "cache" / cache.name)
    return out


def execute(folder: Path):
    """Run the release's notebook 03 in smoke mode (the test command's); returns (notebook, where it stopped)."""
    from grader.notebooks import run_notebook

    env = {**os.environ, "PYTHONPATH": str(folder), "SMOKE_TEST": "1", "HELPERS_PROGRESS": "0"}
    env.pop("RUN_MODE", None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        nb, _, stopped = run_notebook(folder / NB03, timeout=900)
    return nb, stopped


def the_one_error(nb) -> tuple[int, dict]:
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert len(errors) == 1, errors
    index, error = errors[0]
    assert len(error["traceback"]) == 1 and "\x1b[31m" in error["traceback"][0], error["traceback"]
    return index, error


def section_of(nb, index: int) -> str:
    """The '## N.' heading above cell `index`."""
    headings = [c.source.split("\n", 1)[0] for c in nb.cells[:index] if c.cell_type == "markdown"
                and c.source.startswith("## ")]
    return headings[-1]


@needs_imdb
@pytest.mark.slow  # makes the release and runs notebook 03 twice in smoke mode (a few minutes on 2 cores)
@pytest.mark.parametrize("part, section, line", [
    ("RecurrentBPTT.backward", "## 2. Back-propagation through time",
     r"Unimplemented: implement RecurrentBPTT\.backward .+: notebook 03, section 2"),
    (None, "## 6. Searching the hidden size with TPE",
     r"NotImplementedError: .+ is not written yet \(notebook 03, cell In\[\d+\], line \d+\)"),
], ids=["bptt-backward-left", "objective-left"])
def test_notebook_03_stops_at_the_first_section_that_needs_the_missing_part(release, tmp_path, part, section, line):
    folder = tmp_path / "ex2"
    shutil.copytree(release, folder)
    (folder / "ex2" / "layers.py").write_text(layers_with_one_stub(part) if part else
                                              (runtime.ROOT / "ex2" / "layers.py").read_text(encoding="utf-8"),
                                              encoding="utf-8")
    nb, stopped = execute(folder)
    assert stopped is not None, "ran to the end with a part missing"
    index, error = the_one_error(nb)
    assert section_of(nb, index).startswith(section), (section_of(nb, index), stopped)
    assert re.fullmatch(line, ANSI.sub("", error["traceback"][0])), error["traceback"][0]
    text = "".join(o.get("text", "") for c in nb.cells[:index] if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Traceback" not in text
    ran = [c for c in nb.cells[:index] if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in ran), "a cell before the stop did not run"
    assert not any(c.get("outputs") for c in nb.cells[index + 1:] if c.cell_type == "code"), "ran past the stop"

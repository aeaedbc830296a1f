"""Notebooks as the grader reads and runs them: the graded cells of a notebook (`nbgrader_cells`), and the one
function that executes a notebook (`run_notebook`, with `where_it_stopped`).

The sandboxed child runs this file beside a copy of child.py, so it imports nothing of the repository; the
maintainers' command tools/execute_notebooks.py uses the same `run_notebook`.
"""
from __future__ import annotations

import re
import time
from pathlib import Path


def nbgrader_cells(nb) -> dict[str, str]:
    """{grade_id: source} of the cells of `nb` (a notebook's JSON as dicts and lists, or an nbformat notebook) that
    carry nbgrader metadata with a grade_id; a cell that is not one is skipped, and a source that is neither a
    string nor a list of strings raises TypeError (nothing in the notebook runs)."""
    cells = nb["cells"]
    if not isinstance(cells, list):
        raise TypeError("a notebook's cells are not a list")
    found = {}
    for cell in cells:
        meta = cell.get("metadata") if isinstance(cell, dict) else None
        nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
        if isinstance(nbgrader, dict) and isinstance(nbgrader.get("grade_id"), str):
            found[nbgrader["grade_id"]] = _source(cell.get("source", ""))
    return found


def _source(source) -> str:
    """A cell's source (a string or a list of strings) as one string; anything else is refused."""
    if isinstance(source, str):
        return source
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return "".join(source)
    raise TypeError("a cell's source is not text")


def run_notebook(path: str | Path, timeout: int | None = 7200):
    """Run a notebook top to bottom in its own folder; return (the notebook with its outputs, seconds, None) or,
    when a cell fails, (the notebook so far, seconds, 'stopped at code cell N (grade_id): Error: message')."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    start, error = time.perf_counter(), None
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as exc:
        error = where_it_stopped(nb) or f"CellExecutionError: {str(exc)[:300]}"
    except Exception as exc:  # noqa: BLE001 - a kernel that dies, a cell over its time limit
        error = where_it_stopped(nb) or f"{type(exc).__name__}: {str(exc)[:300]}"
    return nb, time.perf_counter() - start, error


def where_it_stopped(nb) -> str | None:
    """'stopped at code cell N (grade_id): ename: evalue' for the first code cell with an error output; a bare
    NotImplementedError (nbgrader's stub) is named after the function that raised it."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code, 1):
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        if error is None:
            continue
        what = f"{error.get('ename')}: {error.get('evalue', '')[:300]}"
        if error.get("ename") == "NotImplementedError" and not error.get("evalue"):
            plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.get("traceback", [])))  # without ANSI colours
            frames = re.findall(r", in (\w+)\(", plain) + re.findall(r"in (\w+)\n", plain)
            what = f"NotImplementedError: {frames[-1]} is not written yet" if frames else what
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        return f"stopped at code cell {number}{f' ({grade_id})' if grade_id else ''}: {what}"
    return None

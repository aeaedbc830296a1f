"""Regenerate the committed outputs of the notebooks: a full run of each (SMOKE_TEST unset), saved in
place, with widget state and progress bars stripped.

    python -m tools.execute_notebooks                       # every notebooks/0*.ipynb
    python -m tools.execute_notebooks notebooks/03_*.ipynb  # some of them
    RETRAIN=1 python -m tools.execute_notebooks notebooks/04_token_scores_and_attention.ipynb

The notebook is written to a temporary file first and moved into place only when every cell ran,
so a failed run never destroys the committed outputs. `run_notebook` is the one function that executes a
notebook: this command uses it, and so does the grader, inside its sandbox, on a submission's notebooks
(this file is then imported beside tools/harness.py alone, so it imports nothing of the repository at the top).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def strip_widget_state(nb) -> None:
    """Remove ipywidgets state and widget-only outputs (progress bars) from a notebook, in place."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data and "image/png" not in data:
                continue  # a progress bar; its text/plain twin is noise in a saved notebook
            if output.get("output_type") == "stream" and output.get("name") == "stderr" and "it/s]" in output.get("text", ""):
                continue  # text progress bars
            if "application/vnd.jupyter.widget-view+json" in data:
                data.pop("application/vnd.jupyter.widget-view+json")
            kept.append(output)
        cell["outputs"] = kept


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


def execute_notebook(path: str | Path, timeout: int | None = 7200) -> float:
    """Run a notebook (SMOKE_TEST unset), save it with its outputs and return the seconds it took; a failing cell
    raises RuntimeError naming it, and the file on disk is left as it was."""
    import nbformat

    import helpers

    env = os.environ.pop("SMOKE_TEST", None)
    try:
        nb, seconds, error = run_notebook(path, timeout)
        if error:
            raise RuntimeError(f"{path}: {error}")
        strip_widget_state(nb)
        with helpers.atomic_path(Path(path).resolve()) as tmp:
            nbformat.write(nb, tmp)
        return seconds
    finally:
        if env is not None:
            os.environ["SMOKE_TEST"] = env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="notebooks to run (default: every notebooks/0*.ipynb)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.paths] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".ipynb"]
    if missing:
        parser.error(f"not a notebook: {', '.join(missing)}")
    import helpers

    timeout = None if helpers.should_recompute() else 7200  # a recompute cell may run for hours
    for path in paths:
        print(f"{path}: {execute_notebook(path, timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the committed outputs of the notebooks: a full run of each (SMOKE_TEST unset), saved in
place, with widget state and progress bars stripped.

    python -m tools.execute_notebooks                       # every notebooks/0*.ipynb
    python -m tools.execute_notebooks notebooks/03_*.ipynb  # some of them
    RETRAIN=1 python -m tools.execute_notebooks notebooks/04_token_scores_and_attention.ipynb

The notebook is written to a temporary file first and moved into place only when every cell ran,
so a failed run never destroys the committed outputs. The notebook is executed by the grader's
`grader.notebooks.run_notebook`, the one function that executes a notebook (the grader runs a submission's
notebooks with it, inside its sandbox).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grader.notebooks import run_notebook

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
            stderr = output.get("output_type") == "stream" and output.get("name") == "stderr"
            if stderr and "it/s]" in output.get("text", ""):
                continue  # text progress bars
            if "application/vnd.jupyter.widget-view+json" in data:
                data.pop("application/vnd.jupyter.widget-view+json")
            kept.append(output)
        cell["outputs"] = kept


def execute_notebook(path: str | Path, timeout: int | None = 7200) -> float:
    """Run a notebook (SMOKE_TEST unset), save it with its outputs and return the seconds it took; a failing cell
    raises RuntimeError naming it, and the file on disk is left as it was."""
    import nbformat

    from ex2 import runtime

    env = os.environ.pop("SMOKE_TEST", None)
    try:
        nb, seconds, error = run_notebook(path, timeout)
        if error:
            raise RuntimeError(f"{path}: {error}")
        strip_widget_state(nb)
        with runtime.atomic_path(Path(path).resolve()) as tmp:
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
    from ex2 import runtime

    timeout = None if runtime.RunMode.from_environment().recompute else 7200  # a recompute cell may run for hours
    for path in paths:
        print(f"{path}: {execute_notebook(path, timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

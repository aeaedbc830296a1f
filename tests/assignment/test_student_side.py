"""The student's side, tried as a student would: every path stops with one line naming the missing part (notebook
stubs, stubs of the Python file before any training, a worker that meets a stub), notebook 03's objective check
catches a missing repeat or pruning rule, and the student run trains once and caches. The release's own checks are
in tests/assignment/."""
import contextlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import experiments
import helpers
import plots
from ex2 import layers, runtime
from ex2.training import STUDENT_EPOCHS

ROOT = runtime.ROOT
NB03, NB04 = "notebooks/03_rnn_gru_tpe_search.ipynb", "notebooks/04_token_scores_and_attention.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def stub(what: str, where: str):
    """A stand-in for a part that is still nbgrader's stub, behind the same @exercise wrapper as the release's."""
    @layers.exercise(what, where)
    def unwritten(*args, **kwargs):
        raise NotImplementedError()
    return unwritten


def run_cells(*sources: str) -> list:
    """Execute code cells in a fresh kernel that imports this repository's helpers; returns the cells' outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=120).execute()
    return [cell.outputs for cell in nb.cells]


# --- one line where work is missing ---

@pytest.mark.slow  # starts a kernel
def test_a_bare_notebook_stub_shows_one_red_line_naming_its_function():
    outputs = run_cells("import plots\nfrom ex2 import layers\nplots.name_stubs(notebook=1)",
                        "def vjp(v):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
                        "vjp(1)",
                        "raise layers.Unimplemented('implement RNNCell.update (h\\'): notebook 03, section 1')",
                        "raise NotImplementedError('a message of its own')")
    (error,) = [o for o in outputs[2] if o["output_type"] == "error"]
    assert error["ename"] == "NotImplementedError"
    assert error["evalue"] == "vjp is not written yet (notebook 01, cell In[2], line 3)"  # the defining cell
    assert len(error["traceback"]) == 1 and error["traceback"][0].startswith("\x1b[31m")  # one line, red
    assert ANSI.sub("", error["traceback"][0]) == f"NotImplementedError: {error['evalue']}"
    (unimplemented,) = [o for o in outputs[3] if o["output_type"] == "error"]
    assert [ANSI.sub("", line) for line in unimplemented["traceback"]] == [
        "Unimplemented: implement RNNCell.update (h'): notebook 03, section 1"]
    (other,) = [o for o in outputs[4] if o["output_type"] == "error"]
    assert other["evalue"] == "a message of its own" and len(other["traceback"]) > 1  # a real error keeps its traceback
    assert plots.name_stubs(notebook=1) is None  # outside IPython: nothing to do, no error


def test_the_exercise_check_names_the_first_missing_part_in_the_readme_order(monkeypatch):
    experiments.check_exercises(["rnn", "gru", "sum", "attn_weighted"])  # the reference: every part runs
    gates = stub("GRUCell.update (gates)", "notebook 03, section 1")
    monkeypatch.setattr(helpers.GRUCell, "update", staticmethod(gates))
    monkeypatch.setattr(helpers, "pool_token_scores", stub("pool_token_scores (logits)", "notebook 04, section 1"))
    with pytest.raises(layers.Unimplemented, match=r"^implement GRUCell\.update \(gates\): notebook 03, section 1$"):
        experiments.check_exercises(["attn_sum", "gru", "rnn"])
    with pytest.raises(layers.Unimplemented, match="pool_token_scores"):
        experiments.check_exercises(["rnn", "sum"])  # the RNN needs no GRU
    experiments.check_exercises(["rnn"])
    monkeypatch.setattr(helpers.RecurrentBPTT, "backward",
                        staticmethod(stub("RecurrentBPTT.backward (δ)", "notebook 03, section 2")))
    with pytest.raises(layers.Unimplemented, match=r"RecurrentBPTT\.backward"):  # reached through autograd
        experiments.check_exercises(["rnn"])


def test_recompute_stops_with_the_missing_part_before_starting_workers(monkeypatch, tmp_path):
    monkeypatch.setattr(helpers.RNNCell, "update", staticmethod(stub("RNNCell.update (h')", "notebook 03, section 1")))
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or pytest.fail("a worker started"))
    with pytest.raises(layers.Unimplemented) as caught:
        experiments.recompute.rerun(notebook=3, out=tmp_path, smoke=True)
    assert str(caught.value) == "implement RNNCell.update (h'): notebook 03, section 1"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__ and not started


def notebook_models(notebook: str) -> set[str]:
    """The models a notebook's code names (a model's name in quotes in a code cell), read from the notebook."""
    cells = json.loads((ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return {name for name in helpers.MODEL_NAMES if re.search(rf"[\"']{name}[\"']", code)}


class Checked(Exception):
    """Raised by the stand-in check: recompute stops there, before any worker starts."""


def test_recompute_checks_the_parts_of_every_model_its_notebook_uses(monkeypatch, tmp_path):
    """Before a worker starts, `recompute` checks the parts of every model the plan trains for the notebook and of
    every model the notebook's own code uses (notebook 04 also loads the GRU), and of no other (a student who has
    not written the RNN cell can still recompute notebook 04)."""
    checked = []

    def check(names):
        checked.append(set(names))
        raise Checked

    monkeypatch.setattr(experiments.recompute, "check_exercises", check)
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("a worker started"))
    for notebook, name in ((3, NB03), (4, NB04)):
        for smoke in (True, False):
            with pytest.raises(Checked):
                experiments.recompute.rerun(notebook=notebook, out=tmp_path, smoke=smoke)
            trained = {job["name"] for job in experiments.experiment_plan(smoke)
                       if job["kind"] == "run" and job["notebook"] == notebook}
            needed = trained | notebook_models(name)
            assert checked[-1] == needed, (notebook, smoke, "missing", needed - checked[-1],
                                           "not needed", checked[-1] - needed)


def test_a_worker_that_meets_a_stub_reports_only_that_line(monkeypatch, capsys):
    from experiments import recompute as tool
    monkeypatch.setattr(tool.helpers, "load_imdb", lambda **kwargs: None)

    def meets_a_stub(job, data, out):
        raise layers.Unimplemented("implement GRUCell.update (gates): notebook 03, section 1")

    monkeypatch.setattr(tool, "run_job", meets_a_stub)
    with pytest.raises(SystemExit) as exited:
        tool.worker(["gru/trainable/seed0"], Path("/nonexistent"), smoke=True)
    assert exited.value.code == tool.UNIMPLEMENTED
    assert capsys.readouterr().out == "Unimplemented: implement GRUCell.update (gates): notebook 03, section 1\n"
    monkeypatch.setattr(tool, "launch", lambda shares, out, smoke: [tool.UNIMPLEMENTED, 0])
    nowhere = str(Path("/tmp") / "no-such-results")
    assert tool.main(["--smoke", "--out", nowhere, "--only", "gru/"]) == tool.UNIMPLEMENTED
    assert capsys.readouterr().err == ""  # no "a worker failed" paragraph after the one line
    monkeypatch.setattr(tool, "launch", lambda shares, out, smoke: [1, tool.UNIMPLEMENTED])
    assert tool.main(["--smoke", "--out", str(Path("/tmp") / "no-such-results"), "--only", "gru/"]) == 1
    assert "a worker failed" in capsys.readouterr().err  # a real failure still says so


def test_paths_print_relative_to_the_repository_root(tmp_path):
    assert helpers.relative(runtime.CHECKPOINT_DIR) == "checkpoints"
    assert helpers.relative(runtime.DATA_DIR / "retrain-smoke" / "rnn.pt") == "data/retrain-smoke/rnn.pt"
    assert helpers.relative(tmp_path) == str(tmp_path)  # outside the repository: as given


# --- the self-checks and their summary ---


# --- notebook 03's objective: its check cell tests the whole contract ---

def _objective_cells():
    cells = {c["metadata"].get("nbgrader", {}).get("grade_id"): "".join(c["source"])
             for c in json.loads((ROOT / NB03).read_text())["cells"]}
    return cells["q6_objective"], cells["q6_objective_check"]


OBJECTIVE_MUTANTS = {
    "reference": (None, None),
    "retrains a repeated size": ("            if old.params.get(\"hidden\") == hidden and", "            if False and"),
    "never prunes": ("raise optuna.TrialPruned(", "print("),
    "reports every seed": ('pruner = {"callback": report} if i == 0 else {}', 'pruner = {"callback": report}'),
}


@pytest.mark.filterwarnings("ignore:The reported value is ignored")
@pytest.mark.parametrize("mutant", list(OBJECTIVE_MUTANTS))
def test_the_objective_check_cell_catches_each_broken_rule(mutant):
    import optuna
    from optuna.trial import TrialState

    objective, check = _objective_cells()
    old, new = OBJECTIVE_MUTANTS[mutant]
    if old is not None:
        assert objective.count(old) == 1, old
        objective = objective.replace(old, new)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = {"helpers": helpers, "optuna": optuna, "np": np, "TrialState": TrialState, "search_data": object(),
             "SEARCH": {"n_trials": 2, "epochs": 1, "n_train": 10, "seeds": (0,), "low": 64, "high": 128}}
    exec(compile(objective, "q6_objective", "exec"), space)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        if mutant == "reference":
            exec(compile(check, "q6_objective_check", "exec"), space)
        else:
            with pytest.raises(AssertionError):
                exec(compile(check, "q6_objective_check", "exec"), space)
    assert mutant != "reference" or "✓ the objective" in printed.getvalue()
    assert space["SEARCH"]["epochs"] == 1 and space["SEARCH"]["seeds"] == (0,)  # the check restores SEARCH


# --- the release, as a student gets it ---


def test_the_student_run_trains_once_caches_and_retrains_when_the_code_changes(toy_data, monkeypatch, tmp_path,
                                                                             one_thread):
    """RUN_MODE=student: `load_or_train` trains the student recipe (capped epochs, seed 0), keeps the model in the
    student-run folder and loads it on the next call; a changed part of the code it runs names another file, so the
    stale model is never loaded; a stub stops it with one line before any training."""
    monkeypatch.setenv("RUN_MODE", "student")
    monkeypatch.setattr(experiments.records, "STUDENT_RUN", tmp_path / "student-run")
    monkeypatch.setitem(STUDENT_EPOCHS, "gru", 2)
    model = experiments.load_or_train("gru", toy_data)
    assert model.info.record["settings"]["epochs"] == 2 and model.info.record["seed"] == 0
    (saved,) = (tmp_path / "student-run").glob("gru-*.pt")
    trained = []
    monkeypatch.setattr(helpers, "train_model", lambda *a, **k: trained.append(1) or (_ for _ in ()).throw(
        AssertionError("trained again")))
    again = experiments.load_or_train("gru", toy_data)  # loaded, not trained
    assert not trained and again.info.record["test_acc"] == model.info.record["test_acc"]
    for (key, first), (_, loaded) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(first, loaded), f"the first run's {key} differs from what a rerun loads"

    class EditedGRUCell(helpers.GRUCell):  # the student edits their GRU: another source, another key
        pass

    monkeypatch.setattr(helpers, "GRUCell", EditedGRUCell)
    with pytest.raises(AssertionError, match="trained again"):
        experiments.load_or_train("gru", toy_data)
    monkeypatch.setattr(helpers.GRUCell, "update", stub("GRUCell.update", "notebook 03, section 1"))
    with pytest.raises(layers.Unimplemented, match="^implement GRUCell.update: notebook 03, section 1$"):
        experiments.load_or_train("gru", toy_data, trainable=False)
    assert saved.exists()


def test_the_smoke_mode_trains_one_epoch_and_keeps_nothing(toy_data, monkeypatch, tmp_path, one_thread):
    monkeypatch.setenv("RUN_MODE", "smoke")
    monkeypatch.setattr(experiments.records, "STUDENT_RUN", tmp_path / "student-run")
    model = experiments.load_or_train("sum", toy_data)
    assert model.info.record["epochs_run"] == 1 and not (tmp_path / "student-run").exists()



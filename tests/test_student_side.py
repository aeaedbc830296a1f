"""The student's side, tried as a student would (issue 29): every path stops with one line naming the missing part
(notebook stubs, ex2/layers.py stubs before any training, a worker that meets a stub, the self-checks' summary), the
self-checks accept every answer the docstrings call right and reject wrong ones, the points table is the grader's,
notebook 03's objective check catches a missing repeat or pruning rule, and the release's notebooks 03/04 stop with
one line on the stubs and run to the end, without NaN tables or warnings, on the reference solutions."""
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import experiments
import helpers
import plots

ROOT = helpers.ROOT
STUDENT = ROOT / "tools" / "student"
NB03, NB04 = "notebooks/03_rnn_gru_tpe_search.ipynb", "notebooks/04_token_scores_and_attention.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stub(what: str, where: str):
    """A stand-in for a part that is still nbgrader's stub, behind the same @exercise wrapper as the release's."""
    @helpers.exercise(what, where)
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

def test_a_bare_notebook_stub_shows_one_red_line_naming_its_function():
    outputs = run_cells("import helpers\nimport plots\nplots.name_stubs(notebook=1)",
                        "def vjp(v):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
                        "vjp(1)",
                        "raise helpers.Unimplemented('implement RNNCell.update (h\\'): notebook 03, section 1')",
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
    monkeypatch.setattr(helpers.GRUCell, "update", staticmethod(stub("GRUCell.update (gates)", "notebook 03, section 1")))
    monkeypatch.setattr(helpers, "pool_token_scores", stub("pool_token_scores (logits)", "notebook 04, section 1"))
    with pytest.raises(helpers.Unimplemented, match=r"^implement GRUCell\.update \(gates\): notebook 03, section 1$"):
        experiments.check_exercises(["attn_sum", "gru", "rnn"])
    with pytest.raises(helpers.Unimplemented, match="pool_token_scores"):
        experiments.check_exercises(["rnn", "sum"])  # the RNN needs no GRU
    experiments.check_exercises(["rnn"])
    monkeypatch.setattr(helpers.RecurrentBPTT, "backward",
                        staticmethod(stub("RecurrentBPTT.backward (δ)", "notebook 03, section 2")))
    with pytest.raises(helpers.Unimplemented, match=r"RecurrentBPTT\.backward"):  # reached through autograd
        experiments.check_exercises(["rnn"])


def test_recompute_stops_with_the_missing_part_before_starting_workers(monkeypatch, tmp_path):
    monkeypatch.setattr(helpers.RNNCell, "update", staticmethod(stub("RNNCell.update (h')", "notebook 03, section 1")))
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or pytest.fail("a worker started"))
    with pytest.raises(helpers.Unimplemented) as caught:
        experiments.recompute.rerun(notebook=3, out=tmp_path, smoke=True)
    assert str(caught.value) == "implement RNNCell.update (h'): notebook 03, section 1"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__ and not started


def test_recompute_checks_the_parts_of_every_model_its_plan_trains():
    for notebook in (3, 4):
        for smoke in (True, False):
            trained = {j["name"] for j in experiments.experiment_plan(smoke) if j["kind"] == "run" and j["notebook"] == notebook}
            assert trained <= set(experiments.NOTEBOOK_MODELS[notebook]), (notebook, trained)


def test_a_worker_that_meets_a_stub_reports_only_that_line(monkeypatch, capsys):
    from experiments import recompute as tool
    monkeypatch.setattr(tool.helpers, "load_imdb", lambda **kwargs: None)

    def meets_a_stub(job, data, out):
        raise helpers.Unimplemented("implement GRUCell.update (gates): notebook 03, section 1")

    monkeypatch.setattr(tool, "run_job", meets_a_stub)
    with pytest.raises(SystemExit) as exited:
        tool.worker(["gru/trainable/seed0"], Path("/nonexistent"), smoke=True)
    assert exited.value.code == tool.UNIMPLEMENTED
    assert capsys.readouterr().out == "Unimplemented: implement GRUCell.update (gates): notebook 03, section 1\n"
    monkeypatch.setattr(tool, "launch", lambda shares, out, smoke: [tool.UNIMPLEMENTED, 0])
    assert tool.main(["--smoke", "--out", str(Path("/tmp") / "no-such-results"), "--only", "gru/"]) == tool.UNIMPLEMENTED
    assert capsys.readouterr().err == ""  # no "a worker failed" paragraph after the one line
    monkeypatch.setattr(tool, "launch", lambda shares, out, smoke: [1, tool.UNIMPLEMENTED])
    assert tool.main(["--smoke", "--out", str(Path("/tmp") / "no-such-results"), "--only", "gru/"]) == 1
    assert "a worker failed" in capsys.readouterr().err  # a real failure still says so


def test_paths_print_relative_to_the_repository_root(tmp_path):
    assert helpers.relative(helpers.CHECKPOINT_DIR) == "checkpoints"
    assert helpers.relative(helpers.DATA_DIR / "retrain-smoke" / "rnn.pt") == "data/retrain-smoke/rnn.pt"
    assert helpers.relative(tmp_path) == str(tmp_path)  # outside the repository: as given


# --- the self-checks and their summary ---

def self_checks():
    return load(STUDENT / "tests" / "test_self_checks.py", "student_self_checks")


def test_the_summary_parts_are_the_graders_and_every_part_has_self_checks():
    summary = load(STUDENT / "tools" / "self_check_summary.py", "summary_for_test")
    from tools.questions import QUESTIONS as questions
    assert list(summary.PARTS) == [q for q, spec in questions.items() if "replace" in spec]
    assert [p for _, p in summary.PARTS.values()] == [questions[q]["points"] for q in summary.PARTS]
    tests = [name for name in vars(self_checks()) if name.startswith("test_")]
    owners = {name: summary.part_of(name) for name in tests}
    assert None not in owners.values(), f"a self-check no part owns: {owners}"
    assert set(owners.values()) == set(summary.PARTS), "a part without a self-check"


def test_the_self_checks_pass_on_the_reference():
    done = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=STUDENT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:]
    assert re.search(r"\b1[0-9] passed\b", done.stdout), done.stdout[-500:]


def _rnn_backward(bypass):
    def update_backward(dh_new, h, cache):
        d = dh_new * (1 - cache ** 2)
        return d, d, bypass(d)
    return staticmethod(update_backward)


@pytest.mark.parametrize("bypass, right", [(lambda d: None, True), (lambda d: 0, True), (torch.zeros_like, True),
                                           (lambda d: d, False)], ids=["None", "0", "zeros", "delta"])
def test_the_rnn_bypass_may_be_none_zero_or_zeros(monkeypatch, bypass, right):
    checks = self_checks()
    monkeypatch.setattr(helpers.RNNCell, "update_backward", _rnn_backward(bypass))
    with contextlib.nullcontext() if right else pytest.raises(AssertionError, match="no bypass"):
        checks.test_bptt_rnn_update_backward_matches_autograd()


def _attention(padding_rows: str, mask_value=float("-inf")):
    """SelfAttention.forward written out by the test: padding-query rows zero, the softmax over their real keys, or
    (wrong) attending to padding keys too."""
    def forward(self, x, mask):
        xp = x if self.positions is None else self.positions(x)
        T = x.shape[1]
        logits = self.q(xp) @ self.k(xp).transpose(1, 2) / x.shape[-1] ** 0.5
        keys = mask[:, None, :].expand(-1, T, -1) if padding_rows != "padding keys" else torch.ones_like(logits).bool()
        if self.window is not None:
            near = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() <= self.window
            keys = keys & near
        attn = torch.softmax(logits.masked_fill(~keys, mask_value), dim=-1)
        if padding_rows == "zero":
            attn = attn * mask[:, :, None]
        out = attn @ self.v(x)
        return (x + out if self.residual else out), attn
    return forward


@pytest.mark.parametrize("rows, value, right", [("zero", float("-inf"), True), ("real keys", float("-inf"), True),
                                                ("zero", torch.finfo(torch.double).min, True),
                                                ("padding keys", float("-inf"), False)],
                         ids=["zero-rows", "softmax-rows", "dtype-min", "attends-to-padding"])
def test_padding_query_rows_are_free_and_padding_keys_are_not(monkeypatch, rows, value, right):
    checks = self_checks()
    monkeypatch.setattr(helpers.SelfAttention, "forward", _attention(rows, value))
    with contextlib.nullcontext() if right else pytest.raises(AssertionError, match="padding keys get 0"):
        checks.test_attention_padding()


def test_pooling_rejects_nan_for_an_empty_review(monkeypatch):
    checks = self_checks()

    def no_guard(out, mask, weighted):  # softmax over -inf only: NaN weights for a review with no real token
        s = out[..., 0].masked_fill(~mask, 0.0)
        if not weighted:
            return s.sum(-1), s, None
        w = torch.softmax(out[..., 1].masked_fill(~mask, float("-inf")), dim=-1)
        return (w * s).sum(-1), s, w

    monkeypatch.setattr(helpers, "pool_token_scores", no_guard)
    checks.test_pooling_sum_and_weighted()  # right without padding
    with pytest.raises(AssertionError, match="no NaN"):
        checks.test_pooling_padding_and_an_empty_review()


def test_the_gru_update_backward_check_finds_a_missing_bypass(monkeypatch):
    checks = self_checks()
    reference = helpers.GRUCell.update_backward

    def no_bypass(dh_new, h, cache):
        d_pre, d_gh, direct = reference(dh_new, h, cache)
        return d_pre, d_gh, torch.zeros_like(direct)

    checks.test_bptt_gru_update_backward_matches_autograd()
    monkeypatch.setattr(helpers.GRUCell, "update_backward", staticmethod(no_bypass))
    with pytest.raises(AssertionError, match="bypass"):
        checks.test_bptt_gru_update_backward_matches_autograd()


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

def _imdb_missing() -> bool:
    try:
        helpers.find_imdb(download=False)
    except helpers.ImdbError:
        return True
    return False


needs_imdb = pytest.mark.skipif(_imdb_missing(), reason="needs the IMDB dataset (IMDB_PATH)")


def test_the_student_run_trains_once_caches_and_retrains_when_the_code_changes(toy_data, monkeypatch, tmp_path,
                                                                             one_thread):
    """RUN_MODE=student: `load_or_train` trains the student recipe (capped epochs, seed 0), keeps the model in the
    student-run folder and loads it on the next call; a changed part of the code it runs names another file, so the
    stale model is never loaded; a stub stops it with one line before any training."""
    monkeypatch.setenv("RUN_MODE", "student")
    monkeypatch.setattr(experiments.records, "STUDENT_RUN", tmp_path / "student-run")
    monkeypatch.setitem(helpers.STUDENT_EPOCHS, "gru", 2)
    model = experiments.load_or_train("gru", toy_data)
    assert model.info.record["settings"]["epochs"] == 2 and model.info.record["seed"] == 0
    (saved,) = (tmp_path / "student-run").glob("gru-*.pt")
    trained = []
    monkeypatch.setattr(helpers, "train_model", lambda *a, **k: trained.append(1) or (_ for _ in ()).throw(
        AssertionError("trained again")))
    again = experiments.load_or_train("gru", toy_data)  # loaded, not trained
    assert not trained and again.info.record["test_acc"] == model.info.record["test_acc"]

    class EditedGRUCell(helpers.GRUCell):  # the student edits their GRU: another source, another key
        pass

    monkeypatch.setattr(helpers, "GRUCell", EditedGRUCell)
    with pytest.raises(AssertionError, match="trained again"):
        experiments.load_or_train("gru", toy_data)
    monkeypatch.setattr(helpers.GRUCell, "update", stub("GRUCell.update", "notebook 03, section 1"))
    with pytest.raises(helpers.Unimplemented, match="^implement GRUCell.update: notebook 03, section 1$"):
        experiments.load_or_train("gru", toy_data, finetune=False)
    assert saved.exists()


def test_the_smoke_mode_trains_one_epoch_and_keeps_nothing(toy_data, monkeypatch, tmp_path, one_thread):
    monkeypatch.setenv("RUN_MODE", "smoke")
    monkeypatch.setattr(experiments.records, "STUDENT_RUN", tmp_path / "student-run")
    model = experiments.load_or_train("sum", toy_data)
    assert model.info.record["epochs_run"] == 1 and not (tmp_path / "student-run").exists()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The release (it ships the course's full-run records under course_results/runs/), with this repository's
    tokenized-IMDB cache (so the notebooks do not tokenize again)."""
    from tools import make_assignment

    out = tmp_path_factory.mktemp("student") / "ex2"
    make_assignment.make_assignment(out)
    shipped = sorted(p.name for p in (out / "course_results" / "runs").glob("*.json"))
    assert shipped == sorted(p.name for p in (helpers.CHECKPOINT_DIR / "runs").glob("*.json"))  # records, all of them
    assert not list(out.rglob("*.pt")), "no checkpoint in the release"
    (out / "data" / "cache").mkdir(parents=True, exist_ok=True)
    for cache in helpers.CACHE_DIR.glob("imdb-*.pt"):
        shutil.copy2(cache, out / "data" / "cache" / cache.name)
    return out


@pytest.mark.slow  # makes the release (12 s)
def test_the_release_short_summary_gives_each_missing_part_in_full(release):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=release, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(release), "COLUMNS": "80"})
    assert done.returncode == 1
    summary = done.stdout[done.stdout.index("short test summary info"):]
    failed = [line for line in summary.splitlines() if line.startswith("FAILED")]
    assert len(failed) >= 10
    for line in failed:  # the whole message, ending with where it is taught
        assert re.search(r" - ex2\.layers\.Unimplemented: implement .+: notebook 0[34], section \d$", line), line


def _run(release: Path, name: str, timeout: int = 900):
    from tools import execute_notebooks

    env = {**os.environ, "PYTHONPATH": str(release), "SMOKE_TEST": "1"}  # the test command's quick check
    for variable in ("RUN_MODE", "RETRAIN", "FULL"):
        env.pop(variable, None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", env)
        return execute_notebooks.run_notebook(release / "notebooks" / name, timeout=timeout)


def _errors(nb):
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


@needs_imdb
@pytest.mark.slow  # two notebooks on their stubs (about 15 s with the tokenized cache)
def test_the_release_notebooks_stop_with_one_line_naming_the_missing_part(release):
    for name, where, what in ((NB03, "code cell 9", "RNNCell.update"), (NB04, "code cell 3", "pool_token_scores")):
        nb, _, stopped = _run(release, Path(name).name)
        assert stopped is not None and stopped.startswith(f"stopped at {where}: Unimplemented: implement {what} ")
        ((_, error),) = _errors(nb)
        assert len(error["traceback"]) == 1 and "\x1b[31m" in error["traceback"][0], error["traceback"]
        assert ANSI.sub("", error["traceback"][0]) == f"Unimplemented: {error['evalue']}"
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
        assert "Traceback" not in text and "RuntimeError" not in text


@pytest.fixture(scope="module")
def solved_release(release, tmp_path_factory):
    """The release with the reference solutions: ex2/layers.py and notebook 03's objective cell pasted in.

    When this repository's quick run is current (notebooks/ run before tests/ in the README's command), its records
    and checkpoints are copied in, less one record and one checkpoint: a quick run reuses only what the same code
    made for the same job (experiments/recompute.py `reusable`), so the release's notebooks still start a worker and
    train a model through the pasted code, without retraining the other 21 jobs a second time."""
    import nbformat

    out = tmp_path_factory.mktemp("solved") / "ex2"
    shutil.copytree(release, out)
    shutil.copy2(ROOT / "ex2" / "layers.py", out / "ex2" / "layers.py")
    quick = helpers.DATA_DIR / "retrain-smoke"
    if (quick / "runs").is_dir():
        shutil.copytree(quick, out / "data" / "retrain-smoke",
                        ignore=lambda folder, names: [n for n in names if n in ("sum__frozen__seed0.json", "rnn.pt")])
    objective, _ = _objective_cells()
    nb = nbformat.read(out / NB03, as_version=4)
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q6_objective"]
    cell.source = objective
    nbformat.write(nb, out / NB03)
    return out


@needs_imdb
@pytest.mark.slow  # both notebooks in smoke mode (the test command's quick check)
@pytest.mark.parametrize("name", [NB03, NB04], ids=["nb03", "nb04"])
def test_the_release_notebooks_run_to_the_end_on_the_reference(solved_release, name):
    nb, _, stopped = _run(solved_release, Path(name).name)
    assert stopped is None, stopped
    outputs = [o for c in nb.cells if c.cell_type == "code" and not c.source.startswith("plots.show_source")
               for o in c.get("outputs", [])]  # shown code may say "NaN" in a comment
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    html = "\n".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert not re.search(r"\bnan\b|NaN", text + html), "a table of NaN in the quick run"
    assert "Warning" not in text and "one seed: no interval" not in text
    assert str(solved_release) not in text, "an absolute path in the output"
    assert "the course's full run" in text, "the tables over seeds say they are the course's"
    if name == NB03:
        assert "Models: your quick check" in text  # the models are the student's own

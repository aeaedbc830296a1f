"""Trainable word vectors, the exercise's attention layout, device selection, the analysis and plotting
helpers on the toy corpus, the committed results, and the maintainer tools in tools/."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import matplotlib
import numpy as np
import pytest
import torch

import helpers

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TOOLS = helpers.ROOT / "tools"


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- trainable word vectors ---

def test_only_training_vocabulary_rows_are_trained_and_checkpoints_store_them(toy_data, tmp_path):
    vocab = helpers.training_vocabulary(toy_data.train, min_count=3)
    assert helpers.PAD not in vocab.tolist() and helpers.UNK not in vocab.tolist()
    words = set(helpers.token_words(vocab.tolist()))
    assert {"great", "bad", "film"} <= words and "number" in words
    assert not ({"0", "11"} & words)  # each number occurs once or twice per class: below min_count
    model, _ = helpers.train_model("weighted", toy_data, seed=0, epochs=3, batch_size=4, lr=1e-2, progress=False,
                                   verbose=False, config={"min_count": 3})
    assert model.finetune and model.delta is not None
    assert set(model.adapted_ids.tolist()) == set(vocab.tolist())
    glove = helpers.load_glove()
    assert torch.equal(model.embedding, glove.vectors)  # the GloVe table itself never changes
    great, eleven = glove.index["great"], glove.index["11"]
    ids = torch.tensor([[great, eleven]])
    e = model.embed(ids)
    assert not torch.allclose(e[0, 0], glove.vectors[great])  # a vocabulary word moved
    assert torch.equal(e[0, 1], glove.vectors[eleven])  # a rare word kept its GloVe vector
    assert model.delta.weight[0].abs().sum() == 0  # the fixed zero row
    assert helpers.count_parameters(model) - helpers.count_parameters(model, embeddings=False) == len(vocab) * 50

    path = helpers.save_checkpoint(model, tmp_path / "m.pt", {"seed": 0})
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert stored["delta.weight"].dtype == torch.float16 and "embedding" not in stored
    loaded = helpers.load_checkpoint(path)
    assert torch.equal(loaded.adapted_ids, model.adapted_ids)
    texts = ["a great wonderful film", "bad boring awful"]
    np.testing.assert_allclose(helpers.predict(loaded, texts), helpers.predict(model, texts), atol=2e-3)


def test_frozen_models_have_no_trainable_vectors(toy_data):
    model, _ = helpers.train_model("sum", toy_data, seed=0, epochs=1, batch_size=4, progress=False, verbose=False,
                                   config=helpers.FROZEN)
    assert not model.finetune and model.delta is None
    assert all(p is not model.embedding for p in model.parameters())
    config, settings = helpers.recipe("gru", finetune=False)
    assert config == {"finetune": False, "emb_dropout": 0.0} and settings == helpers.TRAIN_SETTINGS["gru"]
    with pytest.raises(ValueError, match="unknown model"):
        helpers.recipe("bert")


def test_embedding_dropout_acts_only_in_training():
    model = helpers.make_model("sum", seed=0, emb_dropout=0.5)
    ids = torch.tensor([[5, 6, 7, 8]])
    model.train()
    assert (model.embed(ids) == 0).any()
    model.eval()
    assert torch.equal(model.embed(ids), helpers.load_glove().vectors[ids])


def test_exercise_layout_attends_in_the_hidden_space_without_residual():
    model = helpers.make_model("attn_sum", seed=0)
    assert model.layout == "exercise" and model.attention.residual is False
    assert model.attention.q.in_features == model.config["hidden"]  # Q/K/V act on the 64-d token layer
    variant = helpers.make_model("attn_weighted", seed=0)  # the residual layout won for attn_weighted
    assert variant.layout == "residual" and variant.attention.residual and variant.attention.q.in_features == 50
    assert helpers.make_model("attn_weighted", layout="exercise").attention.residual is False
    with pytest.raises(ValueError, match="layout"):
        helpers.make_model("attn_sum", layout="sideways")
    # no residual: with a window of 0 each word sees only itself, and z_i = v_i
    solo = helpers.make_model("attn_sum", seed=0, window=0)
    ids, lengths = torch.tensor([[5, 6, 7]]), torch.tensor([3])
    _, parts = solo(ids, lengths, details=True)
    assert torch.equal(parts["attention"][0], torch.eye(3))


# --- device selection ---

def test_device_selection(monkeypatch):
    monkeypatch.delenv("DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert helpers.get_device() == torch.device("cpu")
    monkeypatch.setenv("DEVICE", "CPU ")
    assert helpers.get_device() == torch.device("cpu")
    monkeypatch.setenv("DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        helpers.get_device()
    monkeypatch.setenv("DEVICE", "mps")
    with pytest.raises(RuntimeError, match="MPS is not available"):
        helpers.get_device()
    monkeypatch.setenv("DEVICE", "tpu")
    with pytest.raises(ValueError, match="cpu, cuda"):
        helpers.get_device()
    monkeypatch.delenv("DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert helpers.get_device() == torch.device("cuda")  # a GPU is used when there is one
    assert helpers.get_device("cpu") == torch.device("cpu")


def test_models_follow_the_device_they_are_moved_to(monkeypatch, tmp_path):
    monkeypatch.setenv("DEVICE", "cpu")
    model = helpers.make_model("gru", seed=0)
    path = helpers.save_checkpoint(model, tmp_path / "g.pt")
    loaded = helpers.load_checkpoint(path)
    assert helpers.model_device(loaded) == torch.device("cpu")
    assert helpers.predict(loaded, "fine").shape == (1,)


# --- analysis and plotting helpers on the toy corpus ---

@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """Two seeds of `sum` and `gru` on the toy corpus, as run records."""
    from imdb_fixtures import TOY_REVIEWS, write_archive

    folder = tmp_path_factory.mktemp("toy")
    old = os.environ.get("IMDB_PATH")
    os.environ["IMDB_PATH"] = str(write_archive(folder / "toy.tar.gz", reviews=TOY_REVIEWS))
    data_dir, cache_dir = helpers.DATA_DIR, helpers.CACHE_DIR
    helpers.DATA_DIR, helpers.CACHE_DIR = folder, folder / "cache"
    try:
        data = helpers.load_imdb(max_len=12, val_size=6, verbose=False)
        records = {}
        for name in ("sum", "gru"):
            for seed in (0, 1):
                model, history = helpers.train_model(name, data, seed=seed, epochs=3, batch_size=4, lr=1e-2,
                                                     progress=False, verbose=False)
                records.setdefault(name, []).append(helpers.run_record(model, history, data, seed))
    finally:
        helpers.DATA_DIR, helpers.CACHE_DIR = data_dir, cache_dir
        if old is None:
            os.environ.pop("IMDB_PATH")
        else:
            os.environ["IMDB_PATH"] = old
    return data, records


def test_run_records_tables_and_ties(toy_runs):
    _, records = toy_runs
    r = records["sum"][0]
    for key in ("val_acc", "test_acc", "history", "best_epoch", "writeup_probs", "parameters", "settings"):
        assert key in r
    assert len(r["writeup_probs"]) == 2 and r["settings"]["epochs"] == 3
    json.dumps(r)  # plain JSON, as results.json stores it
    table = helpers.results_table({"sum": records["sum"], "gru": records["gru"]})
    assert list(table.index) == ["sum", "gru"] and table.loc["sum", "seeds"] == 2
    mean, sd, n = helpers.seed_summary(records["sum"], "test_acc")
    assert table.loc["sum", "test mean"] == pytest.approx(mean) and n == 2
    over = helpers.overfitting_table({"gru": records["gru"]})
    assert "val loss rise after min" in over.columns
    assert helpers.is_tie([0.80, 0.81, 0.79], [0.80, 0.82, 0.80])
    assert not helpers.is_tie([0.80, 0.801, 0.799], [0.85, 0.851, 0.849])
    fig = helpers.plot_model_comparison(table, anchor=0.9)
    assert len(fig.axes) == 2 and fig.axes[0].get_lines()  # the anchor line is drawn
    plt.close(fig)


def test_learning_curve_plotter_both_layouts(toy_runs):
    _, records = toy_runs
    histories = {"sum": records["sum"][0]["history"], "gru": records["gru"][0]["history"]}
    fig = helpers.plot_history(histories, overlay=True)
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 4  # train + validation per run
    plt.close(fig)
    fig = helpers.plot_history(histories, reference={"sum": records["sum"][1]["history"]})
    assert len(fig.axes) == 4  # loss and accuracy, one column per run
    assert len(fig.axes[0].get_lines()) == 5  # reference train/val + train/val + best-epoch line
    plt.close(fig)


def test_explanation_figures_and_analysis(toy_runs):
    data, _ = toy_runs
    model = helpers.make_model("attn_weighted", seed=0)
    fig, table = helpers.plot_context_effect({"attn_weighted": model, "sum": helpers.make_model("sum", seed=0)},
                                             "loved it", "a great film , loved it")
    assert table.shape == (2, 4)
    np.testing.assert_allclose(table[("sum", "alone")], table[("sum", "in context")], atol=1e-5)
    plt.close(fig)
    ax, info = helpers.show_top_tokens(model, "a great film , loved it", k=3)
    assert len(ax.patches) == 3
    plt.close(ax.figure)
    probs = np.array([0.1, 0.9, 0.9, 0.5] + [0.5] * (len(data.test) - 4))[: len(data.test)]
    errors = helpers.confident_errors(probs, data.test, k=2)
    assert len(errors) <= 2 and list(errors["review"]) == sorted(errors["review"])  # ties keep index order
    with pytest.raises(ValueError, match="token"):
        helpers.token_contributions(helpers.explain(helpers.make_model("gru"), "fine"))
    reach = helpers.gradient_reach(helpers.make_model("rnn", seed=0),
                                   helpers.Split(["x"] * 2, torch.ones(2), torch.randint(2, 100, (2, 12)),
                                                 torch.tensor([12, 12]), torch.ones(2)))
    assert reach.shape == (12,) and reach[-1] > reach[0] > 0  # an untrained RNN forgets the start
    with pytest.raises(ValueError):
        helpers.gradient_reach(model, data.val)


def test_try_review_shows_the_reason_for_bad_input(capsys):
    model = helpers.make_model("weighted", seed=0)
    assert helpers.try_review(model, "   ") is None
    assert "cannot classify this review" in capsys.readouterr().out
    p = helpers.try_review(model, "a great film")
    assert 0 <= p <= 1 and "P(positive)" in capsys.readouterr().out
    plt.close("all")
    assert "def try_review" in helpers.show_source(helpers.try_review).data


def test_search_records_table_and_plot(toy_data):
    import optuna

    study = helpers.make_study("records", storage=optuna.storages.InMemoryStorage())
    helpers.tune_hidden_size("rnn", toy_data, n_trials=3, study=study, epochs=1, low=4, high=16, seeds=(0, 1),
                             batch_size=8, verbose=False)
    trials = helpers.trial_records(study)
    assert len(trials) == 3 and all(len(t["seed_values"]) == 2 for t in trials if t["state"] == "complete")
    for t in trials:
        if t["state"] == "complete" and t["repeat_of"] is None:
            assert t["value"] == pytest.approx(np.mean(t["seed_values"]))  # the objective is the seed mean
    table = helpers.trial_table(trials)
    assert list(table["score (mean of seeds)"]) == sorted(table["score (mean of seeds)"], reverse=True)
    fig = helpers.plot_search({"RNN": trials, "study": study}, reference={"RNN": 8})
    assert len(fig.axes) == 4
    plt.close(fig)


# --- the committed results ---

def test_committed_results_cover_the_plan():
    results = helpers.load_results()
    plan = helpers.experiment_plan()
    assert {job["key"] for job in plan} <= set(results["runs"])
    assert results["seeds"] == list(helpers.EXPERIMENT_SEEDS) and results["threads_per_run"] == 1
    for job in plan:
        record = results["runs"][job["key"]]
        if job["kind"] == "run":
            assert record["seed"] == job["seed"] and 0.5 < record["test_acc"] < 1
            assert record["config"]["finetune"] == job["finetune"]
        elif job["kind"] == "search":
            hidden = [t["hidden"] for t in record["trials"]]
            assert len(hidden) >= helpers.SEARCH["n_trials"] and 64 <= min(hidden) and max(hidden) <= 128
    assert helpers.RESULTS_PATH.stat().st_size < 1_000_000
    # seed 0 of each named model is the committed checkpoint
    for name in helpers.MODEL_NAMES:
        model = helpers.load_checkpoint(helpers.checkpoint_path(name))
        assert model.meta["val_acc"] == results["runs"][f"{name}/trainable/seed0"]["val_acc"]


# --- tools/ ---

def test_train_results_plan_and_merge(tmp_path, monkeypatch):
    tool = load_tool("train_results")
    out = subprocess.run([sys.executable, str(TOOLS / "train_results.py"), "--list"], capture_output=True, text=True,
                         cwd=helpers.ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(helpers.experiment_plan())
    monkeypatch.setattr(tool, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(helpers, "RESULTS_PATH", tmp_path / "results.json")
    (tmp_path / "runs").mkdir()
    job = helpers.experiment_plan()[0]
    tool.record_path(job["key"]).write_text(json.dumps({"val_acc": 0.7}))
    path = tool.merge()
    merged = json.loads(path.read_text())
    assert merged["runs"] == {job["key"]: {"val_acc": 0.7}} and merged["threads_per_run"] == 1


def test_run_job_runs_each_kind(toy_data):
    plan = {job["kind"]: job for job in helpers.experiment_plan()}
    record, model = helpers.run_job(plan["run"], toy_data, epochs=1, batch_size=4)
    assert model is not None and record["epochs_run"] == 1 and record["seed"] == plan["run"]["seed"]
    record, _ = helpers.run_job(plan["search"], toy_data, search={"n_trials": 2, "epochs": 1, "seeds": (0,),
                                                                   "n_train": None}, batch_size=8)
    assert len(record["trials"]) == 2
    record, model = helpers.run_job(plan["tfidf"], toy_data)
    assert model is None and record["test_acc"] == 1.0


def test_execute_notebooks_saves_outputs_and_keeps_the_file_on_failure(tmp_path):
    import nbformat

    tool = load_tool("execute_notebooks")
    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    for path, code in ((good, "import os\nprint('smoke' if os.environ.get('SMOKE_TEST') else 'full run')"),
                       (bad, "raise RuntimeError('boom')")):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nb.metadata["widgets"] = {"state": {}}
        nbformat.write(nb, path)
    before = bad.read_text()
    env = {**os.environ, "SMOKE_TEST": "1"}
    ok = subprocess.run([sys.executable, str(TOOLS / "execute_notebooks.py"), str(good)], env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    nb = nbformat.read(good, as_version=4)
    assert nb.cells[0].outputs[0]["text"] == "full run\n"  # SMOKE_TEST is unset for a full run
    assert "widgets" not in nb.metadata
    failed = subprocess.run([sys.executable, str(TOOLS / "execute_notebooks.py"), str(bad)],
                            capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0 and "boom" in failed.stderr
    assert bad.read_text() == before  # never a half-written notebook
    assert not list(tmp_path.glob("*.part"))
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "missing.ipynb")])  # a clear usage error, nothing executed


def test_collecting_the_notebooks_never_downloads(tmp_path):
    guard = tmp_path / "site"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import socket, urllib.request
        def refuse(*args, **kwargs):
            open({str(tmp_path / 'network-used')!r}, "w").write(repr(args))
            raise OSError("network access during collection")
        socket.socket.connect = refuse
        urllib.request.urlopen = refuse
    """))
    env = {k: v for k, v in os.environ.items() if k != "IMDB_PATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(guard), str(helpers.ROOT)])
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "notebooks"], cwd=helpers.ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (tmp_path / "network-used").exists()
    assert "04_token_scores_and_attention.ipynb" in out.stdout

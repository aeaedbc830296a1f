"""Hyper-parameter search helpers (notebook 03): where studies are stored, resuming an interrupted
study, and two worker processes sharing one study through a journal file."""
import os
import subprocess
import sys
import textwrap

import optuna
import pytest
import torch
from optuna.trial import TrialState

import helpers

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SEARCH = {"epochs": 1, "low": 4, "high": 64, "batch_size": 8, "verbose": False}


@pytest.fixture(autouse=True)
def one_thread():
    """Toy trials are tiny: extra threads only wait for each other on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_optuna_storage_follows_the_environment(isolated_data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    assert helpers.optuna_storage("demo") == f"sqlite:///{isolated_data_dir / 'optuna' / 'demo.db'}"
    assert (isolated_data_dir / "optuna").is_dir()

    for spec, path in ((tmp_path / "a.log", tmp_path / "a.log"),
                       (tmp_path / "j" / "b.journal", tmp_path / "j" / "b.journal"),
                       (f"journal:{tmp_path / 'c.txt'}", tmp_path / "c.txt")):
        monkeypatch.setenv("OPTUNA_STORAGE", str(spec))
        storage = helpers.optuna_storage()
        assert isinstance(storage, optuna.storages.JournalStorage)
        optuna.create_study(study_name="s", storage=storage)
        assert path.stat().st_size > 0  # the study was written to that file

    for url in (f"sqlite:///{tmp_path / 'x.db'}", "postgresql://user:pw@db.example/optuna"):
        monkeypatch.setenv("OPTUNA_STORAGE", url)
        assert helpers.optuna_storage() == url  # passed on as it is, nothing is connected yet

    monkeypatch.setenv("OPTUNA_STORAGE", str(tmp_path / "plain.db"))
    with pytest.raises(ValueError, match="sqlite:///"):
        helpers.optuna_storage()


def test_make_study_spells_out_the_sampler_and_pruner(isolated_data_dir, monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    study = helpers.make_study("explicit", seed=3)
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert study.sampler._multivariate is False and study.sampler._constant_liar is False
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert (isolated_data_dir / "optuna" / "ex2.db").exists()


def test_an_interrupted_study_resumes_with_the_missing_trials(toy_data, monkeypatch):
    calls = []
    train_model = helpers.train_model

    def interrupted(*args, **kwargs):
        calls.append(kwargs["config"]["hidden"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second trained trial
        return train_model(*args, **kwargs)

    monkeypatch.setattr(helpers, "train_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        helpers.tune_hidden_size("rnn", toy_data, n_trials=4, study=helpers.make_study("resume"), **SEARCH)
    monkeypatch.setattr(helpers, "train_model", train_model)

    study = helpers.make_study("resume", seed=1)  # what a restarted notebook does
    finished_before = len(study.get_trials(states=FINISHED))
    assert finished_before >= 1 and len(study.get_trials(states=(TrialState.FAIL,))) == 1
    n_before = len(study.trials)
    helpers.tune_hidden_size("rnn", toy_data, n_trials=4, study=study, **SEARCH)
    assert len(study.get_trials(states=FINISHED)) == 4
    assert len(study.trials) == n_before + 4 - finished_before  # only the missing ones ran
    helpers.tune_hidden_size("rnn", toy_data, n_trials=4, study=helpers.make_study("resume"), **SEARCH)
    assert len(study.get_trials(states=FINISHED)) == 4  # nothing left to do

    for trial in study.get_trials(states=FINISHED):
        assert 4 <= trial.params["hidden"] <= 64
        assert len(trial.user_attrs["history"]["val_acc"]) == 1
        assert set(trial.intermediate_values) == {1}  # one report per epoch, epochs count from 1
        if trial.state == TrialState.COMPLETE:
            assert trial.value == max(trial.user_attrs["history"]["val_acc"])


def test_pruned_trials_report_every_epoch(toy_data):
    study = helpers.make_study("pruning", n_startup_trials=2, prune_after=1, n_warmup_steps=1)
    helpers.tune_hidden_size("rnn", toy_data, n_trials=4, study=study, **{**SEARCH, "epochs": 2})
    for trial in study.get_trials(states=FINISHED):
        epochs = len(trial.user_attrs["history"]["val_acc"])
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        assert epochs == (1 if trial.state == TrialState.PRUNED else 2)  # never pruned after the last epoch


def test_the_pruner_stops_trials_but_never_after_their_last_epoch(toy_data):
    for epochs, state in ((3, TrialState.PRUNED), (1, TrialState.COMPLETE)):
        study = helpers.make_study(f"always-prune-{epochs}")
        study.pruner = optuna.pruners.ThresholdPruner(lower=1.1)  # every accuracy is below 1.1
        helpers.tune_hidden_size("rnn", toy_data, n_trials=2, study=study, **{**SEARCH, "epochs": epochs})
        assert [t.state for t in study.trials] == [state, state]
        assert all(len(t.user_attrs["history"]["val_acc"]) == 1 for t in study.trials)


WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    import helpers

    data_dir, seed, n_trials, n_workers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    helpers.DATA_DIR, helpers.CACHE_DIR = data_dir, data_dir / "cache"  # the test's cache, not the repo's
    data = helpers.load_imdb(max_len=12, val_size=6, verbose=False)
    train_model = helpers.train_model

    def slow_train_model(*args, **kwargs):  # toy trials take milliseconds: make them overlap
        time.sleep(0.3)
        return train_model(*args, **kwargs)

    helpers.train_model = slow_train_model
    study = helpers.make_study("shared", seed=seed)
    (data_dir / f"ready-{os.getpid()}").touch()  # start together, so that both workers get trials
    while len(list(data_dir.glob("ready-*"))) < n_workers:
        time.sleep(0.02)
    helpers.tune_hidden_size("rnn", data, n_trials=n_trials, study=study, epochs=1, low=4, high=64,
                             batch_size=8, verbose=False)
""")


def run_two_workers(data_dir, n_trials: int, env: dict) -> set[int]:
    """Run WORKER in two processes on one study (sampler seeds 0 and 1: the same seed would make both
    propose the same sizes); assert both succeed and return their pids."""
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(data_dir), str(seed), str(n_trials), "2"],
                                env=env, cwd=helpers.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for seed in (0, 1)]
    for worker in workers:
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output
    return {worker.pid for worker in workers}


def test_two_workers_share_one_journal_study(toy_data, isolated_data_dir, tmp_path, monkeypatch):
    journal = tmp_path / "study.log"
    n_trials = 6
    pids = run_two_workers(isolated_data_dir, n_trials, {**os.environ, "OPTUNA_STORAGE": str(journal)})

    monkeypatch.setenv("OPTUNA_STORAGE", str(journal))
    study = optuna.load_study(study_name="shared", storage=helpers.optuna_storage())
    finished = study.get_trials(states=FINISHED)
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    # MaxTrialsCallback stops both workers at n_trials finished trials; a trial already running in
    # the other worker at that moment still finishes, so one extra trial is possible.
    assert n_trials <= len(finished) <= n_trials + 1
    assert {t.user_attrs["pid"] for t in finished} == pids

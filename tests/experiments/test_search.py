"""The search's storage and study loop (notebook 03, section 6, writes the objective; `experiments.search` keeps where
studies are stored, `make_study` and the resumable `run_study`): storage from the environment, an unreachable database,
the seeded sampler and the pruner's schedule, resuming an interrupted study, two worker processes on one
journal file. The objectives are search_fixtures' toy ones."""
import os
import time
import traceback

import optuna
import pytest
from optuna.trial import TrialState
from search_fixtures import FINISHED, run_workers, toy_objective, toy_value, training_objective

import helpers
from ex2 import runtime
from experiments import search


@pytest.fixture(autouse=True)
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def in_memory(name="s", **kwargs):
    return search.make_study(name, storage=optuna.storages.InMemoryStorage(), **kwargs)


def test_optuna_storage_follows_the_environment(isolated_data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    assert search.optuna_storage() == f"sqlite:///{isolated_data_dir / 'optuna' / 'ex2.db'}"
    assert (isolated_data_dir / "optuna").is_dir()

    for spec, path in ((tmp_path / "a.log", tmp_path / "a.log"),
                       (tmp_path / "j" / "b.journal", tmp_path / "j" / "b.journal"),
                       (f"journal:{tmp_path / 'c.txt'}", tmp_path / "c.txt")):
        monkeypatch.setenv("OPTUNA_STORAGE", str(spec))
        storage = search.optuna_storage()
        assert isinstance(storage, optuna.storages.JournalStorage)
        optuna.create_study(study_name="s", storage=storage)
        assert path.stat().st_size > 0  # the study was written to that file

    for url in (f"sqlite:///{tmp_path / 'x.db'}", "postgresql://user:pw@db.example/optuna"):
        monkeypatch.setenv("OPTUNA_STORAGE", url)
        assert search.optuna_storage() == url  # passed on as it is, nothing is connected yet

    # relative paths mean the same file from any working directory (a notebook's kernel runs in notebooks/)
    root, elsewhere = tmp_path / "repo", tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.setattr(runtime, "ROOT", root)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///data/optuna/other.db")
    assert search.optuna_storage() == f"sqlite:///{root / 'data' / 'optuna' / 'other.db'}"
    monkeypatch.setenv("OPTUNA_STORAGE", "data/optuna/ex2.log")
    optuna.create_study(study_name="s", storage=search.optuna_storage())
    assert (root / "data/optuna/ex2.log").stat().st_size > 0 and not (elsewhere / "data").exists()

    monkeypatch.setenv("OPTUNA_STORAGE", str(tmp_path / "plain.db"))
    with pytest.raises(ValueError, match="sqlite:///"):
        search.optuna_storage()


def test_an_unreachable_database_is_named_without_its_password(monkeypatch):
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u:secret@127.0.0.1:9/x")  # port 9: nothing listens
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        search.make_study("unreachable")
    assert time.perf_counter() - start < 15  # refused at once, no hanging connect
    message = str(info.value)
    assert "postgresql://***@127.0.0.1:9/x" in message and "OPTUNA_STORAGE" in message
    assert "secret" not in "".join(traceback.format_exception(info.value))  # nor in the chained SQLAlchemy error


def test_an_unwritable_sqlite_file_is_named(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'x.db'}"
    monkeypatch.setenv("OPTUNA_STORAGE", url)
    with pytest.raises(RuntimeError, match="cannot open the study storage sqlite:///"):
        search.make_study("nowhere")


def test_make_study_is_a_seeded_univariate_tpe_with_a_median_pruner(isolated_data_dir, monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    study = search.make_study("explicit", seed=3)
    assert (isolated_data_dir / "optuna" / "ex2.db").exists()  # the default storage
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    # Optuna 5 turned `multivariate` and `constant_liar` on by default: make_study spells them out
    assert study.sampler._multivariate is False and study.sampler._constant_liar is False
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)

    def proposals(seed: int) -> list[int]:
        study = in_memory(seed=seed)
        search.run_study(study, toy_objective, 8, verbose=False)
        return [t.params["hidden"] for t in study.trials]

    assert proposals(3) == proposals(3)  # seeded: the same search every time
    assert proposals(3) != proposals(4)


def test_the_pruner_waits_for_three_trials_and_the_second_epoch():
    # make_study's schedule: a trial can be pruned from its 2nd epoch, once 3 trials have completed
    def run(n_good: int):
        study = in_memory()
        for hidden in [40] * n_good + [4]:
            study.enqueue_trial({"hidden": hidden})
        search.run_study(study, toy_objective, n_good + 1, verbose=False)
        return study.trials[-1]

    bad = run(3)
    assert bad.state == TrialState.PRUNED and sorted(bad.intermediate_values) == [1, 2]
    assert bad.intermediate_values[2] == toy_value(4, 2)
    early = run(2)  # only two complete trials before it: not pruned
    assert early.state == TrialState.COMPLETE and early.value == toy_value(4, 3)


def test_an_interrupted_study_resumes_with_the_missing_trials(isolated_data_dir, monkeypatch, capsys):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    calls = []

    def interrupted(trial):
        calls.append(trial.number)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third trial
        return toy_objective(trial)

    with pytest.raises(KeyboardInterrupt):
        search.run_study(search.make_study("resume"), interrupted, 5, verbose=False)

    study = search.make_study("resume", seed=1)  # what a restarted notebook does
    assert len(study.get_trials(states=FINISHED)) == 2 and len(study.get_trials(states=(TrialState.FAIL,))) == 1
    search.run_study(study, toy_objective, 5)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "study 'resume': 2 of 5 trials stored, running the 3 missing"
    assert len(lines) == 4
    assert all(line.startswith(f"trial {n:2d} | {{'hidden': ") for n, line in zip((3, 4, 5), lines[1:]))
    assert len(study.get_trials(states=FINISHED)) == 5 and len(study.trials) == 6  # only the missing ones ran

    search.run_study(search.make_study("resume"), toy_objective, 5)  # nothing left to do
    assert len(study.trials) == 6
    assert capsys.readouterr().out == "study 'resume': 5 of 5 trials stored, running the 0 missing\n"


def test_a_search_that_trains(toy_data, one_thread):
    """The study loop with an objective that trains (as notebook 03's does): values are validation accuracies."""
    study = search.run_study(in_memory(), training_objective(toy_data), 2, verbose=False)
    assert len(study.trials) == 2
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE and 4 <= trial.params["hidden"] <= 16
        # the stored value is what training this size on its own gives (seeded: the same numbers), and the one
        # reported step is that epoch's validation accuracy
        _, history = helpers.train_model("rnn", toy_data, seed=0, config={"hidden": trial.params["hidden"]}, epochs=1,
                                         batch_size=8, progress=False, verbose=False)
        assert trial.value == history.val_acc[0] and trial.intermediate_values == {1: history.val_acc[0]}


@pytest.mark.slow
def test_two_workers_share_one_journal_study(tmp_path, monkeypatch):
    journal = tmp_path / "study.log"
    n_trials = 6
    pids = run_workers("shared", n_trials, tmp_path, {**os.environ, "OPTUNA_STORAGE": str(journal)})

    monkeypatch.setenv("OPTUNA_STORAGE", str(journal))
    study = optuna.load_study(study_name="shared", storage=search.optuna_storage())
    finished = study.get_trials(states=FINISHED)
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING))
    # MaxTrialsCallback stops both workers at n_trials finished trials; a trial already running in
    # the other worker at that moment still finishes, so one extra trial is possible.
    assert n_trials <= len(finished) <= n_trials + 1
    assert {t.user_attrs["pid"] for t in finished} == pids  # both workers ran trials


def test_trial_records_the_table_and_the_search_minutes_read_what_the_study_holds():
    """Three stored trials (a completed one with two seeds, a repeat of its size, a pruned one): the records keep each
    trial's score and curve, the table lists the completed trial first, and the search's minutes are the trials' own
    durations, or else the stored epoch times times the seeds trained (a repeat trains nothing)."""
    import datetime

    from optuna.distributions import IntDistribution

    study = in_memory("records")
    start = datetime.datetime(2026, 1, 1)
    curve = {"val_acc": [0.6, 0.7], "epoch_seconds": [30.0, 30.0]}
    for number, (state, hidden, value, attrs, seconds) in enumerate((
            (TrialState.COMPLETE, 32, 0.75, {"history": curve, "seed_values": [0.74, 0.76]}, 120),
            (TrialState.COMPLETE, 32, 0.75, {"seed_values": [0.74, 0.76], "repeat_of": 0}, 0),
            (TrialState.PRUNED, 8, None, {"history": {"val_acc": [0.55], "epoch_seconds": [12.0]}}, 12))):
        study.add_trial(optuna.trial.FrozenTrial(
            number=number, trial_id=number, state=state, value=value, params={"hidden": hidden},
            distributions={"hidden": IntDistribution(4, 128)}, user_attrs=attrs, system_attrs={},
            intermediate_values={}, datetime_start=start,
            datetime_complete=start + datetime.timedelta(seconds=seconds)))
    trials = search.trial_records(study)
    assert [(t["number"], t["state"], t["value"], t["repeat_of"]) for t in trials] == [
        (0, "complete", 0.75, None), (1, "complete", 0.75, 0), (2, "pruned", 0.55, None)]
    table = search.trial_table(trials)
    assert table["trial"].tolist() == [0, 1, 2] and table.loc[2, "score: mean of seeds (completed)"] == "–"
    assert table.loc[0, "per seed"] == "0.740 0.760" and table.loc[1, "epochs run"] == "(repeat)"
    assert search.search_minutes(trials) == (132 / 60, "wall time of the trials")
    for t in trials:
        t["seconds"] = None  # a record from before trials kept their duration
    minutes, what = search.search_minutes(trials)
    assert minutes == (60.0 * 2 + 0 + 12.0 * 1) / 60 and what.startswith("training time")

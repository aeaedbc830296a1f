"""Objectives and worker processes for the search tests (experiments/test_search.py, test_postgres_search.py,
test_dashboard.py).

The notebook's objective (notebook 03, section 6) trains two seeds per trial; these tests need only something
an Optuna study can run: `toy_objective` (deterministic, no training, optional pauses so that workers overlap)
and `training_objective` (one real epoch of a small RNN on the toy corpus, where realism matters).

Run as a script it is one search worker (what a second machine running the search does):

    python tests/search_fixtures.py STUDY SEED N_TRIALS N_WORKERS READY_DIR [TOY_ARCHIVE]

It opens STUDY with `experiments.make_study` (storage: $OPTUNA_STORAGE), waits until N_WORKERS workers are ready,
then runs `experiments.run_study`; given TOY_ARCHIVE (conftest's `toy_archive`) its trials train on the toy corpus,
otherwise they run `toy_objective`. Every trial records the worker's pid in its user attribute "pid"."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def toy_value(hidden: int, epoch: int) -> float:
    """Best at hidden = 40, and better with every epoch."""
    return 1 - abs(hidden - 40) / 64 - 0.1 / epoch


def toy_objective(trial: optuna.Trial, epochs: int = 3, pause: float = 0.0) -> float:
    """Suggest `hidden` in 4..64, report `toy_value` after each "epoch" (never pruned after the last)."""
    hidden = trial.suggest_int("hidden", 4, 64)
    trial.set_user_attr("pid", os.getpid())
    for epoch in range(1, epochs + 1):
        time.sleep(pause)
        trial.report(toy_value(hidden, epoch), epoch)
        if epoch < epochs and trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")
    return toy_value(hidden, epochs)


def training_objective(data, epochs: int = 1, pause: float = 0.0):
    """An objective that trains `rnn` with hidden in 4..16 on `data` (reporting each epoch's validation accuracy)
    and returns its best validation accuracy; `pause` seconds before training."""
    import helpers

    def objective(trial: optuna.Trial) -> float:
        hidden = trial.suggest_int("hidden", 4, 16)
        trial.set_user_attr("pid", os.getpid())
        time.sleep(pause)

        def report(epoch: int, history) -> None:
            trial.report(history.val_acc[-1], epoch)

        _, history = helpers.train_model("rnn", data, seed=0, config={"hidden": hidden}, epochs=epochs, batch_size=8,
                                         progress=False, verbose=False, callback=report)
        trial.set_user_attr("history", history.as_dict())
        return history.best_val_acc

    return objective


def run_workers(study: str, n_trials: int, ready_dir: Path, env: dict, toy_archive: Path | None = None,
                n_workers: int = 2) -> set[int]:
    """Run this file as `n_workers` worker processes on one study (sampler seeds 0, 1, ...: the same seed would
    make them propose the same sizes); assert that all succeed and return their pids."""
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
    extra = [str(toy_archive)] if toy_archive else []
    workers = [subprocess.Popen([sys.executable, str(Path(__file__)), study, str(seed), str(n_trials), str(n_workers),
                                 str(ready_dir), *extra], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for seed in range(n_workers)]
    for worker in workers:
        output, _ = worker.communicate(timeout=180)
        assert worker.returncode == 0, output
    return {worker.pid for worker in workers}


def _worker(study_name: str, seed: str, n_trials: str, n_workers: str, ready_dir: str, toy_archive: str = "") -> None:
    import torch

    import experiments
    import helpers
    from ex2 import runtime

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ready = Path(ready_dir)
    if toy_archive:
        from imdb_fixtures import TOY_LOAD

        os.environ["IMDB_PATH"] = toy_archive
        runtime.CACHE_DIR = ready / f"cache-{os.getpid()}"  # the test's temp dir, not the repository's data/
        objective = training_objective(helpers.load_imdb(**TOY_LOAD, verbose=False), pause=0.2)
    else:
        def objective(trial):
            return toy_objective(trial, pause=0.05)  # toy trials take microseconds: make the workers overlap

    study = experiments.make_study(study_name, seed=int(seed))
    (ready / f"ready-{os.getpid()}").touch()  # start together, so that every worker gets trials
    while len(list(ready.glob("ready-*"))) < int(n_workers):
        time.sleep(0.02)
    experiments.run_study(study, objective, int(n_trials), verbose=False)


if __name__ == "__main__":
    _worker(*sys.argv[1:])

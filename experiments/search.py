"""Notebook 03's hyper-parameter search: where its studies are stored (`optuna_storage`), a seeded, resumable study
(`make_study`, `run_study`; the objective is written in the notebook) and its trials as plain records
(`trial_records`), with their table (`trial_table`) and how long they took (`search_minutes`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ex2 import runtime

if TYPE_CHECKING:
    import pandas as pd


def optuna_storage():
    """Study storage: $OPTUNA_STORAGE (journal file or RDB URL), else SQLite data/optuna/ex2.db. A relative file
    path (journal or sqlite:///) is resolved from the repository root, wherever the process runs (a notebook's
    kernel runs in notebooks/)."""
    import optuna

    # A journal file (`x.log`, `x.journal`, `journal:x`) serves several processes on one machine; an
    # RDB URL (`sqlite:///x.db`, `postgresql://user:pw@host/db`) is passed on to Optuna.
    spec = os.environ.get("OPTUNA_STORAGE", "").strip()
    if not spec:
        folder = runtime.DATA_DIR / "optuna"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'ex2.db'}"
    if spec.startswith("journal:") or spec.endswith((".log", ".journal")):
        path = runtime.ROOT / Path(spec.removeprefix("journal:")).expanduser()  # an absolute path stays as it is
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if "://" not in spec:
        raise ValueError(f"OPTUNA_STORAGE={spec!r} is neither a journal file (.log, .journal, journal:...) "
                         f"nor a database URL such as sqlite:///path/to/study.db")
    if spec.startswith("sqlite:///") and not spec.startswith(("sqlite:////", "sqlite:///:memory:")):  # a relative path
        return f"sqlite:///{runtime.ROOT / spec.removeprefix('sqlite:///')}"
    return spec


def make_study(name: str, storage=None, seed: int = 0):
    """A maximising study in `storage` (default `optuna_storage()`): seeded univariate TPE + median
    pruner; reopened when `name` is stored. An unreachable database raises an error naming it."""
    import optuna

    # Optuna 5 turned `multivariate` and `constant_liar` on by default: spell every option out so
    # the search means the same thing on every version. `n_warmup_steps=2` with 1-based epochs as
    # steps: a trial can be pruned from its 2nd epoch, once 3 trials have completed.
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, n_ei_candidates=24,
                                         multivariate=False, group=False, constant_liar=False)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2,
                                         interval_steps=1)
    storage = optuna_storage() if storage is None else storage
    try:
        if isinstance(storage, str) and storage.startswith("postgresql"):  # a dead host fails in 10 s, not minutes
            storage = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"connect_timeout": 10}})
        return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                   sampler=sampler, pruner=pruner)
    except Exception as exc:
        if not type(exc).__module__.startswith("sqlalchemy"):
            raise
        url = storage.url if isinstance(storage, optuna.storages.RDBStorage) else str(storage)
        where = re.sub(r"//[^@/]*@", "//***@", url)  # never print a password
        raise RuntimeError(f"cannot open the study storage {where} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0]}). Check that the database server is running and the URL "
                           f"in OPTUNA_STORAGE is right, or unset OPTUNA_STORAGE to use data/optuna/ex2.db.") from exc


def run_study(study, objective: Callable, n_trials: int, verbose: bool = True):
    """Run `objective` until `study` holds `n_trials` finished (complete or pruned) trials: a study that was
    interrupted resumes with the missing ones, and several workers can share it. One line per trial."""
    import optuna
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    missing = max(n_trials - done, 0)
    if verbose and done:
        print(f"study {study.study_name!r}: {done} of {n_trials} trials stored, running the {missing} missing")

    def log(study, trial) -> None:
        values = trial.user_attrs.get("seed_values") or []
        print(f"trial {trial.number:2d} | {trial.params} | {trial.state.name.lower():8s} | per seed "
              f"{' '.join(f'{v:.3f}' for v in values) or '-'} | {trial.duration.total_seconds():5.1f} s", flush=True)

    if missing:
        # With several workers on one study, stop once it holds n_trials finished trials (trials
        # already running elsewhere still finish, so it can end with up to workers - 1 extra).
        callbacks = [optuna.study.MaxTrialsCallback(n_trials, states=finished)] + ([log] if verbose else [])
        study.optimize(objective, n_trials=missing, callbacks=callbacks)
    return study


def trial_records(study) -> list[dict]:
    """A study's finished trials as plain records (number, hidden, state, score, per-seed scores, the
    first seed's curves): what the results store and `trial_table` / `plot_search` read."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        history = t.user_attrs.get("history") or {"val_acc": []}  # a repeat has none: see its original
        pruned = t.state == TrialState.PRUNED
        rows.append({"number": t.number, "hidden": t.params["hidden"], "state": t.state.name.lower(),
                     "value": max(history["val_acc"], default=float("nan")) if pruned else t.value,
                     "seed_values": t.user_attrs.get("seed_values") or [], "history": history,
                     "repeat_of": t.user_attrs.get("repeat_of"),
                     "seconds": t.duration.total_seconds() if t.duration is not None else None})
    return rows


def trial_table(trials: list[dict]) -> "pd.DataFrame":
    """Trial records best first: hidden size, state, score and the per-seed scores. A completed trial's score is
    the mean of its seeds' best validation accuracies; a pruned trial has only its first seed's partial curve, and a
    repeated size no curve of its own ("–": nothing to show)."""
    order = sorted(trials, key=lambda t: (t["state"] != "complete", -t["value"] if t["state"] == "complete" else 0,
                                          t["number"]))
    import pandas as pd

    return pd.DataFrame([{"trial": t["number"], "hidden": t["hidden"], "state": t["state"],
                          "score: mean of seeds (completed)": f"{t['value']:.3f}" if t["state"] == "complete" else "–",
                          "first seed, best so far": (f"{max(t['history']['val_acc']):.3f}" if t["history"]["val_acc"]
                                                      else "–"),
                          "per seed": " ".join(f"{v:.3f}" for v in t["seed_values"]) or "–",
                          "epochs run": len(t["history"]["val_acc"]) or "(repeat)",
                          "repeat of": t["repeat_of"] if t["repeat_of"] is not None else ""} for t in order])


def search_minutes(trials: list[dict]) -> tuple[float, str]:
    """How long a search took: the trials' own durations where the records keep them, else the training time the
    stored curves give (the first seed's epoch times x the seeds it trained; a repeat trains nothing), which leaves
    out the evaluation after every epoch."""
    if all(t.get("seconds") is not None for t in trials):
        return sum(t["seconds"] for t in trials) / 60, "wall time of the trials"
    seeds = lambda t: 0 if t["repeat_of"] is not None else max(1, len(t["seed_values"]))  # noqa: E731
    return (sum(sum(t["history"].get("epoch_seconds", [])) * seeds(t) for t in trials) / 60,
            "training time from the stored epoch times, evaluation not included")

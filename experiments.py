"""Experiment records for notebooks 03 and 04: what one trained model's record holds (`run_record`, with each
review's correctness packed by `pack_bits`; `load_or_train` trains or loads a named model with it), where each job's
record lives and how the notebooks read them (`load_results`, `group_records`), the results tables, the recompute
launcher (`recompute`, which runs tools/train_results.py) and the hyper-parameter search's storage, resumable studies
and trial records (its objective is in notebook 03, section 6). The comparisons that decide every "better" are in
`comparisons`; this module re-exports their names for the notebooks. Imports `helpers` (the
models and data); `helpers` never imports this module.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch

import helpers
from comparisons import (adjust_for_family, compare_group_means, comparisons_made, format_comparison,  # noqa: F401 (re-exported)
                         format_interval, format_mean_std, mean_std, pack_bits, paired_compare, unpack_bits,
                         unpaired_compare)

if TYPE_CHECKING:
    import pandas as pd


def results_folder() -> Path:
    """Where notebooks 03 and 04 read (and, training, write) their runs, by `helpers.run_mode()`: the committed
    checkpoints/ ("course"), data/retrain/ ("full"), data/student-run/ ("student") or data/retrain-smoke/ ("smoke");
    $RESULTS overrides it (maintainers: `RUN_MODE=full RESULTS=checkpoints` refreshes the committed results)."""
    folders = {"course": helpers.CHECKPOINT_DIR, "full": helpers.DATA_DIR / "retrain",
               "student": STUDENT_RUN, "smoke": helpers.DATA_DIR / "retrain-smoke"}
    return Path(os.environ.get("RESULTS") or folders[helpers.run_mode()])


STUDENT_RUN = helpers.DATA_DIR / "student-run"
"""Where the student run caches each model it trained (git-ignored, like all of data/)."""


def record_path(folder: str | Path, key: str) -> Path:
    """Where the record of job `key` lives: <folder>/runs/<key with / as __>.json."""
    return Path(folder) / "runs" / (re.sub(r"[^\w.-]+", "_", key.replace("/", "__")) + ".json")


def load_results(folder: str | Path | None = None) -> dict:
    """Every job record in <folder>/runs/ (default checkpoints/; written by tools/train_results.py and
    notebook 03's search) as {"runs": {key: record}}. A damaged record names its file."""
    folder = Path(folder or helpers.CHECKPOINT_DIR)
    paths = sorted((folder / "runs").glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no results in {folder / 'runs'}: " + helpers.RESTORE_HINT.format(path=folder / "runs"))
    records = [helpers.load_json(path, "one job's record", helpers.RESTORE_HINT.format(path=path)) for path in paths]
    return {"runs": {record["job"]["key"]: record for record in records}}


def correct_flags(model: torch.nn.Module, split: helpers.Split) -> np.ndarray:
    """Whether `model` classifies each review of `split` right (`helpers.is_correct`, as `helpers.evaluate` counts),
    in order: its mean is the accuracy."""
    return helpers.is_correct(helpers.split_logits(model, split), split.labels).numpy()


def run_record(model: helpers.SentimentModel, history: helpers.History, data: helpers.Imdb, seed: int) -> dict:
    """Everything the notebooks report about one trained model, as plain JSON-able values: recipe, curves,
    validation and test accuracy (the test split is read here, once per run), whether each review of both was
    classified right (`correct`, packed by `pack_bits`: what `paired_compare` needs to count the evaluation set's
    own noise), P(positive) of the write-up's two reviews. Stored as `model.info.record`."""
    history = history.as_dict()
    correct = {"val": correct_flags(model, data.val), "test": correct_flags(model, data.test)}  # one pass each
    model.info.record = {
        "name": model.info.name, "config": model.info.config, "seed": seed,
        "settings": model.info.record.get("settings", {}), "history": history,
        "best_epoch": history["best_epoch"], "epochs_run": len(history["val_acc"]),
        "val_acc": float(correct["val"].mean()) if len(data.val) else 0.0, "test_acc": float(correct["test"].mean()),
        "correct": {split: pack_bits(flags) for split, flags in correct.items()},
        "writeup_probs": [round(float(p), 4) for p in helpers.predict(model, list(helpers.WRITEUP_REVIEWS))],
        "parameters": helpers.count_parameters(model), "n_train": len(data.train), "tokenizer": data.tokenizer,
        "split": data.split,
        "s_per_epoch": float(np.mean(history["epoch_seconds"])) if history["epoch_seconds"] else None}
    return model.info.record


def full_config(name: str, config: dict | None = None, named: bool = True) -> dict:
    """Every constructor argument of model `name`: `config` applied to `helpers.DEFAULT_CONFIGS[name]` (`named`; or,
    for a config that is already complete such as a record's `model.info.config`, `named=False`) and the rest at the
    constructors' defaults. Two configs build the same model exactly when their full configs are equal: how a record
    is matched to the job that should have made it."""
    cls = helpers.RecurrentClassifier if helpers.check_name(name) in ("rnn", "gru") else helpers.TokenScoreClassifier
    defaults = {k: p.default for c in (helpers.SentimentModel, cls)
                for k, p in inspect.signature(c.__init__).parameters.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **(helpers.DEFAULT_CONFIGS[name] if named else {}), **(config or {})}


def load_or_train(name: str, data: helpers.Imdb, finetune: bool = True,
                  folder: str | Path | None = None) -> helpers.SentimentModel:
    """The seed-0 model `name` (trainable word vectors; `finetune=False`: frozen GloVe) that a section of notebook 03
    or 04 needs, trained or loaded when the section gets there, as `helpers.run_mode()` says:

    - "student": trained on `data` (the full training split) with `helpers.student_recipe` (the recipe, at most
      `helpers.STUDENT_EPOCHS[name]` epochs, seed 0) and cached in data/student-run/<name>[_frozen]-<key>.pt, where
      <key> hashes the source of the exercise parts the model runs, the recipe and the data: a rerun loads it, and
      a changed part of your code trains it again;
    - "smoke": one epoch on `data` (the test command's 1,000-review subset), never saved;
    - "course" / "full": the checkpoint `<folder>/<name>[_frozen].pt` (folder: `results_folder()`, the committed
      checkpoints/ or data/retrain/), else trained with the full recipe (`helpers.recipe`) and saved there.

    In every mode a checkpoint already in an explicitly given `folder` is loaded. Before any training, a part of
    the exercise the model needs that is still a stub stops with its one line (`check_exercises`).
    `model.info.record` holds the model's `run_record` (validation and test accuracy on `data`)."""
    mode = helpers.run_mode()
    if folder is not None or mode in ("course", "full"):
        path = helpers.checkpoint_path(name, finetune, folder or results_folder())
        if path.exists() or mode in ("course", "full"):
            if path.exists():
                return helpers.load_checkpoint(path)
            config, settings = helpers.recipe(name, finetune)
            return _train(name, data, config, settings, path)
    config, settings = helpers.student_recipe(name, finetune)
    if mode == "smoke":
        return _train(name, data, config, {**settings, "epochs": 1}, None)
    path = STUDENT_RUN / f"{helpers.checkpoint_path(name, finetune).stem}-{student_key(name, config, settings, data)}.pt"
    if path.exists():
        return helpers.load_checkpoint(path)
    return _train(name, data, config, settings, path)


def _train(name, data, config, settings, path):
    """Train `name` (seed 0) after checking its parts, keep its run record, and save it to `path` (None: not)."""
    check_exercises([name])
    model, history = helpers.train_model(name, data, seed=0, config=config, **settings)
    run_record(model, history, data, seed=0)
    if path is not None:
        helpers.save_checkpoint(model, path)
    return model


EXERCISE_PARTS = {"rnn": ("RNNCell", "RecurrentBPTT", "run_cell"), "gru": ("GRUCell", "RecurrentBPTT", "run_cell"),
                  "sum": ("pool_token_scores",), "weighted": ("pool_token_scores",),
                  "attn_sum": ("pool_token_scores", "SelfAttention"),
                  "attn_weighted": ("pool_token_scores", "SelfAttention")}
"""The parts of helpers.py (the student's code) each model runs: the student run's cache is keyed on their source."""


def student_key(name: str, config: dict, settings: dict, data: helpers.Imdb) -> str:
    """8 hex digits naming a student-run model: the source of the parts it runs (EXERCISE_PARTS), its full config,
    its settings and the data (tokenizer, split, sizes). Any change to them names another file, so a stale model is
    never loaded."""
    import hashlib

    parts = [inspect.getsource(getattr(helpers, part)) for part in EXERCISE_PARTS[helpers.check_name(name)]]
    what = repr((parts, sorted(full_config(name, config).items()), sorted(settings.items()), data.tokenizer,
                 data.split, data.max_len, len(data.train), len(data.val), len(data.test)))
    return hashlib.sha256(what.encode()).hexdigest()[:8]


def check_exercises(names: Iterable[str]) -> None:
    """Run each part of the exercise that models `names` need once on a tiny input, in the order the student README
    lists them (RNNCell.update, GRUCell.update, the two update_backward, RecurrentBPTT.backward, pool_token_scores,
    SelfAttention.forward): the first that is still a stub raises its one-line `Unimplemented`, before any training
    starts. Other errors (a wrong shape) are left to the training that follows."""
    names = set(names)
    recurrent = [cell for name, cell in (("rnn", helpers.RNNCell), ("gru", helpers.GRUCell)) if name in names]
    token = names & {"sum", "weighted", "attn_sum", "attn_weighted"}
    x, h = torch.randn(1, 6), torch.randn(1, 2)
    checks = [lambda c=cell: c.update(x[:, : 2 * c.blocks], x[:, : 2 * c.blocks], h) for cell in recurrent]
    checks += [lambda c=cell: c.update_backward(h, h, c.update(x[:, : 2 * c.blocks], x[:, : 2 * c.blocks], h)[1])
               for cell in recurrent]
    if recurrent:
        def bptt(cell=recurrent[0](3, 2)):
            seq = torch.randn(1, 3, 3, requires_grad=True)
            helpers.run_cell(cell, seq, manual_bptt=True).sum().backward()
        checks.append(bptt)
    if token:
        checks.append(lambda: helpers.pool_token_scores(torch.randn(1, 3, 2), torch.ones(1, 3, dtype=torch.bool), True))
    if token & {"attn_sum", "attn_weighted"}:
        checks.append(lambda: helpers.SelfAttention(4, window=1)(torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool)))
    for check in checks:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                check()
        except helpers.Unimplemented as exc:
            raise helpers.Unimplemented(str(exc)) from None  # one line, no chain
        except Exception:  # noqa: BLE001 - written, if not yet right: the training shows how
            pass


NOTEBOOK_MODELS = {3: ("rnn", "gru", "attn_weighted"), 4: helpers.MODEL_NAMES}
"""The models each IMDB notebook trains: notebook 03's plan (tools/train_results.py) includes `attn_weighted` for
the tokenizer check of section 0, and notebook 04 also loads the RNN and GRU (`load_or_train`). `recompute` checks
their parts first (a test keeps this in step with the plan)."""


STUDENT_MODELS = {3: (("rnn", True), ("rnn", False), ("gru", True), ("gru", False)),
                  4: (("sum", True), ("weighted", True), ("attn_sum", True), ("attn_weighted", True))}
"""The (name, trainable vectors) models each IMDB notebook's sections train in the student run (`load_or_train`),
seed 0: notebook 03's sections 4 and 7, notebook 04's figures (a benchmark of the reference times them)."""


def recompute(notebook: int, out: str | Path, smoke: bool = False) -> None:
    """Retrain the jobs behind `notebook` into `out` with tools/train_results.py (one worker per core,
    resumable: a rerun continues with the missing jobs), relaying its lines (paths relative to the repository
    root), with a bar over the jobs. A part of the exercise the jobs need that is still a stub stops it first, with
    one line (`check_exercises`)."""
    import subprocess
    import sys

    check_exercises(NOTEBOOK_MODELS.get(notebook, helpers.MODEL_NAMES))
    command = [sys.executable, "-m", "tools.train_results", "--notebook", str(notebook),
               "--out", str(Path(out).resolve()), *(["--smoke"] if smoke else [])]
    unimplemented = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=helpers.ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        first = proc.stdout.readline().replace(f"{helpers.ROOT}{os.sep}", "")
        print(first, end="")
        total = int(first.split()[0]) if first[:1].isdigit() else None
        with helpers.progress_bar(total=total, desc="jobs", unit="job") as bar:
            for line in proc.stdout:
                if line.startswith(f"{helpers.Unimplemented.__name__}: "):  # a worker met a stub: that line alone
                    unimplemented = line.split(": ", 1)[1].strip()
                    continue
                print(line.replace(f"{helpers.ROOT}{os.sep}", ""), end="", flush=True)
                bar.update(line.startswith("done "))
    if unimplemented:
        raise helpers.Unimplemented(unimplemented)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command[1:])} failed (exit code {proc.returncode}); its last lines are "
                           f"above. The finished jobs are kept in {helpers.relative(out)}: rerun to continue.")


COURSE_RESULTS = helpers.ROOT / "course_results"
"""The course's full-run records in the student release (what checkpoints/runs/ holds here, without the
checkpoints): the multi-seed tables of a quick run are drawn from them."""


def course_results() -> dict | None:
    """The course's full run, as `load_results` reads it (five seeds per comparison, the searches' trials), with its
    folder under "folder": course_results/ in the student release, the committed checkpoints/ here; None where
    neither has records."""
    for folder in (COURSE_RESULTS, helpers.CHECKPOINT_DIR):
        if (folder / "runs").is_dir() and any((folder / "runs").glob("*.json")):
            return {**load_results(folder), "folder": folder}
    return None


def run_summary(results: dict, notebook: int | None = None) -> "pd.DataFrame":
    """One row per training run of `results` (`load_results`; those behind `notebook` only, if given): seed, epochs
    run, best validation accuracy and test accuracy. What a quick run has to show of its own."""
    import pandas as pd

    def acc(value):
        return "– (trained on it)" if value is None else f"{value:.3f}"  # a refit has no held-out validation

    rows = {key: {"seed": r["seed"], "epochs run": r["epochs_run"], "val acc": acc(r["val_acc"]),
                  "test acc": acc(r["test_acc"])}
            for key, r in sorted(results["runs"].items())
            if "epochs_run" in r and (notebook is None or r.get("job", {}).get("notebook") == notebook)}
    return pd.DataFrame.from_dict(rows, orient="index")


def group_records(results: dict, prefix: str) -> list[dict]:
    """The seed records of one group of runs in `load_results`' output, e.g. group_records(results, "gru/trainable")."""
    return [record for key, record in results["runs"].items() if key.rsplit("/", 1)[0] == prefix]


def results_table(groups: dict) -> "pd.DataFrame":
    """One row per group of runs ({label: [run_record, ...]}): validation and test accuracy as mean ± std
    over seeds, the validation − test gap, epochs kept, parameters."""
    import pandas as pd

    rows = {}
    for label, records in groups.items():
        val, test = [r["val_acc"] for r in records], [r["test_acc"] for r in records]
        rows[label] = {"seeds": len(records), "val acc": format_mean_std(val), "test acc": format_mean_std(test),
                       "test mean": mean_std(test)[0], "test std": mean_std(test)[1],
                       "val − test": f"{np.mean(val) - np.mean(test):+.3f}",
                       "best epoch": "/".join(str(r["best_epoch"]) for r in records),
                       "parameters": records[0]["parameters"]}
    return pd.DataFrame(rows).T


PUBLISHED_SOLUTIONS = {"GRU-64": (0.8128, 0.8089, 0.8111), "attention (±5)": (0.8057, 0.8024, 0.8202)}
"""Test accuracy, seeds 0, 1, 2, of the best of three published solutions of this exercise (simaon78i, on the
course's skeleton; only its data source adapted to this repository's archive and GloVe 6B-50d), with the same
frozen 50-d vectors and the same 25,000 test reviews (measured for the frozen-vector issue, 26). Trained on all
25,000 training reviews (20,000 here), 10 epochs, the last one kept: a target, not a paired comparison (other
code, other seeds). The other two published solutions, one seed each (issue 19), reached 80.3 % and 74.9 % (GRU),
78.1 % and 73.7 % (attention). Quoted in notebooks 03 and 04 and the README."""


def optuna_storage():
    """Study storage: $OPTUNA_STORAGE (journal file or RDB URL), else SQLite data/optuna/ex2.db. A relative file
    path (journal or sqlite:///) is resolved from the repository root, wherever the process runs (a notebook's
    kernel runs in notebooks/)."""
    import optuna

    # A journal file (`x.log`, `x.journal`, `journal:x`) serves several processes on one machine; an
    # RDB URL (`sqlite:///x.db`, `postgresql://user:pw@host/db`) is passed on to Optuna.
    spec = os.environ.get("OPTUNA_STORAGE", "").strip()
    if not spec:
        folder = helpers.DATA_DIR / "optuna"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'ex2.db'}"
    if spec.startswith("journal:") or spec.endswith((".log", ".journal")):
        path = helpers.ROOT / Path(spec.removeprefix("journal:")).expanduser()  # an absolute path stays as it is
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if "://" not in spec:
        raise ValueError(f"OPTUNA_STORAGE={spec!r} is neither a journal file (.log, .journal, journal:...) "
                         f"nor a database URL such as sqlite:///path/to/study.db")
    if spec.startswith("sqlite:///") and not spec.startswith(("sqlite:////", "sqlite:///:memory:")):  # a relative path
        return f"sqlite:///{helpers.ROOT / spec.removeprefix('sqlite:///')}"
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


# --- the plan: every job behind notebooks 03 and 04 (tools/train_results.py runs them) ---

SEEDS = (0, 1, 2, 3, 4)
"""The seeds of every comparison the notebooks and the README state (paired: the same seed is the same
initial weights and data order); seed 0 is the committed checkpoint."""
SEEDS3 = (0, 1, 2)
"""Seeds of the secondary measurements (recipe ablations, the tokenizer and size checks, the refit)."""

COST = {"rnn": 5, "gru": 12, "sum": 1, "weighted": 1, "attn_sum": 4, "attn_weighted": 4}
"""Relative cost of one epoch, to give each worker an even share (longest jobs first)."""

RNN_ABLATION = {
    "frozen GloVe, default W_hh": ({"finetune": False, "emb_dropout": 0.0, "hh_init": "default"}, {}),
    "trainable, default W_hh": ({"hh_init": "default"}, {}),
    "trainable, no embedding dropout": ({"emb_dropout": 0.0}, {}),
    "trainable, lr 3e-3": ({}, {"lr": 3e-3}),
}
"""Notebook 03, section 4: the RNN recipe with one thing changed; the named RNN and its frozen twin
(orthogonal W_hh) complete the table."""

LAYOUT_VARIANTS = {"attn_sum": {"layout": "residual"}, "attn_weighted": {"layout": "residual"}}
"""Notebook 04, Going further: each attention model in the other layout, the residual one (attention on the word
vectors, x + AV -> the token MLP; 5 seeds with trainable vectors, 3 with frozen ones)."""

RECIPE_VARIANTS = {
    "weighted-nodropout": ("weighted", {"emb_dropout": 0.0}, {}, SEEDS),
    "weighted-decay": ("weighted", {}, {"emb_weight_decay": 1.0}, SEEDS),
    "sum-batch128": ("sum", {}, {"batch_size": 128, "patience": 3}, SEEDS3),
}
"""Notebook 04, Going further: `weighted` without the embedding dropout, and with a decoupled weight decay of
1.0 on Δ (AdamW shrinks Δ by lr · 1.0 = 0.1 % per step, back towards GloVe); `sum` with the batch size and
patience of the other models (what its own recipe is compared with)."""

PUBLISHED_RECIPE = {"batch_size": 32, "epochs": 10, "patience": None}
"""The published solution's training (batch 32, Adam 1e-3, 10 epochs, the last epoch's weights); frozen vectors
have no dropout in either recipe."""

PUBLISHED_DESIGN = {"layout": "exercise", "positions": "relative", "head_layers": 1}
"""The published attention model's design in this repository's terms: token layer -> attention in its 64-d space
with a learned code per offset in ±5 (added to the neighbours' keys and values) -> a 64 -> 64 -> output network;
for SUM the review's logit is the mean sub-score (`mean`)."""

EARLIER_DESIGN = {"attn_sum": {"layout": "exercise", "positions": "absolute", "head_layers": 0, "mean": False},
                  "attn_weighted": {"layout": "residual", "positions": "absolute", "head_layers": 1}}
"""The attention models as this repository first built them (before the ablation below): sinusoidal absolute
positions; attn_sum in the exercise's layout with one linear layer after the attention and the SUM of sub-scores,
attn_weighted in the residual layout (attention on the word vectors, then the token MLP)."""

ATTN_ABLATION = {
    name: {"published": ({**PUBLISHED_DESIGN, **extra}, PUBLISHED_RECIPE),
           "published, absolute positions": ({**PUBLISHED_DESIGN, **extra, "positions": "absolute"}, PUBLISHED_RECIPE),
           "published, one layer after attention": ({**PUBLISHED_DESIGN, **extra, "head_layers": 0}, PUBLISHED_RECIPE),
           "published, our recipe": ({**PUBLISHED_DESIGN, **extra}, {}),
           **({"published, sum": ({**PUBLISHED_DESIGN, "mean": False}, PUBLISHED_RECIPE)} if name == "attn_sum" else
              {"published, residual layout": ({**PUBLISHED_DESIGN, "layout": "residual"}, PUBLISHED_RECIPE)}),
           "earlier design, our recipe": (EARLIER_DESIGN[name], {})}
    for name, extra in (("attn_sum", {"mean": True}), ("attn_weighted", {}))}
"""Notebook 04, Going further, with frozen vectors on the validation split: the published attention model's design and
recipe, each of its parts taken back to this repository's earlier choice one at a time, and the earlier design
itself (3 seeds each). Every row spells its whole design out, so that it stays the same model whatever
DEFAULT_CONFIGS says."""

WRITE_UP_SIZES = {"rnn": 86, "gru": 107}
"""The write-up's TPE results, trained with each cell's full recipe (notebook 03, section 6), together with the
size notebook 03's own search found (its record <out>/runs/search__<cell>.json) once it has run."""

TOKENIZER_CHECK = ("gru", "attn_weighted")
"""The models that measure the other input definition (notebook 03, section 0)."""

VOCAB_CHECK = {"gru-vocab2": ("gru", {"min_count": 2})}
"""Notebook 03, section 7: the GRU with a correction for every word seen twice (not five times) in training, the
TF-IDF anchor's own threshold (min_df = 2): does the GRU trail TF-IDF for want of rare words?"""

WINDOW0 = ("attn_sum", "attn_weighted")
"""Notebook 04's same-capacity control for attention: each attention model with a window of 0 (every token attends
only to itself, A = I), everything else as the named model (the same parameters, seed for seed the same initial
weights), frozen and trainable vectors: what attention's context adds beyond the token layer and the two-layer head
is the named model minus this twin, seed by seed."""
WINDOW0_SEEDS = {"frozen": (0, 1, 2, 3, 4), "trainable": (0, 1, 2, 3, 4)}
"""The control's seeds, frozen vectors (the exercise's setting) first; the named runs' SEEDS are the aim: widen these
and `python -m tools.train_results --only window0` trains the missing ones."""

REFIT = ("gru", "attn_weighted")
"""Models refit on train + validation for their seed's best epoch: measured and reported, not the default."""

FROZEN_REFIT = ("gru", "attn_sum", "attn_weighted")
"""The frozen-vector models refit on all 25,000 training reviews for their seed's best epoch: the row comparable
with the published solutions, which trained on all of them (notebook 04, Going further)."""


def job(key: str, name: str, notebook: int, seed: int = 0, finetune: bool = True, config: dict | None = None,
        settings: dict | None = None, checkpoint: bool = False, tokenizer: str = helpers.TOKENIZER_VERSION,
        refit_of: str | None = None) -> dict:
    """One training run, with its complete config overrides, training settings and inputs spelled out.
    `refit_of`: train on train + validation for the best epoch of that job's record instead."""
    base_config, base_settings = helpers.recipe(name, finetune)
    settings = {**base_settings, **(settings or {})}
    return {"key": key, "kind": "run", "name": name, "seed": seed, "notebook": notebook, "checkpoint": checkpoint,
            "finetune": finetune, "config": {**base_config, **(config or {})}, "settings": settings,
            "tokenizer": tokenizer, "refit_of": refit_of, "cost": COST[name] * min(settings["epochs"], 15)}


def searched_size(out: Path, cell: str) -> int | None:
    """The hidden size notebook 03's search found for `cell` (its record in <out>/runs), if it has run."""
    path = record_path(out, f"search/{cell}")
    record = helpers.load_json(path, f"the {cell} search record", "rerun notebook 03") if path.exists() else {}
    return record.get("best_size")  # None: not run yet (or a record from before the search stored it)


def refit_jobs() -> list[dict]:
    """The refits on all 25,000 training reviews for each seed's best epoch: `REFIT` with trainable vectors,
    `FROZEN_REFIT` with frozen ones, each in the notebook that trains its parent (the GRU's in 03)."""
    jobs = []
    for names, setting, finetune in ((REFIT, "trainable", True), (FROZEN_REFIT, "frozen", False)):
        for name in names:
            jobs += [job(f"{name}-refit/{setting}/seed{seed}", name, 3 if name == "gru" else 4, seed, finetune,
                         refit_of=f"{name}/{setting}/seed{seed}") for seed in SEEDS3]
    return jobs


def experiment_plan(smoke: bool = False, out: Path = helpers.CHECKPOINT_DIR) -> list[dict]:
    """The jobs behind notebooks 03 and 04. `smoke`: seed 0 of each group only, one epoch each."""
    jobs = []
    settings = (("trainable", True), ("frozen", False))
    for name in helpers.MODEL_NAMES:
        notebook = 3 if name in ("rnn", "gru") else 4
        for setting, finetune in settings:
            jobs += [job(f"{name}/{setting}/seed{seed}", name, notebook, seed, finetune, checkpoint=seed == 0)
                     for seed in SEEDS]
            if name in ("rnn", "gru"):  # notebook 03's question: does 128 over-fit where 64 does not?
                jobs += [job(f"{name}-64/{setting}/seed{seed}", name, 3, seed, finetune, {"hidden": 64})
                         for seed in SEEDS]
    for label, (config, settings_) in RNN_ABLATION.items():
        jobs += [job(f"rnn-ablation/{label}/seed{seed}", "rnn", 3, seed, config.get("finetune", True), config,
                     settings_) for seed in SEEDS3]
    for name, config in LAYOUT_VARIANTS.items():
        jobs += [job(f"{name}-variant/trainable/seed{seed}", name, 4, seed, config=config) for seed in SEEDS]
        jobs += [job(f"{name}-variant/frozen/seed{seed}", name, 4, seed, False, config=config) for seed in SEEDS3]
    for name, variants in ATTN_ABLATION.items():
        for label, (config, settings_) in variants.items():
            jobs += [job(f"ablation/{name}/{label}/frozen/seed{seed}", name, 4, seed, False, config, settings_)
                     for seed in SEEDS3]
    for setting, finetune in (("frozen", False), ("trainable", True)):
        jobs += [job(f"{name}-window0/{setting}/seed{seed}", name, 4, seed, finetune, {"window": 0})
                 for seed in WINDOW0_SEEDS[setting] for name in WINDOW0]
    for key, (name, config, settings_, seeds) in RECIPE_VARIANTS.items():
        jobs += [job(f"{key}/trainable/seed{seed}", name, 4, seed, config=config, settings=settings_)
                 for seed in seeds]
    for cell, size in WRITE_UP_SIZES.items():
        for hidden in sorted({size, searched_size(out, cell)} - {None, 64, 128}):
            jobs += [job(f"{cell}-{hidden}/trainable/seed{seed}", cell, 3, seed, config={"hidden": hidden})
                     for seed in SEEDS3]
    other = [version for version in helpers.TOKENIZERS if version != helpers.TOKENIZER_VERSION]
    for version in other:
        for name in TOKENIZER_CHECK:
            for setting, finetune in settings:
                jobs += [job(f"tokens-{version}/{name}/{setting}/seed{seed}", name, 3, seed, finetune,
                             tokenizer=version) for seed in SEEDS3]
    for key, (name, config) in VOCAB_CHECK.items():
        jobs += [job(f"{key}/trainable/seed{seed}", name, 3, seed, config=config) for seed in SEEDS3]
    jobs += refit_jobs()
    jobs += [{"key": "tfidf", "kind": "tfidf", "notebook": 3, "cost": 20, "tokenizer": helpers.TOKENIZER_VERSION}]
    jobs += [{"key": f"tokens-{v}/tfidf", "kind": "tfidf", "notebook": 3, "cost": 20, "tokenizer": v} for v in other]
    if smoke:
        jobs = [j for j in jobs if j.get("seed", 0) == 0]
        for j in jobs:
            if j["kind"] == "run":
                j["settings"]["epochs"] = 1
    return jobs


TFIDF_C = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""The inverse regularisation strengths `tfidf_baseline` tries; validation accuracy picks one."""


def tfidf_baseline(data: helpers.Imdb) -> dict:
    """TF-IDF (1-2-grams) + logistic regression on the same first-`max_len`-token inputs: the non-neural
    anchor the models are compared with. C is the value of TFIDF_C with the best validation accuracy;
    test is scored once, for that C."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def as_text(split: helpers.Split) -> list[str]:
        return [" ".join(helpers.token_words(row[:n])) for row, n in zip(split.ids.tolist(), split.lengths.tolist())]

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                 token_pattern=r"\S+", lowercase=False)
    x_train, x_val = vectorizer.fit_transform(as_text(data.train)), vectorizer.transform(as_text(data.val))
    y_train, y_val = data.train.labels.numpy(), data.val.labels.numpy()
    fitted = {c: LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train) for c in TFIDF_C}
    val_by_c = {c: clf.score(x_val, y_val) for c, clf in fitted.items()}
    best = max(TFIDF_C, key=lambda c: (val_by_c[c], -c))  # ties go to the stronger regularisation
    clf = fitted[best]
    x_test, y_test = vectorizer.transform(as_text(data.test)), data.test.labels.numpy()
    return {"C": best, "val_by_C": {str(c): v for c, v in val_by_c.items()}, "val_acc": val_by_c[best],
            "test_acc": clf.score(x_test, y_test),
            "correct": {"val": pack_bits(clf.predict(x_val) == y_val),
                        "test": pack_bits(clf.predict(x_test) == y_test)},
            "tokenizer": data.tokenizer, "split": data.split}

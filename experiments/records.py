"""The run records of notebooks 03 and 04: what one trained model's record holds (`RunRecord`, made by
`run_record`), the TF-IDF anchor's (`AnchorRecord`) and a search's (`SearchRecord`); where they live
(`results_folder`, `course_results`) and how the notebooks ask for them (`Results.load(folder).group(model,
setting, variant=..., seeds=...)`); the comparisons of groups of records (`compare`, `compare_groups`, and a
`Ledger` that counts a notebook's comparisons by verdict) and the results tables.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import helpers
from ex2 import runtime
from ex2.checkpoints import RESTORE_HINT
from ex2.data import Imdb, Split
from ex2.training import is_correct, split_logits
from experiments import plan, stats

if TYPE_CHECKING:
    import pandas as pd

SPLITS = {"val_acc": "val", "test_acc": "test"}
"""The split each accuracy is measured on (where the per-review correctness behind it is kept)."""


class _Record:
    """What every stored record has: the job that made it, and its JSON form."""

    job: dict | None

    @property
    def key(self) -> str | None:
        """The job key this record was made for (None before a worker saved it)."""
        return (self.job or {}).get("key")

    def to_dict(self) -> dict:
        """The record as the JSON file keeps it (provenance fields that are not set yet left out)."""
        out = dataclasses.asdict(self)
        return {k: v for k, v in out.items() if v is not None or k not in ("job", "code", "wall_seconds", "created")}

    @classmethod
    def from_dict(cls, record: Mapping, where: str = "a record"):
        """The record a JSON file holds; one with fields of another kind of record is an error naming `where`."""
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(record) - names:
            raise ValueError(f"{where}: fields {sorted(unknown)} are not those of a {cls.__name__}")
        return cls(**record)


class _Flags(_Record):
    """A record with per-review correctness, packed by `stats.pack_bits`, by split."""

    correct: dict

    def flags(self, split: str) -> np.ndarray | None:
        """Whether each review of `split` ("val" / "test") was classified right, or None where not kept."""
        packed = (self.correct or {}).get(split)
        return None if packed is None else stats.unpack_bits(packed)


@dataclasses.dataclass(kw_only=True)
class RunRecord(_Flags):
    """Everything the notebooks report about one trained model: recipe (`config`, `settings`), curves
    (`history`), validation and test accuracy (the test split read once per run; `val_acc` is None for a refit,
    which trained on validation), whether each review of both was classified right (`correct`, packed), P(positive)
    of the write-up's two reviews, and, once a worker saved it, the `job` that made it. The fields are in the
    order the JSON files keep them."""

    name: str
    config: dict = dataclasses.field(default_factory=dict)
    seed: Any
    settings: dict = dataclasses.field(default_factory=dict)
    history: dict = dataclasses.field(default_factory=dict)
    best_epoch: int = 0
    epochs_run: int = 0
    val_acc: float | None
    test_acc: float
    correct: dict = dataclasses.field(default_factory=dict)
    writeup_probs: list = dataclasses.field(default_factory=list)
    parameters: int = 0
    n_train: int = 0
    tokenizer: str = ""
    split: str = ""
    s_per_epoch: float | None = None
    job: dict | None = None
    code: str | None = None
    wall_seconds: float | None = None
    created: str | None = None


@dataclasses.dataclass
class AnchorRecord(_Flags):
    """The TF-IDF anchor's record: the C chosen on validation (`val_by_C`), its accuracies and per-review
    correctness. Deterministic: the same for every seed it is compared with."""

    C: float
    val_by_C: dict
    val_acc: float
    test_acc: float
    correct: dict
    tokenizer: str
    split: str
    job: dict | None = None
    code: str | None = None
    wall_seconds: float | None = None
    created: str | None = None


@dataclasses.dataclass
class SearchRecord(_Record):
    """Notebook 03's search for one cell: its trials (`experiments.search.trial_records`), the size it found."""

    trials: list
    best_size: int
    tokenizer: str
    split: str
    job: dict


KINDS = {"run": RunRecord, "tfidf": AnchorRecord, "search": SearchRecord}
"""Which record class each job kind writes."""


def from_dict(record: Mapping, where: str = "a record") -> RunRecord | AnchorRecord | SearchRecord:
    """A stored record as its class, by its job's kind (a training run where it has none yet)."""
    return KINDS[(record.get("job") or {}).get("kind", "run")].from_dict(record, where)


def save(record: RunRecord | AnchorRecord | SearchRecord, folder: str | Path) -> Path:
    """Write `record` to <folder>/runs/ under its job's key, atomically (what `Results.load` reads back)."""
    return runtime.save_json(record.to_dict(), plan.record_path(folder, record.key))


def results_folder() -> Path:
    """Where notebooks 03 and 04 read (and, training, write) their runs: the run mode's folder
    (`helpers.RunMode.from_environment().results`: checkpoints/, data/retrain/, data/student-run/ or
    data/retrain-smoke/, or $RESULTS)."""
    return helpers.RunMode.from_environment().results


STUDENT_RUN = runtime.DATA_DIR / "student-run"
"""Where the student run caches each model it trained (git-ignored, like all of data/)."""

COURSE_RESULTS = runtime.ROOT / "course_results"
"""The course's full-run records in the student release (what checkpoints/runs/ holds here, without the
checkpoints): the multi-seed tables of a quick run are drawn from them."""


@dataclasses.dataclass
class Results:
    """The job records of one folder by key (`load`), and the queries the notebooks ask of them."""

    runs: dict[str, RunRecord | AnchorRecord | SearchRecord]
    folder: Path | None = None

    @classmethod
    def load(cls, folder: str | Path | None = None) -> Results:
        """Every job record in <folder>/runs/ (default checkpoints/; written by `experiments.recompute` and
        notebook 03's search), by key. A damaged record names its file."""
        folder = Path(folder or runtime.CHECKPOINT_DIR)
        paths = sorted((folder / "runs").glob("*.json"))
        if not paths:
            hint = RESTORE_HINT.format(path=folder / "runs")
            raise FileNotFoundError(f"no results in {folder / 'runs'}: {hint}")
        runs = {}
        for path in paths:
            record = runtime.load_json(path, "one job's record", RESTORE_HINT.format(path=path))
            runs[record["job"]["key"]] = from_dict(record, str(path))
        return cls(runs, folder)

    def __len__(self) -> int:
        return len(self.runs)

    def group(self, model: str, setting: str, variant: str | int | None = None, seeds: Iterable | None = None,
              tokenizer: str | None = None, ablation: str | None = None) -> list[RunRecord]:
        """The seed runs of one group (`plan.group_key`: `model` with `setting` word vectors, in a `variant` of its
        recipe, with another `tokenizer`, or as row `ablation` of an ablation table), in key order; only `seeds`,
        if given. Empty where the group has no records."""
        key = plan.group_key(model, setting, variant, tokenizer, ablation)
        wanted = None if seeds is None else set(seeds)
        return [r for k, r in self.runs.items()
                if plan.group_of(k) == key and (wanted is None or r.seed in wanted)]

    def ablations(self, model: str) -> list[str]:
        """The labels of `model`'s ablation rows that have records, in key order."""
        rows = [plan.group_of(k).split("/") for k, r in self.runs.items() if isinstance(r, RunRecord)]
        if model == "rnn":
            return list(dict.fromkeys(row[1] for row in rows if row[0] == "rnn-ablation"))
        return list(dict.fromkeys(row[2] for row in rows if row[0] == "ablation" and row[1] == model))

    def anchor(self, tokenizer: str | None = None) -> AnchorRecord:
        """The TF-IDF anchor's record (for `tokenizer`, default the default one)."""
        return self.runs[plan.anchor_key(tokenizer)]

    def search(self, cell: str) -> SearchRecord | None:
        """Notebook 03's search record for `cell`, None where it has not run."""
        return self.runs.get(plan.search_key(cell))

    def add(self, record: RunRecord | AnchorRecord | SearchRecord) -> None:
        """Keep `record` under its job's key (what a rerun of the notebook then finds)."""
        self.runs[record.key] = record


def course_results() -> Results | None:
    """The course's full run (three or five seeds per comparison, the searches' trials), with its `folder`:
    course_results/ in the student release, the committed checkpoints/ here; None where neither has records."""
    for folder in (COURSE_RESULTS, runtime.CHECKPOINT_DIR):
        if (folder / "runs").is_dir() and any((folder / "runs").glob("*.json")):
            return Results.load(folder)
    return None


def correct_flags(model: torch.nn.Module, split: Split) -> np.ndarray:
    """Whether `model` classifies each review of `split` right (`is_correct`, as `helpers.evaluate` counts),
    in order: its mean is the accuracy."""
    return is_correct(split_logits(model, split), split.labels).numpy()


def run_record(model: helpers.SentimentModel, history: helpers.History, data: Imdb, seed: int) -> RunRecord:
    """The `RunRecord` of a trained model on `data` (the test split is read here, once per run); kept as a plain
    dict in `model.info.record`, which its checkpoint saves."""
    history = history.as_dict()
    correct = {"val": correct_flags(model, data.val), "test": correct_flags(model, data.test)}  # one pass each
    record = RunRecord(
        name=model.info.name, config=model.info.config, seed=seed, settings=model.info.settings,
        history=history, best_epoch=history["best_epoch"], epochs_run=len(history["val_acc"]),
        val_acc=float(correct["val"].mean()) if len(data.val) else 0.0, test_acc=float(correct["test"].mean()),
        correct={split: stats.pack_bits(flags) for split, flags in correct.items()},
        writeup_probs=[round(float(p), 4) for p in helpers.predict(model, list(helpers.WRITEUP_REVIEWS))],
        parameters=helpers.count_parameters(model), n_train=len(data.train), tokenizer=data.tokenizer,
        split=data.split, s_per_epoch=float(np.mean(history["epoch_seconds"])) if history["epoch_seconds"] else None)
    model.info.record = record.to_dict()
    return record


# --- comparisons of groups of records ---

Metric = str | Callable[[Any], float]
"""What a comparison reads of each record: an attribute ("val_acc", "test_acc") or a function of the record."""


def _value(record, metric: Metric) -> float:
    if callable(metric):
        return metric(record)
    return record[metric] if isinstance(record, Mapping) else getattr(record, metric)


def _review_flags(records: Sequence, metric: Metric) -> np.ndarray | None:
    """(seeds, reviews) correctness of each record on the split `metric` names, or None if any record lacks it."""
    split = SPLITS.get(metric) if isinstance(metric, str) else None
    correct = [(r.get("correct") if isinstance(r, Mapping) else r.correct) or {} for r in records]
    packed = [c.get(split) for c in correct]
    if split is None or not records or any(p is None for p in packed) or len({p["n"] for p in packed}) > 1:
        return None
    return np.stack([stats.unpack_bits(p) for p in packed]).astype(float)


def _seed(record):
    return record["seed"] if isinstance(record, Mapping) else record.seed


def paired_arrays(a: Sequence, b, metric: Metric) -> tuple[np.ndarray, np.ndarray | None]:
    """The per-seed differences metric(a_s) − metric(b_s) over the seeds both groups have, and the (S, N)
    per-review differences of their correctness (None where some record keeps none for `metric`'s split): what
    `stats.paired_compare` takes. `b` may be one record (a deterministic anchor, the same for every seed) or a
    number."""
    if isinstance(b, (int, float)):
        return np.array([_value(r, metric) - b for r in a], dtype=float), _review_flags(a, metric) if a else None
    by_seed = {_seed(r): b for r in a} if not isinstance(b, Sequence) else {_seed(r): r for r in b}
    paired = [(r, by_seed[_seed(r)]) for r in a if _seed(r) in by_seed]
    diff = np.array([_value(x, metric) - _value(y, metric) for x, y in paired], dtype=float)
    flags_a, flags_b = _review_flags([x for x, _ in paired], metric), _review_flags([y for _, y in paired], metric)
    if flags_a is None or flags_b is None or flags_a.shape != flags_b.shape:
        return diff, None
    return diff, flags_a - flags_b


def compare(a: Sequence, b, metric: Metric = "test_acc", level: float = 0.95) -> stats.Comparison:
    """Group `a` − group `b` of seed runs on `metric`, paired by seed, over seeds and reviews where the records keep
    their per-review correctness (`stats.paired_compare`). `b` may be one record (the TF-IDF anchor) or a number.
    A record is a `RunRecord` (or `AnchorRecord`), or a mapping with the same keys (synthetic runs in tests)."""
    return stats.paired_compare(*paired_arrays(a, b, metric), level=level)


def compare_groups(pairs: Sequence[tuple[Sequence, Sequence]], metric: Metric = "val_acc",
                   level: float = 0.95) -> stats.Comparison:
    """One effect measured in several (a, b) pairs of groups, over the groups (`stats.compare_group_means`)."""
    return stats.compare_group_means([paired_arrays(a, b, metric) for a, b in pairs], level=level)


class Ledger:
    """The comparisons one notebook makes, counted by verdict: each is made through the ledger (`compare`,
    `compare_groups`, `unpaired`), and one computed again (a rerun cell, a table and a printout of the same pair)
    counts once. `print(ledger)` says how many there were and how many chance alone would explain."""

    def __init__(self) -> None:
        self.verdicts: dict[tuple, str] = {}

    def add(self, comparison: stats.Comparison) -> stats.Comparison:
        """Count `comparison` (one without an interval has no verdict to count) and return it."""
        if comparison.key is not None:
            self.verdicts[comparison.key] = comparison.verdict
        return comparison

    def compare(self, a: Sequence, b, metric: Metric = "test_acc") -> stats.Comparison:
        return self.add(compare(a, b, metric))

    def compare_groups(self, pairs: Sequence[tuple[Sequence, Sequence]], metric: Metric = "val_acc"):
        return self.add(compare_groups(pairs, metric))

    def unpaired(self, a: Sequence[float], b: Sequence[float]) -> stats.Comparison:
        return self.add(stats.unpaired_compare(a, b))

    def counts(self) -> dict[str, int]:
        """How many distinct comparisons were made, by verdict."""
        verdicts = list(self.verdicts.values())
        return {verdict: verdicts.count(verdict) for verdict in ("better", "worse", "suggestive", "tie")}

    def __str__(self) -> str:
        made = self.counts()
        n = sum(made.values())
        return (f"{n} distinct comparisons in this notebook: " + ", ".join(f"{k} {v}" for k, v in made.items())
                + f"\nwere all {n} true ties, chance alone would give about {0.15 * n:.0f} 'suggestive' verdicts "
                f"(0.05 <= p < 0.2) and {0.05 * n:.0f} 'better' / 'worse' (p < 0.05)")


# --- tables ---

def run_summary(results: Results, notebook: int | None = None) -> pd.DataFrame:
    """One row per training run of `results` (those behind `notebook` only, if given): seed, epochs run, best
    validation accuracy and test accuracy. What a quick run has to show of its own."""
    import pandas as pd

    def acc(value):
        return "– (trained on it)" if value is None else f"{value:.3f}"  # a refit has no held-out validation

    rows = {key: {"seed": r.seed, "epochs run": r.epochs_run, "val acc": acc(r.val_acc), "test acc": acc(r.test_acc)}
            for key, r in sorted(results.runs.items())
            if isinstance(r, RunRecord) and (notebook is None or (r.job or {}).get("notebook") == notebook)}
    return pd.DataFrame.from_dict(rows, orient="index")


def results_table(groups: Mapping[str, Sequence[RunRecord]]) -> pd.DataFrame:
    """One row per group of runs ({label: [RunRecord, ...]}): validation and test accuracy as mean ± std
    over seeds, the validation − test gap, epochs kept, parameters."""
    import pandas as pd

    rows = {}
    for label, records in groups.items():
        val, test = [r.val_acc for r in records], [r.test_acc for r in records]
        rows[label] = {"seeds": len(records), "val acc": stats.format_mean_std(val),
                       "test acc": stats.format_mean_std(test),
                       "test mean": stats.mean_std(test)[0], "test std": stats.mean_std(test)[1],
                       "val − test": f"{np.mean(val) - np.mean(test):+.3f}",
                       "best epoch": "/".join(str(r.best_epoch) for r in records),
                       "parameters": records[0].parameters}
    return pd.DataFrame(rows).T


PUBLISHED_SOLUTIONS = {"GRU-64": (0.8128, 0.8089, 0.8111), "attention (±5)": (0.8057, 0.8024, 0.8202)}
"""Test accuracy, seeds 0, 1, 2, of the best of three published solutions of this exercise (simaon78i, on the
course's skeleton; only its data source adapted to this repository's archive and GloVe 6B-50d), with the same
frozen 50-d vectors and the same 25,000 test reviews. Trained on all 25,000 training reviews (20,000 here),
10 epochs, the last one kept: a target, not a paired comparison (other code, other seeds). The other two published
solutions are in `PUBLISHED_ONE_SEED`. Quoted in notebooks 03 and 04 and the README."""

PUBLISHED_ONE_SEED = {"GRU": (0.803, 0.749), "attention (±5)": (0.781, 0.737)}
"""Test accuracy of the other two published solutions of this exercise, one seed each (same data, same frozen
vectors, all 25,000 training reviews). Printed in notebook 03."""

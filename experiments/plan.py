"""Every job behind notebooks 03 and 04 (`experiment_plan`; `experiments.recompute` runs them), the one grammar of
their keys (`group_key`, `run_key`, `anchor_key`, `search_key`; `record_path`: where a key's record lives), how a
record is matched to the job that should have made it (`full_config`) and the non-neural anchor (`tfidf_baseline`).
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import helpers
from ex2 import runtime
from ex2.data import Imdb, Split, token_words
from ex2.models import DEFAULT_CONFIGS, RecurrentClassifier, check_name
from experiments.stats import pack_bits

# --- the key grammar: <group>/seed<seed>, a group being [tokens-<version>/]<model>[-<variant>]/<setting> ---

SETTINGS = {"trainable": True, "frozen": False}
"""The two word-vector settings and whether the vectors train (`trainable`)."""


def group_key(model: str, setting: str, variant: str | int | None = None, tokenizer: str | None = None,
              ablation: str | None = None) -> str:
    """The key of one group of seed runs: `model` with `setting` ("trainable" / "frozen" word vectors), in a
    `variant` of its recipe (e.g. 64 units, "refit", "window0"), with another `tokenizer` than the default, or as
    row `ablation` of an ablation table (the RNN's recipe ablation carries its setting in its label)."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {list(SETTINGS)}, got {setting!r}")
    if ablation is not None:
        return f"rnn-ablation/{ablation}" if model == "rnn" else f"ablation/{model}/{ablation}/{setting}"
    key = f"{model}-{variant}/{setting}" if variant is not None else f"{model}/{setting}"
    if tokenizer is not None and tokenizer != helpers.TOKENIZER_VERSION:
        key = f"tokens-{tokenizer}/{key}"
    return key


def run_key(group: str, seed: int) -> str:
    """The key of one seed's run of a group (`group_key`)."""
    return f"{group}/seed{seed}"


def group_of(key: str) -> str:
    """The group a run's key belongs to (its key without /seed<seed>)."""
    return key.rsplit("/", 1)[0]


def anchor_key(tokenizer: str | None = None) -> str:
    """The key of the TF-IDF anchor's record (for another `tokenizer` than the default: its own)."""
    return "tfidf" if tokenizer in (None, helpers.TOKENIZER_VERSION) else f"tokens-{tokenizer}/tfidf"


def search_key(cell: str) -> str:
    """The key of notebook 03's search record for `cell`."""
    return f"search/{cell}"


def record_path(folder: str | Path, key: str) -> Path:
    """Where the record of job `key` lives: <folder>/runs/<key with / as __>.json."""
    return Path(folder) / "runs" / (re.sub(r"[^\w.-]+", "_", key.replace("/", "__")) + ".json")


# --- the plan ---

SEEDS = (0, 1, 2, 3, 4)
"""The seeds of every comparison the notebooks and the README state (paired: the same seed is the same
initial weights and data order); seed 0 is the committed checkpoint."""
SEEDS3 = (0, 1, 2)
"""Seeds of the secondary measurements (recipe ablations, the tokenizer and size checks, the refit)."""

COST = {"rnn": 5, "gru": 12, "sum": 1, "weighted": 1, "attn_sum": 4, "attn_weighted": 4}
"""Relative cost of one epoch, to give each worker an even share (longest jobs first)."""

RNN_ABLATION = {
    "frozen GloVe, default W_hh": ({"trainable": False, "emb_dropout": 0.0, "hh_init": "default"}, {}),
    "trainable, default W_hh": ({"hh_init": "default"}, {}),
    "trainable, no embedding dropout": ({"emb_dropout": 0.0}, {}),
    "trainable, lr 3e-3": ({}, {"lr": 3e-3}),
}
"""Notebook 03, section 4: the RNN recipe with one thing changed; the named RNN and its frozen twin
(orthogonal W_hh) complete the table."""

LAYOUT_VARIANTS = {"attn_sum": {"layout": "residual"}, "attn_weighted": {"layout": "residual"}}
"""Notebook 04, Going further: each attention model in the other layout, the residual one (attention on the word
vectors, x + AV -> the token MLP; 5 seeds with trainable vectors, 3 with frozen ones): variant "variant"."""

RECIPE_VARIANTS = {
    "nodropout": ("weighted", {"emb_dropout": 0.0}, {}, SEEDS),
    "decay": ("weighted", {}, {"emb_weight_decay": 1.0}, SEEDS),
    "batch128": ("sum", {}, {"batch_size": 128, "patience": 3}, SEEDS3),
}
"""Notebook 04, Going further, by variant: `weighted` without the embedding dropout, and with a decoupled weight
decay of 1.0 on Δ (AdamW shrinks Δ by lr · 1.0 = 0.1 % per step, back towards GloVe); `sum` with the batch size and
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


def _attn_ablation(name: str, extra: dict) -> dict:
    design, recipe = {**PUBLISHED_DESIGN, **extra}, PUBLISHED_RECIPE
    last = ({"published, sum": ({**PUBLISHED_DESIGN, "mean": False}, recipe)} if name == "attn_sum" else
            {"published, residual layout": ({**PUBLISHED_DESIGN, "layout": "residual"}, recipe)})
    return {"published": (design, recipe),
            "published, absolute positions": ({**design, "positions": "absolute"}, recipe),
            "published, one layer after attention": ({**design, "head_layers": 0}, recipe),
            "published, our recipe": (design, {}), **last,
            "earlier design, our recipe": (EARLIER_DESIGN[name], {})}


ATTN_ABLATION = {name: _attn_ablation(name, extra) for name, extra in (("attn_sum", {"mean": True}),
                                                                         ("attn_weighted", {}))}
"""Notebook 04, Going further, with frozen vectors on the validation split: the published attention model's design and
recipe, each of its parts taken back to this repository's earlier choice one at a time, and the earlier design
itself (3 seeds each). Every row spells its whole design out, so that it stays the same model whatever
DEFAULT_CONFIGS says."""

WRITE_UP_SIZES = {"rnn": 86, "gru": 107}
"""The write-up's TPE results, trained with each cell's full recipe (notebook 03, section 6), together with the
size notebook 03's own search found (its record <out>/runs/search__<cell>.json) once it has run."""

TOKENIZER_CHECK = ("gru", "attn_weighted")
"""The models that measure the other input definition (notebook 03, "Going further: the inputs")."""

VOCAB_CHECK = {"vocab2": ("gru", {"min_count": 2})}
"""Notebook 03, section 7: the GRU with a correction for every word seen twice (not five times) in training, the
TF-IDF anchor's own threshold (min_df = 2): does the GRU trail TF-IDF for want of rare words?"""

WINDOW0 = ("attn_sum", "attn_weighted")
"""Notebook 04's same-capacity control for attention: each attention model with a window of 0 (every token attends
only to itself, A = I), everything else as the named model (the same parameters, seed for seed the same initial
weights), frozen and trainable vectors: what attention's context adds beyond the token layer and the two-layer head
is the named model minus this twin (variant "window0"), seed by seed."""
WINDOW0_SEEDS = {"frozen": (0, 1, 2, 3, 4), "trainable": (0, 1, 2, 3, 4)}
"""The control's seeds, frozen vectors (the exercise's setting) first; the named runs' SEEDS are the aim: widen these
and `python -m experiments.recompute --only window0` trains the missing ones."""

REFIT = ("gru", "attn_weighted")
"""Models refit on train + validation for their seed's best epoch: measured and reported, not the default."""

FROZEN_REFIT = ("gru", "attn_sum", "attn_weighted")
"""The frozen-vector models refit on all 25,000 training reviews for their seed's best epoch: the row comparable
with the published solutions, which trained on all of them (notebook 04, Going further)."""


def job(key: str, name: str, notebook: int, seed: int = 0, trainable: bool = True, config: dict | None = None,
        settings: dict | None = None, checkpoint: bool = False, tokenizer: str = helpers.TOKENIZER_VERSION,
        refit_of: str | None = None) -> dict:
    """One training run, with its complete config overrides, training settings and inputs spelled out.
    `refit_of`: train on train + validation for the best epoch of that job's record instead."""
    base_config, base_settings = helpers.recipe(name, trainable)
    settings = {**base_settings, **(settings or {})}
    return {"key": key, "kind": "run", "name": name, "seed": seed, "notebook": notebook, "checkpoint": checkpoint,
            "trainable": trainable, "config": {**base_config, **(config or {})}, "settings": settings,
            "tokenizer": tokenizer, "refit_of": refit_of, "cost": COST[name] * min(settings["epochs"], 15)}


def searched_size(out: Path, cell: str) -> int | None:
    """The hidden size notebook 03's search found for `cell` (its record in <out>/runs), if it has run."""
    path = record_path(out, search_key(cell))
    record = runtime.load_json(path, f"the {cell} search record", "rerun notebook 03") if path.exists() else {}
    return record.get("best_size")  # None: not run yet


def refit_jobs() -> list[dict]:
    """The refits on all 25,000 training reviews for each seed's best epoch: `REFIT` with trainable vectors,
    `FROZEN_REFIT` with frozen ones, each in the notebook that trains its parent (the GRU's in 03)."""
    jobs = []
    for names, setting in ((REFIT, "trainable"), (FROZEN_REFIT, "frozen")):
        for name in names:
            jobs += [job(run_key(group_key(name, setting, "refit"), seed), name, 3 if name == "gru" else 4, seed,
                         SETTINGS[setting], refit_of=run_key(group_key(name, setting), seed)) for seed in SEEDS3]
    return jobs


def _seeded(group: str, seeds, name: str, notebook: int, setting: str = "trainable", **kwargs) -> list[dict]:
    """The jobs of one group of seed runs."""
    return [job(run_key(group, seed), name, notebook, seed, SETTINGS[setting], **kwargs) for seed in seeds]


def _model_jobs() -> list[dict]:
    """The named models both ways (seed 0 kept as the checkpoint), the RNN and GRU also with 64 units."""
    jobs = []
    for name in helpers.MODEL_NAMES:
        notebook = 3 if name in ("rnn", "gru") else 4
        for setting, trainable in SETTINGS.items():
            jobs += [job(run_key(group_key(name, setting), seed), name, notebook, seed, trainable,
                         checkpoint=seed == 0) for seed in SEEDS]
            if name in ("rnn", "gru"):  # notebook 03's question: does 128 over-fit where 64 does not?
                jobs += _seeded(group_key(name, setting, 64), SEEDS, name, 3, setting, config={"hidden": 64})
    return jobs


def _variant_jobs(out: Path) -> list[dict]:
    """The ablations, layout and recipe variants, the window-0 control and the searched sizes."""
    jobs = []
    for label, (config, settings) in RNN_ABLATION.items():
        jobs += [job(run_key(group_key("rnn", "trainable", ablation=label), seed), "rnn", 3, seed,
                     config.get("trainable", True), config, settings) for seed in SEEDS3]
    for name, config in LAYOUT_VARIANTS.items():
        jobs += _seeded(group_key(name, "trainable", "variant"), SEEDS, name, 4, config=config)
        jobs += _seeded(group_key(name, "frozen", "variant"), SEEDS3, name, 4, "frozen", config=config)
    for name, variants in ATTN_ABLATION.items():
        for label, (config, settings) in variants.items():
            jobs += _seeded(group_key(name, "frozen", ablation=label), SEEDS3, name, 4, "frozen", config=config,
                            settings=settings)
    for setting in ("frozen", "trainable"):
        jobs += [job(run_key(group_key(name, setting, "window0"), seed), name, 4, seed, SETTINGS[setting],
                     {"window": 0}) for seed in WINDOW0_SEEDS[setting] for name in WINDOW0]
    for variant, (name, config, settings, seeds) in RECIPE_VARIANTS.items():
        jobs += _seeded(group_key(name, "trainable", variant), seeds, name, 4, config=config, settings=settings)
    for cell, size in WRITE_UP_SIZES.items():
        for hidden in sorted({size, searched_size(out, cell)} - {None, 64, 128}):
            jobs += _seeded(group_key(cell, "trainable", hidden), SEEDS3, cell, 3, config={"hidden": hidden})
    return jobs


def _input_jobs() -> list[dict]:
    """The other tokenizer's runs, the vocabulary check, the refits and the TF-IDF anchors."""
    jobs, other = [], [version for version in helpers.TOKENIZERS if version != helpers.TOKENIZER_VERSION]
    for version in other:
        for name in TOKENIZER_CHECK:
            for setting in SETTINGS:
                jobs += _seeded(group_key(name, setting, tokenizer=version), SEEDS3, name, 3, setting,
                                tokenizer=version)
    for variant, (name, config) in VOCAB_CHECK.items():
        jobs += _seeded(group_key(name, "trainable", variant), SEEDS3, name, 3, config=config)
    jobs += refit_jobs()
    return jobs + [{"key": anchor_key(v), "kind": "tfidf", "notebook": 3, "cost": 20, "tokenizer": v}
                   for v in (helpers.TOKENIZER_VERSION, *other)]


def experiment_plan(smoke: bool = False, out: Path = runtime.CHECKPOINT_DIR) -> list[dict]:
    """The jobs behind notebooks 03 and 04. `smoke`: seed 0 of each group only, one epoch each."""
    jobs = _model_jobs() + _variant_jobs(out) + _input_jobs()
    if smoke:
        jobs = [j for j in jobs if j.get("seed", 0) == 0]
        for j in jobs:
            if j["kind"] == "run":
                j["settings"]["epochs"] = 1
    return jobs


def full_config(name: str, config: dict | None = None, named: bool = True) -> dict:
    """Every constructor argument of model `name`: `config` applied to `DEFAULT_CONFIGS[name]` (`named`; or,
    for a config that is already complete such as a record's `model.info.config`, `named=False`) and the rest at the
    constructors' defaults. Two configs build the same model exactly when their full configs are equal: how a record
    is matched to the job that should have made it."""
    cls = RecurrentClassifier if check_name(name) in ("rnn", "gru") else helpers.TokenScoreClassifier
    empty = inspect.Parameter.empty
    defaults = {k: p.default for c in (helpers.SentimentModel, cls)
                for k, p in inspect.signature(c.__init__).parameters.items() if p.default is not empty}
    return {**defaults, **(DEFAULT_CONFIGS[name] if named else {}), **(config or {})}


TFIDF_C = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""The inverse regularisation strengths `tfidf_baseline` tries; validation accuracy picks one."""


def tfidf_baseline(data: Imdb) -> dict:
    """TF-IDF (1-2-grams) + logistic regression on the same first-`max_len`-token inputs: the non-neural
    anchor the models are compared with. C is the value of TFIDF_C with the best validation accuracy;
    test is scored once, for that C."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def as_text(split: Split) -> list[str]:
        return [" ".join(token_words(row[:n])) for row, n in zip(split.ids.tolist(), split.lengths.tolist())]

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

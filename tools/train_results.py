"""Retrain everything notebooks 03 and 04 report: the one recompute path.

    python tools/train_results.py                   # every job, one worker process per core (one torch thread each)
    python tools/train_results.py --list            # the jobs, their estimated cost, which are done
    python tools/train_results.py --only gru        # jobs whose key contains "gru"
    python tools/train_results.py --notebook 4      # the jobs behind one notebook (what RETRAIN=1 runs)
    python tools/train_results.py --smoke --out data/retrain-smoke   # tiny end-to-end check (1,000 reviews, 1 epoch)

Each job is one seeded training run (or the TF-IDF anchor). Its record is written to
<out>/runs/<key>.json as soon as it finishes (default out: checkpoints/), so an interrupted recompute
resumes with the missing jobs (`--force` redoes them; a `--smoke` run also redoes the jobs whose record other code
made, see `reusable`); seed 0 of each named model is saved as
<out>/<name>.pt (trainable word vectors) or <out>/<name>_frozen.pt. `helpers.load_results(out)` reads
the records. Training uses one torch thread per worker: the same seed then gives the same numbers on
the same machine (reductions split over threads round differently). Notebook 03's TPE search is not a
job here: its objective is written in the notebook, which runs it with RETRAIN=1.

The workers print one line per epoch ("<key> | epoch ...") and one per finished job ("done <key> ...").
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import helpers  # noqa: E402

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

LAYOUT_VARIANTS = {"attn_sum": {"layout": "residual"}, "attn_weighted": {"layout": "exercise"}}
"""Notebook 04, section 3: each attention model in its other layout (5 seeds with trainable vectors; 3 with frozen
ones, the setting of the published solutions, whose attention model uses the exercise's layout)."""

RECIPE_VARIANTS = {
    "weighted-nodropout": ("weighted", {"emb_dropout": 0.0}, {}, SEEDS),
    "weighted-decay": ("weighted", {}, {"emb_weight_decay": 1.0}, SEEDS),
    "sum-batch128": ("sum", {}, {"batch_size": 128, "patience": 3}, SEEDS3),
}
"""Notebook 04, section 3: `weighted` without the embedding dropout, and with a decoupled weight decay of
1.0 on Δ (AdamW shrinks Δ by lr · 1.0 = 0.1 % per step, back towards GloVe); `sum` with the batch size and
patience of the other models (what its own recipe is compared with)."""

WRITE_UP_SIZES = {"rnn": 86, "gru": 107}
"""The write-up's TPE results, trained with each cell's full recipe (notebook 03, section 6), together with the
size notebook 03's own search found (its record <out>/runs/search__<cell>.json) once it has run."""

TOKENIZER_CHECK = ("gru", "attn_weighted")
"""The models that measure the other input definition (notebook 03, section 0)."""

VOCAB_CHECK = {"gru-vocab2": ("gru", {"min_count": 2})}
"""Notebook 03, section 7: the GRU with a correction for every word seen twice (not five times) in training, the
TF-IDF anchor's own threshold (min_df = 2): does the GRU trail TF-IDF for want of rare words?"""

REFIT = ("gru", "attn_weighted")
"""Models refit on train + validation for their seed's best epoch: measured and reported, not the default."""


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
    path = helpers.record_path(out, f"search/{cell}")
    record = helpers.load_json(path, f"the {cell} search record", "rerun notebook 03") if path.exists() else {}
    return record.get("best_size")  # None: not run yet (or a record from before the search stored it)


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
    for name in REFIT:
        notebook = 3 if name == "gru" else 4
        jobs += [job(f"{name}-refit/trainable/seed{seed}", name, notebook, seed, refit_of=f"{name}/trainable/seed{seed}")
                 for seed in SEEDS3]
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
    return {"C": best, "val_by_C": {str(c): v for c, v in val_by_c.items()}, "val_acc": val_by_c[best],
            "test_acc": clf.score(vectorizer.transform(as_text(data.test)), data.test.labels.numpy()),
            "tokenizer": data.tokenizer, "split": data.split}


def train_and_validation(data: helpers.Imdb) -> helpers.Imdb:
    """The refit's data: train = train + validation (validation is then no longer held out)."""
    both = helpers.Split(data.train.texts + data.val.texts, torch.cat([data.train.labels, data.val.labels]),
                         torch.cat([data.train.ids, data.val.ids]), torch.cat([data.train.lengths, data.val.lengths]),
                         torch.cat([data.train.ratings, data.val.ratings]))
    return dataclasses.replace(data, train=both)


def run_job(job: dict, data: helpers.Imdb, out: Path) -> tuple[dict, helpers.SentimentModel | None]:
    """Run one job; returns (record, trained model or None). One line per epoch, prefixed with the key."""
    if job["kind"] == "tfidf":
        return tfidf_baseline(data), None
    settings = dict(job["settings"])
    if job["refit_of"]:
        parent = helpers.record_path(out, job["refit_of"])
        if not parent.exists():
            raise RuntimeError(f"{job['key']} refits {job['refit_of']}, which has no record in {out}: run it first")
        best = helpers.load_json(parent, "the refit's parent record", "rerun tools/train_results.py")["best_epoch"]
        data, settings = train_and_validation(data), {**settings, "epochs": best, "patience": None}
    model, history = helpers.train_model(
        job["name"], data, seed=job["seed"], config=job["config"], progress=False, verbose=False,
        callback=lambda epoch, h: print(f"{job['key']} | {h.line(epoch)}", flush=True), **settings)
    record = helpers.run_record(model, history, data, job["seed"])
    if job["refit_of"]:
        record["val_acc"] = None  # validation was trained on: no held-out estimate
    return record, model


UNIMPLEMENTED = 3
"""A worker's exit code when a job met a part of the exercise that is still a stub (it printed the one line)."""


def code_fingerprint() -> str:
    """What trained a record: a digest of helpers.py (the models, the data, the training loop) and of this file
    (the plan). A quick run (`--smoke`) reuses a record only when it was made by the same code."""
    digest = hashlib.sha256()
    for path in (Path(helpers.__file__), Path(__file__)):
        digest.update(path.resolve().read_bytes())
    return digest.hexdigest()[:16]


def _as_recorded(job: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in job.items() if k != "cost"}))  # the JSON the record keeps


def reusable(job: dict, out: Path, smoke: bool) -> bool:
    """Whether `job`'s record in `out` stands: any record in a full run (a rerun continues with the missing jobs);
    in a quick run, only one made by the same code for the same job (`code_fingerprint`), so that a quick run after
    an edit of helpers.py trains the edited code again."""
    path = helpers.record_path(out, job["key"])
    if not path.exists():
        return False
    if not smoke:
        return True
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return record.get("code") == code_fingerprint() and record.get("job") == _as_recorded(job)


def worker(keys: list[str], out: Path, smoke: bool) -> None:
    torch.set_num_threads(1)
    code = code_fingerprint()
    datasets: dict[str, helpers.Imdb] = {}
    jobs = {j["key"]: j for j in experiment_plan(smoke, out)}
    for key in keys:
        start = time.perf_counter()
        version = jobs[key]["tokenizer"]
        if version not in datasets:
            datasets[version] = helpers.load_imdb(subset=1000 if smoke else None, verbose=False, tokenizer=version)
        try:
            record, model = run_job(jobs[key], datasets[version], out)
        except helpers.Unimplemented as exc:  # a stub of the student release: its one line, no traceback
            print(f"{type(exc).__name__}: {exc}", flush=True)
            sys.exit(UNIMPLEMENTED)
        if jobs[key].get("checkpoint"):  # seed 0 of a named model
            helpers.save_checkpoint(model, helpers.checkpoint_path(jobs[key]["name"], jobs[key]["finetune"], out))
        record["job"] = _as_recorded(jobs[key])
        record["code"] = code
        record["wall_seconds"] = time.perf_counter() - start
        record["created"] = time.strftime("%Y-%m-%d")
        helpers.save_json(record, helpers.record_path(out, key))
        summary = {k: round(record[k], 4) for k in ("val_acc", "test_acc") if record.get(k) is not None}
        print(f"done {key} {json.dumps(summary)} in {record['wall_seconds']:.0f} s", flush=True)


def launch(shares: list[list[str]], out: Path, smoke: bool) -> list[int]:
    """Start one worker per share and relay their lines (the notebooks show them); returns the exit codes."""
    env = {**os.environ, "HELPERS_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--out", str(out), *(["--smoke"] if smoke else []),
                               "--worker-keys", *keys], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for keys in shares if keys]
    selector = selectors.DefaultSelector()
    for proc in procs:
        selector.register(proc.stdout, selectors.EVENT_READ)
    open_streams, said = len(procs), set()
    while open_streams:
        for event, _ in selector.select():
            line = event.fileobj.readline()
            if line.startswith(f"{helpers.Unimplemented.__name__}: "):  # several workers meet the same stub: once
                if line in said:
                    continue
                said.add(line)
            if line:
                print(line, end="", flush=True)
            else:
                selector.unregister(event.fileobj)
                open_streams -= 1
    return [proc.wait() for proc in procs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run jobs whose key contains this (repeatable)")
    parser.add_argument("--notebook", type=int, choices=(3, 4), help="only the jobs behind this notebook")
    parser.add_argument("--out", type=Path, default=helpers.CHECKPOINT_DIR, help="where records and checkpoints go")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--force", action="store_true", help="redo jobs that already have a record")
    parser.add_argument("--list", action="store_true", help="print the jobs and exit")
    parser.add_argument("--smoke", action="store_true", help="1,000 reviews, seed 0, 1 epoch: checks the pipeline")
    parser.add_argument("--worker-keys", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.worker_keys is not None:
        worker(args.worker_keys, out, args.smoke)
        return 0
    jobs = [j for j in experiment_plan(args.smoke, out) if (not args.only or any(s in j["key"] for s in args.only))
            and (args.notebook is None or j["notebook"] == args.notebook or j["kind"] == "tfidf")]
    done = {j["key"] for j in jobs if reusable(j, out, args.smoke)}
    if args.list:
        for j in jobs:
            print(f"{j['key']:45s} cost {j['cost']:5.0f}  {'done' if j['key'] in done else ''}")
        return 0
    todo = [j for j in jobs if args.force or j["key"] not in done]
    shares = [[] for _ in range(max(min(args.workers, len(todo)), 1))]
    loads = [0.0] * len(shares)
    keys = {j["key"] for j in todo}
    units = [[j] + [r for r in todo if r.get("refit_of") == j["key"]] for j in todo  # a refit after its parent
             if not (j.get("refit_of") in keys)]
    for unit in sorted(units, key=lambda u: -sum(j["cost"] for j in u)):  # longest first, to the least loaded
        i = loads.index(min(loads))
        shares[i] += [j["key"] for j in unit]
        loads[i] += sum(j["cost"] for j in unit)
    print(f"{len(todo)} of {len(jobs)} jobs to run on {len(shares)} workers, records in {out}", flush=True)
    start = time.perf_counter()
    codes = launch(shares, out, args.smoke) if todo else []
    minutes = (time.perf_counter() - start) / 60
    if codes and set(codes) <= {0, UNIMPLEMENTED} and UNIMPLEMENTED in codes:
        return UNIMPLEMENTED  # the one line naming the missing part is above: nothing to add
    if any(codes):
        print(f"a worker failed (exit codes {codes}) after {minutes:.1f} min; the records written so far are kept "
              f"and a rerun continues with the missing jobs", file=sys.stderr)
        return 1
    print(f"all {len(jobs)} jobs have records in {out / 'runs'} (this run: {minutes:.1f} min wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

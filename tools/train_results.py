"""Retrain everything notebooks 03 and 04 report: the one recompute path.

    python tools/train_results.py                   # every job, one worker process per core (one torch thread each)
    python tools/train_results.py --list            # the jobs, their estimated cost, which are done
    python tools/train_results.py --only gru        # jobs whose key contains "gru"
    python tools/train_results.py --notebook 4      # the jobs behind one notebook (what RETRAIN=1 runs)
    python tools/train_results.py --smoke --out data/retrain-smoke   # tiny end-to-end check (1,000 reviews, 1 epoch)

Each job is one seeded training run (or the TF-IDF anchor). Its record is written to
<out>/runs/<key>.json as soon as it finishes (default out: checkpoints/), so an interrupted recompute
resumes with the missing jobs (`--force` redoes them); seed 0 of each named model is saved as
<out>/<name>.pt (trainable word vectors) or <out>/<name>_frozen.pt. `helpers.load_results(out)` reads
the records. Training uses one torch thread per worker: the same seed then gives the same numbers on
the same machine (reductions split over threads round differently). Notebook 03's TPE search is not a
job here: its objective is written in the notebook, which runs it with RETRAIN=1.

The workers print one line per epoch ("<key> | epoch ...") and one per finished job ("done <key> ...").
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import helpers  # noqa: E402

SEEDS = (0, 1, 2)
"""Every finding the notebooks state rests on these seeds; seed 0 is the committed checkpoint."""

COST = {"rnn": 5, "gru": 12, "sum": 1, "weighted": 1, "attn_sum": 4, "attn_weighted": 4}
"""Relative cost of one epoch, to give each worker an even share (longest jobs first)."""

RNN_ABLATION = {
    "frozen GloVe, default W_hh": ({"finetune": False, "emb_dropout": 0.0, "hh_init": "default"}, {}),
    "trainable, default W_hh": ({"hh_init": "default"}, {}),
    "trainable, no embedding dropout": ({"emb_dropout": 0.0}, {}),
    "trainable, lr 3e-3": ({}, {"lr": 3e-3}),
}
"""Notebook 03, section 4: the RNN recipe with one thing changed (seed 0); the named RNN and its frozen
twin (orthogonal W_hh) complete the table."""

LAYOUT_VARIANTS = {"attn_sum": {"layout": "residual"}, "attn_weighted": {"layout": "exercise"}}
"""Notebook 04, section 3: each attention model in its other layout."""

REGULARISATION_VARIANTS = {
    "weighted-nodropout": ("weighted", {"emb_dropout": 0.0}, {}),
    "weighted-decay": ("weighted", {}, {"emb_weight_decay": 1.0}),
}
"""Notebook 04, section 3: `weighted` without the embedding dropout, and with a decoupled weight decay of
1.0 on Δ (AdamW shrinks Δ by lr · 1.0 = 0.1 % per step, back towards GloVe)."""


def job(key: str, name: str, notebook: int, seed: int = 0, finetune: bool = True, config: dict | None = None,
        settings: dict | None = None, checkpoint: bool = False) -> dict:
    """One training run, with its complete config overrides and training settings spelled out."""
    base_config, base_settings = helpers.recipe(name, finetune)
    settings = {**base_settings, **(settings or {})}
    return {"key": key, "kind": "run", "name": name, "seed": seed, "notebook": notebook, "checkpoint": checkpoint,
            "finetune": finetune, "config": {**base_config, **(config or {})}, "settings": settings,
            "cost": COST[name] * settings["epochs"]}


def experiment_plan(smoke: bool = False) -> list[dict]:
    """The jobs behind notebooks 03 and 04. `smoke`: seed 0 of each group only, one epoch each."""
    jobs = []
    for name in helpers.MODEL_NAMES:
        for setting, finetune in (("trainable", True), ("frozen", False)):
            jobs += [job(f"{name}/{setting}/seed{seed}", name, 3 if name in ("rnn", "gru") else 4, seed, finetune,
                         checkpoint=seed == 0) for seed in SEEDS]
            if name in ("rnn", "gru"):  # notebook 03's question: does 128 over-fit where 64 does not?
                jobs += [job(f"{name}-64/{setting}/seed{seed}", name, 3, seed, finetune, {"hidden": 64})
                         for seed in SEEDS]
    for label, (config, settings) in RNN_ABLATION.items():
        jobs.append(job(f"rnn-ablation/{label}", "rnn", 3, 0, config.get("finetune", True), config, settings))
    for name, config in LAYOUT_VARIANTS.items():
        jobs += [job(f"{name}-variant/trainable/seed{seed}", name, 4, seed, config=config) for seed in SEEDS]
    for key, (name, config, settings) in REGULARISATION_VARIANTS.items():
        jobs += [job(f"{key}/trainable/seed{seed}", name, 4, seed, config=config, settings=settings) for seed in SEEDS]
    jobs.append({"key": "tfidf", "kind": "tfidf", "notebook": 3, "cost": 20})
    if smoke:
        jobs = [j for j in jobs if j.get("seed", 0) == 0]
        for j in jobs:
            if j["kind"] == "run":
                j["settings"]["epochs"] = 1
    return jobs


def run_job(job: dict, data: helpers.Imdb) -> tuple[dict, helpers.SentimentModel | None]:
    """Run one job; returns (record, trained model or None). One line per epoch, prefixed with the key."""
    if job["kind"] == "tfidf":
        return helpers.tfidf_baseline(data), None
    model, history = helpers.train_model(
        job["name"], data, seed=job["seed"], config=job["config"], progress=False, verbose=False,
        callback=lambda epoch, h: print(f"{job['key']} | {h.line(epoch)}", flush=True), **job["settings"])
    return helpers.run_record(model, history, data, job["seed"]), model


def worker(keys: list[str], out: Path, smoke: bool) -> None:
    import torch

    torch.set_num_threads(1)
    data = helpers.load_imdb(subset=1000 if smoke else None, verbose=False)
    jobs = {j["key"]: j for j in experiment_plan(smoke)}
    for key in keys:
        start = time.perf_counter()
        record, model = run_job(jobs[key], data)
        if jobs[key].get("checkpoint"):  # seed 0 of a named model
            helpers.save_checkpoint(model, helpers.checkpoint_path(jobs[key]["name"], jobs[key]["finetune"], out))
        record["job"] = {k: v for k, v in jobs[key].items() if k != "cost"}
        record["wall_seconds"] = time.perf_counter() - start
        record["created"] = time.strftime("%Y-%m-%d")
        helpers.save_json(record, helpers.record_path(out, key))
        summary = {k: round(record[k], 4) for k in ("val_acc", "test_acc") if k in record}
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
    open_streams = len(procs)
    while open_streams:
        for event, _ in selector.select():
            line = event.fileobj.readline()
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
    jobs = [j for j in experiment_plan(args.smoke) if (not args.only or any(s in j["key"] for s in args.only))
            and (args.notebook is None or j["notebook"] == args.notebook or j["kind"] == "tfidf")]
    done = {j["key"] for j in jobs if helpers.record_path(out, j["key"]).exists()}
    if args.list:
        for j in jobs:
            print(f"{j['key']:45s} cost {j['cost']:5.0f}  {'done' if j['key'] in done else ''}")
        return 0
    todo = [j for j in jobs if args.force or args.smoke or j["key"] not in done]
    shares = [[] for _ in range(max(min(args.workers, len(todo)), 1))]
    loads = [0.0] * len(shares)
    for j in sorted(todo, key=lambda j: -j["cost"]):  # longest first, to the least loaded worker
        i = loads.index(min(loads))
        shares[i].append(j["key"])
        loads[i] += j["cost"]
    print(f"{len(todo)} of {len(jobs)} jobs to run on {len(shares)} workers, records in {out}", flush=True)
    start = time.perf_counter()
    codes = launch(shares, out, args.smoke) if todo else []
    minutes = (time.perf_counter() - start) / 60
    if any(codes):
        print(f"a worker failed (exit codes {codes}) after {minutes:.1f} min; the records written so far are kept "
              f"and a rerun continues with the missing jobs", file=sys.stderr)
        return 1
    print(f"all {len(jobs)} jobs have records in {out / 'runs'} (this run: {minutes:.1f} min wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

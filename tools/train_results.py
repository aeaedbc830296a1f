"""Retrain everything notebooks 03 and 04 report, and write the committed results.

    python tools/train_results.py                 # every job, 2 worker processes (one torch thread each)
    python tools/train_results.py --list          # the jobs and their estimated cost
    python tools/train_results.py --only gru      # jobs whose key contains "gru"
    python tools/train_results.py --workers 1 --smoke   # a tiny end-to-end check (data subset, 1 epoch)

Each job is one seeded training run (or one TPE search, or the TF-IDF anchor). Its record is written
to data/runs/<key>.json as soon as it finishes, so an interrupted run resumes with the missing jobs
(`--force` redoes them). When every job has a record, they are merged into checkpoints/results.json,
and the seed-0 runs of each model are saved as checkpoints/<name>.pt (trainable word vectors) and
checkpoints/<name>_frozen.pt. Training uses one torch thread per worker: the same seed then gives
the same numbers on the same machine (reductions split over threads round differently).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import helpers  # noqa: E402

RUNS_DIR = helpers.DATA_DIR / "runs"


def record_path(key: str, smoke: bool = False) -> Path:
    return RUNS_DIR / ("smoke" if smoke else "") / (key.replace("/", "__") + ".json")


def worker(keys: list[str], smoke: bool) -> None:
    import torch

    torch.set_num_threads(1)
    data = helpers.load_imdb(subset=1000 if smoke else None, verbose=False)
    jobs = {job["key"]: job for job in helpers.experiment_plan()}
    # the studies go to helpers' study storage (data/optuna/ex2.db: `optuna-dashboard sqlite:///data/optuna/ex2.db`)
    storage = None if smoke else helpers.optuna_storage()
    for key in keys:
        start = time.perf_counter()
        job = jobs[key]
        smoke_sizes = {"search": {"n_trials": 2, "epochs": 1, "seeds": (0,)}, "epochs": 1} if smoke else {}
        record, model = helpers.run_job(job, data, storage=storage, **smoke_sizes)
        if job.get("checkpoint") and not smoke:  # seed 0 of a named model: the committed checkpoint
            helpers.save_checkpoint(model, helpers.checkpoint_path(job["name"], job["finetune"]), record)
        record["job"] = {k: v for k, v in job.items() if k != "cost"}
        record["wall_seconds"] = time.perf_counter() - start
        path = record_path(key, smoke)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)
        summary = {k: record[k] for k in ("val_acc", "test_acc", "best_epoch") if k in record}
        print(f"[{os.getpid()}] {key}: {json.dumps(summary)} in {record['wall_seconds']:.0f} s", flush=True)


def merge() -> Path:
    records = {}
    for job in helpers.experiment_plan():
        path = record_path(job["key"])
        if path.exists():
            records[job["key"]] = json.loads(path.read_text(encoding="utf-8"))
    payload = {"created": time.strftime("%Y-%m-%d"), "threads_per_run": 1, "seeds": list(helpers.EXPERIMENT_SEEDS),
               "tokenizer": helpers.TOKENIZER_VERSION, "runs": records}
    tmp = helpers.RESULTS_PATH.with_suffix(".part")
    tmp.write_text(json.dumps(payload, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, helpers.RESULTS_PATH)
    return helpers.RESULTS_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run jobs whose key contains this (repeatable)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="redo jobs that already have a record")
    parser.add_argument("--list", action="store_true", help="print the jobs and exit")
    parser.add_argument("--smoke", action="store_true", help="1,000 reviews, 1 epoch: checks the pipeline only")
    parser.add_argument("--worker-keys", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_keys is not None:
        worker(args.worker_keys, args.smoke)
        return 0
    jobs = [j for j in helpers.experiment_plan() if not args.only or any(s in j["key"] for s in args.only)]
    if args.list:
        for job in jobs:
            print(f"{job['key']:40s} cost {job['cost']:6.0f}  {'done' if record_path(job['key']).exists() else ''}")
        return 0
    todo = [j for j in jobs if args.force or args.smoke or not record_path(j["key"]).exists()]
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    shares = [[] for _ in range(max(args.workers, 1))]
    loads = [0.0] * len(shares)
    for job in sorted(todo, key=lambda j: -j["cost"]):  # longest first, to the least loaded worker
        i = loads.index(min(loads))
        shares[i].append(job["key"])
        loads[i] += job["cost"]
    print(f"{len(todo)} of {len(jobs)} jobs to run on {len(shares)} workers")
    env = {**os.environ, "HELPERS_PROGRESS": "0"}
    procs = [subprocess.Popen([sys.executable, __file__, *(["--smoke"] if args.smoke else []), "--worker-keys", *keys],
                              env=env) for keys in shares if keys]
    codes = [p.wait() for p in procs]
    if any(codes):
        print(f"a worker failed (exit codes {codes}); records written so far are kept", file=sys.stderr)
        return 1
    if args.smoke:
        print("smoke run: records in", RUNS_DIR, "(not merged)")
        return 0
    missing = [j["key"] for j in helpers.experiment_plan() if not record_path(j["key"]).exists()]
    if missing:
        print(f"{len(missing)} jobs still missing (e.g. {missing[0]}); results.json not written")
        return 0
    print("wrote", merge())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Retrain everything notebooks 03 and 04 report: the one recompute path.

    python -m tools.train_results                   # every job, one worker process per core (one torch thread each)
    python -m tools.train_results --list            # the jobs, their estimated cost, which are done
    python -m tools.train_results --add-correctness # redo the records that keep no per-review correctness
    python -m tools.train_results --only gru        # jobs whose key contains "gru"
    python -m tools.train_results --notebook 4      # the jobs behind one notebook (what RETRAIN=1 runs)
    python -m tools.train_results --smoke --out data/retrain-smoke   # tiny end-to-end check (1,000 reviews, 1 epoch)

Each job is one seeded training run (or the TF-IDF anchor). Its record is written to
<out>/runs/<key>.json as soon as it finishes (default out: checkpoints/), so an interrupted recompute
resumes with the missing jobs, and a job whose recipe changed is due again (`--force` redoes them all; a `--smoke`
run also redoes the jobs whose record other code made, see `reusable`); seed 0 of each named model is saved as
<out>/<name>.pt (trainable word vectors) or <out>/<name>_frozen.pt. `experiments.load_results(out)` reads
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

import torch

import experiments
import helpers

ROOT = Path(__file__).resolve().parent.parent

def run_job(job: dict, data: helpers.Imdb, out: Path) -> tuple[dict, helpers.SentimentModel | None]:
    """Run one job; returns (record, trained model or None). One line per epoch, prefixed with the key."""
    if job["kind"] == "tfidf":
        return experiments.tfidf_baseline(data), None
    settings = dict(job["settings"])
    if job["refit_of"]:
        parent = experiments.record_path(out, job["refit_of"])
        if not parent.exists():
            raise RuntimeError(f"{job['key']} refits {job['refit_of']}, which has no record in {out}: run it first")
        best = helpers.load_json(parent, "the refit's parent record", "rerun tools/train_results.py")["best_epoch"]
        data = dataclasses.replace(data, train=data.train.concat(data.val))  # validation is no longer held out
        settings = {**settings, "epochs": best, "patience": None}
    model, history = helpers.train_model(
        job["name"], data, seed=job["seed"], config=job["config"], progress=False, verbose=False,
        callback=lambda epoch, h: print(f"{job['key']} | {h.line(epoch)}", flush=True), **settings)
    record = experiments.run_record(model, history, data, job["seed"])
    if job["refit_of"]:
        record["val_acc"] = None  # validation was trained on: no held-out estimate, and no per-review flags for it
        record.get("correct", {}).pop("val", None)
    return record, model


UNIMPLEMENTED = 3
"""A worker's exit code when a job met a part of the exercise that is still a stub (it printed the one line)."""


def code_fingerprint() -> str:
    """What trained a record: a digest of helpers.py (the models, the data, the training loop), experiments.py (the
    plan) and this file (the workers). A quick run (`--smoke`) reuses a record only when it was made by the same code."""
    digest = hashlib.sha256()
    for path in (Path(helpers.__file__), Path(experiments.__file__), Path(__file__)):
        digest.update(path.resolve().read_bytes())
    return digest.hexdigest()[:16]


def _as_recorded(job: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in job.items() if k != "cost"}))  # the JSON the record keeps


def reusable(job: dict, out: Path, smoke: bool) -> bool:
    """Whether `job`'s record in `out` stands: one made for the same job (the same model and complete config, as
    DEFAULT_CONFIGS and the job's overrides give it, the same settings, seed and inputs; a change of a recipe or of
    DEFAULT_CONFIGS makes the jobs it touches due again, and a rerun continues with the missing ones); in a quick run, also made by the same code (`code_fingerprint`), so that a quick run
    after an edit of helpers.py trains the edited code again."""
    path = experiments.record_path(out, job["key"])
    if not path.exists():
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    recorded, wanted = dict(record.get("job") or {}), _as_recorded(job)
    recorded.pop("notebook", None), wanted.pop("notebook", None)  # which notebook shows a run does not change it
    if job["kind"] == "run":  # the model it trained, whether the plan spells a setting out or takes the default
        recorded.pop("config", None)
        made = experiments.full_config(job["name"], record.get("config"), named=False)
        if made != experiments.full_config(job["name"], wanted.pop("config")):
            return False
    if recorded != wanted:
        return False
    return not smoke or record.get("code") == code_fingerprint()


def lacks_correctness(job: dict, out: Path) -> bool:
    """Whether `job` is a training run whose record in `out` keeps no per-review correctness (`correct`)."""
    path = experiments.record_path(out, job["key"])
    return job["kind"] == "run" and path.exists() and "correct" not in json.loads(path.read_text(encoding="utf-8"))


def worker(keys: list[str], out: Path, smoke: bool) -> None:
    torch.set_num_threads(1)
    code = code_fingerprint()
    datasets: dict[str, helpers.Imdb] = {}
    jobs = {j["key"]: j for j in experiments.experiment_plan(smoke, out)}
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
        helpers.save_json(record, experiments.record_path(out, key))
        summary = {k: round(record[k], 4) for k in ("val_acc", "test_acc") if record.get(k) is not None}
        print(f"done {key} {json.dumps(summary)} in {record['wall_seconds']:.0f} s", flush=True)


def launch(shares: list[list[str]], out: Path, smoke: bool) -> list[int]:
    """Start one worker per share and relay their lines (the notebooks show them); returns the exit codes."""
    env = {**os.environ, "HELPERS_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tools.train_results", "--out", str(out),
                               *(["--smoke"] if smoke else []), "--worker-keys", *keys], cwd=ROOT, env=env, stdout=subprocess.PIPE,
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
    parser.add_argument("--add-correctness", action="store_true", help="redo the run records that keep no per-review "
                        "correctness (written before it was kept), so that their comparisons count the reviews' noise")
    parser.add_argument("--list", action="store_true", help="print the jobs and exit")
    parser.add_argument("--smoke", action="store_true", help="1,000 reviews, seed 0, 1 epoch: checks the pipeline")
    parser.add_argument("--worker-keys", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.worker_keys is not None:
        worker(args.worker_keys, out, args.smoke)
        return 0
    jobs = [j for j in experiments.experiment_plan(args.smoke, out) if (not args.only or any(s in j["key"] for s in args.only))
            and (args.notebook is None or j["notebook"] == args.notebook or j["kind"] == "tfidf")]
    done = {j["key"] for j in jobs if reusable(j, out, args.smoke) and not (args.add_correctness and lacks_correctness(j, out))}
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

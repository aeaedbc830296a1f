"""Retrain everything notebooks 03 and 04 report: the one recompute path.

    python -m experiments.recompute                    # every job, one worker process per core (one torch thread each)
    python -m experiments.recompute --list             # the jobs, their estimated cost, which are done
    python -m experiments.recompute --add-correctness  # redo the records that keep no per-review correctness
    python -m experiments.recompute --only gru         # jobs whose key contains "gru"
    python -m experiments.recompute --notebook 4       # the jobs behind one notebook (what RUN_MODE=full runs)
    python -m experiments.recompute --smoke --out data/retrain-smoke   # tiny end-to-end check (1,000 reviews, 1 epoch)

Each job is one seeded training run (or the TF-IDF anchor). Its record is written to <out>/runs/<key>.json as soon
as it finishes (default out: checkpoints/), so an interrupted recompute resumes with the missing jobs, and a job
whose recipe changed is due again (`--force` redoes them all; a `--smoke` run also redoes the jobs whose record
other code made, see `reusable`); seed 0 of each named model is saved as <out>/<name>.pt (trainable word vectors) or
<out>/<name>_frozen.pt. `experiments.Results.load(out)` reads the records. Training uses one torch thread per
worker: the same seed then gives the same numbers on the same machine (reductions split over threads round
differently). Notebook 03's TPE search is not a job here: its objective is written in the notebook, which runs it
with RUN_MODE=full. The workers print one line per epoch ("<key> | epoch ...") and one per finished job
("done <key> ..."). A notebook starts this module with `rerun`; a section that needs one model gets it from
`load_or_train`; `check_exercises` stops either with one line where a part of the exercise is still a stub.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import inspect
import io
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch

import helpers
from ex2 import layers, runtime
from ex2.checkpoints import as_stored, checkpoint_path, load_checkpoint, save_checkpoint
from ex2.data import Imdb
from ex2.models import check_name
from ex2.training import student_recipe
from experiments import plan, records

MODULE = __spec__.name if __spec__ is not None else __name__
"""This module's import name (`python -m` it to start a worker or the whole recompute)."""

UNIMPLEMENTED = 3
"""A worker's exit code when a job met a part of the exercise that is still a stub (it printed the one line)."""


# --- the exercise's parts, checked before any training ---

def _check_cells(names: set[str]) -> list:
    recurrent = [cell for name, cell in (("rnn", helpers.RNNCell), ("gru", helpers.GRUCell)) if name in names]
    x, h = torch.randn(1, 6), torch.randn(1, 2)
    checks = [lambda c=cell: c.update(x[:, : 2 * c.blocks], x[:, : 2 * c.blocks], h) for cell in recurrent]
    checks += [lambda c=cell: c.update_backward(h, h, c.update(x[:, : 2 * c.blocks], x[:, : 2 * c.blocks], h)[1])
               for cell in recurrent]
    if recurrent:
        def bptt(cell=recurrent[0](3, 2)):
            seq = torch.randn(1, 3, 3, requires_grad=True)
            helpers.run_cell(cell, seq, manual_bptt=True).sum().backward()
        checks.append(bptt)
    return checks


def check_exercises(names: Iterable[str]) -> None:
    """Run each part of the exercise that models `names` need once on a tiny input, in the order the student README
    lists them (RNNCell.update, GRUCell.update, the two update_backward, RecurrentBPTT.backward, pool_token_scores,
    SelfAttention.forward): the first that is still a stub raises its one-line `Unimplemented`, before any training
    starts. Other errors (a wrong shape) are left to the training that follows."""
    names = set(names)
    token = names & {"sum", "weighted", "attn_sum", "attn_weighted"}
    checks = _check_cells(names)
    mask = torch.ones(1, 3, dtype=torch.bool)
    if token:
        checks.append(lambda: helpers.pool_token_scores(torch.randn(1, 3, 2), mask, True))
    if token & {"attn_sum", "attn_weighted"}:
        checks.append(lambda: helpers.SelfAttention(4, window=1)(torch.randn(1, 3, 4), mask))
    for check in checks:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                check()
        except layers.Unimplemented as exc:
            raise layers.Unimplemented(str(exc)) from None  # one line, no chain
        except Exception:  # noqa: BLE001 - written, if not yet right: the training shows how
            pass


# --- one model for a notebook's section ---

EXERCISE_PARTS = {"rnn": ("RNNCell", "RecurrentBPTT", "run_cell"), "gru": ("GRUCell", "RecurrentBPTT", "run_cell"),
                  "sum": ("pool_token_scores",), "weighted": ("pool_token_scores",),
                  "attn_sum": ("pool_token_scores", "SelfAttention"),
                  "attn_weighted": ("pool_token_scores", "SelfAttention")}
"""The parts of the student's code each model runs: the student run's cache is keyed on their source."""

NOTEBOOK_MODELS = {3: ("rnn", "gru", "attn_weighted"), 4: ("sum", "weighted", "attn_sum", "attn_weighted", "gru")}
"""The models each IMDB notebook needs: notebook 03's plan includes `attn_weighted` for the tokenizer check of its
"Going further: the inputs", and notebook 04 also loads notebook 03's GRU (`load_or_train`). `rerun` checks their
parts first, and only theirs (a test keeps this equal to the plan and the notebook's code)."""

STUDENT_MODELS = {3: (("rnn", True), ("rnn", False), ("gru", True), ("gru", False)),
                  4: (("sum", True), ("weighted", True), ("attn_sum", True), ("attn_weighted", True))}
"""The (name, trainable vectors) models each IMDB notebook's sections train in the student run (`load_or_train`),
seed 0: notebook 03's sections 4 and 7, notebook 04's figures (a benchmark of the reference times them)."""


def student_key(name: str, config: dict, settings: dict, data: Imdb) -> str:
    """8 hex digits naming a student-run model: the source of the parts it runs (EXERCISE_PARTS), its full config,
    its settings and the data (tokenizer, split, sizes). Any change to them names another file, so a stale model is
    never loaded."""
    parts = [inspect.getsource(getattr(helpers, part)) for part in EXERCISE_PARTS[check_name(name)]]
    what = repr((parts, sorted(plan.full_config(name, config).items()), sorted(settings.items()), data.tokenizer,
                 data.split, data.max_len, len(data.train), len(data.val), len(data.test)))
    return hashlib.sha256(what.encode()).hexdigest()[:8]


def load_or_train(name: str, data: Imdb, trainable: bool = True,
                  folder: str | Path | None = None) -> helpers.SentimentModel:
    """The seed-0 model `name` (trainable word vectors; `trainable=False`: frozen GloVe) that a section of notebook 03
    or 04 needs, trained or loaded when the section gets there, as the run mode says:

    - "student": trained on `data` (the full training split) with `student_recipe` (the recipe, at most
      `STUDENT_EPOCHS[name]` epochs, seed 0) and cached in data/student-run/<name>[_frozen]-<key>.pt, where
      <key> hashes the source of the exercise parts the model runs, the recipe and the data: a rerun loads it, and
      a changed part of your code trains it again;
    - "smoke": one epoch on `data` (the test command's 1,000-review subset), never saved;
    - "course" / "full": the checkpoint `<folder>/<name>[_frozen].pt` (folder: `records.results_folder()`, the
      committed checkpoints/ or data/retrain/), else trained with the full recipe (`helpers.recipe`) and saved there.

    In every mode a checkpoint already in an explicitly given `folder` is loaded. Before any training, a part of
    the exercise the model needs that is still a stub stops with its one line (`check_exercises`).
    `model.info.record` holds the model's run record (validation and test accuracy on `data`)."""
    mode = runtime.RunMode.from_environment().name
    if folder is not None or mode in ("course", "full"):
        path = checkpoint_path(name, trainable, folder or records.results_folder())
        if path.exists():
            return load_checkpoint(path)
        if mode in ("course", "full"):
            return _train(name, data, *helpers.recipe(name, trainable), path)
    config, settings = student_recipe(name, trainable)
    if mode == "smoke":
        return _train(name, data, config, {**settings, "epochs": 1}, None)
    key = student_key(name, config, settings, data)
    path = records.STUDENT_RUN / f"{checkpoint_path(name, trainable).stem}-{key}.pt"
    if path.exists():
        return load_checkpoint(path)
    return _train(name, data, config, settings, path)


def _train(name, data, config, settings, path):
    """Train `name` (seed 0) after checking its parts, keep its run record, and save it to `path` (None: not)."""
    check_exercises([name])
    model, history = helpers.train_model(name, data, seed=0, config=config, **settings)
    if path is not None:  # measured as saved, so that a rerun, which loads the checkpoint, prints the same
        as_stored(model)
    records.run_record(model, history, data, seed=0)
    if path is not None:
        save_checkpoint(model, path)
    return model


# --- the notebooks' launcher ---

def rerun(notebook: int, out: str | Path, smoke: bool = False) -> None:
    """Retrain the jobs behind `notebook` into `out` with this module (one worker per core, resumable: a rerun
    continues with the missing jobs), relaying its lines (paths relative to the repository root), with a bar over
    the jobs. A part of the exercise the jobs need that is still a stub stops it first, with one line
    (`check_exercises`)."""
    check_exercises(NOTEBOOK_MODELS.get(notebook, helpers.MODEL_NAMES))
    command = [sys.executable, "-m", MODULE, "--notebook", str(notebook), "--out", str(Path(out).resolve()),
               *(["--smoke"] if smoke else [])]
    unimplemented, root = None, f"{runtime.ROOT}{os.sep}"
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=runtime.ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        first = proc.stdout.readline().replace(root, "")
        print(first, end="")
        total = int(first.split()[0]) if first[:1].isdigit() else None
        with runtime.progress_bar(total=total, desc="jobs", unit="job") as bar:
            for line in proc.stdout:
                if line.startswith(f"{layers.Unimplemented.__name__}: "):  # a worker met a stub: that line alone
                    unimplemented = line.split(": ", 1)[1].strip()
                    continue
                print(line.replace(root, ""), end="", flush=True)
                bar.update(line.startswith("done "))
    if unimplemented:
        raise layers.Unimplemented(unimplemented)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command[1:])} failed (exit code {proc.returncode}); its last lines are "
                           f"above. The finished jobs are kept in {helpers.relative(out)}: rerun to continue.")


# --- the workers ---

def run_job(job: dict, data: Imdb,
            out: Path) -> tuple[records.RunRecord | records.AnchorRecord, helpers.SentimentModel | None]:
    """Run one job; returns (its record, the trained model or None). One line per epoch, prefixed with the key."""
    if job["kind"] == "tfidf":
        return records.AnchorRecord(**plan.tfidf_baseline(data)), None
    settings = dict(job["settings"])
    if job["refit_of"]:
        parent = plan.record_path(out, job["refit_of"])
        if not parent.exists():
            raise RuntimeError(f"{job['key']} refits {job['refit_of']}, which has no record in {out}: run it first")
        best = runtime.load_json(parent, "the refit's parent record", f"python -m {MODULE}")["best_epoch"]
        data = dataclasses.replace(data, train=data.train.concat(data.val))  # validation is no longer held out
        settings = {**settings, "epochs": best, "patience": None}
    model, history = helpers.train_model(
        job["name"], data, seed=job["seed"], config=job["config"], progress=False, verbose=False,
        callback=lambda epoch, h: print(f"{job['key']} | {h.line(epoch)}", flush=True), **settings)
    record = records.run_record(model, history, data, job["seed"])
    if job["refit_of"]:  # validation was trained on: no held-out estimate, and no per-review flags for it
        record = dataclasses.replace(record, val_acc=None, correct={"test": record.correct["test"]})
    return record, model


def code_fingerprint() -> str:
    """What trained a record: a digest of the models, the data and the training loop (helpers.py and the modules
    beside it) and of this package (the plan, the records, the workers). A quick run (`--smoke`) reuses a record
    only when it was made by the same code."""
    root = Path(helpers.__file__).resolve().parent
    paths = [root / "helpers.py", *sorted((root / "ex2").glob("*.py")), *sorted(Path(__file__).parent.glob("*.py"))]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.resolve().read_bytes())
    return digest.hexdigest()[:16]


def _as_recorded(job: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in job.items() if k != "cost"}))  # the JSON the record keeps


def reusable(job: dict, out: Path, smoke: bool) -> bool:
    """Whether `job`'s record in `out` stands: one made for the same job (the same model and complete config, as
    DEFAULT_CONFIGS and the job's overrides give it, the same settings, seed and inputs; a change of a recipe or of
    DEFAULT_CONFIGS makes the jobs it touches due again, and a rerun continues with the missing ones); in a quick
    run, also made by the same code (`code_fingerprint`), so that a quick run after an edit trains the edited code
    again."""
    path = plan.record_path(out, job["key"])
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
        made = plan.full_config(job["name"], record.get("config"), named=False)
        if made != plan.full_config(job["name"], wanted.pop("config")):
            return False
    if recorded != wanted:
        return False
    return not smoke or record.get("code") == code_fingerprint()


def lacks_correctness(job: dict, out: Path) -> bool:
    """Whether `job` is a training run whose record in `out` keeps no per-review correctness (`correct`)."""
    path = plan.record_path(out, job["key"])
    return job["kind"] == "run" and path.exists() and "correct" not in json.loads(path.read_text(encoding="utf-8"))


def worker(keys: list[str], out: Path, smoke: bool) -> None:
    """Run the jobs `keys` one after the other, writing each record (and seed 0's checkpoint) as it finishes."""
    torch.set_num_threads(1)
    code, datasets = code_fingerprint(), {}
    jobs = {j["key"]: j for j in plan.experiment_plan(smoke, out)}
    for key in keys:
        start, version = time.perf_counter(), jobs[key]["tokenizer"]
        if version not in datasets:
            datasets[version] = helpers.load_imdb(subset=1000 if smoke else None, verbose=False, tokenizer=version)
        try:
            record, model = run_job(jobs[key], datasets[version], out)
        except layers.Unimplemented as exc:  # a stub of the student release: its one line, no traceback
            print(f"{type(exc).__name__}: {exc}", flush=True)
            sys.exit(UNIMPLEMENTED)
        if jobs[key].get("checkpoint"):  # seed 0 of a named model
            save_checkpoint(model, checkpoint_path(jobs[key]["name"], jobs[key]["trainable"], out))
        record = dataclasses.replace(record, job=_as_recorded(jobs[key]), code=code, created=time.strftime("%Y-%m-%d"),
                                     wall_seconds=time.perf_counter() - start)
        records.save(record, out)
        summary = {k: round(v, 4) for k in ("val_acc", "test_acc") if (v := getattr(record, k)) is not None}
        print(f"done {key} {json.dumps(summary)} in {record.wall_seconds:.0f} s", flush=True)


def launch(shares: list[list[str]], out: Path, smoke: bool) -> list[int]:
    """Start one worker per share and relay their lines (the notebooks show them); returns the exit codes."""
    env = {**os.environ, "HELPERS_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", MODULE, "--out", str(out), *(["--smoke"] if smoke else []),
                               "--worker-keys", *keys], cwd=runtime.ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for keys in shares if keys]
    selector = selectors.DefaultSelector()
    for proc in procs:
        selector.register(proc.stdout, selectors.EVENT_READ)
    open_streams, said = len(procs), set()
    while open_streams:
        for event, _ in selector.select():
            line = event.fileobj.readline()
            if line.startswith(f"{layers.Unimplemented.__name__}: "):  # several workers meet the same stub: once
                if line in said:
                    continue
                said.add(line)
            if line:
                print(line, end="", flush=True)
            else:
                selector.unregister(event.fileobj)
                open_streams -= 1
    return [proc.wait() for proc in procs]


def share(todo: list[dict], workers: int) -> list[list[str]]:
    """The jobs' keys split over `workers` by estimated cost, longest first, to the least loaded; a refit goes
    right after its parent, to the same worker."""
    shares = [[] for _ in range(max(min(workers, len(todo)), 1))]
    loads, keys = [0.0] * len(shares), {j["key"] for j in todo}
    units = [[j] + [r for r in todo if r.get("refit_of") == j["key"]] for j in todo if j.get("refit_of") not in keys]
    for unit in sorted(units, key=lambda u: -sum(j["cost"] for j in u)):
        i = loads.index(min(loads))
        shares[i] += [j["key"] for j in unit]
        loads[i] += sum(j["cost"] for j in unit)
    return shares


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run jobs whose key contains this (repeatable)")
    parser.add_argument("--notebook", type=int, choices=(3, 4), help="only the jobs behind this notebook")
    parser.add_argument("--out", type=Path, default=runtime.CHECKPOINT_DIR, help="where records and checkpoints go")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--force", action="store_true", help="redo jobs that already have a record")
    parser.add_argument("--add-correctness", action="store_true", help="redo the run records that keep no per-review "
                        "correctness (written before it was kept), so that their comparisons count the reviews' noise")
    parser.add_argument("--list", action="store_true", help="print the jobs and exit")
    parser.add_argument("--smoke", action="store_true", help="1,000 reviews, seed 0, 1 epoch: checks the pipeline")
    parser.add_argument("--worker-keys", nargs="*", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    out = args.out.resolve()
    if args.worker_keys is not None:
        worker(args.worker_keys, out, args.smoke)
        return 0
    jobs = [j for j in plan.experiment_plan(args.smoke, out) if (not args.only or any(s in j["key"] for s in args.only))
            and (args.notebook is None or j["notebook"] == args.notebook or j["kind"] == "tfidf")]
    done = {j["key"] for j in jobs if reusable(j, out, args.smoke)
            and not (args.add_correctness and lacks_correctness(j, out))}
    if args.list:
        for j in jobs:
            print(f"{j['key']:45s} cost {j['cost']:5.0f}  {'done' if j['key'] in done else ''}")
        return 0
    todo = [j for j in jobs if args.force or j["key"] not in done]
    shares = share(todo, args.workers)
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

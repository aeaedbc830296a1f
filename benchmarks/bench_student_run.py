"""The student run, timed: `python benchmarks/bench_student_run.py` trains, for notebooks 03 and 04, each model its
sections need in the student run (`experiments.STUDENT_MODELS`), exactly as the notebooks do
(`experiments.load_or_train` with RUN_MODE=student: the full training split, `student_recipe`, seed 0,
one torch thread as the notebooks set), into a temporary folder (so nothing is loaded from an earlier run), and
prints one row per model: section, model, epochs run (of the cap), best validation and test accuracy, wall time
and CPU time (one thread: on an idle core the wall time would be about the CPU time, so it is the number that does
not depend on what else the machine runs); then the totals per notebook, the load average before and after, and
the job count (CPU cores).

    python benchmarks/bench_student_run.py              # both notebooks
    python benchmarks/bench_student_run.py --notebook 3 # one
    python benchmarks/bench_student_run.py --keep       # train into data/student-run/ (the notebooks then load them)

Target: every model a graded figure uses reaches 75 % test accuracy (the RNN with frozen vectors is the exception
notebook 03, section 4 is about), within about 10 minutes per notebook on 2 cores.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import experiments
import helpers
from ex2.training import STUDENT_EPOCHS

SECTIONS = {("rnn", True): "03 §4 gradient reach, §7", ("rnn", False): "03 §4 gradient reach",
            ("gru", True): "03 §4, §7 running prediction", ("gru", False): "03 §4 gradient reach",
            ("sum", True): "04", ("weighted", True): "04", ("attn_sum", True): "04", ("attn_weighted", True): "04"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", type=int, choices=sorted(experiments.STUDENT_MODELS), action="append")
    parser.add_argument("--keep", action="store_true",
                        help="train into data/student-run/ (a cached model of the same key is trained again)")
    args = parser.parse_args(argv)
    os.environ["RUN_MODE"] = "student"
    os.environ["HELPERS_PROGRESS"] = "0"
    torch.set_num_threads(1)  # as notebooks 03 and 04 set it
    load_before = os.getloadavg()
    start = time.perf_counter()
    data = helpers.load_imdb(verbose=False)
    print(f"data loaded in {time.perf_counter() - start:.1f} s: {len(data.train):,} / {len(data.val):,} / "
          f"{len(data.test):,} reviews; load average before {load_before[0]:.2f}; {os.cpu_count()} CPU cores; "
          "one torch thread, one model at a time")
    rows, totals = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep:
            for old in experiments.records.STUDENT_RUN.glob("*.pt"):
                old.unlink()  # trained again, not loaded
        else:
            experiments.records.STUDENT_RUN = Path(tmp)  # where load_or_train caches
        for notebook in args.notebook or sorted(experiments.STUDENT_MODELS):
            for name, trainable in experiments.STUDENT_MODELS[notebook]:
                t0, c0 = time.perf_counter(), time.process_time()
                model = experiments.load_or_train(name, data, trainable=trainable)
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                record = model.info.record
                wall, used = totals.get(notebook, (0.0, 0.0))
                totals[notebook] = (wall + seconds, used + cpu)
                rows.append((SECTIONS.get((name, trainable), f"0{notebook}"),
                             f"{name} {'trainable' if trainable else 'frozen'}",
                             f"{record['epochs_run']} of {STUDENT_EPOCHS[name]} (best {record['best_epoch']})",
                             f"{100 * record['val_acc']:.1f} %", f"{100 * record['test_acc']:.1f} %",
                             f"{seconds:.0f} s", f"{cpu:.0f} s"))
                print(" | ".join(rows[-1]), flush=True)
    print_table(rows, totals)
    load_after = os.getloadavg()
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} (5 min: {load_after[1]:.2f});"
          f" {os.cpu_count()} CPU cores; wall time in all {(time.perf_counter() - start) / 60:.1f} min")


def print_table(rows: list[tuple], totals: dict) -> None:
    """The Markdown table: one row per model, then each notebook's total wall and CPU time."""
    print()
    print("| section | model | epochs run | val acc | test acc | wall time | CPU time |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for notebook, (seconds, cpu) in totals.items():
        print(f"| notebook 0{notebook} | total | | | | {seconds / 60:.1f} min | {cpu / 60:.1f} min |")


if __name__ == "__main__":
    main()

"""Model benchmark: `python benchmarks/bench_models.py` prints two tables and one line, measured in one run.

1. Accuracy (IMDB test set, first 100 tokens): mean ± sample std over the seeds of checkpoints/runs/ for
   the six models with trainable and with frozen word vectors; the seed-0 checkpoint re-evaluated here (it
   must match its record); the TF-IDF (1-2-gram) + logistic-regression anchor fitted in this run.
2. Seconds per training epoch on this machine: frozen vectors, trainable vectors without and with the
   recipe's embedding dropout (target: trainable <= 1.3x frozen): the time of 40 training steps
   (`helpers.train_step` with `helpers.make_optimizer`, exactly what training runs, at the recipe's batch
   size) after one warm-up step, scaled to the 20,000-review epoch; on the device
   `helpers.get_device()` picks ($DEVICE overrides).
3. The hand-written GRU (hand-written BPTT) against torch.nn.GRU: forward + backward of one batch at the same
   shapes (batch 128, 100 steps, 50 -> 128), median of repeats. Target: <= 1.5x.

Run it on a quiet machine: the timings are wall-clock. `--threads N` sets torch's CPU threads (default 2).
"""
import argparse
import statistics
import time

import numpy as np
import torch

import experiments
import helpers
from ex2.checkpoints import checkpoint_path, load_checkpoint
from ex2.data import Imdb, batches

BATCHES = 40


def epoch_seconds(name: str, trainable: bool, data: Imdb, device: torch.device, **overrides) -> float:
    config, settings = helpers.recipe(name, trainable)
    model = helpers.make_model(name, seed=0, **{**config, **overrides}).to(device)
    if model.trainable:
        model.adapt_rows(helpers.training_vocabulary(data.train, model.min_count))
    optimizer = helpers.make_optimizer(model, settings["lr"], settings.get("emb_weight_decay", 0.0))
    generator = torch.Generator().manual_seed(0)
    model.train()
    batch_size = settings["batch_size"]
    times = []
    for i, batch in enumerate(batches(data.train, batch_size, shuffle=True, generator=generator,
                                              device=device)):
        if i > BATCHES:
            break
        start = time.perf_counter()
        helpers.train_step(model, optimizer, *batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # step 0 warms up
            times.append(time.perf_counter() - start)
    return float(np.sum(times)) * len(data.train) / (len(times) * batch_size)


def gru_step_ratio(batch=128, steps=100, hidden=128, repeats=15) -> tuple[float, float]:
    torch.manual_seed(0)
    x = torch.randn(batch, steps, 50)
    ours, theirs = helpers.GRUCell(50, hidden), torch.nn.GRU(50, hidden, batch_first=True)

    def time_it(fn):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return (time_it(lambda: helpers.run_cell(ours, x).sum().backward()),
            time_it(lambda: theirs(x)[1].sum().backward()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = helpers.get_device()
    data = helpers.load_imdb(verbose=False)
    accuracy_table(data, experiments.Results.load())
    epoch_table(data, device)
    ours, theirs = gru_step_ratio()
    ratio = ours / theirs
    print(f"\nGRU batch step (128 x 100 x 50 -> 128, forward + backward, CPU, {torch.get_num_threads()} threads): "
          f"hand-written {ours * 1e3:.0f} ms, torch.nn.GRU {theirs * 1e3:.0f} ms, "
          f"ratio {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")


def accuracy_table(data, results) -> None:
    """Each model's validation and test accuracy over the recorded seeds, its seed-0 checkpoint re-evaluated, and
    the TF-IDF anchor fitted here."""
    start = time.perf_counter()
    anchor = experiments.tfidf_baseline(data)
    anchor_seconds = time.perf_counter() - start

    seeds = sorted({r.seed for r in results.group("gru", "trainable")})
    print(f"## Accuracy (IMDB test set, first 100 tokens; mean ± sample std over seeds {seeds})\n")
    print("| model | vectors | parameters | val acc | test acc | val − test | seed-0 checkpoint, re-evaluated |")
    print("|---|---|---|---|---|---|---|")
    for name in helpers.MODEL_NAMES:
        for setting, trainable in (("trainable", True), ("frozen", False)):
            records = results.group(name, setting)
            val, val_sd = experiments.mean_std([r.val_acc for r in records])
            test, test_sd = experiments.mean_std([r.test_acc for r in records])
            model = load_checkpoint(checkpoint_path(name, trainable))
            again = helpers.evaluate(model, data.test)["acc"]
            print(f"| {name} | {setting} | {records[0].parameters:,} | {val:.2%} ± {val_sd:.2%} | "
                  f"**{test:.2%} ± {test_sd:.2%}** | {val - test:+.2%} | {again:.2%} "
                  f"(record {records[0].test_acc:.2%}) |")
    print(f"| TF-IDF 1-2-grams + LR | – | – | {anchor['val_acc']:.2%} | **{anchor['test_acc']:.2%}** | "
          f"{anchor['val_acc'] - anchor['test_acc']:+.2%} | fitted here in {anchor_seconds:.0f} s |")


def epoch_table(data, device) -> None:
    """Seconds per training epoch of each model: frozen, trainable without and with the embedding dropout."""
    print(f"\n## Seconds per training epoch (20,000 reviews, the recipe's batch size, {device}, "
          f"{torch.get_num_threads() if device.type == 'cpu' else '-'} CPU threads)\n")
    print("| model | frozen | trainable vectors, no dropout | ratio (target <= 1.3) "
          "| trainable + embedding dropout 0.3 (the recipe) | ratio |")
    print("|---|---|---|---|---|---|")
    for name in helpers.MODEL_NAMES:
        frozen = epoch_seconds(name, False, data, device)
        bare = epoch_seconds(name, True, data, device, emb_dropout=0.0)
        trainable = epoch_seconds(name, True, data, device)
        ratio = bare / frozen
        print(f"| {name} | {frozen:.1f} | {bare:.1f} | {ratio:.2f} ({'met' if ratio <= 1.3 else 'NOT met'}) | "
              f"{trainable:.1f} | {trainable / frozen:.2f} |")
    if device.type == "cpu":
        print("\nGPU: this run used the CPU; `DEVICE=cuda python benchmarks/bench_models.py` measures a GPU.")


if __name__ == "__main__":
    main()

"""Model benchmark: `python benchmarks/bench_models.py` prints one table, measured in one run.

- test accuracy of the six committed checkpoints on the full IMDB test set (first 100 tokens),
  beside the TF-IDF (1-2-gram) + logistic-regression anchor on the same inputs (needs scikit-learn);
- seconds per training epoch of each model (one real epoch over the 20,000 training reviews at the
  batch size the notebooks use, from a fresh model);
- the hand-written GRU (hand-written BPTT) against torch.nn.GRU: forward + backward of one batch at
  the same shapes (batch 128, 100 steps, 50 -> the GRU's hidden size), median of repeats. Target: <= 1.5x.
Run it on a quiet machine: the timings are wall-clock.
"""
import statistics
import time

import torch

import helpers


def epoch_seconds(name: str, data: helpers.Imdb, batch_size: int) -> float:
    model = helpers.make_model(name, seed=0, **helpers.load_pretrained(name).config)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for ids, lengths, labels in helpers.batches(data.train, batch_size, shuffle=True, generator=generator):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(ids, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def gru_step_ratio(batch=128, steps=100, hidden=helpers.DEFAULT_CONFIGS["gru"]["hidden"], repeats=15) -> tuple[float, float]:
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

    t_ours = time_it(lambda: helpers.run_cell(ours, x).sum().backward())
    t_theirs = time_it(lambda: theirs(x)[1].sum().backward())
    return t_ours, t_theirs


def main() -> None:
    torch.set_num_threads(2)
    data = helpers.load_imdb(verbose=False)
    start = time.perf_counter()
    try:
        anchor = helpers.tfidf_baseline(data)["test_acc"]
    except ImportError:
        anchor = None
    anchor_seconds = time.perf_counter() - start
    rows = []
    for name in helpers.MODEL_NAMES:
        model = helpers.load_pretrained(name)
        acc = helpers.evaluate(model, data.test)["acc"]
        batch_size = model.meta["train_settings"]["batch_size"]
        rows.append((name, model.config.get("hidden"), helpers.count_parameters(model), acc,
                     epoch_seconds(name, data, batch_size), batch_size))
    print(f"| {'model':14} | {'hidden':6} | {'params':7} | {'test acc':8} | {'s / epoch':9} | batch |")
    print(f"|{'-' * 16}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 11}|-------|")
    for name, hidden, params, acc, secs, bs in rows:
        print(f"| {name:14} | {hidden!s:6} | {params:7,} | {acc:8.2%} | {secs:9.1f} | {bs:5} |")
    if anchor is not None:
        print(f"| {'tfidf+logreg':14} | {'-':6} | {'-':7} | {anchor:8.2%} | {anchor_seconds:7.1f}*  |   -   |")
    best = max(rows, key=lambda r: r[3])
    print(f"\nbest neural model: {best[0]} {best[3]:.2%}; target >= 84.00%: {'met' if best[3] >= 0.84 else 'NOT met'}"
          + (f"; TF-IDF anchor {anchor:.2%} (* fit + score time)" if anchor is not None else ""))
    hidden = helpers.DEFAULT_CONFIGS["gru"]["hidden"]
    ours, theirs = gru_step_ratio(hidden=hidden)
    ratio = ours / theirs
    print(f"GRU batch step (128 x 100 x 50 -> {hidden}, forward + backward, {torch.get_num_threads()} threads): "
          f"hand-written {ours * 1e3:.0f} ms, "
          f"torch.nn.GRU {theirs * 1e3:.0f} ms, ratio {ratio:.2f}x (target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()

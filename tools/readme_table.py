"""Print README.md's results table from the run records (checkpoints/runs/ by default).

    python -m tools.readme_table                 # the table, to paste into README.md's "Results"
    python -m tools.readme_table --out data/retrain

tests/experiments/test_committed_results.py checks that README.md holds exactly this table for the committed
records, so the README can never quote a number the records do not hold.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import helpers
from ex2 import runtime
from ex2.models import DEFAULT_CONFIGS
from experiments import plan, records, stats

LABELS = {
    "rnn": "RNN (hand-written cell)",
    "gru": "GRU (hand-written cell)",
    "sum": "SUM",
    "weighted": "WEIGHTED",
    "attn_sum": "ATTN_SUM (±5 window, relative positions, mean sub-score)",
    "attn_weighted": "ATTN_WEIGHTED (±5 window, relative positions)",
}
PEERS = {"gru": "GRU-64", "attn_sum": "attention (±5)", "attn_weighted": "attention (±5)"}
"""Which published model (records.PUBLISHED_SOLUTIONS) each frozen-vector refit is set beside."""


def pct(values: list[float]) -> str:
    return stats.format_mean_std(values, scale=100, digits=1, unit=" %")


def markdown_table(results: records.Results) -> str:
    """One row per named model: test accuracy with trainable and with frozen vectors (mean ± sample std over
    the seeds), the paired trainable − frozen difference with its 95 % interval, the validation − test gaps;
    then the TF-IDF anchor."""
    rows = ["| model | hidden | parameters: model + word-vector corrections | seeds | test acc, trainable vectors "
            "| test acc, frozen GloVe | trainable − frozen, 95 % CI | val − test (trainable / frozen) |",
            "|---|---|---|---|---|---|---|---|"]
    for name in helpers.MODEL_NAMES:
        trainable, frozen = (results.group(name, setting) for setting in ("trainable", "frozen"))
        if not trainable or not frozen:
            raise SystemExit(f"no records of {name} (trainable and frozen) yet: python -m experiments.recompute")
        own = helpers.count_parameters(helpers.make_model(name, seed=None), embeddings=False)
        c = records.compare(trainable, frozen)
        gap = [stats.mean_std([r.val_acc - r.test_acc for r in g])[0] * 100 for g in (trainable, frozen)]
        rows.append(f"| {LABELS[name]} | {DEFAULT_CONFIGS[name]['hidden']} | "
                    f"{own:,} + {trainable[0].parameters - own:,} | {len(trainable)} | "
                    f"**{pct([r.test_acc for r in trainable])}** | {pct([r.test_acc for r in frozen])} | {c.short()} | "
                    f"{gap[0]:+.1f} / {gap[1]:+.1f} pts |")
    tfidf = results.anchor()
    rows.append(f"| TF-IDF (1–2-grams) + logistic regression, C = {tfidf.C:g} chosen on validation | – | – | – | "
                f"{100 * tfidf.test_acc:.1f} % | | | {100 * (tfidf.val_acc - tfidf.test_acc):+.1f} pts |")
    return "\n".join(rows)


def peer_table(results: records.Results) -> str:
    """The published solution's setting: frozen vectors, all 25,000 training reviews. Each of our models refit on
    all of them for its seed's best validation epoch (`plan.FROZEN_REFIT`) beside the published model's three
    seeds, and the difference of the means with Welch's 95 % interval (other code, other seeds: not paired)."""
    rows = ["| frozen GloVe 50-d, trained on all 25,000 reviews | ours: refit at the epoch validation chose | seeds | "
            "published solution (10 epochs, last kept) | ours − published, 95 % CI (Welch) |", "|---|---|---|---|---|"]
    for name in plan.FROZEN_REFIT:
        refit = [r.test_acc for r in results.group(name, "frozen", "refit")]
        if not refit:
            raise SystemExit(f"no records of {name}-refit/frozen yet: "
                             f"python -m experiments.recompute --only refit/frozen")
        peer = records.PUBLISHED_SOLUTIONS[PEERS[name]]
        c = stats.unpaired_compare(refit, peer)
        rows.append(f"| {LABELS[name]} vs published {PEERS[name]} | {pct(refit)} | {len(refit)} | {pct(peer)} | "
                    f"{c.short()}: {c.verdict} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=runtime.CHECKPOINT_DIR, help="the folder with runs/")
    args = parser.parse_args(argv)
    results = records.Results.load(args.out)
    print(markdown_table(results), peer_table(results), sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

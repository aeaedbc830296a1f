"""Print README.md's results table from the run records (checkpoints/runs/ by default).

    python -m tools.readme_table                 # the table, to paste into README.md's "Results"
    python -m tools.readme_table --out data/retrain

tests/test_results.py checks that README.md holds exactly this table for the committed records, so the
README can never quote a number the records do not hold.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import experiments
import helpers

LABELS = {
    "rnn": "RNN (hand-written cell)",
    "gru": "GRU (hand-written cell)",
    "sum": "SUM",
    "weighted": "WEIGHTED",
    "attn_sum": "ATTN_SUM (±5 window, exercise layout)",
    "attn_weighted": "ATTN_WEIGHTED (±5 window, residual layout)",
}


def pct(values: list[float]) -> str:
    mean, sd = experiments.mean_std(values)
    return f"{100 * mean:.1f} ± {100 * sd:.1f} %"


def markdown_table(results: dict) -> str:
    """One row per named model: test accuracy with trainable and with frozen vectors (mean ± sample std over
    the seeds), the paired trainable − frozen difference with its 95 % interval, the validation − test gaps;
    then the TF-IDF anchor."""
    rows = ["| model | hidden | parameters: model + word-vector corrections | seeds | test acc, trainable vectors "
            "| test acc, frozen GloVe | trainable − frozen, 95 % CI | val − test (trainable / frozen) |",
            "|---|---|---|---|---|---|---|---|"]
    for name in helpers.MODEL_NAMES:
        trainable, frozen = (experiments.group_records(results, f"{name}/{s}") for s in ("trainable", "frozen"))
        if not trainable or not frozen:
            raise SystemExit(f"no records of {name} (trainable and frozen) yet: python -m tools.train_results")
        own = helpers.count_parameters(helpers.make_model(name, seed=None), embeddings=False)
        c = experiments.paired_compare(trainable, frozen)
        gap = [experiments.mean_std([r["val_acc"] - r["test_acc"] for r in g])[0] * 100 for g in (trainable, frozen)]
        rows.append(f"| {LABELS[name]} | {helpers.DEFAULT_CONFIGS[name]['hidden']} | "
                    f"{own:,} + {trainable[0]['parameters'] - own:,} | {len(trainable)} | **{pct([r['test_acc'] for r in trainable])}** | "
                    f"{pct([r['test_acc'] for r in frozen])} | {100 * c['diff']:+.1f} [{100 * c['lo']:+.1f}, "
                    f"{100 * c['hi']:+.1f}] pts | {gap[0]:+.1f} / {gap[1]:+.1f} pts |")
    tfidf = results["runs"]["tfidf"]
    rows.append(f"| TF-IDF (1–2-grams) + logistic regression, C = {tfidf['C']:g} chosen on validation | – | – | – | "
                f"{100 * tfidf['test_acc']:.1f} % | | | {100 * (tfidf['val_acc'] - tfidf['test_acc']):+.1f} pts |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=helpers.CHECKPOINT_DIR, help="the folder with runs/")
    args = parser.parse_args(argv)
    print(markdown_table(experiments.load_results(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

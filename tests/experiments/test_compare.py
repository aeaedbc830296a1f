"""Comparisons of groups of run records (`records.compare`, `compare_groups`, the `Ledger`): paired by seed, over
seeds and reviews where the records keep their per-review correctness, against an anchor record or a number; Welch's
unpaired comparison; a family counted once per distinct comparison."""
import numpy as np
import pytest
from scipy import stats

from experiments import records
from experiments.stats import pack_bits, unpack_bits, unpaired_compare


def test_compare_pairs_seeds_and_uses_a_t_interval():
    def group(values, seeds=None):
        return [{"seed": s, "test_acc": v} for s, v in zip(seeds or range(len(values)), values)]

    a, b = group([0.80, 0.82, 0.81, 0.83, 0.79]), group([0.79, 0.80, 0.80, 0.81, 0.78])
    c = records.compare(a, b)
    diffs = np.array([0.01, 0.02, 0.01, 0.02, 0.01])
    half = 2.7764451 * diffs.std(ddof=1) / np.sqrt(5)  # t(0.975, 4 degrees of freedom)
    assert c.n == 5 and c.diff == pytest.approx(0.014)
    assert (c.lo, c.hi) == pytest.approx((0.014 - half, 0.014 + half)) and c.verdict == "better"
    assert records.compare(b, a).verdict == "worse" and records.compare(b, a).diff == pytest.approx(-0.014)
    # pairing matters: the same values, unpaired seed noise (seed 4 of a against seed 0 of b) is a tie
    shuffled = group([0.79, 0.80, 0.80, 0.81, 0.78], seeds=[4, 0, 1, 2, 3])
    assert records.compare(a, shuffled).verdict != "better"
    tie = records.compare(group([0.80, 0.82, 0.78]), group([0.81, 0.80, 0.80]))
    assert tie.lo < 0 < tie.hi and tie.verdict == "tie" and tie.p > 0.2
    hint = records.compare(group([0.82, 0.83, 0.805]), group([0.80, 0.80, 0.80]))
    assert 0.05 < hint.p < 0.2 and hint.lo < 0 and hint.verdict == "suggestive"
    assert records.compare(group([0.8]), group([0.7])).verdict == "one seed: no interval"
    against_constant = records.compare(a, 0.79)  # a fixed anchor: the differences to it, seed by seed
    assert against_constant.n == 5 and against_constant.diff == pytest.approx(0.02)
    assert against_constant == records.compare(a, group([0.79] * 5))
    assert records.compare(group([0.8]), group([0.7], seeds=[3])).n == 0  # nothing paired
    line = str(c)
    assert line.startswith("+1.40 pts, 95 % CI [") and line.endswith("n = 5, p = 0.005: better")

    assert c.noise == "seeds" and "(seeds only)" in line  # these records keep no per-review flags


def _simulated_runs(rng, p_a, p_b, seeds: int, shared: float):
    """Per-review correctness of two models over `seeds` paired seeds, on reviews whose chance of being classified
    right by a random seed is p_a / p_b; `shared` of each draw is common to both models (the same review is hard
    for both), so their errors are correlated as real models' are."""
    groups = {"a": [], "b": []}
    for seed in range(seeds):
        common = rng.random(len(p_a))
        for name, p in (("a", p_a), ("b", p_b)):
            u = np.where(rng.random(len(p)) < shared, common, rng.random(len(p)))
            flags = u < p
            groups[name].append({"seed": seed, "test_acc": flags.mean(), "correct": {"test": pack_bits(flags)}})
    return groups["a"], groups["b"]


def test_compare_counts_the_reviews_noise_and_covers_the_true_difference():
    """Synthetic predictions where the answer is known: a population of reviews with a true per-review accuracy for
    each model (b is 1 point worse on average); each trial draws 2,000 reviews and 5 seeds. The 95 % interval of
    `paired_compare` must cover the true difference in about 95 % of trials; the seeds-only interval, which treats the
    2,000 reviews as fixed, covers it far less often (here the reviews, not the seeds, are most of the noise)."""
    rng = np.random.default_rng(0)
    population_a = rng.beta(0.4, 0.1, size=200_000)  # most reviews: always right or always wrong, whatever the seed
    population_b = np.clip(population_a - 0.01 + 0.5 * rng.standard_normal(200_000), 0, 1)
    true = population_a.mean() - population_b.mean()
    covered, covered_seeds_only, trials = 0, 0, 300
    for _ in range(trials):
        idx = rng.integers(0, len(population_a), 2000)
        a, b = _simulated_runs(rng, population_a[idx], population_b[idx], seeds=5, shared=0.9)
        c = records.compare(a, b)
        assert c.noise == "seeds and reviews" and c.n == 5
        covered += c.lo <= true <= c.hi
        stripped = records.compare([{k: v for k, v in r.items() if k != "correct"} for r in a],
                                   [{k: v for k, v in r.items() if k != "correct"} for r in b])
        covered_seeds_only += stripped.lo <= true <= stripped.hi
    assert 0.91 <= covered / trials <= 0.99, covered / trials
    assert covered_seeds_only / trials < 0.8, covered_seeds_only / trials


def test_compare_with_reviews_matches_the_formula_and_takes_an_anchor_record():
    rng = np.random.default_rng(1)
    p_a = rng.uniform(0.5, 1.0, 500)  # reviews on which b is better or worse than a, whatever the seed
    a, b = _simulated_runs(rng, p_a, np.clip(p_a - 0.05 + 0.3 * rng.standard_normal(500), 0, 1), seeds=3, shared=0.9)
    c = records.compare(a, b)
    fa = np.stack([unpack_bits(r["correct"]["test"]) for r in a]).astype(float)
    fb = np.stack([unpack_bits(r["correct"]["test"]) for r in b]).astype(float)
    d = fa.mean(1) - fb.mean(1)
    # the two-way ANOVA of D (3 seeds x 500 reviews): each source of noise once, the seeds-only interval as a floor
    D = fa - fb
    ss_total = ((D - D.mean()) ** 2).sum()
    ss_seeds, ss_reviews = 500 * ((d - D.mean()) ** 2).sum(), 3 * ((D.mean(0) - D.mean()) ** 2).sum()
    ms_resid = (ss_total - ss_seeds - ss_reviews) / (2 * 499)
    v_seeds, v_main = ss_seeds / 2 / 1500, max(ss_reviews / 499 - ms_resid, 0) / 1500
    assert v_main > 0
    df = (v_seeds + v_main) ** 2 / (v_seeds**2 / 2 + v_main**2 / 499)
    half = max(stats.t.ppf(0.975, df) * np.sqrt(v_seeds + v_main), stats.t.ppf(0.975, 2) * np.sqrt(v_seeds))
    assert c.diff == pytest.approx(d.mean()) and (c.lo, c.hi) == pytest.approx((d.mean() - half, d.mean() + half))
    anchor = b[0]  # one deterministic record (TF-IDF): the same for every seed of a
    assert records.compare(a, anchor) == records.compare(a, [{**anchor, "seed": r["seed"]} for r in a])
    assert records.compare(a, anchor).noise == "seeds and reviews"
    flags = unpack_bits(pack_bits([True, False, True]))
    assert flags.tolist() == [True, False, True]


def test_the_ledger_counts_each_distinct_comparison_once_by_verdict():
    def runs(accs):
        return [{"seed": s, "test_acc": a} for s, a in enumerate(accs)]

    ledger, other = records.Ledger(), records.Ledger()
    better = (runs([0.82, 0.83, 0.84, 0.83]), runs([0.80, 0.80, 0.81, 0.80]))
    assert ledger.compare(*better) == records.compare(*better)  # the comparison itself, counted
    ledger.compare(*better)  # the same pair again (a rerun cell): still one comparison
    ledger.compare(runs([0.80, 0.82, 0.78]), runs([0.81, 0.80, 0.80]))  # a tie
    ledger.unpaired([0.80, 0.81, 0.79], [0.90, 0.91, 0.92])  # worse
    ledger.compare(runs([0.8]), runs([0.7]))  # one seed: no interval, no verdict to count
    other.compare(*better)  # another notebook's ledger: counted there only
    assert ledger.counts() == {"better": 1, "worse": 1, "suggestive": 0, "tie": 1}
    assert other.counts() == {"better": 1, "worse": 0, "suggestive": 0, "tie": 0}
    assert str(ledger).splitlines() == [
        "3 distinct comparisons in this notebook: better 1, worse 1, suggestive 0, tie 1",
        "were all 3 true ties, chance alone would give about 0 'suggestive' verdicts (0.05 <= p < 0.2) and 0 "
        "'better' / 'worse' (p < 0.05)"]


def test_unpaired_compare_is_welchs_test():
    ours, theirs = [0.807, 0.812, 0.803, 0.809], [0.8057, 0.8024, 0.8202]
    c = unpaired_compare(ours, theirs)
    welch = stats.ttest_ind(ours, theirs, equal_var=False)
    assert c.diff == pytest.approx(np.mean(ours) - np.mean(theirs)) and c.p == pytest.approx(welch.pvalue)
    assert c.lo < c.diff < c.hi and c.verdict == "tie" and c.noise == "seeds"
    assert unpaired_compare([0.90, 0.91, 0.92], [0.80, 0.81, 0.80]).verdict == "better"
    assert unpaired_compare([0.9], theirs).verdict == "one seed: no interval"


def test_compare_group_means_tests_the_groups_not_the_pooled_runs():
    # four groups whose effects disagree (+0.1, +0.1, +0.9, +1.7 points) but whose seeds agree within each group:
    # pooled as independent runs the twelve differences look precise; over the four groups they do not
    pairs = []
    for effect in (0.001, 0.001, 0.009, 0.017):
        b = [{"seed": s, "val_acc": 0.80 + 0.001 * s} for s in range(3)]
        pairs.append(([{**r, "val_acc": r["val_acc"] + effect} for r in b], b))
    c = records.compare_groups(pairs)
    one_sample = stats.ttest_1samp([0.001, 0.001, 0.009, 0.017], 0.0)
    assert c.n == 4 and c.diff == pytest.approx(0.007) and c.p == pytest.approx(one_sample.pvalue)
    assert c.lo < 0 < c.hi and c.verdict == "suggestive" and c.noise == "groups"
    pooled = records.compare([{**r, "seed": (k, r["seed"])} for k, (a, _) in enumerate(pairs) for r in a],
                             [{**r, "seed": (k, r["seed"])} for k, (_, b) in enumerate(pairs) for r in b], "val_acc")
    assert pooled.lo > 0  # the pooled test calls it better: what the group-level test is there to prevent
    assert "(over groups)" in str(c)

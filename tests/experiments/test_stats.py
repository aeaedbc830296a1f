"""The statistics behind every verdict: the paired interval (`records.compare` -> `stats.paired_compare`, each source
of noise counted once) kept at its nominal coverage where the seeds, the reviews or their interaction dominate; the
group-level comparison with the reviews its groups share; families of comparisons adjusted with `adjust_for_family`
(Holm, Benjamini–Hochberg)."""
import numpy as np
import pytest
from scipy import stats
from scipy.special import ndtr

from experiments import records
from experiments.stats import Comparison, adjust_for_family, family_report, pack_bits, unpack_bits

# latent model: a is right on review i at seed s iff z_i + a_s + e_si > 0, b iff z_i − d_i + b_s + e'_si > 0
REGIMES = {
    "seed-dominated": {"sd_seed": 0.06, "sd_noise": 0.25, "sd_review": 0.0},
    "review-dominated": {"sd_seed": 0.0, "sd_noise": 0.25, "sd_review": 0.8},
    "interaction-dominated": {"sd_seed": 0.0, "sd_noise": 1.5, "sd_review": 0.0},
}
"""Three populations of two models' per-review correctness: z_i ~ N(1.2, 1.5²) is how easy review i is (about 75 %
right), d_i ~ N(0.03, sd_review²) how much harder it is for b, a_s, b_s ~ N(0, sd_seed²) how good seed s's model is,
e ~ N(0, sd_noise²) the seed-to-seed luck on one review. Of the variance of the mean difference over 1,000 reviews,
the seeds' part is about 83 % in the first, the reviews' main effect 81 % (S = 3) and 88 % (S = 5) in the second, the
seed x review interaction 99 % in the third (measured with 4,000 trials per regime and S)."""


def _population(rng, sd_review, size=100_000):
    return rng.normal(1.2, 1.5, size), 0.03 + sd_review * rng.standard_normal(size)


def _true_difference(z, d, sd_seed, sd_noise):
    """The population's mean difference in accuracy: over reviews and over the seeds' luck (a_s + e_si is normal)."""
    scale = np.sqrt(sd_seed**2 + sd_noise**2)
    return float(np.mean(ndtr(z / scale) - ndtr((z - d) / scale)))


def _trial(rng, z, d, seeds, reviews, sd_seed, sd_noise):
    idx = rng.integers(0, len(z), reviews)
    runs = {"a": [], "b": []}
    for seed in range(seeds):
        for name, easy in (("a", z[idx]), ("b", z[idx] - d[idx])):
            flags = easy + rng.normal(0, sd_seed) + sd_noise * rng.standard_normal(reviews) > 0
            runs[name].append({"seed": seed, "test_acc": flags.mean(), "correct": {"test": pack_bits(flags)}})
    return runs["a"], runs["b"]


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("regime", list(REGIMES))
def test_the_interval_keeps_its_coverage_whichever_source_of_noise_dominates(regime, seeds):
    """800 simulated pairs of models (S seeds, 1,000 reviews drawn from the population each) per regime: the 95 %
    interval covers the population's difference in 93–97 % of them (the binomial standard error of 800 trials is
    0.8 points). Adding the seeds' and the reviews' variances (the interaction twice, with the reviews' N − 1 degrees
    of freedom) covered 98.7 % and 99.2 % where the interaction dominates (S = 3, 5) and 93.7 % where the seeds do at
    S = 3 (4,000 trials each); in these 800 it fails four of the six cases."""
    rng = np.random.default_rng(100 * seeds + list(REGIMES).index(regime))
    p = REGIMES[regime]
    z, d = _population(rng, p["sd_review"])
    true = _true_difference(z, d, p["sd_seed"], p["sd_noise"])
    trials, covered = 800, 0
    for _ in range(trials):
        a, b = _trial(rng, z, d, seeds, 1000, p["sd_seed"], p["sd_noise"])
        c = records.compare(a, b)
        assert c.noise == "seeds and reviews" and c.n == seeds
        covered += c.lo <= true <= c.hi
    assert 0.93 <= covered / trials <= 0.97, covered / trials


def test_the_interval_is_never_narrower_than_the_seeds_alone_and_counts_the_interaction_once():
    rng = np.random.default_rng(7)
    z, d = _population(rng, 0.0)
    a, b = _trial(rng, z, d, 3, 2000, 0.0, 1.5)  # interaction only: var_reviews is the duplicate of the seeds' part
    c = records.compare(a, b)
    def strip(runs):
        return [{k: v for k, v in r.items() if k != "correct"} for r in runs]
    seeds_only = records.compare(strip(a), strip(b))
    assert c.lo <= seeds_only.lo and c.hi >= seeds_only.hi and c.p >= seeds_only.p
    # no review main effect here: the reviews' part is the interaction the seeds' spread already holds, so the
    # interval is the seeds-only one (adding var_reviews would count the interaction a second time)
    assert (c.hi - c.lo) == pytest.approx(seeds_only.hi - seeds_only.lo, rel=0.02)


def test_compare_group_means_adds_the_review_noise_its_groups_share():
    """Four groups scored on the same reviews, each effect carried by the same reviews: the groups agree closely, yet
    a new sample of reviews would move all four together; the interval must count that."""
    rng = np.random.default_rng(3)
    z, d = _population(rng, 0.8)
    idx = rng.integers(0, len(z), 1000)
    pairs = []
    for group in range(4):
        runs = {"a": [], "b": []}
        for seed in range(3):
            for name, easy in (("a", z[idx]), ("b", z[idx] - d[idx])):
                flags = easy + 0.25 * rng.standard_normal(1000) > 0
                runs[name].append({"seed": seed, "val_acc": flags.mean(), "correct": {"val": pack_bits(flags)}})
        pairs.append((runs["a"], runs["b"]))
    c = records.compare_groups(pairs)
    def strip(runs):
        return [{k: v for k, v in r.items() if k != "correct"} for r in runs]
    groups_only = records.compare_groups([(strip(a), strip(b)) for a, b in pairs])
    assert c.noise == "groups and reviews" and groups_only.noise == "groups"
    assert "(over groups and reviews)" in str(c)
    assert c.diff == pytest.approx(groups_only.diff)
    # the shared reviews' standard error, from the pooled per-review differences, is most of the width
    D = np.stack([np.mean([unpack_bits(r["correct"]["val"]) for r in a], 0) -
                  np.mean([unpack_bits(r["correct"]["val"]) for r in b], 0) for a, b in pairs])
    shared = D.mean(0).var(ddof=1) / 1000
    assert (c.hi - c.lo) / 2 >= stats.norm.ppf(0.975) * np.sqrt(shared) * 0.9
    assert (c.hi - c.lo) > 2 * (groups_only.hi - groups_only.lo)


def test_holm_and_benjamini_hochberg_adjust_a_family():
    ps = [0.01, 0.04, 0.03, 0.005]
    holm = adjust_for_family(ps)
    assert [c.p_adjusted for c in holm] == pytest.approx([0.03, 0.06, 0.06, 0.02])  # 3p, max(2p, ..), p, 4p
    assert [c.verdict_adjusted for c in holm] == ["significant", "suggestive", "suggestive", "significant"]
    bh = adjust_for_family(ps, method="bh")
    assert [c.p_adjusted for c in bh] == pytest.approx(stats.false_discovery_control(ps))
    assert all(c.family_size == 4 for c in holm + bh)
    with pytest.raises(ValueError, match="holm"):
        adjust_for_family(ps, method="bonferroni")


def test_a_family_of_comparisons_keeps_its_labels_directions_and_the_untested():
    def runs(accs):
        return [{"seed": s, "test_acc": x} for s, x in enumerate(accs)]
    family = {
        "clearly better": records.compare(runs([0.82, 0.83, 0.84, 0.83]), runs([0.80, 0.80, 0.81, 0.80])),
        "clearly worse": records.compare(runs([0.70, 0.71, 0.70, 0.72]), runs([0.80, 0.80, 0.81, 0.80])),
        "one seed": records.compare(runs([0.8]), runs([0.7])),
        "a tie": records.compare(runs([0.80, 0.82, 0.78]), runs([0.81, 0.80, 0.80])),
    }
    adjusted = adjust_for_family(family)
    assert list(adjusted) == list(family) and adjusted["one seed"].family_size == 3
    assert adjusted["clearly better"].verdict_adjusted == "better"
    assert adjusted["clearly worse"].verdict_adjusted == "worse"
    assert adjusted["one seed"].verdict_adjusted == "one seed: no interval"
    assert np.isnan(adjusted["one seed"].p_adjusted)
    assert adjusted["a tie"].verdict_adjusted == "tie"
    for label in family:  # the comparison itself is kept; the adjusted p-value is never below the raw one
        assert adjusted[label].verdict == family[label].verdict
        assert not adjusted[label].p_adjusted < family[label].p
    # a marginal result of a large family loses its verdict
    marginal = Comparison(n=5, diff=0.01, p=0.03, verdict="better")
    assert adjust_for_family([marginal] + [0.5] * 9)[0].verdict_adjusted == "tie"


def test_a_family_report_prints_each_comparisons_holm_p_and_verdict():
    # worked by hand: sorted p 0.004, 0.01, 0.03, 0.3 -> Holm 4 * 0.004 = 0.016, 3 * 0.01 = 0.03,
    # 2 * 0.03 = 0.06, max(1 * 0.3, 0.06) = 0.3
    family = {"big gain": Comparison(n=5, diff=0.05, p=0.01, verdict="better"),
              "loss": Comparison(n=5, diff=-0.02, p=0.004, verdict="worse"),
              "marginal": Comparison(n=5, diff=0.01, p=0.03, verdict="better"),
              "noise": Comparison(n=5, diff=0.001, p=0.3, verdict="tie")}
    lines = family_report(family, "§5").splitlines()
    assert lines[0].startswith("§5: a family of 4 comparisons, Holm-adjusted")
    assert lines[1:] == ["  big gain  p 0.010 → 0.030: better → better",
                         "  loss      p 0.004 → 0.016: worse → worse",
                         "  marginal  p 0.030 → 0.060: better → suggestive",
                         "  noise     p 0.300 → 0.300: tie → tie"]
    assert "Benjamini–Hochberg" in family_report(family, "§5", method="bh").splitlines()[0]

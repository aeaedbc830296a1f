"""How the notebooks compare models, over plain arrays: means and sample standard deviations over seeds, the
paired comparison that decides every "better" (`paired_compare`, over seeds and the evaluation reviews, each source
of noise counted once), its unpaired (`unpaired_compare`, Welch) and group-level (`compare_group_means`) kin, and
the adjustment of a declared family of comparisons (`adjust_for_family`: Holm or Benjamini–Hochberg). Each returns
a `Comparison`, a value that prints itself. Per-review correctness is stored packed (`pack_bits` / `unpack_bits`).
Depends on numpy and scipy only; `experiments.records` reads run records into these arrays.
"""
from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

NAN = float("nan")


def pack_bits(flags) -> dict:
    """A split's per-review 0/1 flags (e.g. whether each prediction was right), in the split's order, as
    {"n": count, "bits": base64 of the packed bits} (25,000 reviews: 4,168 characters)."""
    flags = np.asarray(flags, dtype=bool)
    return {"n": len(flags), "bits": base64.b64encode(np.packbits(flags).tobytes()).decode("ascii")}


def unpack_bits(packed: dict) -> np.ndarray:
    """The flags `pack_bits` stored, as a bool array."""
    return np.unpackbits(np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8))[: packed["n"]].astype(bool)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of per-seed values; the std is 0 for a single value."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
    """'mean ± sample std' of per-seed values, as the tables print it (`scale=100, digits=1, unit=" %"`: in %)."""
    mean, sd = mean_std(values)
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}{unit}"


def _signed(x: float, scale: float, digits: int) -> str:
    return f"{x * scale:+.{digits}f}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One comparison: `n` paired seeds (or groups; `n_b`: the second sample's size where unpaired), the mean
    difference `diff`, its interval (`lo`, `hi`) at `level`, the two-sided p-value `p`, which `noise` the interval
    counts ("seeds and reviews", "seeds", "groups", "groups and reviews") and the `verdict`: "better" / "worse"
    where the interval excludes 0, "suggestive" where p < 0.2, otherwise "tie" (or why there is no interval).
    `str()` is one line with all of it, `short()` the difference and interval alone. After `adjust_for_family`:
    `p_adjusted`, `verdict_adjusted`, `family_size` and `method`. `se`, `df` and `floor` are what decided it."""

    n: int
    diff: float
    lo: float = NAN
    hi: float = NAN
    p: float = NAN
    noise: str = "seeds"
    verdict: str = "tie"
    n_b: int | None = None
    level: float = 0.95
    se: float | None = dataclasses.field(default=None, repr=False)
    df: float | None = dataclasses.field(default=None, repr=False)
    floor: tuple[float, float] | None = dataclasses.field(default=None, repr=False)
    p_adjusted: float | None = None
    verdict_adjusted: str | None = None
    family_size: int | None = None
    method: str | None = None

    def __str__(self) -> str:
        return self.format()

    def format(self, scale: float = 100.0, unit: str = "pts", digits: int = 2) -> str:
        """One line, e.g. '+1.23 pts, 95 % CI [+0.50, +1.96], n = 5, p = 0.012: better' (accuracies in points by
        default; `scale=1, unit="", digits=3` for losses or probabilities)."""
        unit = f" {unit}" if unit else ""
        diff = _signed(self.diff, scale, digits)
        if self.n < 2:
            return f"{diff}{unit}, {self.verdict}"
        noise = {"seeds": " (seeds only)", "groups": " (over groups)",
                 "groups and reviews": " (over groups and reviews)"}.get(self.noise, "")
        n = f"{self.n} vs {self.n_b}" if self.n_b is not None else self.n  # unpaired: the two samples' sizes
        return (f"{diff}{unit}, 95 % CI [{_signed(self.lo, scale, digits)}, {_signed(self.hi, scale, digits)}]"
                f"{noise}, n = {n}, p = {self.p:.3f}: {self.verdict}")

    def short(self, scale: float = 100.0, unit: str = "pts", digits: int = 1) -> str:
        """The difference and its interval in short, e.g. '+1.2 [+0.5, +2.0] pts' (the README's tables)."""
        interval = (f"{_signed(self.diff, scale, digits)} [{_signed(self.lo, scale, digits)}, "
                    f"{_signed(self.hi, scale, digits)}]")
        return interval + (f" {unit}" if unit else "")

    @property
    def key(self) -> tuple | None:
        """What decides the comparison (difference, standard error, degrees of freedom, n, level, floor): two
        comparisons with the same key are the same one computed twice. None where no interval was computed."""
        if self.se is None:
            return None
        floor = self.floor and (round(self.floor[0], 12), round(self.floor[1], 6))
        return round(self.diff, 12), round(self.se, 12), round(self.df, 6), self.n, self.level, floor


def _t_verdict(out: Comparison, se: float, df: float, floor: tuple[float, float] | None = None) -> Comparison:
    """`out` (with its mean difference `diff`) with the t-based interval at its `level` for standard error `se` and
    `df` degrees of freedom, the two-sided p-value and the verdict: "better" / "worse" where the interval excludes
    0, "suggestive" where p < 0.2, otherwise "tie". The one rule of every comparison in the notebooks.
    `floor` = (se₀, df₀): a second t-interval the result must contain (the seeds-only one of `paired_compare`): the
    wider of the two, and the larger of the two p-values, so that the interval excludes 0 exactly where
    p < 1 − level."""
    from scipy import stats

    def interval(se, df):
        if se == 0:
            return 0.0, 0.0 if out.diff else 1.0
        return stats.t.ppf(0.5 + out.level / 2, df) * se, float(2 * stats.t.sf(abs(out.diff) / se, df))

    half, p = interval(se, df)
    if floor is not None:
        half_floor, p_floor = interval(*floor)
        half, p = max(half, half_floor), max(p, p_floor)
    lo, hi = out.diff - half, out.diff + half
    verdict = out.verdict
    if lo > 0 or hi < 0:
        verdict = "better" if out.diff > 0 else "worse"
    elif p < 0.2:
        verdict = "suggestive"
    return dataclasses.replace(out, lo=lo, hi=hi, p=p, verdict=verdict, se=se, df=df, floor=floor)


def _seeds_and_reviews(D: np.ndarray) -> tuple[float, float, tuple[float, float]]:
    """(se, df, floor) of the mean of the (S, N) per-review differences D for `_t_verdict`: the two-way layout of
    `paired_compare`, each source of noise counted once (the derivation is in its docstring)."""
    S, N = D.shape
    d_s, delta = D.mean(axis=1), D.mean(axis=0)
    var_seeds = d_s.var(ddof=1) / S  # MS_seeds / (SN)
    var_reviews = delta.var(ddof=1) / N  # MS_reviews / (SN)
    resid = D - d_s[:, None] - delta[None, :] + D.mean()
    ms_resid = float((resid**2).sum()) / ((S - 1) * (N - 1))
    var_main = max(var_reviews - ms_resid / (S * N), 0.0)  # the reviews' main effect, σ_β² / N
    total = var_seeds + var_main
    df = total**2 / (var_seeds**2 / (S - 1) + var_main**2 / (N - 1)) if total > 0 else S - 1
    return math.sqrt(total), df, (math.sqrt(var_seeds), S - 1)


def paired_compare(diffs: Sequence[float], reviews: np.ndarray | None = None, level: float = 0.95) -> Comparison:
    """Paired comparison of two groups of seed runs, counting each source of noise once. `diffs`: the per-seed
    differences d_s = acc_a(s) − acc_b(s) (runs with the same seed saw the same initial weights and data order);
    `reviews`: the (S, N) per-review differences D_si = [a_s right on i] − [b_s right on i], where both runs keep
    them (reviews both get right or wrong add nothing: the paired, McNemar-like part), else None.

    The N evaluation reviews are a sample too. The two-way layout

        D_si = μ + α_s + β_i + γ_si     (seed effect α, review effect β, their interaction γ; S seeds, N reviews)

    gives Var(D̄) = σ_α²/S + σ_β²/N + σ_γ²/(SN). Its mean squares have the expectations
        MS_seeds   = N s²(d_s)            E = σ_γ² + N σ_α²     (S − 1 degrees of freedom)
        MS_reviews = S s²(δ_i)            E = σ_γ² + S σ_β²     (N − 1; δ_i = mean_s D_si)
        MS_resid   = Σ (D_si − d_s − δ_i + D̄)² / ((S−1)(N−1))      E = σ_γ²
    so var_seeds = s²(d_s)/S = MS_seeds/(SN) already holds the interaction σ_γ²/(SN), and so does
    var_reviews = s²(δ_i)/N = MS_reviews/(SN): adding the two would count it twice. Counted once,
        Var(D̄) ≈ var_seeds + max(var_reviews − MS_resid/(SN), 0),
    unbiased but for the truncation (σ_β² ≥ 0). Degrees of freedom: Satterthwaite's over var_seeds (S − 1) and the
    reviews' main effect (N − 1; MS_resid's (S−1)(N−1) add little), and the interval is never narrower than the
    seeds-only one, t(S − 1) · √var_seeds: a variance added cannot make the answer more certain. Without that floor a
    small review term raises the degrees of freedom by about (1 + var_main/var_seeds)² and, at S = 3 where
    t(0.975, 2) = 4.30 falls to 3.7 at 2.4 degrees of freedom, shrinks the interval faster than its variance widens
    it. Simulated (4,000 pairs of models per case, 1,000 reviews), the interval covers 94.2–95.5 % in seed-, review-,
    interaction-dominated and mixed populations at S = 3 and 5, where var_seeds + var_reviews with Satterthwaite's
    degrees of freedom covers 93.7–99.2 %. Without `reviews` the seeds' part alone (`noise` says which)."""
    diffs = np.asarray(diffs, dtype=float)
    out = Comparison(n=len(diffs), diff=float(diffs.mean()) if len(diffs) else NAN, level=level)
    if len(diffs) < 2:
        return dataclasses.replace(out, verdict="one seed: no interval" if len(diffs) else "no paired seeds")
    if reviews is not None:
        se, df, floor = _seeds_and_reviews(np.asarray(reviews, dtype=float))
        return _t_verdict(dataclasses.replace(out, noise="seeds and reviews"), se, df, floor)
    return _t_verdict(out, math.sqrt(diffs.var(ddof=1) / len(diffs)), len(diffs) - 1)


def unpaired_compare(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Comparison:
    """Welch's comparison of two independent samples of accuracies (e.g. this repository's seeds against a
    published solution's, which share no seed): the difference of the means, its t-based `level` interval with
    Welch-Satterthwaite degrees of freedom, the p-value and the verdict of `paired_compare` (seeds only: the
    published runs keep no per-review predictions)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = Comparison(n=len(a), n_b=len(b), diff=float(a.mean() - b.mean()) if len(a) and len(b) else NAN, level=level)
    if len(a) < 2 or len(b) < 2:
        return dataclasses.replace(out, verdict="one seed: no interval", n=min(len(a), len(b)))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else 1.0
    return _t_verdict(out, math.sqrt(va + vb), df)


def compare_group_means(groups: Sequence[tuple[Sequence[float], np.ndarray | None]],
                        level: float = 0.95) -> Comparison:
    """One effect measured in several groups (e.g. a tokenizer in each model x setting, each group paired over its
    seeds): the mean over the G groups of each group's mean paired difference, with a t-based `level` interval.
    `groups`: each group's (per-seed differences, (S, N) per-review differences or None), as `paired_compare` takes.

    Groups: pooling every seed of every group as if independent would ignore that the seeds of one group share its
    model; the spread of the G group means counts how much the groups disagree (G − 1 degrees of freedom).
    Reviews: where every group keeps which reviews each run got right, the groups were all scored on the same N
    reviews, so a review on which the effect is positive in every group moves every group mean alike and the groups'
    spread cannot show it. With D̄_gi the group's per-review difference averaged over its seeds, D̄_gi = μ + g_g + β_i
    + (gβ)_gi is the two-way layout of `paired_compare` with groups in place of seeds, and the interval is that
    function's: var_groups + max(var_reviews − MS_resid/(GN), 0), never narrower than the groups-only interval
    (`noise` "groups and reviews"; "groups" where some group lacks the flags)."""
    means = np.array([np.mean(d) if len(d) else NAN for d, _ in groups], dtype=float)
    flags = [None if r is None else np.asarray(r, dtype=float).mean(axis=0) for _, r in groups]
    out = Comparison(n=len(means), diff=float(means.mean()) if len(means) else NAN, noise="groups", level=level)
    if len(means) < 2:
        return dataclasses.replace(out, verdict="one group: no interval")
    if all(f is not None for f in flags) and len({len(f) for f in flags}) == 1:
        se, df, floor = _seeds_and_reviews(np.stack(flags))
        return _t_verdict(dataclasses.replace(out, noise="groups and reviews"), se, df, floor)
    return _t_verdict(out, means.std(ddof=1) / math.sqrt(len(means)), len(means) - 1)


def _adjusted_p(ps: dict[int, float], method: str) -> dict[int, float]:
    """Holm's step-down or Benjamini–Hochberg's step-up adjustment of the p-values {index: p}."""
    m, order, adjusted = len(ps), sorted(ps, key=ps.get), {}
    if method == "holm":
        running = 0.0
        for j, k in enumerate(order):
            running = max(running, min(1.0, (m - j) * ps[k]))
            adjusted[k] = running
    else:
        running = 1.0
        for j, k in reversed(list(enumerate(order))):
            running = min(running, min(1.0, m * ps[k] / (j + 1)))
            adjusted[k] = running
    return adjusted


def adjust_for_family(family: Sequence[Comparison | float] | Mapping[str, Comparison | float], method: str = "holm",
                      level: float = 0.95) -> list[Comparison] | dict[str, Comparison]:
    """A family of comparisons declared together (e.g. the rows of one table), judged together: each comparison's
    p-value adjusted for the family's size, and its verdict by the one rule of `paired_compare` on the adjusted
    p-value ("better" / "worse" where it is below 1 − level, "suggestive" below 0.2, otherwise "tie").

    `method="holm"` (Holm's step-down; the chance that any true tie of the family reads "better" or "worse" stays
    below 1 − level, whatever the comparisons' dependence): the k-th smallest of m p-values becomes
    max over j ≤ k of min(1, (m − j + 1) p_(j)). `method="bh"` (Benjamini–Hochberg; the expected share of false
    "better" / "worse" among those called so stays below 1 − level, for independent or positively dependent
    comparisons): min over j ≥ k of min(1, m p_(j) / j). Comparisons without a p-value (one seed) keep their
    verdict and do not count in m.

    `family`: `Comparison`s or bare p-values, as a list or a {label: ...} dict; returns the same shape, each a
    `Comparison` with `p_adjusted`, `verdict_adjusted`, `family_size` and `method` (a bare p-value becomes one with
    only `p`, its verdict "significant" where it would be "better" / "worse"). The intervals stay each
    comparison's own (unadjusted)."""
    if method not in ("holm", "bh"):
        raise ValueError(f"method must be 'holm' or 'bh', got {method!r}")
    labels = list(family.keys()) if isinstance(family, Mapping) else None
    items = list(family.values()) if isinstance(family, Mapping) else list(family)
    items = [c if isinstance(c, Comparison) else Comparison(n=0, diff=NAN, p=float(c)) for c in items]
    adjusted = _adjusted_p({k: c.p for k, c in enumerate(items) if not math.isnan(c.p)}, method)
    result = []
    for k, c in enumerate(items):
        p, verdict = adjusted.get(k, NAN), c.verdict
        if k in adjusted:
            direction = "significant" if math.isnan(c.diff) else "better" if c.diff > 0 else "worse"
            verdict = direction if p < 1 - level else "suggestive" if p < 0.2 else "tie"
        result.append(dataclasses.replace(c, p_adjusted=p, verdict_adjusted=verdict, family_size=len(adjusted),
                                          method=method))
    return dict(zip(labels, result)) if labels is not None else result


def family_report(family: Mapping[str, Comparison], name: str, method: str = "holm", level: float = 0.95) -> str:
    """A declared family ({label: Comparison}) judged together by `adjust_for_family`, as lines to print: a heading
    with the family's name, size and method, then per comparison 'label  p 0.021 → 0.255: worse → tie' (its own
    p-value and verdict, then the family's)."""
    adjusted = adjust_for_family(family, method, level)
    size = next(iter(adjusted.values())).family_size if adjusted else 0
    how = {"holm": "Holm", "bh": "Benjamini–Hochberg"}[method]
    width = max(map(len, family), default=0)
    lines = [f"{name}: a family of {size} comparisons, {how}-adjusted (p → adjusted p: verdict → adjusted verdict)"]
    for label, c in adjusted.items():
        p = "no p-value" if math.isnan(c.p) else f"p {c.p:.3f} → {c.p_adjusted:.3f}"
        lines.append(f"  {label:{width}s}  {p}: {c.verdict} → {c.verdict_adjusted}")
    return "\n".join(lines)

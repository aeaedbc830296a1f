"""How the notebooks compare models: each run's per-review correctness (`pack_bits` / `unpack_bits`), means and
sample standard deviations over seeds, the paired comparison that decides every "better" (`paired_compare`, over
seeds and the evaluation reviews, each source of noise counted once), its unpaired (`unpaired_compare`) and
group-level (`compare_group_means`) kin, the adjustment of a declared family of comparisons (`adjust_for_family`:
Holm or Benjamini–Hochberg) and the count of comparisons made (`comparisons_made`). Depends on numpy and scipy only;
`experiments` re-exports these names for the notebooks.
"""
from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Sequence

import numpy as np


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


def unpaired_compare(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Welch's comparison of two independent samples of accuracies (e.g. this repository's seeds against a
    published solution's, which share no seed): the difference of the means, its t-based `level` interval with
    Welch-Satterthwaite degrees of freedom, the p-value and the verdict of `paired_compare` (seeds only: the
    published runs keep no per-review predictions). The result prints with `format_comparison`."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    out = {"n": len(a), "n_b": len(b), "diff": float(a.mean() - b.mean()) if len(a) and len(b) else float("nan"),
           "lo": float("nan"), "hi": float("nan"), "p": float("nan"), "noise": "seeds", "verdict": "tie"}
    if len(a) < 2 or len(b) < 2:
        out["verdict"], out["n"] = "one seed: no interval", min(len(a), len(b))
        return out
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else 1.0
    return _t_verdict(out, math.sqrt(va + vb), df, level)


def compare_group_means(pairs: Sequence[tuple[Sequence[dict], Sequence[dict]]], metric: str = "val_acc",
                        level: float = 0.95) -> dict:
    """One effect measured in several groups (e.g. a tokenizer in each model x setting, each group paired over its
    seeds): the mean over the G groups of each group's mean paired difference, with a t-based `level` interval.

    Groups: pooling every seed of every group as if independent would ignore that the seeds of one group share its
    model; the spread of the G group means counts how much the groups disagree (G − 1 degrees of freedom).
    Reviews: where every record keeps which reviews it got right, the groups were all scored on the same N reviews,
    so a review on which the effect is positive in every group moves every group mean alike and the groups' spread
    cannot show it. With D̄_gi the group's per-review difference averaged over its seeds, D̄_gi = μ + g_g + β_i +
    (gβ)_gi is the two-way layout of `paired_compare` with groups in place of seeds, and the interval is that
    function's: var_groups + max(var_reviews − MS_resid/(GN), 0), never narrower than the groups-only interval
    (`noise` "groups and reviews"; "groups" where some record lacks the flags)."""
    diffs, flags = [], []
    for a, b in pairs:
        c, d = _paired_matrix(a, b, metric)
        diffs.append(float(c.mean()) if len(c) else float("nan"))
        flags.append(None if d is None else d.mean(axis=0))
    means = np.array(diffs, dtype=float)
    out = {"n": len(means), "diff": float(means.mean()) if len(means) else float("nan"), "lo": float("nan"),
           "hi": float("nan"), "p": float("nan"), "noise": "groups", "verdict": "tie"}
    if len(means) < 2:
        out["verdict"] = "one group: no interval"
        return out
    if all(f is not None for f in flags) and len({len(f) for f in flags}) == 1:
        out["noise"] = "groups and reviews"
        se, df, floor = _seeds_and_reviews(np.stack(flags))
        return _t_verdict(out, se, df, level, floor)
    return _t_verdict(out, means.std(ddof=1) / math.sqrt(len(means)), len(means) - 1, level)


_VERDICTS: dict[tuple, str] = {}
"""Every distinct comparison this process has made, keyed by what decides it (difference, standard error, degrees of
freedom, n, level), with its verdict: `comparisons_made` counts them."""


def comparisons_made() -> dict[str, int]:
    """How many distinct comparisons (`paired_compare`, `unpaired_compare`, `compare_group_means`) this process has
    made, by verdict. One computed again (a rerun cell, a table and a printout of the same pair) counts once. With
    n comparisons that were all true ties, about 0.2 n would still read "suggestive" or stronger and 0.05 n
    "better" / "worse": the count says how much chance alone explains."""
    verdicts = list(_VERDICTS.values())
    return {verdict: verdicts.count(verdict) for verdict in ("better", "worse", "suggestive", "tie")}


def adjust_for_family(family: Sequence[dict | float] | Mapping[str, dict | float], method: str = "holm",
                      level: float = 0.95) -> list[dict] | dict[str, dict]:
    """A family of comparisons declared together (e.g. the rows of one table), judged together: each comparison's
    p-value adjusted for the family's size, and its verdict by the one rule of `_t_verdict` on the adjusted p-value
    ("better" / "worse" where it is below 1 − level, "suggestive" below 0.2, otherwise "tie").

    `method="holm"` (Holm's step-down; the chance that any true tie of the family reads "better" or "worse" stays
    below 1 − level, whatever the comparisons' dependence): the k-th smallest of m p-values becomes
    max over j ≤ k of min(1, (m − j + 1) p_(j)). `method="bh"` (Benjamini–Hochberg; the expected share of false
    "better" / "worse" among those called so stays below 1 − level, for independent or positively dependent
    comparisons): min over j ≥ k of min(1, m p_(j) / j). Comparisons without a p-value (one seed) keep their
    verdict and do not count in m.

    `family`: comparisons (`paired_compare`, `unpaired_compare`, `compare_group_means`) or bare p-values, as a list or
    a {label: ...} dict; returns the same shape, each entry {**comparison, "p_adjusted", "verdict_adjusted",
    "family_size", "method"} (a bare p-value becomes {"p": p, ...}, its verdict "significant" for "better" / "worse").
    The intervals stay each comparison's own (unadjusted); `comparisons_made` still counts the comparisons."""
    if method not in ("holm", "bh"):
        raise ValueError(f"method must be 'holm' or 'bh', got {method!r}")
    labels, items = (list(family.keys()), list(family.values())) if isinstance(family, Mapping) else (None, list(family))
    items = [dict(c) if isinstance(c, Mapping) else {"p": float(c)} for c in items]
    tested = [k for k, c in enumerate(items) if not math.isnan(c.get("p", float("nan")))]
    m = len(tested)
    order = sorted(tested, key=lambda k: items[k]["p"])
    adjusted = {}
    if method == "holm":
        running = 0.0
        for j, k in enumerate(order):
            running = max(running, min(1.0, (m - j) * items[k]["p"]))
            adjusted[k] = running
    else:
        running = 1.0
        for j, k in reversed(list(enumerate(order))):
            running = min(running, min(1.0, m * items[k]["p"] / (j + 1)))
            adjusted[k] = running
    for k, c in enumerate(items):
        p = adjusted.get(k, float("nan"))
        verdict = c.get("verdict", "tie")
        if k in adjusted:
            direction = "significant" if "diff" not in c else "better" if c["diff"] > 0 else "worse"
            verdict = direction if p < 1 - level else "suggestive" if p < 0.2 else "tie"
        c.update(p_adjusted=p, verdict_adjusted=verdict, family_size=m, method=method)
    return dict(zip(labels, items)) if labels is not None else items


def _t_verdict(out: dict, se: float, df: float, level: float, floor: tuple[float, float] | None = None) -> dict:
    """Fill `out` (with its mean difference `diff`) with the t-based `level` interval for standard error `se` and `df`
    degrees of freedom, the two-sided p-value and the verdict: "better" / "worse" where the interval excludes 0,
    "suggestive" where p < 0.2, otherwise "tie". The one rule of every comparison in the notebooks.
    `floor` = (se₀, df₀): a second t-interval the result must contain (the seeds-only one of `paired_compare`): the
    wider of the two at `level`, and the larger of the two p-values, so that the interval excludes 0 exactly where
    p < 1 − level."""
    from scipy import stats

    def interval(se, df):
        if se == 0:
            return 0.0, 0.0 if out["diff"] else 1.0
        return stats.t.ppf(0.5 + level / 2, df) * se, float(2 * stats.t.sf(abs(out["diff"]) / se, df))

    half, p = interval(se, df)
    if floor is not None:
        half_floor, p_floor = interval(*floor)
        half, p = max(half, half_floor), max(p, p_floor)
    out.update(lo=out["diff"] - half, hi=out["diff"] + half, p=p)
    if out["lo"] > 0 or out["hi"] < 0:
        out["verdict"] = "better" if out["diff"] > 0 else "worse"
    elif out["p"] < 0.2:
        out["verdict"] = "suggestive"
    _VERDICTS[(round(out["diff"], 12), round(se, 12), round(df, 6), out["n"], level, floor and
               (round(floor[0], 12), round(floor[1], 6)))] = out["verdict"]
    return out


def _review_flags(records: Sequence[dict], metric: str) -> np.ndarray | None:
    """(seeds, reviews) correctness of each record on the split `metric` names, or None if any record lacks it."""
    split = {"val_acc": "val", "test_acc": "test"}.get(metric)
    packed = [r.get("correct", {}).get(split) for r in records]
    if split is None or not records or any(p is None for p in packed) or len({p["n"] for p in packed}) > 1:
        return None
    return np.stack([unpack_bits(p) for p in packed]).astype(float)


def _paired_matrix(a: Sequence[dict], b: Sequence[dict] | dict | float, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The per-seed differences d_s = metric(a_s) − metric(b_s) over the seeds both groups have, and the (S, N)
    per-review differences D_si of their correctness flags (None where some record keeps no flags for `metric`'s
    split). `b` may be one record (a deterministic anchor, the same for every seed) or one number."""
    if isinstance(b, dict):
        b = [{**b, "seed": r["seed"]} for r in a]
    by_seed = {r["seed"]: {metric: b} for r in a} if isinstance(b, (int, float)) else {r["seed"]: r for r in b}
    paired = [(r, by_seed[r["seed"]]) for r in a if r["seed"] in by_seed]
    diff = np.array([x[metric] - y[metric] for x, y in paired], dtype=float)
    flags_a = _review_flags([x for x, _ in paired], metric)
    flags_b = 0.0 if isinstance(b, (int, float)) else _review_flags([y for _, y in paired], metric)
    if flags_a is None or flags_b is None or (not isinstance(flags_b, float) and flags_a.shape != flags_b.shape):
        return diff, None
    return diff, flags_a - flags_b


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


def paired_compare(a: Sequence[dict], b: Sequence[dict] | dict | float, metric: str = "test_acc",
            level: float = 0.95) -> dict:
    """Paired comparison of two groups of seed runs (`run_record`s) on `metric`, counting each source of noise once.

    Seeds: runs with the same seed saw the same initial weights and data order, so the per-seed differences
    d_s = acc_a(s) − acc_b(s) are paired evidence. Reviews: the N evaluation reviews are a sample too. Where every
    record keeps which reviews it got right (`correct`), D_si = [a_s right on i] − [b_s right on i] (reviews both get
    right or wrong add nothing: the paired, McNemar-like part), and the two-way layout

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
    degrees of freedom covers 93.7–99.2 %. Records without `correct` give the seeds' part alone (`noise` says which).
    `b` may be one record (a deterministic anchor such as TF-IDF, the same for every seed) or one number.

    Returns n (paired seeds), the mean difference, its interval (lo, hi), the two-sided p-value, `noise`
    ("seeds and reviews" or "seeds") and a verdict: "better" / "worse" where the interval excludes 0,
    "suggestive" where only the 80 % interval does (p < 0.2), otherwise "tie"."""
    diff, D = _paired_matrix(a, b, metric)
    out = {"n": len(diff), "diff": float(diff.mean()) if len(diff) else float("nan"),
           "lo": float("nan"), "hi": float("nan"), "p": float("nan"), "noise": "seeds", "verdict": "tie"}
    if len(diff) < 2:
        out["verdict"] = "one seed: no interval" if len(diff) else "no paired seeds"
        return out
    if D is not None:
        out["noise"] = "seeds and reviews"
        se, df, floor = _seeds_and_reviews(D)
        return _t_verdict(out, se, df, level, floor)
    return _t_verdict(out, math.sqrt(diff.var(ddof=1) / len(diff)), len(diff) - 1, level)


def _signed(x: float, scale: float, digits: int) -> str:
    return f"{x * scale:+.{digits}f}"


def format_comparison(c: dict, scale: float = 100.0, unit: str = "pts", digits: int = 2) -> str:
    """One line for `paired_compare`'s result, e.g. '+1.23 pts, 95 % CI [+0.50, +1.96], n = 5, p = 0.012: better'
    (accuracies in points by default; `scale=1, unit="", digits=3` for losses)."""
    unit = f" {unit}" if unit else ""
    diff = _signed(c["diff"], scale, digits)
    if c["n"] < 2:
        return f"{diff}{unit}, {c['verdict']}"
    seeds_only = {"seeds": " (seeds only)", "groups": " (over groups)",
                  "groups and reviews": " (over groups and reviews)"}.get(c.get("noise"), "")
    n = f"{c['n']} vs {c['n_b']}" if "n_b" in c else c["n"]  # unpaired: the two samples' sizes
    return (f"{diff}{unit}, 95 % CI [{_signed(c['lo'], scale, digits)}, {_signed(c['hi'], scale, digits)}]"
            f"{seeds_only}, n = {n}, p = {c['p']:.3f}: {c['verdict']}")


def format_interval(c: dict, scale: float = 100.0, unit: str = "pts", digits: int = 1) -> str:
    """A comparison's difference and 95 % interval in short, e.g. '+1.2 [+0.5, +2.0] pts' (the README's tables)."""
    interval = f"{_signed(c['diff'], scale, digits)} [{_signed(c['lo'], scale, digits)}, {_signed(c['hi'], scale, digits)}]"
    return interval + (f" {unit}" if unit else "")

"""Figures and display for the notebooks: `show_source` (the real code that trains, shown where it is taught),
`name_stubs` (an unwritten stub shows as one line), the one-review explanations and their figures, learning curves,
attention heatmaps, the sub-score figures (alone and in context, the tokens behind an error), the search's figure and
the model comparison. Imports `helpers`; `helpers` never imports this module.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from torch import nn

import helpers
from ex2.layers import PLAIN, RED


def show_source(*objects):
    """The real source of functions / classes / methods from this module, syntax-highlighted in a
    notebook (so the lesson shows the code that runs, never a copy)."""
    import inspect

    from IPython.display import Code

    return Code("\n\n".join(inspect.getsource(obj) for obj in objects), language="python")


def name_stubs(notebook: int) -> None:
    """Called in a notebook's first code cell: from then on a bare NotImplementedError (nbgrader's stub,
    `raise NotImplementedError()`) shows as one red line naming the function that raised it and where it is, e.g.
    `NotImplementedError: vjp is not written yet (notebook 01, cell In[4], line 7)`, instead of a traceback. Every
    other exception, `Unimplemented` included, shows as before. Outside IPython it does nothing."""
    import traceback

    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def one_line(shell, etype, value, tb, tb_offset=None):  # IPython leaves the display to the handler
        if value.args or not tb:  # a message of its own (Unimplemented's included): shown as usual
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return None
        last = tb
        while last.tb_next is not None:
            last = last.tb_next
        code, line = last.tb_frame.f_code, traceback.extract_tb(tb)[-1].lineno
        name = code.co_qualname.replace(".<locals>", "") if code.co_name != "<module>" else "this cell's code"
        cell = getattr(shell.compile, "_filename_map", {}).get(code.co_filename)
        where = (f"cell In[{cell}], line {line}" if cell is not None
                 else f"{os.path.basename(code.co_filename)}, line {line}")
        value.args = (f"{name} is not written yet (notebook {notebook:02d}, {where})",)  # the error's text too
        shell._showtraceback(etype, value, [f"{RED}{etype.__name__}: {value}{PLAIN}"])
        return None

    shell.set_custom_exc((NotImplementedError,), one_line)


def try_review(model: nn.Module, text: str) -> None:
    """Classify one review, draw what the model did with it (`show_explanation`) and print one line with the verdict;
    bad input (empty, only spaces, not text) prints the reason instead of raising.
    Shown in notebook 04, section 8 (behind its text-box explorer)."""
    import matplotlib.pyplot as plt

    try:
        fig, info = show_explanation(model, text)
    except ValueError as exc:
        print(f"cannot classify this review: {exc}")
        return
    plt.show()
    verdict = "positive" if info["prob"] > 0.5 else "negative"
    unknown = len(info["known"]) - sum(info["known"])
    read = f" | {len(info['tokens'])} tokens read"
    if unknown:
        read += f", {unknown} of them unknown to GloVe (<unk>)"
    print(f"{model.info.name}: P(positive) = {info['prob']:.3f} -> {verdict}{read}")


def plot_history(histories: dict, reference: dict | None = None, title: str = "Learning curves",
                 overlay: bool = False, reference_label: str = "reference"):
    """Loss and accuracy per epoch of one or more runs ({label: History or its dict}), train dashed (measured
    in eval mode at the epoch's end, as validation), validation solid. `overlay=True`: two panels, one colour
    per run (to compare runs); otherwise one column per run with its best epoch marked and `reference` runs
    ({label: history}) in grey."""
    def as_dict(h):
        return h if h is None or isinstance(h, dict) else h.as_dict()

    histories = {k: as_dict(h) for k, h in histories.items()}
    if overlay:
        return _plot_overlay(histories, title)
    return _plot_columns(histories, {k: as_dict(h) for k, h in (reference or {}).items()}, title, reference_label)


def _plot_overlay(histories: dict, title: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, h) in enumerate(histories.items()):
        epochs, color = range(1, len(h["val_acc"]) + 1), colors[i % len(colors)]
        for ax, key in zip(axes, ("loss", "acc")):
            ax.plot(epochs, h[f"train_{key}"], "--", color=color, label=f"{label} train (eval mode)")
            ax.plot(epochs, h[f"val_{key}"], "-o", color=color, markersize=3, label=f"{label} validation")
    for ax, name in zip(axes, ("BCE loss", "accuracy")):
        ax.set(xlabel="epoch", ylabel=name, title=name)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, names = axes[1].get_legend_handles_labels()  # below the panels: no curve hidden
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.045 * math.ceil(len(names) / 4) + 0.02, 1, 1))
    return fig


def _plot_columns(histories: dict, reference: dict, title: str, reference_label: str):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(histories), figsize=(4.0 * len(histories), 6.2), sharey="row", squeeze=False)
    for col, (label, h) in enumerate(histories.items()):
        ref, best = reference.get(label), int(np.argmax(h["val_acc"])) + 1
        for row, key in enumerate(("loss", "acc")):
            ax = axes[row, col]
            if ref is not None:
                epochs = range(1, len(ref["val_acc"]) + 1)
                ax.plot(epochs, ref[f"train_{key}"], "--", color="grey", lw=1, label=f"{reference_label} train")
                ax.plot(epochs, ref[f"val_{key}"], "-", color="grey", lw=1, label=f"{reference_label} validation")
            epochs = range(1, len(h["val_acc"]) + 1)
            ax.plot(epochs, h[f"train_{key}"], "--", color="tab:blue", label="train (eval mode)")
            ax.plot(epochs, h[f"val_{key}"], "-o", color="tab:orange", markersize=3, label="validation")
            ax.axvline(best, color="black", ls=":", lw=1, label="best epoch (kept)")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        axes[0, col].set_title(f"{label}\nbest val acc {h['val_acc'][best - 1]:.3f} at epoch {best}", fontsize=10)
    axes[0, 0].set_ylabel("BCE loss")
    axes[1, 0].set_ylabel("accuracy")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def show_explanation(model: nn.Module, text: str, title: str | None = None):
    """Draw what `explain` finds for one review: for token-score models the sub-scores, weights and
    attention (as `show_reviews`), for an RNN / GRU the running P(positive) after each token.
    Returns the figure and the explanation."""
    import matplotlib.pyplot as plt

    if isinstance(model, helpers.TokenScoreClassifier):
        fig, (info,) = show_reviews(model, [text])
    else:
        info = helpers.explain(model, text)
        x = np.arange(len(info["tokens"]))
        fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(x) + 2), 3.4))
        ax.plot(x, info["prefix_probs"], "-o")
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("P(positive) so far")
        ax.set_xticks(x, info["tokens"], rotation=60, ha="right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
    fig.axes[0].set_title(title or f"{model.info.name}: P(positive) = {info['prob']:.3f}", fontsize=10)
    return fig, info


def show_attention(attention: np.ndarray, tokens: Sequence[str], ax=None, title: str = "self-attention",
                   vmax: float | None = None):
    """Seaborn heatmap of an attention matrix (row i = query, column j = key); keys a query may not see
    (padding, outside the window) are blank; values are printed for up to 16 tokens."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = len(tokens)
    if ax is None:
        size = max(4.0, 0.42 * n + 1.5)
        _, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(attention, mask=attention <= 0, xticklabels=tokens, yticklabels=tokens, cmap="viridis",
                vmin=0, vmax=vmax or max(float(attention.max()), 1e-6), square=True, ax=ax,
                annot=n <= 16, fmt=".2f", annot_kws={"fontsize": 6.5},
                cbar_kws={"label": "attention weight", "shrink": 0.8})
    ax.set_facecolor("#eeeeee")
    ax.set_xlabel("attended-to word (key $j$)")
    ax.set_ylabel("word (query $i$)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=90)
    ax.tick_params(axis="y", rotation=0)
    return ax


def _labelled_bars(ax, tokens: list[str], values, color, fmt: str, ylim: tuple, ylabel: str) -> None:
    """One bar per token with its value written on it (the values a reading of the figure quotes)."""
    x = np.arange(len(tokens))
    ax.bar_label(ax.bar(x, values, color=color), [fmt.format(v) for v in values], fontsize=7, padding=1)
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_xticks(x, tokens, rotation=55, ha="right")


def show_reviews(model: nn.Module, texts: Sequence[str]):
    """One column per review: a token-score model's sub-scores, weights and attention; returns (fig, infos)."""
    import matplotlib.pyplot as plt

    infos = [helpers.explain(model, text) for text in texts]
    if infos[0]["scores"] is None:
        raise ValueError("show_reviews draws token-score models; use `show_explanation` for an RNN / GRU")
    name = model.info.name
    has_w, has_a = infos[0]["weights"] is not None, infos[0]["attention"] is not None
    longest = max(len(info["tokens"]) for info in infos)
    heights = [2.6] + [2.0] * has_w + [max(3.0, 0.42 * longest + 1.2)] * has_a
    widths = [max(len(info["tokens"]), 4) for info in infos]
    fig, axes = plt.subplots(len(heights), len(texts), squeeze=False,
                             figsize=(max(8.0, 0.5 * sum(widths) + 2.5 * len(texts)), sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights, "width_ratios": widths})
    limit = 1.3 * max(float(np.abs(info["scores"]).max()) for info in infos)  # room for the values on the bars
    wmax = 1.3 * max(float(info["weights"].max()) for info in infos) if has_w else None
    amax = max(float(info["attention"].max()) for info in infos) if has_a else None  # one colour scale
    for col, info in enumerate(infos):
        tokens = info["tokens"]
        scores = info["scores"]
        _labelled_bars(axes[0, col], tokens, scores, np.where(scores >= 0, "tab:green", "tab:red"), "{:+.2g}",
                       (-limit, limit), "sub-score $s_i$")
        axes[0, col].axhline(0, color="grey", lw=0.8)
        axes[0, col].set_title(f"{name}: P(positive) = {info['prob']:.3f}  (logit {info['logit']:+.2f})", fontsize=10)
        if has_w:
            _labelled_bars(axes[1, col], tokens, info["weights"], "tab:blue", "{:.2f}", (0, wmax), "weight $w_i$")
        if has_a:
            show_attention(info["attention"], tokens, axes[-1, col], "attention $A_{ij}$ (each row sums to 1)",
                           vmax=amax)
    fig.tight_layout()
    return fig, infos


def plot_model_comparison(table, anchor: float | None = None, title: str = "Model comparison on the IMDB test set"):
    """Test accuracy per row of a `results_table`: bars from 0.5 (chance on the balanced test set)
    to the mean over seeds, whiskers the t-based 95 % interval of that mean; `anchor` (an accuracy, e.g. the
    TF-IDF anchor) a dashed line named in the legend. Beside it, trainable parameters (log scale). One colour
    per row."""
    import matplotlib.pyplot as plt
    from scipy import stats

    baseline = 0.5
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.6, 1]})
    x = np.arange(len(table))
    cmap = plt.get_cmap("tab10" if len(table) <= 10 else "tab20")
    color = [cmap(i) for i in range(len(table))]
    mean, std = table["test mean"].to_numpy(dtype=float), table["test std"].to_numpy(dtype=float)
    n = table["seeds"].to_numpy(dtype=int)
    half = np.array([stats.t.ppf(0.975, k - 1) * s / math.sqrt(k) if k > 1 else 0.0 for k, s in zip(n, std)])
    bars = axes[0].bar(x, mean - baseline, bottom=baseline, yerr=half, capsize=4, color=color)
    axes[0].bar_label(bars, [f"{m:.3f}" for m in mean], fontsize=8, label_type="center", color="white",
                      fontweight="bold")  # inside the bar: clear of the whiskers and the anchor line
    if anchor is not None:
        axes[0].axhline(anchor, color="black", ls="--", lw=1, label=f"TF-IDF + LR anchor: {anchor:.3f}")
        axes[0].legend(loc="lower right", fontsize=8)
    axes[0].set_ylim(baseline, min(1.0, max((mean + half).max(), anchor or 0) + 0.04))
    axes[0].set(ylabel=f"test accuracy (axis from {baseline:g} = chance)",
                title=f"test accuracy: mean of {'/'.join(map(str, sorted(set(n))))} seeds, 95 % interval of the mean")
    params = table["parameters"].to_numpy(dtype=float)
    bars = axes[1].bar(x, params, color=color)
    axes[1].bar_label(bars, [f"{p:,.0f}" for p in params], fontsize=8, padding=2)
    axes[1].set_yscale("log")
    axes[1].set_ylim(top=params.max() * 4)
    axes[1].set(ylabel="parameters (log scale)", title="trainable parameters (word-vector corrections included)")
    for ax in axes:
        ax.set_xticks(x, table.index, rotation=40 if len(table) > 8 else 30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_search(searches: dict, reference: dict | None = None):
    """One row per search ({label: trial records}). Left: completed trials' scores (mean of seeds) by trial, and
    the best so far. Middle: the same scores by hidden size, each seed a small dot. Right: what the pruner compares,
    like with like: the first seed's validation accuracy after each epoch, completed trials solid, pruned dashed
    (a pruned trial has no mean, so it appears only here)."""
    import matplotlib.pyplot as plt

    reference = reference or {}
    fig, axes = plt.subplots(len(searches), 3, figsize=(17, 5.6 * len(searches)), squeeze=False)
    for (label, trials), (ax_hist, ax_size, ax_curve) in zip(searches.items(), axes):
        done = [t for t in trials if t["state"] == "complete"]
        _search_by_trial(ax_hist, label, done)
        _search_by_size(ax_size, label, done, reference.get(label))
        _search_curves(ax_curve, label, trials)
        for ax, columns in ((ax_hist, 1), (ax_size, 1), (ax_curve, 2)):  # legends below the panels: no point hidden
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=columns, frameon=False)
    fig.tight_layout()
    return fig


def _search_by_trial(ax, label: str, done: list[dict]) -> None:
    """The completed trials' scores in the order they ran, a repeated size hollow, and the best so far."""
    import matplotlib.pyplot as plt

    new = [t for t in done if t["repeat_of"] is None]
    best, running = [], float("-inf")
    for t in done:
        running = max(running, t["value"])
        best.append(running)
    ax.plot([t["number"] for t in new], [t["value"] for t in new], "o", color="tab:blue", label="completed trial")
    ax.plot([t["number"] for t in done if t not in new], [t["value"] for t in done if t not in new], "o",
            mfc="none", color="tab:blue", label="a size proposed again (result reused, not retrained)")
    ax.step([t["number"] for t in done], best, where="post", color="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel="score (mean of seeds' best val acc)", title=f"{label}: completed trials")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))


def _search_by_size(ax, label: str, done: list[dict], write_up: int | None) -> None:
    """Each completed size's score (mean of seeds) with its seeds as dots, the best starred, the write-up's size."""
    new = [t for t in done if t["repeat_of"] is None]
    for t in new:
        ax.plot([t["hidden"]] * len(t["seed_values"]), t["seed_values"], ".", color="tab:blue", alpha=0.4)
    ax.plot([t["hidden"] for t in new], [t["value"] for t in new], "o", color="tab:blue",
            label="completed size (mean; dots: seeds)")
    if done:
        top = max(done, key=lambda t: t["value"])
        ax.plot(top["hidden"], top["value"], "*", color="tab:red", markersize=14, label=f"best: {top['hidden']} units")
    if write_up is not None:
        ax.axvline(write_up, color="tab:green", ls="--", label=f"write-up: {write_up}")
    ax.set(xlabel="hidden units", ylabel="score (mean of seeds' best val acc)", title=f"{label}: hidden size")


def _search_curves(ax, label: str, trials: list[dict]) -> None:
    """The first seed's validation accuracy after each epoch, per trial: completed solid, pruned dashed."""
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10")
    for k, t in enumerate(t for t in trials if t["history"]["val_acc"]):  # a repeat has no curve of its own
        acc = t["history"]["val_acc"]
        ax.plot(range(1, len(acc) + 1), acc, "-o" if t["state"] == "complete" else "--x",
                color=colors(k % 10), markersize=4, label=f"{t['hidden']} units ({t['state']})")
    ax.set(xlabel="epoch", ylabel="first seed's val acc", title=f"{label}: what the pruner compares")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))


def _find_tokens(needle: list[str], haystack: list[str]) -> int:
    """Position of `needle` as a contiguous run inside `haystack`; ValueError if absent."""
    for start in range(len(haystack) - len(needle) + 1):
        if list(haystack[start:start + len(needle)]) == list(needle):
            return start
    raise ValueError(f"{' '.join(needle)!r} does not occur inside {' '.join(haystack)!r}")


def _shared_tail(needle: list[str], haystack: list[str]) -> tuple[int, int]:
    """(cut, start): the longest tail needle[cut:] that occurs contiguously in `haystack`, and where. The tail,
    not the whole: course-v1 drops a one-letter word between two others, so "reviews i absolutely" loses its "i"
    while "i absolutely" at the start of a review keeps it."""
    for cut in range(len(needle)):
        try:
            return cut, _find_tokens(needle[cut:], haystack)
        except ValueError:
            continue
    raise ValueError(f"no word of {' '.join(needle)!r} occurs inside {' '.join(haystack)!r}")


def plot_context_effect(models: dict, text: str, longer_text: str):
    """Sub-scores of `text`'s words alone vs inside `longer_text`, one panel per model; returns (fig, table)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    # each panel its own y scale: averaging models (weighted) learn far larger s_i than summing ones
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    columns = {}
    for ax, (label, model) in zip(axes[0], models.items()):
        alone, inside = helpers.explain(model, text), helpers.explain(model, longer_text)
        cut, start = _shared_tail(alone["tokens"], inside["tokens"])
        words = alone["tokens"][cut:]
        a = alone["scores"][cut:]
        b = inside["scores"][start:start + len(a)]
        x = np.arange(len(a))
        ax.bar(x - 0.2, a, 0.4, color="tab:blue", label="alone")
        ax.bar(x + 0.2, b, 0.4, color="tab:orange", label="inside the longer review")
        ax.axhline(0, color="grey", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(x, words, rotation=55, ha="right")
        ax.set_title(f"{label}\nP(positive) {alone['prob']:.3f} alone, {inside['prob']:.3f} inside", fontsize=10)
        ax.set_ylabel("sub-score $s_i$")
        columns[(label, "alone")], columns[(label, "in context")] = a, b
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=9)
    fig.suptitle(f"The same words with and without context: “{text}”", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    if cut:
        print(f"compared: the last {len(words)} words; {' '.join(alone['tokens'][:cut])!r} is not among the longer "
              f"review's tokens")
    return fig, pd.DataFrame(columns, index=words)


def show_top_tokens(model: helpers.SentimentModel, text: str, k: int = 12, ax=None, title: str | None = None):
    """Bars of the k tokens that move a token-score model's logit most (s_i, s_i / n or w_i s_i); returns (ax, info)."""
    import matplotlib.pyplot as plt

    info = helpers.explain(model, text)
    if info["contributions"] is None:
        raise ValueError("token contributions exist only for the token-score models (sum, weighted, attn_*)")
    contrib = info["contributions"]
    top = np.argsort(-np.abs(contrib))[:k][::-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1.2))
    ax.barh(np.arange(len(top)), contrib[top], color=np.where(contrib[top] >= 0, "tab:green", "tab:red"))
    ax.set_yticks(np.arange(len(top)), [f"{info['tokens'][i]}  (#{i + 1})" for i in top])
    ax.axvline(0, color="grey", lw=0.8)
    limit = 1.1 * float(np.abs(contrib[top]).max()) or 1.0
    ax.set_xlim(-limit, limit)  # symmetric: the side of 0 is the sign of the push
    ax.locator_params(axis="x", nbins=5)
    ax.grid(axis="x", alpha=0.3)
    kind = "$w_i s_i$" if info["weights"] is not None else "$s_i / n$" if model.mean else "$s_i$"
    ax.set_xlabel(f"contribution to the logit ({kind})")
    ax.set_title(title or f"{model.info.name}: P(positive) = {info['prob']:.3f}", fontsize=10)
    ax.figure.tight_layout()
    return ax, info

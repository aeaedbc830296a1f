"""The measurements notebooks 03 and 04 read off trained models and data: what a tokenizer keeps of a review
(`first_tokens_profile`), how many held-out reviews share rare words with the training reviews (`shared_rare_words`),
how far back a recurrent model's gradient reaches (`gradient_reach`), how runs behave after their best epoch
(`overfitting_table` and the per-run metrics `train_val_gap`, `val_loss_rise`, `val_jitter`), the most confidently
wrong reviews (`confident_errors`, `seen_tokens`) and a run's P(positive) for the write-up's review 2 (`review2_prob`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ex2 import data, layers, models, runtime
from experiments import stats

if TYPE_CHECKING:
    import pandas as pd

    from experiments.records import RunRecord


def first_tokens_profile(texts: list[str], version: str, n: int = 100) -> dict:
    """What the first `n` tokens of each review hold under a tokenizer: tokens kept, the words among them
    (tokens of two or more letters, the HTML remnant "br" not counted) and the share of tokens GloVe knows."""
    tokenize, glove = data.TOKENIZERS[version], data.load_glove()
    kept = [tokenize(text)[:n] for text in texts]
    words = [sum(t.isalpha() and len(t) > 1 and t != "br" for t in k) for k in kept]
    known = sum(t in glove.index for k in kept for t in k) / max(sum(map(len, kept)), 1)
    return {"tokens kept": np.mean([len(k) for k in kept]), "words among them": np.mean(words),
            "reviews cut (> 100 tokens)": np.mean([len(tokenize(t)) > n for t in texts]), "in GloVe": known}


def shared_rare_words(held: list[set], pool: list[set], min_shared: int = 3, max_df: int = 10) -> float:
    """The fraction of `held` reviews (each a set of words) that share at least `min_shared` rare words with one
    review of `pool`. A rare word is one that occurs in 2..`max_df` reviews of `pool` (a name, a title, a plot
    word); two reviews that share three of them are almost always about the same film."""
    df = {}
    for review in pool:
        for w in review:
            df[w] = df.get(w, 0) + 1
    postings = {}
    for j, review in enumerate(pool):
        for w in review:
            if 2 <= df[w] <= max_df:
                postings.setdefault(w, []).append(j)
    hits = 0
    for words in held:
        counts = {}
        for w in words:
            for j in postings.get(w, ()):
                counts[j] = counts.get(j, 0) + 1
        hits += any(c >= min_shared for c in counts.values())
    return hits / max(len(held), 1)


def gradient_reach(model: models.RecurrentClassifier, split: data.Split, n: int = 256) -> np.ndarray:
    """How strongly the logit still depends on the word at each position: the mean over `n` full-length
    reviews of ‖∂ logit / ∂ x_t‖ for t = 1..T (x_t = the word vector read at step t). A plain RNN's
    curve can fall by orders of magnitude towards the start of the review (vanishing gradient); a GRU's
    stays flat where its update gates copy the state."""
    if not isinstance(model, models.RecurrentClassifier):
        raise ValueError("gradient_reach measures the recurrent models (rnn, gru)")
    full = torch.nonzero(split.lengths == split.ids.shape[1]).squeeze(1)[:n]
    if len(full) == 0:
        raise ValueError("the split has no review of full length")
    device = runtime.model_device(model)
    ids, lengths = split.ids[full].to(device), split.lengths[full].to(device)
    model.eval()
    x = model.embed(ids).detach().requires_grad_(True)
    logit = model.out(layers.run_cell(model.cell, x, layers.lengths_to_mask(lengths, ids.shape[1]))).squeeze(-1)
    (grad,) = torch.autograd.grad(logit.sum(), x)
    return grad.norm(dim=-1).mean(0).cpu().numpy()


def overfitting_table(groups: dict[str, list[RunRecord]]) -> pd.DataFrame:
    """How each group of runs ({label: [RunRecord, ...]}) behaves after its best epoch, mean ± sample std over
    seeds: best validation accuracy, epochs run (against the cap), the epoch of the lowest validation loss, how
    far the validation loss rose from that minimum by the last epoch run, and the train − validation accuracy gap
    at the last epoch (both measured in eval mode at the epoch's end)."""
    import pandas as pd

    rows = {}
    for label, records in groups.items():
        hs = [r.history for r in records]
        low = [int(np.argmin(h["val_loss"])) for h in hs]
        rows[label] = {
            "best val acc": stats.format_mean_std([max(h["val_acc"]) for h in hs]),
            "epochs run / cap": "/".join(str(len(h["val_acc"])) for h in hs) + f" of {records[0].settings['epochs']}",
            "min val loss at epoch": "/".join(str(i + 1) for i in low),
            "val loss rise after min": stats.format_mean_std([val_loss_rise(r) for r in records]),
            "train − val acc (last epoch)": stats.format_mean_std([train_val_gap(r) for r in records]),
        }
    return pd.DataFrame(rows).T


def train_val_gap(record: RunRecord) -> float:
    """A run's train − validation accuracy gap at its last epoch (a metric to compare runs on)."""
    return record.history["train_acc"][-1] - record.history["val_acc"][-1]


def val_loss_rise(record: RunRecord) -> float:
    """How far a run's validation loss rose from its minimum by the last epoch."""
    return record.history["val_loss"][-1] - min(record.history["val_loss"])


def val_jitter(history: dict) -> float:
    """The mean absolute change of validation accuracy from one epoch to the next (nan for a single epoch)."""
    return float(np.mean(np.abs(np.diff(history["val_acc"])))) if len(history["val_acc"]) > 1 else float("nan")


def seen_tokens(split: data.Split, i: int) -> list[str]:
    """The tokens of review i of a split as the models see them (first max_len, <unk> for unknown)."""
    return data.token_words(split.ids[i, : int(split.lengths[i])].tolist())


def confident_errors(probs: np.ndarray, split: data.Split, tokenizer: str, k: int = 5) -> pd.DataFrame:
    """The k misclassified reviews of `split` with the most confident P(positive) `probs`, as a DataFrame (for error
    analysis); "tokens (all)" is each review's whole length in token ids, encoded with `tokenizer` (the data's
    version, e.g. "course-v1") as the models' inputs are. A text that the split holds more than once (IMDB's test set
    repeats some reviews word for word) is listed once."""
    import pandas as pd

    labels = split.labels.numpy()
    wrong = np.flatnonzero((probs > 0.5) != (labels > 0.5))
    # stable: equally confident errors keep their index order on every rerun
    ranked = wrong[np.argsort(-np.abs(probs[wrong] - 0.5), kind="stable")]
    _, first = np.unique([split.texts[i] for i in ranked], return_index=True)  # where each distinct text first comes
    worst = ranked[np.sort(first)][:k]
    glove, tokenize = data.load_glove(), data.TOKENIZERS[tokenizer]
    return pd.DataFrame({
        "review": worst, "label": np.where(labels[worst] > 0.5, "pos", "neg"),
        "rating": split.ratings[worst].numpy(), "P(positive)": probs[worst].round(3),
        "tokens (all)": [len(glove.lookup(tokenize(split.texts[i]))) for i in worst]})


def review2_prob(record: RunRecord) -> float:
    """A run's P(positive) for the write-up's review 2: the metric the runs are compared on, seed by seed."""
    return record.writeup_probs[1]

"""Training and using the models of exercise 2: the training loop (`train`, one `train_epoch` of `train_step`s, with
its `History`), evaluation, prediction and explanation of raw reviews, and the recipes each named model is trained
with (`TRAIN_SETTINGS`, `recipe`, `train_model`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ex2 import data as imdb
from ex2 import models, runtime


@dataclasses.dataclass
class History:
    """Per-epoch curves of one training run (what `train` returns). `train_*` and `val_*` are measured in
    eval mode at the end of each epoch (dropout off; the training side on a fixed sample of TRAIN_PROBE
    training reviews), so every model's train−val gap means the same thing; `batch_*` are the running
    averages over the epoch's batches as the optimiser saw them (dropout on)."""

    train_loss: list = dataclasses.field(default_factory=list)
    train_acc: list = dataclasses.field(default_factory=list)
    val_loss: list = dataclasses.field(default_factory=list)
    val_acc: list = dataclasses.field(default_factory=list)
    batch_loss: list = dataclasses.field(default_factory=list)
    batch_acc: list = dataclasses.field(default_factory=list)
    epoch_seconds: list = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def best_val_acc(self) -> float:
        return max(self.val_acc) if self.val_acc else float("nan")

    def line(self, epoch: int) -> str:
        """The one-line summary of an epoch (1-based) that training prints."""
        i = epoch - 1
        return (f"epoch {epoch:2d} | train loss {self.train_loss[i]:.3f} acc {self.train_acc[i]:.3f} | "
                f"val loss {self.val_loss[i]:.3f} acc {self.val_acc[i]:.3f} | {self.epoch_seconds[i]:.1f} s")

    def add(self, batch: tuple[float, float], fit: dict, val: dict, seconds: float) -> bool:
        """Append one epoch: the batches' (loss, accuracy), `evaluate` on the training probe and on validation, and
        its seconds. Returns whether its validation accuracy is the best so far."""
        for key, value in (("batch_loss", batch[0]), ("batch_acc", batch[1]), ("train_loss", fit["loss"]),
                           ("train_acc", fit["acc"]), ("val_loss", val["loss"]), ("val_acc", val["acc"]),
                           ("epoch_seconds", seconds)):
            getattr(self, key).append(value)
        return self.val_acc[-1] > max(self.val_acc[:-1], default=-1.0)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


TRAIN_PROBE = 5000
"""How many training reviews (a fixed stratified sample) `train` re-evaluates in eval mode after each epoch."""


@torch.no_grad()
def split_logits(model: nn.Module, split: imdb.Split, batch_size: int = 512) -> torch.Tensor:
    """The logit of every review of a split (N,), in order, in eval mode, on the CPU: what `evaluate`,
    `predict_split` and the run records' per-review correctness all read."""
    was_training = model.training
    model.eval()
    device = runtime.model_device(model)
    logits = [model(ids, lengths).cpu() for ids, lengths, _ in imdb.batches(split, batch_size, device=device)]
    model.train(was_training)
    return torch.cat(logits) if logits else torch.zeros(0)


def is_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Which predictions are right: logit > 0 means positive (label 1). The one definition, used by training,
    `evaluate` and the run records."""
    return (logits > 0).float() == labels


def evaluate(model: nn.Module, split: imdb.Split, batch_size: int = 512) -> dict:
    """Accuracy and mean BCE loss of `model` on a split."""
    logits, n = split_logits(model, split, batch_size), max(len(split), 1)
    loss = F.binary_cross_entropy_with_logits(logits, split.labels, reduction="sum")
    return {"acc": int(is_correct(logits, split.labels).sum()) / n, "loss": float(loss) / n}


CLIP_NORM = 1.0
"""Every training step clips the gradient norm at 1 (long RNN sequences can produce rare huge gradients)."""


def make_optimizer(model: nn.Module, lr: float, emb_weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW without weight decay on the network, and a separate group for the word-vector corrections Δ
    whose decoupled decay `emb_weight_decay` pulls them back towards GloVe."""
    delta = [] if model.delta is None else list(model.delta.parameters())
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in delta)]
    groups = [{"params": rest, "weight_decay": 0.0}]
    if delta:
        groups.append({"params": delta, "weight_decay": emb_weight_decay})
    return torch.optim.AdamW(groups, lr=lr)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids, lengths, labels) -> tuple[float, int]:
    """One optimisation step on one batch: forward, BCE loss, backward, clipped gradient, AdamW update.
    Returns (summed loss, correct predictions)."""
    logits = model(ids, lengths)
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], CLIP_NORM)
    optimizer.step()
    return loss.item() * len(labels), int(is_correct(logits.detach(), labels).sum())


def train_epoch(model: nn.Module, split: imdb.Split, optimizer, batch_size: int, generator: torch.Generator,
                desc: str = "", progress: bool = True) -> tuple[float, float]:
    """One pass over `split` in a seeded random order, with a progress bar; returns (mean loss, accuracy)
    of the training batches as they went (dropout on)."""
    model.train()
    loss_sum, correct = 0.0, 0
    device = runtime.model_device(model)
    bar = runtime.progress_bar(imdb.batches(split, batch_size, shuffle=True, generator=generator, device=device),
                               total=math.ceil(len(split) / batch_size), desc=desc, leave=False,
                               disable=not progress or None)
    for ids, lengths, labels in bar:
        loss, right = train_step(model, optimizer, ids, lengths, labels)
        loss_sum, correct = loss_sum + loss, correct + right
    bar.close()
    return loss_sum / len(split), correct / len(split)


def train(model: nn.Module, data: imdb.Imdb, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
          seed: int = 0, patience: int | None = None, emb_weight_decay: float = 0.0,
          callback: Callable[[int, History], None] | None = None, progress: bool = True,
          verbose: bool = True) -> History:
    """Train with AdamW on BCE-with-logits; a progress bar per epoch and one line after it.

    Seeded (shuffling uses its own generator): the same seed gives the same numbers on the same
    machine. With `patience`, training stops after that many epochs without a better validation
    accuracy and the best weights are restored. `callback(epoch, history)` runs after every epoch
    (e.g. an Optuna pruner; an exception it raises propagates). Shown in notebook 03, section 3."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    runtime.set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, lr, emb_weight_decay)
    probe = (data.train if len(data.train) <= TRAIN_PROBE
             else data.train.take(imdb.stratified_sample(data.train.labels, TRAIN_PROBE, 0)[1]))
    history, best_state, since_best = History(), None, 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        batches = train_epoch(model, data.train, optimizer, batch_size, generator, f"epoch {epoch}/{epochs}", progress)
        best = history.add(batches, evaluate(model, probe), evaluate(model, data.val), time.perf_counter() - start)
        if verbose:
            print(history.line(epoch), flush=True)
        if best:
            history.best_epoch, since_best = epoch, 0
            if patience is not None:  # keep the best weights to restore them at the end
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        if callback is not None:
            callback(epoch, history)
        if patience is not None and since_best >= patience:
            history.stopped_early = epoch < epochs
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def predict_split(model: nn.Module, split: imdb.Split, batch_size: int = 512) -> np.ndarray:
    """P(positive) for every review of a split, in order (for error analysis)."""
    return torch.sigmoid(split_logits(model, split, batch_size)).numpy()


def encode_reviews(model: nn.Module, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and lengths of raw reviews, after the checks `predict` and `explain` promise."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError("expected a review (str) or a non-empty list of reviews")
    def which(i: int) -> str:
        return "the review" if len(texts) == 1 else f"review {i}"

    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{which(i)} is a {type(text).__name__}, not a str")
        if not text.strip():
            raise ValueError(f"{which(i)} is empty: there is nothing to classify")
    ids, lengths, _ = imdb.encode(texts, max_len=model.info.max_len, tokenizer=model.info.tokenizer)
    empty = [i for i, n in enumerate(lengths.tolist()) if n == 0]
    if empty:
        raise ValueError(f"{which(empty[0])} has no tokens after tokenization")
    return ids, lengths


@torch.no_grad()
def predict(model: nn.Module, texts) -> np.ndarray:
    """P(positive) for one raw review or a list of them, as a float array.

    Defined behaviour for odd input: a review is read with the tokenizer the model was trained with
    (`model.info.tokenizer`) and cut to its first `max_len` tokens (100), as in training; unknown words use
    the UNK vector (a review of only unknown words still gets a number). An empty or whitespace-only review,
    one without a single token (course-v1: no letter), or a non-str raises ValueError."""
    ids, lengths = encode_reviews(model, texts)
    model.eval()
    device = runtime.model_device(model)
    return torch.sigmoid(model(ids.to(device), lengths.to(device))).cpu().numpy()


@torch.no_grad()
def explain(model: nn.Module, text: str) -> dict:
    """What a model did with one review: its tokens (as seen, first `max_len`), whether each is in
    GloVe, P(positive), and per model kind the sub-scores s_i (token models), the weights w_i
    (weighted models), each token's share of the logit (`contributions`: s_i, s_i / n for a mean, w_i s_i; they
    add up to the logit), the attention matrix (attention models, rows = queries) or the running
    P(positive) after each prefix (RNN / GRU). Same input rules as `predict`."""
    if not isinstance(text, str):
        raise ValueError(f"explain takes one review (str), got {type(text).__name__}")
    ids, lengths = encode_reviews(model, [text])
    model.eval()
    n = int(lengths[0])
    device = runtime.model_device(model)
    logit, parts = model(ids.to(device), lengths.to(device), details=True)
    logit, parts = logit.cpu(), {k: v.cpu() if torch.is_tensor(v) else v for k, v in parts.items()}
    out = {"tokens": imdb.token_words(ids[0, :n].tolist()), "known": (ids[0, :n] != imdb.UNK).tolist(),
           "prob": float(torch.sigmoid(logit[0])), "logit": float(logit[0]),
           "scores": None, "weights": None, "contributions": None, "attention": None, "prefix_probs": None}
    if "prefix_logits" in parts:
        out["prefix_probs"] = torch.sigmoid(parts["prefix_logits"][0, :n]).numpy()
    else:
        out["scores"] = parts["scores"][0, :n].numpy()
        out["contributions"] = parts["contributions"][0, :n].numpy()
        if parts["weights"] is not None:
            out["weights"] = parts["weights"][0, :n].numpy()
        if parts["attention"] is not None:
            out["attention"] = parts["attention"][0, :n, :n].numpy()
    return out


# --- recipes: what each named model is trained with ---

TRAIN_SETTINGS = {
    # AdamW at 1e-3, gradient norm clipped at 1, early stopping on validation accuracy after 3 epochs without a
    # better one (best weights restored). The epoch caps are far above where the runs stop, so patience (what
    # validation says), not a cap, ends every run; the records say where each one stopped.
    "rnn": {"epochs": 30, "lr": 1e-3, "batch_size": 128, "patience": 3},  # lr 3e-3: notebook 03, section 4
    "gru": {"epochs": 30, "lr": 1e-3, "batch_size": 128, "patience": 3},
    # sum: its logit adds up to 100 sub-scores, so every step moves the decision threshold of all reviews and the
    # validation accuracy jumps by several points between epochs; batches of 512 (4x fewer, less noisy steps)
    # and patience 10 ride the noise out. Compared with batch 128 / patience 3 in notebook 04, Going further.
    "sum": {"epochs": 60, "lr": 1e-3, "batch_size": 512, "patience": 10},
    "weighted": {"epochs": 30, "lr": 1e-3, "batch_size": 128, "patience": 3},
    "attn_sum": {"epochs": 30, "lr": 1e-3, "batch_size": 128, "patience": 3},
    "attn_weighted": {"epochs": 30, "lr": 1e-3, "batch_size": 128, "patience": 3},
}
"""The recipe of each named model (trainable word vectors), chosen on the validation split."""

FROZEN = {"trainable": False, "emb_dropout": 0.0}
"""What the frozen-GloVe baseline changes in a model's config; its training settings are the same."""


def recipe(name: str, trainable: bool = True) -> tuple[dict, dict]:
    """(config overrides, training settings) of `name` with trainable (the named model) or frozen
    word vectors."""
    return ({} if trainable else dict(FROZEN)), dict(TRAIN_SETTINGS[models.check_name(name)])


STUDENT_EPOCHS = {"rnn": 8, "gru": 3, "sum": 12, "weighted": 3, "attn_sum": 3, "attn_weighted": 3}
"""The student run's epoch cap per model (trainable and frozen vectors alike): enough for each model a graded
figure uses to pass 75 % test accuracy on the full training split (the RNN with frozen vectors stays below: that
is what notebook 03, section 4 is about), measured on 2 cores."""


def student_recipe(name: str, trainable: bool = True) -> tuple[dict, dict]:
    """(config overrides, training settings) of the student run (`RunMode` "student"): `recipe(name, trainable)`
    capped at STUDENT_EPOCHS[name] epochs; early stopping and the best epoch's weights as in the recipe."""
    config, settings = recipe(name, trainable)
    return config, {**settings, "epochs": min(settings["epochs"], STUDENT_EPOCHS[models.check_name(name)])}


def train_model(name: str, data: imdb.Imdb, seed: int = 0, config: dict | None = None, progress: bool = True,
                verbose: bool = True, **settings) -> tuple[models.SentimentModel, History]:
    """Build `name` (DEFAULT_CONFIGS, changed by `config`) and train it with TRAIN_SETTINGS[name]
    (changed by `settings`): the one recipe behind the notebooks and the checkpoints."""
    model = models.make_model(name, seed=seed, **(config or {}))
    model.info.max_len, model.info.tokenizer = data.max_len, data.tokenizer
    model.to(runtime.get_device())
    if model.trainable:
        model.adapt_rows(models.training_vocabulary(data.train, model.min_count))
    settings = {**TRAIN_SETTINGS[name], **settings}
    model.info.settings = {k: v for k, v in settings.items() if not callable(v)}
    history = train(model, data, seed=seed, progress=progress, verbose=verbose, **settings)
    return model, history


WRITEUP_REVIEWS = ("i absolutely loved every aspect of this movie",
                   "despite the bad reviews i absolutely loved every aspect of this movie")
"""The two reviews the write-up classified with each token model (notebook 04, section 4)."""


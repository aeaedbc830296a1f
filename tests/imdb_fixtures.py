"""Tiny IMDB-layout archives and folders, built on the fly by the tests."""
import io
import tarfile
from pathlib import Path

REVIEWS = {
    ("train", "pos"): ["A wonderful, moving film.<br />Loved it!", "Great acting; don't miss it."],
    ("train", "neg"): ["Terrible plot. I can't recommend it.", "Boring, bad and far too long..."],
    ("test", "pos"): ["Brilliant and funny."],
    ("test", "neg"): ["Awful. Just awful."],
}


TOY_REVIEWS = {
    ("train", "pos"): [f"a great wonderful film number {i}, loved it" for i in range(12)],
    ("train", "neg"): [f"a bad boring awful film number {i}, hated it" for i in range(12)],
    ("test", "pos"): ["great and wonderful", "loved it, great"],
    ("test", "neg"): ["bad and boring", "awful, hated it"],
}
"""A separable toy corpus: models, search and plots are tested on it without IMDB (conftest's `toy_archive`
and `toy_data` are the one place that writes and loads it)."""

TOY_LOAD = {"max_len": 12, "val_size": 6}
"""How the toy corpus is loaded: 18 train / 6 validation / 4 test reviews of at most 12 tokens."""


def write_archive(path: Path, reviews=REVIEWS, extra: dict | None = None) -> Path:
    """A .tar.gz with aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt (+ unsup/, .feat noise)."""
    with tarfile.open(path, "w:gz") as archive:
        def add(name: str, text: str):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        for (split, label), texts in reviews.items():
            for i, text in enumerate(texts):
                rating = 9 if label == "pos" else 2
                add(f"aclImdb/{split}/{label}/{i}_{rating}.txt", text)
        add("aclImdb/train/unsup/0_0.txt", "unlabeled review")
        add("aclImdb/train/labeledBow.feat", "0:1 1:2")
        for name, text in (extra or {}).items():
            add(name, text)
    return path


def write_folder(root: Path, reviews=REVIEWS) -> Path:
    for (split, label), texts in reviews.items():
        folder = root / "aclImdb" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            (folder / f"{i}_{9 if label == 'pos' else 2}.txt").write_text(text)
    return root / "aclImdb"

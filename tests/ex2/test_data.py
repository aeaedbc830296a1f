"""The data layer: IMDB sources and errors, the tokenizer, GloVe, the cache."""
import subprocess
import sys
import time

import pytest
import torch
from imdb_fixtures import REVIEWS, write_archive, write_folder

import helpers
from ex2 import data as imdb
from ex2 import runtime
from ex2.data import ImdbError, batches, download_imdb, encode


def test_tokenizer_matches_glove_conventions():
    assert helpers.tokenize("I don't like it.<br />It's BAD!!") == [
        "i", "do", "n't", "like", "it", ".", "it", "'s", "bad", "!", "!"]
    assert helpers.tokenize("Can't won't") == ["ca", "n't", "wo", "n't"]
    assert helpers.tokenize("Wait...  \u201cWow\u201d") == ["wait", "...", '"', "wow", '"']
    assert helpers.tokenize("") == []
    with pytest.raises(ValueError):
        helpers.tokenize(None)


def test_course_tokenizer_is_the_course_loaders_definition():
    # the course skeleton's loader: non-letters to spaces, one-letter words between spaces dropped, lower case
    assert helpers.course_tokenize("I don't like it.<br />It's BAD!!") == ["i", "don", "like", "it", "br", "it", "bad"]
    assert helpers.course_tokenize("a film, 10/10: a b c d") == ["a", "film", "b", "d"]  # its quirks, kept
    assert helpers.course_tokenize("") == [] and helpers.course_tokenize("!!! 42") == []
    assert set(helpers.TOKENIZERS) == {"glove6b-v1", "course-v1"}
    assert helpers.TOKENIZERS["course-v1"] is helpers.course_tokenize
    with pytest.raises(ValueError, match="unknown tokenizer 'bpe'.*course-v1"):
        imdb.get_tokenizer("bpe")
    with pytest.raises(ValueError):
        helpers.course_tokenize(3)
    ids, lengths, kept = encode(["Don't miss it!!"], max_len=5, tokenizer="course-v1")
    assert kept == [["don", "miss", "it"]] and lengths.tolist() == [3]


def test_validation_is_the_top_block_of_ids_of_each_label():
    labels = torch.tensor([1.0] * 6 + [0.0] * 6)
    review_ids = torch.tensor([5, 0, 3, 1, 4, 2] * 2)  # the archive order is not the id order
    train, val = helpers.validation_split(labels, review_ids, 4)
    assert sorted(review_ids[val].tolist()) == [4, 4, 5, 5] and labels[val].sum() == 2
    assert set(train.tolist()).isdisjoint(val.tolist()) and len(train) + len(val) == 12
    assert train.tolist() == sorted(train.tolist()) and val.tolist() == sorted(val.tolist())


def test_glove_vector_of_the_is_the_published_one():
    glove = imdb.load_glove()
    assert glove.vectors.shape == (400_002, 50)
    # first five numbers of "the" in glove.6B.50d.txt
    expected = torch.tensor([0.418, 0.24968, -0.41242, 0.1217, 0.34527])
    torch.testing.assert_close(glove["the"][:5], expected, rtol=0, atol=1e-6)
    assert glove.index["the"] == 2
    assert torch.count_nonzero(glove.vectors[imdb.PAD]) == 0
    torch.testing.assert_close(glove.vectors[imdb.UNK], glove.vectors[2:].mean(0))
    assert glove.lookup(["the", "qwzxqwzx", "do", "n't"]) == [2, imdb.UNK, glove.index["do"], glove.index["n't"]]
    # an unknown hyphenated word falls back to its parts
    assert glove.lookup(["xqzw-movie"]) == [imdb.UNK, glove.index["movie"]]


@pytest.fixture
def tiny_imdb(tiny_archive, isolated_data_dir, monkeypatch):
    """The tiny archive as IMDB_PATH, with an empty data folder of its own (no cache, no archive): what
    `load_imdb` then reads."""
    monkeypatch.setenv("IMDB_PATH", str(tiny_archive))
    return tiny_archive


def test_read_archive_skips_unsup_and_feat(tiny_archive):
    raw = helpers.read_imdb(tiny_archive)
    assert len(raw["train"]["texts"]) == 4 and len(raw["test"]["texts"]) == 2
    assert raw["train"]["labels"] == [1, 1, 0, 0]
    assert raw["train"]["ratings"] == [9, 9, 2, 2]
    assert "unlabeled review" not in raw["train"]["texts"]


def test_folder_and_archive_give_the_same_reviews(tmp_path, tiny_archive):
    folder = write_folder(tmp_path / "extracted")
    assert helpers.read_imdb(folder) == helpers.read_imdb(tiny_archive)
    assert helpers.read_imdb(folder.parent) == helpers.read_imdb(tiny_archive)


def test_load_imdb_from_env_archive_then_cache(tiny_imdb, isolated_data_dir, capsys):
    data = helpers.load_imdb(max_len=5, val_size=2)
    assert "tokenized IMDB" in capsys.readouterr().out
    assert (len(data.train), len(data.val), len(data.test)) == (2, 2, 2)
    assert sorted(data.val.labels.tolist()) == [0.0, 1.0]  # stratified
    assert data.val.texts == [REVIEWS["train", "pos"][1], REVIEWS["train", "neg"][1]]  # the highest id of each label
    assert (data.tokenizer, data.split) == (helpers.TOKENIZER_VERSION, "idblock-v1") and "idblock-v1" in repr(data)
    assert data.train.ids.shape[1] == 5 and int(data.train.lengths.max()) <= 5
    assert (data.train.ids[~data.train.mask] == imdb.PAD).all()
    assert 0.9 < data.coverage["kept"] <= 1.0
    again = helpers.load_imdb(max_len=5, val_size=2)
    assert "tokenized IMDB" not in capsys.readouterr().out  # second load came from the cache
    assert torch.equal(again.test.ids, data.test.ids)
    assert len(list((isolated_data_dir / "cache").glob("*.pt"))) == 1
    helpers.load_imdb(max_len=7, val_size=2)  # another max_len is another cache entry
    assert len(list((isolated_data_dir / "cache").glob("*.pt"))) == 2
    other = helpers.load_imdb(max_len=5, val_size=2, tokenizer="glove6b-v1")  # and another tokenizer
    assert len(list((isolated_data_dir / "cache").glob("*.pt"))) == 3 and other.tokenizer == "glove6b-v1"
    words = imdb.token_words(other.test.ids[1, :other.test.lengths[1]].tolist())
    assert words == ["awful", ".", "just", "awful", "."]
    course = helpers.load_imdb(max_len=5, val_size=2, tokenizer="course-v1")
    assert imdb.token_words(course.test.ids[1, :course.test.lengths[1]].tolist()) == ["awful", "just", "awful"]
    with pytest.raises(ValueError, match="unknown tokenizer"):
        helpers.load_imdb(max_len=5, val_size=2, tokenizer="glove6b-v0")


def test_a_second_process_waits_for_the_cache_instead_of_tokenizing_again(tiny_imdb, isolated_data_dir):
    """Two processes that need the same cache (notebook 03's workers, the grader's children): while one builds it
    (here: this test, holding the cache's lock), the other waits and then reads that file."""
    cache = isolated_data_dir / "cache" / f"imdb-{imdb._cache_key(tiny_imdb, 5, helpers.TOKENIZER_VERSION)}.pt"
    child = ("import sys; from pathlib import Path; import helpers, ex2.runtime; "
             "ex2.runtime.CACHE_DIR = Path(sys.argv[1]); print('ready', flush=True); "
             "data = helpers.load_imdb(max_len=5, val_size=2); print('loaded', len(data.test))")
    with runtime.exclusive_lock(cache.with_suffix(".lock")):
        proc = subprocess.Popen([sys.executable, "-c", child, str(cache.parent)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=runtime.ROOT)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(1.0)  # the child reaches the lock and finds no cache
        assert proc.poll() is None, proc.stdout.read()  # it waits
        data = imdb._tokenize_imdb(helpers.read_imdb(tiny_imdb), 5, helpers.TOKENIZER_VERSION)
        torch.save(data, cache)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.endswith("loaded 2\n"), out
    assert "tokenized IMDB" not in out, out  # it read the cache this process wrote


def test_data_folder_is_searched_when_no_env(isolated_data_dir):
    write_archive(isolated_data_dir / "aclImdb_v1.tar.gz")
    assert helpers.find_imdb(download=False) == isolated_data_dir / "aclImdb_v1.tar.gz"


def test_missing_data_without_network_names_every_option(isolated_data_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(imdb.urllib.request, "urlopen", offline)
    with pytest.raises(ImdbError) as info:
        helpers.load_imdb()
    message = str(info.value)
    assert "IMDB_PATH" in message and str(isolated_data_dir) in message and imdb.IMDB_URL in message
    assert not list(isolated_data_dir.iterdir())  # nothing half-written


def test_missing_env_path_is_reported(isolated_data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("IMDB_PATH", str(tmp_path / "nope.tar.gz"))
    with pytest.raises(ImdbError, match="nope.tar.gz does not exist"):
        helpers.load_imdb()


def test_corrupt_archive_names_the_file(tmp_path, isolated_data_dir, monkeypatch):
    bad = tmp_path / "aclImdb_v1.tar.gz"
    good = write_archive(tmp_path / "good.tar.gz").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated download
    monkeypatch.setenv("IMDB_PATH", str(bad))
    with pytest.raises(ImdbError, match="aclImdb_v1.tar.gz is not a readable IMDB archive"):
        helpers.load_imdb()
    assert not list((isolated_data_dir / "cache").glob("*.pt*"))  # no cache entry, no partial file (the lock stays)


def test_wrong_layout_says_what_was_found(tmp_path, monkeypatch, isolated_data_dir):
    flat = {("train", "pos"): ["good"], ("test", "pos"): ["fine"]}  # no negatives at all
    path = write_archive(tmp_path / "flat.tar.gz", reviews=flat)
    monkeypatch.setenv("IMDB_PATH", str(path))
    with pytest.raises(ImdbError, match=r"wrong layout.*found 1 pos / 0 neg"):
        helpers.load_imdb()


class _FakeResponse:
    def __init__(self, payload: bytes):
        self.payload, self.headers = payload, {"Content-Length": str(len(payload))}

    def read(self, n=-1):
        chunk, self.payload = self.payload[:n], self.payload[n:]
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_verifies_checksum_and_writes_atomically(tmp_path, isolated_data_dir, monkeypatch):
    payload = write_archive(tmp_path / "src.tar.gz").read_bytes()
    monkeypatch.setattr(imdb.urllib.request, "urlopen", lambda *a, **k: _FakeResponse(payload))
    dest = isolated_data_dir / "aclImdb_v1.tar.gz"
    with pytest.raises(ImdbError, match="checksum mismatch"):
        download_imdb(md5="0" * 32, dest=dest)
    assert list(isolated_data_dir.iterdir()) == []  # partial file removed
    import hashlib
    good_md5 = hashlib.md5(payload).hexdigest()
    assert download_imdb(md5=good_md5, dest=dest) == dest
    assert dest.read_bytes() == payload
    assert [p.name for p in isolated_data_dir.iterdir()] == ["aclImdb_v1.tar.gz"]


def test_load_imdb_rejects_bad_arguments():
    with pytest.raises(ValueError):
        helpers.load_imdb(max_len=0)
    with pytest.raises(ValueError):
        helpers.load_imdb(val_size=0)


def test_damaged_cache_is_rebuilt(tiny_imdb, isolated_data_dir, capsys):
    helpers.load_imdb(max_len=5, val_size=2, verbose=False)
    (cache,) = (isolated_data_dir / "cache").glob("*.pt")
    cache.write_bytes(b"not a torch file")
    data = helpers.load_imdb(max_len=5, val_size=2)
    assert len(data.test) == 2 and "tokenized IMDB" in capsys.readouterr().out  # rebuilt from the archive
    assert torch.equal(torch.load(cache, weights_only=True)["test"]["ids"], data.test.ids.int())  # and rewritten
    helpers.load_imdb(max_len=5, val_size=2)
    assert "tokenized IMDB" not in capsys.readouterr().out  # the next load reads it


def test_stratified_sample_is_seeded_balanced_and_disjoint():
    labels = torch.tensor([1.0] * 30 + [0.0] * 70)
    rest, sample = helpers.stratified_sample(labels, 20, seed=0)
    assert len(sample) == 20 and len(rest) == 80
    assert set(rest.tolist()).isdisjoint(sample.tolist())
    assert set(rest.tolist()) | set(sample.tolist()) == set(range(100))
    assert labels[sample].sum() == 6  # the 30 / 70 balance of the whole: 6 positives of 20
    assert rest.tolist() == sorted(rest.tolist()) and sample.tolist() == sorted(sample.tolist())
    again, other = helpers.stratified_sample(labels, 20, seed=0)[1], helpers.stratified_sample(labels, 20, seed=1)[1]
    assert torch.equal(again, sample) and not torch.equal(other, sample)


def test_subset_keeps_a_stratified_sample_of_each_split(toy_data):
    from imdb_fixtures import TOY_LOAD

    small = helpers.load_imdb(**TOY_LOAD, subset=4, verbose=False)  # what SMOKE_TEST runs do with 1,000
    assert (len(small.train), len(small.val), len(small.test)) == (4, 4, 4)
    assert small.train.labels.sum() == 2 and small.val.labels.sum() == 2  # both classes, balanced
    assert set(small.train.texts) <= set(toy_data.train.texts) and set(small.val.texts) <= set(toy_data.val.texts)
    assert small.test.texts == toy_data.test.texts  # a split no larger than the subset is kept whole


def test_encode_pads_cuts_and_keeps_the_tokens():
    glove = imdb.load_glove()
    ids, lengths, kept = encode(["a great film", "bad " * 10, "qwzxqwzx"], max_len=4)
    assert ids.shape == (3, 4) and lengths.tolist() == [3, 4, 1]
    assert ids[0].tolist() == [glove.index["a"], glove.index["great"], glove.index["film"], imdb.PAD]
    assert ids[1].tolist() == [glove.index["bad"]] * 4  # cut to max_len
    assert ids[2, 0] == imdb.UNK and kept[0] == ["a", "great", "film"]


def test_real_imdb_sizes_and_split(real_imdb, imdb_small, imdb_source):
    full = real_imdb
    assert (len(full.train), len(full.val), len(full.test)) == (20_000, 5_000, 25_000)
    assert full.val.labels.mean() == 0.5 and full.test.labels.mean() == 0.5 and full.train.labels.mean() == 0.5
    # validation is exactly the reviews with ids >= 10,000 of each label of the official training set (compared as
    # sorted lists of texts: IMDB repeats some reviews under different ids)
    raw = helpers.read_imdb(imdb_source)["train"]
    held, kept = [], []
    for text, review_id in zip(raw["texts"], raw["ids"]):
        (held if review_id >= 10_000 else kept).append(text)
    assert sorted(full.val.texts) == sorted(held) and len(held) == 5000
    assert sorted(full.train.texts) == sorted(kept)
    assert full.split == "idblock-v1" and full.tokenizer == helpers.TOKENIZER_VERSION
    assert full.coverage["kept"] > 0.99
    assert len(imdb_small.train) == 2000 and imdb_small.train.labels.mean() == 0.5


def test_batches_trim_to_longest_review(tiny_imdb):
    data = helpers.load_imdb(max_len=50, val_size=2, verbose=False)
    ids, lengths, labels = next(batches(data.test, 8))
    assert ids.shape[1] == int(lengths.max()) and len(labels) == 2

"""Shared fixtures. The one toy corpus (`toy_archive` / `toy_data`) is written once per session from
imdb_fixtures.TOY_REVIEWS; a test that starts another process hands it the archive's path (IMDB_PATH is set
while `toy_data` is in use, and the path can go on the command line). The real IMDB is used only where
present (`imdb_source`, `imdb_small`, `real_imdb`), otherwise those tests are skipped with the how-to."""

import pytest
import torch
from imdb_fixtures import TOY_LOAD, TOY_REVIEWS, write_archive

import helpers
from ex2 import runtime
from ex2.data import ImdbError


@pytest.fixture
def tiny_archive(tmp_path):
    """Six short reviews in Stanford's layout (plus unsup/ and .feat noise): the data-layer tests' input."""
    return write_archive(tmp_path / "aclImdb_v1.tar.gz")


@pytest.fixture
def isolated_data_dir(tmp_path, monkeypatch):
    """Point data/ and its cache at a temp dir so tests never touch the real ones: in `ex2.runtime`, where every
    module reads them (`runtime.DATA_DIR` at call time, never a copy)."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(runtime, "DATA_DIR", data)
    monkeypatch.setattr(runtime, "CACHE_DIR", data / "cache")
    monkeypatch.delenv("IMDB_PATH", raising=False)
    return data


@pytest.fixture(scope="session")
def toy_archive(tmp_path_factory):
    """The toy IMDB archive (imdb_fixtures.TOY_REVIEWS: 24 training and 4 test reviews that "great /
    wonderful / loved" vs "bad / boring / awful / hated" separate), written once per session."""
    return write_archive(tmp_path_factory.mktemp("toy") / "toy.tar.gz", reviews=TOY_REVIEWS)


@pytest.fixture(scope="session")
def _toy_imdb(toy_archive, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime, "CACHE_DIR", tmp_path_factory.mktemp("toy-cache"))  # where load_imdb caches
        patch.setenv("IMDB_PATH", str(toy_archive))
        return helpers.load_imdb(**TOY_LOAD, verbose=False)


@pytest.fixture
def toy_data(_toy_imdb, toy_archive, isolated_data_dir, monkeypatch):
    """The toy corpus as an Imdb (18 train / 6 validation / 4 test reviews, max_len 12; shared by the
    session: do not modify it). While it is in use IMDB_PATH names the toy archive (child processes inherit
    it), data/ is a temp dir, progress bars are off and OPTUNA_STORAGE is unset."""
    monkeypatch.setenv("IMDB_PATH", str(toy_archive))
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.setenv("HELPERS_PROGRESS", "0")
    return _toy_imdb


@pytest.fixture(scope="session")
def imdb_source():
    """Where the real IMDB is ($IMDB_PATH or data/, never downloaded); skipped (with how-to) when absent."""
    try:
        return helpers.find_imdb(download=False)
    except ImdbError as exc:
        pytest.skip(f"real IMDB not available - set IMDB_PATH to aclImdb_v1.tar.gz. {exc}")


@pytest.fixture(scope="session")
def imdb_small(imdb_source):
    """A stratified 2,000-review sample of the real IMDB; skipped (with how-to) when absent."""
    return helpers.load_imdb(subset=2000, verbose=False)


@pytest.fixture(scope="session")
def real_imdb(imdb_source):
    """The whole real IMDB (20,000 / 5,000 / 25,000); skipped (with how-to) when absent."""
    return helpers.load_imdb(verbose=False)


@pytest.fixture
def one_thread():
    """One torch thread (toy work is tiny: threads only wait for each other on a busy machine); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def train_results_tool():
    """experiments/recompute.py, the recompute tool (`python -m experiments.recompute`)."""
    from experiments import recompute

    return recompute

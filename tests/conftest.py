"""Shared fixtures: tiny IMDB-layout archives built in a temp dir, and the real IMDB when present."""
import pytest

import helpers
from imdb_fixtures import TOY_REVIEWS, write_archive


@pytest.fixture
def tiny_archive(tmp_path):
    return write_archive(tmp_path / "aclImdb_v1.tar.gz")


@pytest.fixture
def isolated_data_dir(tmp_path, monkeypatch):
    """Point helpers' data/ and cache at a temp dir so tests never touch the real ones."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(helpers, "DATA_DIR", data)
    monkeypatch.setattr(helpers, "CACHE_DIR", data / "cache")
    monkeypatch.delenv("IMDB_PATH", raising=False)
    return data


@pytest.fixture(scope="session")
def imdb_small():
    """A stratified 2,000-review sample of the real IMDB; skipped (with how-to) when absent."""
    try:
        helpers.find_imdb(download=False)
    except helpers.ImdbError as exc:
        pytest.skip(f"real IMDB not available - set IMDB_PATH to aclImdb_v1.tar.gz. {exc}")
    return helpers.load_imdb(subset=2000, verbose=False)


@pytest.fixture
def toy_data(tmp_path, isolated_data_dir, monkeypatch):
    """The toy corpus as an Imdb (max_len 12, 6 validation reviews), quiet, no shared study storage."""
    monkeypatch.setenv("IMDB_PATH", str(write_archive(tmp_path / "toy.tar.gz", reviews=TOY_REVIEWS)))
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    monkeypatch.setenv("HELPERS_PROGRESS", "0")
    return helpers.load_imdb(max_len=12, val_size=6, verbose=False)

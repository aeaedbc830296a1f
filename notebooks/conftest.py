"""nbval runs every notebook here; the IMDB notebooks are skipped (with how-to) when IMDB is absent.

Collecting never downloads: only local copies ($IMDB_PATH, data/) count; the skip reason gives the
one command that downloads the archive."""
from functools import lru_cache

import pytest

import helpers
from ex2.data import ImdbError


@lru_cache(maxsize=1)
def _imdb_missing_reason() -> str | None:
    try:
        helpers.find_imdb(download=False)
    except ImdbError as exc:
        return f"needs the IMDB dataset. {exc}"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = getattr(item, "path", None)
        if path is None or path.suffix != ".ipynb":
            continue
        if "load_imdb(" in path.read_text(encoding="utf-8") and _imdb_missing_reason():
            item.add_marker(pytest.mark.skip(reason=_imdb_missing_reason()))

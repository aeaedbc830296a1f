"""nbval runs every notebook here; the IMDB notebooks are skipped (with how-to) when IMDB is absent."""
from functools import lru_cache

import pytest

import helpers


@lru_cache(maxsize=1)
def _imdb_missing_reason() -> str | None:
    try:
        helpers.find_imdb(download=True)  # local copies first; a download only where there is network
    except helpers.ImdbError as exc:
        return f"needs the IMDB dataset. {exc}"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = getattr(item, "path", None)
        if path is None or path.suffix != ".ipynb":
            continue
        if "load_imdb(" in path.read_text(encoding="utf-8") and _imdb_missing_reason():
            item.add_marker(pytest.mark.skip(reason=_imdb_missing_reason()))

"""Cross-references in the prose: every "section N" and every quoted "Going further: …" names a heading that exists,
in the notebooks and in the code and documents that point into them."""
import json
import re
import subprocess

from ex2 import runtime

ROOT = runtime.ROOT
SECTION = re.compile(r"(?:notebook (0\d),? )?\b[Ss]ections? (\d+(?:(?:\s*[–-]\s*|,\s*|,?\s+and\s+)\d+)*)")
"""`section 4`, `sections 1–2`, `sections 5, 6, 7`, `sections 4–6 and 8`, `notebook 03, section 2`."""
GOING_FURTHER = re.compile(r'"Going further: ([^"]+)"')


def _headings() -> dict[str, list[str]]:
    """Each notebook's section headings (`## …`), by its number ("03")."""
    found = {}
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        found[path.name[:2]] = [line[3:] for c in cells if c["cell_type"] == "markdown"
                                for line in "".join(c["source"]).splitlines() if line.startswith("## ")]
    return found


def _texts(headings):
    """(where, the notebook a bare "section N" means or None, text) for every cell and tracked .py / .md file."""
    for number in headings:
        path = next((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            yield f"{path.name}, cell {i}", number, "".join(cell["source"])
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        if name != "tests/repo/test_cross_references.py":
            yield name, None, (ROOT / name).read_text()


def dangling(headings: dict[str, list[str]], texts) -> list[str]:
    """The references in `texts` that name no heading of `headings`."""
    numbered = {nb: {int(m[1]) for h in hs if (m := re.match(r"(\d+)\. ", h))} for nb, hs in headings.items()}
    further = {h.removeprefix("Going further: ") for hs in headings.values() for h in hs}
    wrong = []
    for where, own, text in texts:
        for m in SECTION.finditer(text):
            notebook = m[1] or own
            if notebook is not None:
                wrong += [f"{where}: {m[0]!r}" for n in map(int, re.findall(r"\d+", m[2]))
                          if n not in numbered.get(notebook, ())]
        for m in GOING_FURTHER.finditer(text):
            name = " ".join(m[1].split())
            if not any(h.startswith(name) for h in further):
                wrong.append(f"{where}: {m[0]!r}")
    return wrong


def test_every_section_reference_names_a_heading_that_exists():
    headings = _headings()
    assert set(headings) == {"01", "02", "03", "04"} and all(headings.values())
    wrong = dangling(headings, _texts(headings))
    assert not wrong, "references to no heading (renamed or moved sections?):\n" + "\n".join(wrong)


def test_a_reference_to_a_missing_section_is_found():
    headings = {"03": ["1. Two cells", "2. Back-propagation", "Going further: the inputs — tokens"]}
    texts = [("a", "03", 'Sections 1–2 and "Going further: the inputs" are fine.'),
             ("b", None, "notebook 03, section 2 is fine; a bare section 9 outside a notebook names nothing"),
             ("c", "03", "Section 0 moved."), ("d", None, "see notebook 03, sections 1 and 7"),
             ("e", "03", 'see "Going further: the\nmodels"')]
    assert dangling(headings, texts) == ["c: 'Section 0'", "d: 'notebook 03, sections 1 and 7'",
                                         "e: '\"Going further: the\\nmodels\"'"]

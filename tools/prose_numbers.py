"""Check a notebook's prose against its printouts: every decimal number a markdown cell quotes should be one the
notebook printed (or a rounding of one, as a fraction or as a percentage).

    python -m tools.prose_numbers notebooks/03_rnn_gru_tpe_search.ipynb
    python -m tools.prose_numbers notebooks/04_*.ipynb --since HEAD~1   # also: what the last re-execution changed

Without `--since` it lists, cell by cell, the numbers quoted in markdown that no output of the notebook holds, with
the words around them. With `--since REV` it compares with the notebook as committed at REV: the printed lines that
changed, and the quoted numbers that REV's outputs held and the new outputs no longer do (the sentences to rewrite
after a recompute). It reads, never writes; a number it flags may still be right (a count of minutes, a number
from the write-up), so it is a reading aid for the maintainer, not a test.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

NUMBER = re.compile(r"(?<![\w.])[+\-−]?\d{1,3}(?:,\d{3})*(?:\.\d+)?|(?<![\w.])[+\-−]?\d+\.\d+")
DECIMAL = re.compile(r"\d\.\d")


def _text(lines) -> str:
    return "".join(lines) if isinstance(lines, list) else lines


def cell_outputs(cell: dict) -> str:
    """A code cell's text outputs (streams, plain-text results, errors), joined."""
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append(_text(out["text"]))
        data = out.get("data", {})
        for kind in ("text/plain", "text/html", "text/markdown"):
            if kind in data:
                parts.append(_text(data[kind]))
        if out.get("output_type") == "error":
            parts.append(" ".join(out.get("traceback", [])))
    return "\n".join(parts)


def numbers(text: str) -> list[str]:
    """The numbers in `text` as written (with a unicode minus read as '-')."""
    return [m.group(0).replace("−", "-") for m in NUMBER.finditer(text)]


def _value(number: str) -> float:
    return float(number.replace(",", ""))


def printed_values(nb: dict) -> set[float]:
    values = set()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            for text in (cell_outputs(cell), _text(cell["source"])):
                values.update(abs(_value(n)) for n in numbers(text))
    return values


def is_printed(number: str, values: set[float]) -> bool:
    """Whether some printed value, rounded to the quoted number's decimals (as it is, or times 100), is `number`."""
    decimals = len(number.split(".")[1]) if "." in number else 0
    target = abs(_value(number))
    step = 10 ** -decimals
    return any(abs(round(v * scale, decimals) - target) < step / 2 for v in values for scale in (1, 100, 0.01))


def unprinted(nb: dict) -> list[tuple[int, str, str]]:
    """(cell index, number, context) for each decimal number a markdown cell quotes and no output holds."""
    values = printed_values(nb)
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = _text(cell["source"])
        for m in NUMBER.finditer(text):
            number = m.group(0).replace("−", "-")
            if DECIMAL.search(number) and not is_printed(number, values):
                found.append((i, number, " ".join(text[max(m.start() - 50, 0):m.end() + 30].split())))
    return found


def changed_lines(old: dict, new: dict) -> list[tuple[int, str, str]]:
    """(cell index, old line, new line) for the printed lines that differ, cell by cell (cells matched by position)."""
    changes = []
    for i, (a, b) in enumerate(zip(old["cells"], new["cells"])):
        if a["cell_type"] == b["cell_type"] == "code":
            before, after = cell_outputs(a).splitlines(), cell_outputs(b).splitlines()
            for j in range(max(len(before), len(after))):
                x = before[j] if j < len(before) else ""
                y = after[j] if j < len(after) else ""
                if x != y:
                    changes.append((i, x, y))
    return changes


def vanished(old: dict, new: dict) -> list[tuple[int, str, str]]:
    """Quoted numbers that the old outputs held and the new ones do not: prose a re-execution made stale."""
    before, after = printed_values(old), printed_values(new)
    return [(i, n, context) for i, n, context in unprinted(new) if is_printed(n, before) and not is_printed(n, after)]


def committed(path: Path, rev: str) -> dict:
    top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True,
                              text=True, check=True).stdout.strip())
    shown = subprocess.run(["git", "show", f"{rev}:{path.resolve().relative_to(top).as_posix()}"], cwd=top,
                           capture_output=True, text=True)
    if shown.returncode:
        raise SystemExit(f"cannot read {path} at {rev}: {shown.stderr.strip()}")
    return json.loads(shown.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--since", metavar="REV", help="also compare with the notebook as committed at this revision")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        nb = json.loads(path.read_text(encoding="utf-8"))
        print(f"# {path}")
        if args.since:
            old = committed(path, args.since)
            for i, x, y in changed_lines(old, nb):
                print(f"cell {i} printed: {x!r}\n{'':>8} now: {y!r}")
            for i, n, context in vanished(old, nb):
                print(f"cell {i} quotes {n}, which the run at {args.since} printed and this one does not: …{context}…")
        else:
            for i, n, context in unprinted(nb):
                print(f"cell {i} quotes {n}, printed nowhere: …{context}…")
    return 0


if __name__ == "__main__":
    sys.exit(main())

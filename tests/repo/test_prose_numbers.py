"""tools.prose_numbers: which numbers quoted in a notebook's prose no printout holds."""
from tools import prose_numbers as tool


def notebook(printed: str, prose: str) -> dict:
    return {"cells": [
        {"cell_type": "code", "source": ["print(acc)\n"], "outputs": [{"output_type": "stream", "text": [printed]}]},
        {"cell_type": "markdown", "source": [prose]}]}


def test_a_quoted_number_counts_as_printed_when_a_printout_rounds_to_it():
    nb = notebook("test acc 0.8137 | gap −0.012\n",
                  "It reaches 81.4 % (0.814), a gap of −1.2 points, and 0.52 elsewhere.")
    assert [n for _, n, _ in tool.unprinted(nb)] == ["0.52"]


def test_numbers_a_re_execution_made_stale_are_the_ones_the_old_run_printed():
    old = notebook("acc 0.791\n", "The default W_hh reaches 0.791; the write-up had 0.938.")
    new = notebook("acc 0.655\n", "The default W_hh reaches 0.791; the write-up had 0.938.")
    assert [(n) for _, n, _ in tool.vanished(old, new)] == ["0.791"]  # 0.938 was never printed: not the run's
    assert tool.changed_lines(old, new) == [(0, "acc 0.791", "acc 0.655")]

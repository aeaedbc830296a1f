"""The one reader of untrusted bytes (grader/untrusted.py) and what the grader copies and writes of a submission:
malformed arrays, floods of JSON items, names that are not UTF-8, FIFOs and links are refused or written escaped."""
import io
import os
import tracemalloc

import numpy as np
import pytest
from submissions import NB01, npy_header, reference_with, zip_bytes

from assignment.questions import QUESTIONS
from ex2 import runtime
from grader import grade, reports, untrusted
from grader.__main__ import gather

ROOT = runtime.ROOT
NB02 = QUESTIONS["q3b"]["notebook"]


def test_the_reader_refuses_malformed_arrays_before_allocating():
    for data, reason in ((zip_bytes(), "not an .npy"), (npy_header((2**40, 2**40)), "more than"),
                         (npy_header((-1,)), "shape"), (npy_header((3,), "|O"), "numbers only"),
                         (npy_header((3,), "<c16"), "numbers only"), (npy_header((2,)) + b"\0" * 8, "not the 16"),
                         (b"\x93NUMPY\x09\x00\x00\x00", "version"), (b"\x93NUMPY\x01\x00\xff\xff{", "too long")):
        with pytest.raises(untrusted.Refused, match=reason):
            untrusted.npy(data, 1000)
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6, dtype=np.int32).reshape(2, 3).T)
    assert untrusted.npy(buffer.getvalue(), 6).tolist() == [[0, 3], [1, 4], [2, 5]]


def test_the_reader_bounds_json_items_and_depth_and_the_channel_its_memory(tmp_path):
    with pytest.raises(untrusted.Refused, match="deep"):
        untrusted.json_document(b"[" * 100_000 + b"]" * 100_000, 10**7)
    with pytest.raises(untrusted.Refused, match="deep"):
        untrusted.json_document(b"[" * 80 + b"]" * 80, 10**7)
    path = tmp_path / "values.jsonl"
    path.write_bytes(b'{"start": "pooling"}\n{"question": "pooling", "values": [' + b"[]," * 20_000_000 + b"[]]}\n"
                     + b'{"question": "rnn_cell", "values": [1]}\n')
    tracemalloc.start()
    channel = grade._Events(path, 64 * 2**20)
    events = channel.poll()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [e.get("question") for e in events] == [None, "rnn_cell"] and "JSON items" in channel.refused
    assert peak < 300 * 2**20, f"reading a 60 MB line took {peak / 2**20:.0f} MiB"


def test_names_and_messages_that_are_not_utf8_are_written_escaped(tmp_path):
    name = os.fsdecode(b"caf\xe9")
    assert untrusted.name(tmp_path / name) == "caf\\xe9"
    assert untrusted.text("a\ud800b\x1b[31m") == "a\\ud800b\\x1b[31m"
    reports.write_atomic(tmp_path / "x.md", "a\ud800")
    assert (tmp_path / "x.md").read_text() == "a\\ud800"
    assert reports.spreadsheet_safe("=1+2") == "'=1+2" and reports.spreadsheet_safe("-3") == "'-3"
    assert reports.spreadsheet_safe("\tx") == "'\tx" and reports.spreadsheet_safe(5) == 5


def test_a_fifo_or_a_link_in_a_submission_is_skipped(tmp_path):
    sub = reference_with(tmp_path / "sub")
    os.mkfifo(sub / "pipe")
    (sub / "notebooks" / "link.ipynb").symlink_to(ROOT / NB01)
    copy = tmp_path / "copy"
    copy.mkdir()
    grade.copy_tree(sub, copy)
    assert (copy / "ex2" / "layers.py").is_file() and not (copy / "pipe").exists()
    assert not (copy / "notebooks" / "link.ipynb").exists()


def test_gradescope_upload_links_leaving_the_submission_are_refused(tmp_path):
    """An upload whose notebooks/ is a link to the autograder's own notebooks gets none of them."""
    upload = tmp_path / "upload" / "repo"
    upload.mkdir(parents=True)
    (upload / "ex2").mkdir()
    (upload / "ex2" / "layers.py").write_text("x = 1\n")
    (upload / "notebooks").symlink_to(ROOT / "notebooks")
    (upload / "02_architectures_and_text_to_image.ipynb").symlink_to(ROOT / NB02)
    folder = gather(tmp_path / "upload", tmp_path / "gathered")
    assert (folder / "ex2" / "layers.py").read_text() == "x = 1\n"
    assert not list((folder / "notebooks").iterdir())

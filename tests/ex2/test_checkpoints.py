"""Checkpoints: a missing or damaged file names the way back, and a checkpoint reads reviews with its own
tokenizer."""
import pytest
import torch

import helpers
from ex2 import checkpoints


def test_a_missing_checkpoint_names_the_way_back(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        checkpoints.load_checkpoint(tmp_path / "missing.pt")
    assert str(tmp_path / "missing.pt") in str(info.value) and "git checkout" in str(info.value)


def test_a_truncated_checkpoint_names_the_file_and_the_way_back(tmp_path):
    good = checkpoints.checkpoint_path("gru").read_bytes()
    cut = tmp_path / "gru.pt"
    cut.write_bytes(good[: len(good) // 2])  # an interrupted copy or download
    with pytest.raises(ValueError) as info:
        checkpoints.load_checkpoint(cut)
    message = str(info.value)
    assert str(cut) in message and "git checkout" in message and "python -m experiments.recompute" in message
    old = tmp_path / "old.pt"  # a readable torch file that is not a checkpoint of today's format
    torch.save({"meta": {"seed": 0}, "state_dict": {}}, old)
    with pytest.raises(ValueError, match="old.pt is not a readable checkpoint"):
        checkpoints.load_checkpoint(old)


def test_a_checkpoint_reads_reviews_with_its_own_tokenizer(tmp_path):
    model = helpers.make_model("sum", seed=0)
    model.info.tokenizer = "course-v1"
    loaded = checkpoints.load_checkpoint(checkpoints.save_checkpoint(model, tmp_path / "s.pt"))
    assert helpers.explain(loaded, "Don't miss it!!")["tokens"] == ["don", "miss", "it"]
    model.info.tokenizer = "glove6b-v0"  # a version this code does not have: a clear error, not silent misreading
    with pytest.raises(ValueError, match="unknown tokenizer 'glove6b-v0'"):
        checkpoints.load_checkpoint(checkpoints.save_checkpoint(model, tmp_path / "old.pt"))

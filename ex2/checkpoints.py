"""Checkpoints: small files (the frozen GloVe table is not stored, the word-vector corrections in half precision) that
carry each model's weights and its `ModelInfo`, written atomically and read back with an error that names the way
back when one is missing or damaged.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ex2 import data as imdb
from ex2 import models, runtime

RESTORE_HINT = ("restore the committed file with `git checkout -- {path}`, or retrain it: "
                "`python -m experiments.recompute` (or RUN_MODE=full for the notebook)")
"""How to get a missing or damaged checkpoint back, for the error messages."""


def stored_state(model: models.SentimentModel) -> dict:
    """The weights as a checkpoint keeps them: the trained word-vector corrections in half precision."""
    state = model.state_dict()
    if "delta.weight" in state:
        state["delta.weight"] = state["delta.weight"].half()
    return state


def as_stored(model: models.SentimentModel) -> models.SentimentModel:
    """Round `model`'s weights, in place, to what its checkpoint keeps, so that a model measured right after training
    gives the numbers that a rerun, which loads the checkpoint, gives."""
    model.load_state_dict(stored_state(model))
    return model


def save_checkpoint(model: models.SentimentModel, path: str | Path) -> Path:
    """Write weights (`stored_state`) and `model.info` atomically (never a half-written file)."""
    state = stored_state(model)
    with runtime.atomic_path(path) as tmp:
        torch.save({"info": dataclasses.asdict(model.info), "state_dict": state}, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> models.SentimentModel:
    """Rebuild a model from `save_checkpoint`'s file, in eval mode, on the device of `get_device()`.
    A missing or damaged file raises an error that names it and how to get it back."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: " + RESTORE_HINT.format(path=path))
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
        info = models.ModelInfo(**payload["info"])
    except Exception as exc:  # torch's zip reader, unpickling and missing keys all mean a damaged file
        raise ValueError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc}); "
                         + RESTORE_HINT.format(path=path)) from exc
    model = models.make_model(info.name, seed=None, **info.config)
    state = payload["state_dict"]
    if "adapted_ids" in state:
        model.adapt_rows(state["adapted_ids"])
        state["delta.weight"] = state["delta.weight"].float()
    model.load_state_dict(state)
    model.info = info
    imdb.get_tokenizer(info.tokenizer)  # `predict` and `explain` read reviews with the model's own tokenizer
    return model.to(runtime.get_device()).eval()


def checkpoint_path(name: str, trainable: bool = True, folder: str | Path | None = None) -> Path:
    """<folder>/<name>.pt (trainable word vectors, the named model) or <name>_frozen.pt (frozen GloVe);
    the folder defaults to checkpoints/."""
    return Path(folder or runtime.CHECKPOINT_DIR) / f"{models.check_name(name)}{'' if trainable else '_frozen'}.pt"

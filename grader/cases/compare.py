"""What the hidden tests share: the returned values read as tensors, compared with the expected ones (an
AssertionError with a message meant for the student), random inputs, and the requests' building blocks."""
from __future__ import annotations

import numpy as np
import torch


def tensor(what: str, value) -> torch.Tensor:
    """A returned value as the grader's own float64 tensor (arrays only: decode never gives anything else)."""
    if isinstance(value, torch.Tensor):  # already converted here
        return value.detach().double()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.double)
    if not isinstance(value, np.ndarray):
        raise AssertionError(f"{what}: expected a tensor, got {kind(value)}")
    return torch.from_numpy(np.array(value, dtype=np.float64, copy=True))


def kind(value) -> str:
    return "None" if value is None else "a list" if isinstance(value, list) else type(value).__name__


def close(what: str, got, want: torch.Tensor, tol: float = 1e-9) -> None:
    got = tensor(what, got)
    want = want.detach().double()
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if not torch.isfinite(got).all():
        raise AssertionError(f"{what}: has NaN or inf")
    err = (got - want).abs().max().item() if got.numel() else 0.0
    if not err <= tol:
        raise AssertionError(f"{what}: differs from the reference by {err:.3g} (tolerance {tol:g})")


def items(what: str, value, n: int) -> list:
    if not isinstance(value, list) or len(value) != n:
        raise AssertionError(f"{what}: return {n} values (a tuple), got {kind(value)}"
                             + (f" of {len(value)}" if isinstance(value, list) else ""))
    return value


def rand(gen: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=gen, dtype=torch.double)


def layers_request(question: str, calls: list[dict]) -> dict:
    return {"id": question, "kind": "helpers", "calls": calls}


def call(target: str, *args, dtype: str = "float64") -> dict:
    return {"op": "call", "target": target, "args": list(args), "dtype": dtype}


def same(got, want) -> bool:
    try:
        return len(got) == len(want) and np.allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float),
                                                     rtol=0, atol=1e-12)
    except (TypeError, ValueError):
        return False

"""The wire format between the grader and its sandboxed child: the one module both sides import.

Values travel as plain JSON; arrays as base64 of their `.npy` bytes, which the grader parses itself (`decode`,
through untrusted.py: header, dtype and shape bounded before anything is allocated): nothing the child sends is
executed, unpickled or unzipped. The child runs this file beside a copy of untrusted.py, so it imports nothing of the
repository.
"""
from __future__ import annotations

import base64
import io

import numpy as np

if __package__:  # the grader's own import: grader.wire
    from grader import untrusted
else:  # the child's copy, beside a copy of untrusted.py
    import untrusted

ARRAY = "$npy"
"""The key of an encoded array: {"$npy": base64 of the array's .npy bytes}."""
DTYPES = {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}
"""Array kinds the grader accepts (bool, integers, floats), and the dtype it turns each into."""
MAX_DEPTH = 20
"""Nesting of lists and dicts a value may have."""

WireError = untrusted.Refused
"""A value from the child that the grader refuses (not an array of numbers, too large, malformed)."""


def encode(value, depth: int = 0):
    """A JSON-able tree of `value`: tensors and arrays as .npy bytes, tuples as lists, None, numbers, strings."""
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [encode(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v, depth + 1) for k, v in value.items()}
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in DTYPES:
        raise TypeError(f"cannot send a value of type {type(value).__name__} (dtype {array.dtype})")
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return {ARRAY: base64.b64encode(buffer.getvalue()).decode("ascii")}


def decode(tree, max_elements: int = 20_000_000, depth: int = 0):
    """`encode`'s tree back: arrays as fresh NumPy arrays of bool, int64 or float64 (never objects), their .npy
    bytes parsed by `untrusted.npy` (header, dtype and shape checked before anything is allocated; no pickle, no
    zip); anything else that is not JSON's own types is refused with WireError."""
    if depth > MAX_DEPTH:
        raise WireError("the value is nested too deeply")
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, list):
        return [decode(v, max_elements, depth + 1) for v in tree]
    if not isinstance(tree, dict):
        raise WireError(f"unexpected {type(tree).__name__}")
    if set(tree) == {ARRAY}:
        longest = 4 * (max_elements * 8 + untrusted.MAX_HEADER) // 3 + 8
        if not isinstance(tree[ARRAY], str) or len(tree[ARRAY]) > longest:
            raise WireError("an array that is not base64 text, or too long")
        try:
            data = base64.b64decode(tree[ARRAY], validate=True)
        except ValueError as exc:
            raise WireError(f"an unreadable array ({exc})") from None
        return untrusted.npy(data, max_elements)
    return {str(k): decode(v, max_elements, depth + 1) for k, v in tree.items()}

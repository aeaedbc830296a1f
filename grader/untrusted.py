"""The one reader of what a submission or its grading child wrote: every byte the grader reads from them passes
through here, with limits checked before anything is allocated, and any failure is a `Refused` with a reason (the
grader turns it into that question's zero, or a missing answer).

- `json_document`: JSON text (a values event, a notebook), bounded in bytes, in items (counted on the raw bytes
  before parsing, so a line of a million tiny arrays is refused unparsed) and in nesting depth.
- `npy`: an array's `.npy` bytes, parsed here (magic, version, header) with its dtype limited to bool, integers and
  floats and its shape bounded before the payload is read; never `numpy.load`, never a pickle or a zip.
- `text` / `clean`: strings as the reports can write them (lone surrogates and control characters shown as escapes).
- `name`: a file or folder name that may not be UTF-8, as text.
- `regular_file` / `read_bytes`: a file read only when it is a regular file (not a FIFO, a device or a link) of
  bounded size.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np

MAX_DEPTH = 64
"""Nesting of JSON containers the grader reads (the values it asks for nest a few levels)."""
MAX_ITEMS = 1_000_000
"""JSON items (containers, commas, colons) in one document."""
MAX_HEADER = 10_000
"""Bytes of a .npy header (numpy's own default limit)."""
NPY_MAGIC = b"\x93NUMPY"
DTYPES = {"b": np.bool_, "i": np.int64, "u": np.int64, "f": np.float64}
"""Array kinds accepted, and the dtype each becomes."""
_DESCR = re.compile(r"[<>|=]?[biuf][1248]")


class Refused(ValueError):
    """Bytes the grader will not read, with the reason (meant for the student's feedback)."""


def json_document(data: bytes, max_bytes: int, max_items: int = MAX_ITEMS, max_depth: int = MAX_DEPTH):
    """`data` parsed as JSON, or Refused: larger than `max_bytes`, more than `max_items` items (a cheap upper bound
    counted on the bytes: `[`, `{`, `,` and `:`, strings included), nested deeper than `max_depth`, or not JSON."""
    if len(data) > max_bytes:
        raise Refused(f"more than {max_bytes:,} bytes")
    if items(data) > max_items:
        raise Refused(f"more than {max_items:,} JSON items")
    try:
        value = json.loads(data)
    except RecursionError:
        raise Refused(f"nested more than {max_depth} deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(f"not JSON ({type(exc).__name__})") from None
    if depth(value, max_depth) > max_depth:
        raise Refused(f"nested more than {max_depth} deep")
    return value


def items(data: bytes) -> int:
    """An upper bound of the JSON items in `data`: its `[`, `{`, `,` and `:` bytes (inside strings too)."""
    return sum(data.count(c) for c in (b"[", b"{", b",", b":"))


def depth(value, stop: int = MAX_DEPTH) -> int:
    """Nesting depth of a JSON value (iterative; stops counting past `stop`)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, level)
            if level > stop:
                return level
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def npy(data: bytes, max_elements: int) -> np.ndarray:
    """A fresh array of bool, int64 or float64 from `.npy` bytes; Refused unless the header is numpy's own (a
    dict of descr, fortran_order, shape), the dtype a plain bool, integer or float, the shape at most
    `max_elements` elements and the payload exactly that size."""
    if not isinstance(data, (bytes, bytearray)) or not data.startswith(NPY_MAGIC) or len(data) < 10:
        raise Refused("not an .npy array")
    major = data[6]
    if major == 1:
        size, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        size, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise Refused(f".npy version {major} is unknown")
    if size > MAX_HEADER or start + size > len(data):
        raise Refused("an .npy header that is too long or cut off")
    try:
        header = ast.literal_eval(bytes(data[start:start + size]).decode("latin1" if major < 3 else "utf-8"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise Refused("an unreadable .npy header") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise Refused("an .npy header without exactly descr, fortran_order and shape")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or not _DESCR.fullmatch(descr) or not isinstance(fortran, bool):
        raise Refused(f"an array of {str(descr)[:40]!r} (numbers only: bool, integers or floats)")
    if (not isinstance(shape, tuple) or len(shape) > 32
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise Refused(f"an array of shape {str(shape)[:80]}")
    count = 0 if 0 in shape else 1
    for n in shape:
        count *= n
        if count > max_elements or n > max_elements:
            raise Refused(f"an array of more than {max_elements:,} elements (at most {max_elements:,})")
    dtype = np.dtype(descr)
    payload = memoryview(data)[start + size:]
    if len(payload) != count * dtype.itemsize:
        raise Refused(f"an array whose data has {len(payload):,} bytes, not the {count * dtype.itemsize:,} its "
                      f"header declares")
    array = np.frombuffer(payload, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=DTYPES[dtype.kind], copy=True)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text(value, limit: int | None = None) -> str:
    """`value` as text a report can hold: lone surrogates and control characters written as escapes, cut at
    `limit` characters."""
    if not isinstance(value, str):
        value = repr(value)
    if limit is not None and len(value) > limit:
        value = value[:limit] + " …"
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def clean(tree):
    """A JSON-able tree with every string (keys included) passed through `text`."""
    if isinstance(tree, str):
        return text(tree)
    if isinstance(tree, list):
        return [clean(v) for v in tree]
    if isinstance(tree, dict):
        return {text(k): clean(v) for k, v in tree.items()}
    if isinstance(tree, float) and not math.isfinite(tree):
        return str(tree)
    return tree


def name(path) -> str:
    """A file or folder name as text, whatever its bytes (a name that is not UTF-8 shows its bytes escaped)."""
    raw = os.fsencode(Path(path).name if not isinstance(path, str) else path)
    return text(raw.decode("utf-8", "backslashreplace"))


def regular_file(path: Path, max_bytes: int) -> bool:
    """True if `path` itself (not followed if a link) is a regular file of at most `max_bytes` bytes."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size <= max_bytes


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (opened without following a link and without blocking
    on a FIFO); Refused otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise Refused(f"cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not a regular file")
        if info.st_size > max_bytes:
            raise Refused(f"larger than {max_bytes // 1_000_000} MB")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Refused(f"larger than {max_bytes // 1_000_000} MB")
    return data

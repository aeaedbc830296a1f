"""Values, not verdicts: what the child sends back travels in the wire format (grader/wire.py), is decoded by the
parent with limits, and only the parent's own check of the values gives points."""
import base64
import io

import numpy as np
import pytest
import torch

import helpers
from ex2 import runtime
from grader import cases, grade, wire

ROOT = runtime.ROOT


def test_a_verdict_from_the_child_counts_for_nothing():
    _, check = cases.CASES["q1a"](torch.Generator().manual_seed(0), helpers, "")
    for event in ({"question": "q1a", "status": "passed", "message": ""}, {"question": "q1a", "passed": True},
                  {"question": "q1a", "values": [1.0, 2.0, 3.0]}, {"question": "q1a", "values": {"$npy": "AAAA"}}):
        assert grade.judge("q1a", event, check)["status"] != "passed", event


def test_the_wire_refuses_what_is_not_numbers():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickle inside an .npy
    with pytest.raises(wire.WireError, match="unreadable|numbers only"):
        wire.decode({"$npy": base64.b64encode(buffer.getvalue()).decode()})
    with pytest.raises(wire.WireError, match="at most"):
        wire.decode(wire.encode(np.zeros(11)), max_elements=10)
    with pytest.raises(wire.WireError):
        wire.decode({"$npy": 3})
    value = wire.decode(wire.encode([torch.ones(2, dtype=torch.float32), None, (1, "x")]))
    assert value[0].dtype == np.float64 and value[1:] == [None, [1, "x"]]

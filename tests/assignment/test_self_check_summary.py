"""The release's public self-checks and their summary (assignment/student/): the summary's table gives each part of
the grader's list with its points, every part has self-checks, they pass on the reference, and they accept every
answer the docstrings call right and reject wrong ones."""
import ast
import contextlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import helpers
from assignment.questions import QUESTIONS
from ex2 import runtime

ROOT = runtime.ROOT
STUDENT = ROOT / "assignment" / "student"


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def self_checks():
    return load(STUDENT / "tests" / "test_self_checks.py", "student_self_checks")


def graded_in_the_python_file() -> list[str]:
    """The questions whose hidden test runs the student's Python file (grader/cases/layers.py defines it), in the
    grader's order: what the grader says it grades there, read from its source, not from the summary's filter."""
    tree = ast.parse((ROOT / "grader" / "cases" / "layers.py").read_text(encoding="utf-8"))
    cases = {node.name.removeprefix("case_") for node in tree.body
             if isinstance(node, ast.FunctionDef) and node.name.startswith("case_")}
    return [q for q in QUESTIONS if q in cases]


def test_the_summary_table_states_each_part_with_the_graders_points(monkeypatch, capsys):
    """The table students see: one row per part the grader grades in their Python file, in its order, with the
    points the grader gives it; a part whose self-check fails shows that check's message, the others pass."""
    summary = load(STUDENT / "self_check_summary.py", "summary_for_test")
    tests = [name for name in vars(self_checks()) if name.startswith("test_")]
    failing = next(name for name in tests if name.startswith("test_pooling"))

    def pytest_run(command, cwd):  # the self-checks' junit report: every check passes but one
        report = Path(next(a for a in command if a.startswith("--junitxml=")).split("=", 1)[1])
        cases = "".join(f'<testcase name="{name}"><failure message="AssertionError: made up"/></testcase>'
                        if name == failing else f'<testcase name="{name}"/>' for name in tests)
        report.write_text(f"<testsuites><testsuite>{cases}</testsuite></testsuites>")

    monkeypatch.setattr(summary.subprocess, "run", pytest_run)
    assert summary.main() == 1
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| part")]
    expected = graded_in_the_python_file()
    assert [row[0].removeprefix("| ") for row in rows] == [
        f"{QUESTIONS[q]['title']} — {QUESTIONS[q]['where']}" for q in expected]
    assert [int(row[1]) for row in rows] == [QUESTIONS[q]["points"] for q in expected]
    results = {q: row[2] for q, row in zip(expected, rows)}
    assert "made up" in results["pooling"] and all(r.startswith("✓") for q, r in results.items() if q != "pooling")


def test_every_self_check_belongs_to_a_part_and_every_part_has_one():
    summary = load(STUDENT / "self_check_summary.py", "summary_for_test")
    tests = [name for name in vars(self_checks()) if name.startswith("test_")]
    owners = {name: summary.part_of(name) for name in tests}
    assert None not in owners.values(), f"a self-check no part owns: {owners}"
    assert set(owners.values()) == set(summary.PARTS), "a part without a self-check"


@pytest.mark.slow  # runs the student's self-checks in a pytest process of their own
def test_the_self_checks_pass_on_the_reference():
    done = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=STUDENT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:]
    checks = [name for name in vars(self_checks()) if name.startswith("test_")]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= len(checks) and "skipped" not in done.stdout, done.stdout[-500:]


def _rnn_backward(bypass):
    def update_backward(dh_new, h, cache):
        d = dh_new * (1 - cache ** 2)
        return d, d, bypass(d)
    return staticmethod(update_backward)


@pytest.mark.parametrize("bypass, right", [(lambda d: None, True), (lambda d: 0, True), (torch.zeros_like, True),
                                           (lambda d: d, False)], ids=["None", "0", "zeros", "delta"])
def test_the_rnn_bypass_may_be_none_zero_or_zeros(monkeypatch, bypass, right):
    checks = self_checks()
    monkeypatch.setattr(helpers.RNNCell, "update_backward", _rnn_backward(bypass))
    with contextlib.nullcontext() if right else pytest.raises(AssertionError, match="no bypass"):
        checks.test_bptt_rnn_update_backward_matches_autograd()


def _attention(padding_rows: str, mask_value=float("-inf")):
    """SelfAttention.forward written out by the test: padding-query rows zero, the softmax over their real keys, or
    (wrong) attending to padding keys too."""
    def forward(self, x, mask):
        xp = x if self.positions is None else self.positions(x)
        T = x.shape[1]
        logits = self.q(xp) @ self.k(xp).transpose(1, 2) / x.shape[-1] ** 0.5
        keys = mask[:, None, :].expand(-1, T, -1) if padding_rows != "padding keys" else torch.ones_like(logits).bool()
        if self.window is not None:
            near = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() <= self.window
            keys = keys & near
        attn = torch.softmax(logits.masked_fill(~keys, mask_value), dim=-1)
        if padding_rows == "zero":
            attn = attn * mask[:, :, None]
        out = attn @ self.v(x)
        return (x + out if self.residual else out), attn
    return forward


@pytest.mark.parametrize("rows, value, right", [("zero", float("-inf"), True), ("real keys", float("-inf"), True),
                                                ("zero", torch.finfo(torch.double).min, True),
                                                ("padding keys", float("-inf"), False)],
                         ids=["zero-rows", "softmax-rows", "dtype-min", "attends-to-padding"])
def test_padding_query_rows_are_free_and_padding_keys_are_not(monkeypatch, rows, value, right):
    checks = self_checks()
    monkeypatch.setattr(helpers.SelfAttention, "forward", _attention(rows, value))
    with contextlib.nullcontext() if right else pytest.raises(AssertionError, match="padding keys get 0"):
        checks.test_attention_padding()


def test_pooling_rejects_nan_for_an_empty_review(monkeypatch):
    checks = self_checks()

    def no_guard(out, mask, weighted):  # softmax over -inf only: NaN weights for a review with no real token
        s = out[..., 0].masked_fill(~mask, 0.0)
        if not weighted:
            return s.sum(-1), s, None
        w = torch.softmax(out[..., 1].masked_fill(~mask, float("-inf")), dim=-1)
        return (w * s).sum(-1), s, w

    monkeypatch.setattr(helpers, "pool_token_scores", no_guard)
    checks.test_pooling_sum_and_weighted()  # right without padding
    with pytest.raises(AssertionError, match="no NaN"):
        checks.test_pooling_padding_and_an_empty_review()


def test_pooling_rejects_nan_in_the_gradients(monkeypatch):
    checks = self_checks()

    def log_mask(out, mask, weighted):  # finite values, but log(0) = -inf sends NaN back through the addition
        s = out[..., 0].masked_fill(~mask, 0.0)
        if not weighted:
            return s.sum(-1), s, None
        w = torch.nan_to_num(torch.softmax(out[..., 1] + torch.log(mask.to(out.dtype)), dim=-1)) * mask
        return (w * s).sum(-1), s, w

    monkeypatch.setattr(helpers, "pool_token_scores", log_mask)
    checks.test_pooling_sum_and_weighted()  # right in value
    with pytest.raises(AssertionError, match="no NaN in the gradients"):
        checks.test_pooling_padding_and_an_empty_review()

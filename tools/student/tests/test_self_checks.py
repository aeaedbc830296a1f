"""Public self-checks of the parts of helpers.py you write (small inputs, against torch.nn and autograd).

    python -m pytest -q            # all of them; each failure names what to implement and where

Passing them is a good sign, not a grade: the grader runs further tests (other sizes, padding, edge cases).
"""
import pytest
import torch

import helpers


def _same_weights(mine, theirs):
    with torch.no_grad():
        theirs.weight_ih.copy_(mine.ih.weight)
        theirs.weight_hh.copy_(mine.hh.weight)
        theirs.bias_ih.copy_(mine.ih.bias)
        theirs.bias_hh.copy_(mine.hh.bias)
    return mine, theirs


@pytest.mark.parametrize("Cell, Torch", [(helpers.RNNCell, torch.nn.RNNCell), (helpers.GRUCell, torch.nn.GRUCell)],
                         ids=["rnn", "gru"])
def test_cell_matches_torch(Cell, Torch):
    torch.manual_seed(0)
    mine, theirs = _same_weights(Cell(4, 3).double(), Torch(4, 3).double())
    x, h = torch.randn(2, 4, dtype=torch.double), torch.randn(2, 3, dtype=torch.double)
    out = mine(x, h)
    assert out.shape == (2, 3), f"{Cell.__name__}: the new state has shape {tuple(out.shape)}, expected (2, 3)"
    assert torch.allclose(out, theirs(x, h)), (f"{Cell.__name__}.update: h' differs from torch.nn.{Torch.__name__}'s"
                                               + (" (gate order r, z, n?)" if Cell is helpers.GRUCell else ""))


def test_bptt_matches_autograd():
    for Cell in (helpers.RNNCell, helpers.GRUCell):
        torch.manual_seed(0)
        cell = Cell(3, 2).double()
        x = torch.randn(2, 4, 3, dtype=torch.double, requires_grad=True)
        mask = torch.ones(2, 4, dtype=torch.bool)
        grads = [torch.autograd.grad(helpers.run_cell(cell, x, mask, manual_bptt=manual).sum(), [x, *cell.parameters()])
                 for manual in (True, False)]
        for name, a, b in zip(("x", "W_ih", "b_ih", "W_hh", "b_hh"), *grads):
            assert torch.allclose(a, b), f"{Cell.__name__}: the hand-written ∂L/∂{name} differs from autograd's"


def test_pooling_sum_and_weighted():
    out = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [-1.0, 5.0]]])  # three tokens, no padding
    mask = torch.ones(1, 3, dtype=torch.bool)
    logit, scores, weights = helpers.pool_token_scores(out[..., :1], mask, weighted=False)
    assert torch.allclose(logit, torch.tensor([2.0])), "sum: the logit is the sum of the sub-scores s_i"
    assert weights is None, "sum: the third value is None (no weights)"
    logit, scores, weights = helpers.pool_token_scores(out, mask, weighted=True)
    w = torch.softmax(torch.tensor([0.0, 0.0, 5.0]), 0)
    assert torch.allclose(weights[0], w), "weighted: w = softmax of the weight logits a_i"
    assert torch.allclose(logit, (w * torch.tensor([1.0, 2.0, -1.0])).sum(0, keepdim=True)), "weighted: logit = Σ w_i s_i"


def test_attention_rows_and_window():
    torch.manual_seed(0)
    layer = helpers.SelfAttention(4, window=1, residual=False)
    out, attn = layer(torch.randn(1, 5, 4), torch.ones(1, 5, dtype=torch.bool))
    assert out.shape == (1, 5, 4) and attn.shape == (1, 5, 5), "SelfAttention: output (B, T, d), attention (B, T, T)"
    assert torch.allclose(attn.sum(-1), torch.ones(1, 5)), "SelfAttention: each row of A must sum to 1"
    far = torch.ones(5, 5).triu(2).bool() | torch.ones(5, 5).tril(-2).bool()
    assert (attn[0][far] == 0).all(), "SelfAttention: with window=1 a word attends only to itself and its neighbours"
    full, x = helpers.SelfAttention(4, window=None, residual=False), torch.randn(1, 5, 4)
    _, attn = full(x, torch.ones(1, 5, dtype=torch.bool))
    xp = full.positions(x)  # x + P
    want = torch.softmax(full.q(xp) @ full.k(xp).transpose(1, 2) / 4 ** 0.5, dim=-1)
    assert torch.allclose(attn, want, atol=1e-6), "SelfAttention: A = softmax(Q Kᵀ / √d), Q and K from x + P"

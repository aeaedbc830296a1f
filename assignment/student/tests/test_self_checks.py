"""Public self-checks of the parts of ex2/layers.py you write (small inputs, against torch.nn and autograd).

    python -m pytest -q                   # all of them; each failure names what to implement and where
    python self_check_summary.py          # the same, as a table of parts and their points

Each test's name starts with the part it checks (rnn_cell, gru_cell, bptt, pooling, attention: the ids of
assignment/questions.py). They check the conventions the grader relies on, as ex2/layers.py's docstrings state them, and
accept every answer those docstrings call right. Passing them is a good sign, not a grade: the grader runs further
tests (other sizes, padding, edge cases, the reference model's weights through your code).
"""
import pytest
import torch

import helpers

D = torch.double


def _same_weights(mine, theirs):
    return mine.load_torch_weights(theirs), theirs


def _inputs(blocks, B=3, H=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, blocks * H, generator=g, dtype=D), torch.randn(B, blocks * H, generator=g, dtype=D),
            torch.randn(B, H, generator=g, dtype=D))


def _gru_cache(x_proj, gh, h):
    """The GRU's gates computed from their equations: the cache `GRUCell.update` returns, (r, z, n, gh_n)."""
    H = h.shape[-1]
    r = torch.sigmoid(x_proj[:, :H] + gh[:, :H])
    z = torch.sigmoid(x_proj[:, H:2 * H] + gh[:, H:2 * H])
    n = torch.tanh(x_proj[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h, (r, z, n, gh[:, 2 * H:])


def _is_zero_bypass(bypass):
    """The RNN's bypass: None, 0 or a zero tensor are all right."""
    if bypass is None:
        return True
    if isinstance(bypass, (int, float)):
        return bypass == 0
    return torch.is_tensor(bypass) and not bypass.any()


def test_rnn_cell_matches_torch():
    torch.manual_seed(0)
    mine, theirs = _same_weights(helpers.RNNCell(4, 3).double(), torch.nn.RNNCell(4, 3).double())
    x, h = torch.randn(2, 4, dtype=D), torch.randn(2, 3, dtype=D)
    out = mine(x, h)
    assert out.shape == (2, 3), f"RNNCell: the new state has shape {tuple(out.shape)}, expected (2, 3)"
    assert torch.allclose(out, theirs(x, h)), "RNNCell.update: h' differs from torch.nn.RNNCell's"


def test_rnn_cell_returns_the_state_and_its_cache():
    x_proj, gh, h = _inputs(1)
    result = helpers.RNNCell.update(x_proj, gh, h)
    assert isinstance(result, tuple) and len(result) == 2, "RNNCell.update returns a pair (h', cache)"
    h_new, cache = result
    assert torch.allclose(h_new, torch.tanh(x_proj + gh)), "RNNCell.update: h' = tanh(x_proj + gh)"
    assert torch.is_tensor(cache) and torch.allclose(cache, h_new), "RNNCell.update: the cache is h' itself"


def test_gru_cell_matches_torch():
    torch.manual_seed(0)
    mine, theirs = _same_weights(helpers.GRUCell(4, 3).double(), torch.nn.GRUCell(4, 3).double())
    x, h = torch.randn(2, 4, dtype=D), torch.randn(2, 3, dtype=D)
    out = mine(x, h)
    assert out.shape == (2, 3), f"GRUCell: the new state has shape {tuple(out.shape)}, expected (2, 3)"
    assert torch.allclose(out, theirs(x, h)), "GRUCell.update: h' differs from torch.nn.GRUCell's (gate order r, z, n?)"


def test_gru_cell_returns_the_state_and_its_cache():
    x_proj, gh, h = _inputs(3)
    result = helpers.GRUCell.update(x_proj, gh, h)
    assert isinstance(result, tuple) and len(result) == 2, "GRUCell.update returns a pair (h', cache)"
    h_new, cache = result
    want, want_cache = _gru_cache(x_proj, gh, h)
    assert torch.allclose(h_new, want), "GRUCell.update: h' = (1 − z) ⊙ n + z ⊙ h"
    assert isinstance(cache, (tuple, list)) and len(cache) == 4, "GRUCell.update: the cache is (r, z, n, gh_n)"
    for name, got, expected in zip(("r", "z", "n", "gh_n"), cache, want_cache):
        assert torch.is_tensor(got) and got.shape == expected.shape and torch.allclose(got, expected), \
            f"GRUCell.update: the cache's {name} is wrong (the cache is (r, z, n, gh_n), each (B, H))"


def test_bptt_rnn_update_backward_matches_autograd():
    x_proj, gh, h = _inputs(1)
    x_proj.requires_grad_(True), gh.requires_grad_(True)
    state = torch.tanh(x_proj + gh)
    delta = torch.randn_like(h)
    want = torch.autograd.grad(state, [x_proj, gh], delta)
    got = helpers.RNNCell.update_backward(delta, h, state.detach())  # the cache is h'
    assert isinstance(got, tuple) and len(got) == 3, "RNNCell.update_backward returns (∂L/∂x_proj, ∂L/∂gh, bypass)"
    for name, a, b in zip(("∂L/∂x_proj", "∂L/∂gh"), got, want):
        assert torch.is_tensor(a) and a.shape == b.shape and torch.allclose(a, b), \
            f"RNNCell.update_backward: {name} differs from autograd's (tanh' = 1 − h'²)"
    assert _is_zero_bypass(got[2]), "RNNCell.update_backward: the RNN has no bypass: None, 0 or a zero tensor"


@pytest.mark.parametrize("Cell", [helpers.RNNCell, helpers.GRUCell], ids=["rnn", "gru"])
def test_bptt_matches_autograd(Cell):
    torch.manual_seed(0)
    cell = Cell(3, 2).double()
    x = torch.randn(3, 5, 3, dtype=D, requires_grad=True)
    mask = helpers.lengths_to_mask(torch.tensor([5, 2, 4]), 5)  # padding: the state is carried over unchanged
    weights = torch.arange(1.0, 3.0, dtype=D)
    grads = [torch.autograd.grad((helpers.run_cell(cell, x, mask, manual_bptt=manual) * weights).sum(),
                                 [x, *cell.parameters()]) for manual in (True, False)]
    for name, a, b in zip(("x", "W_ih", "b_ih", "W_hh", "b_hh"), *grads):
        assert torch.allclose(a, b), f"{Cell.__name__}: the hand-written ∂L/∂{name} differs from autograd's"


def test_pooling_sum_and_weighted():
    out = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [-1.0, 5.0]]])  # three tokens, no padding
    mask = torch.ones(1, 3, dtype=torch.bool)
    logit, scores, weights = helpers.pool_token_scores(out[..., :1], mask, weighted=False)
    assert logit.shape == (1,) and scores.shape == (1, 3), "pool_token_scores returns logit (B,) and s (B, T)"
    assert torch.allclose(logit, torch.tensor([2.0])), "sum: the logit is the sum of the sub-scores s_i"
    assert weights is None, "sum: the third value is None (no weights)"
    logit, scores, weights = helpers.pool_token_scores(out, mask, weighted=True)
    w = torch.softmax(torch.tensor([0.0, 0.0, 5.0]), 0)
    assert weights is not None and weights.shape == (1, 3), "weighted: w has shape (B, T)"
    assert torch.allclose(weights[0], w), "weighted: w = softmax of the weight logits a_i"
    want = (w * torch.tensor([1.0, 2.0, -1.0])).sum(0, keepdim=True)
    assert torch.allclose(logit, want), "weighted: logit = Σ w_i s_i"


def test_pooling_padding_and_an_empty_review():
    out = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [7.0, 9.0]], [[3.0, 1.0], [4.0, 2.0], [5.0, 3.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])  # a padded review, an empty one
    logit, scores, _ = helpers.pool_token_scores(out[..., :1], mask, weighted=False)
    assert torch.equal(scores[~mask], torch.zeros(4)), "sum: padding gets s = 0"
    assert torch.allclose(logit, torch.tensor([3.0, 0.0])), "sum: only the real tokens' s_i count"
    logit, scores, weights = helpers.pool_token_scores(out, mask, weighted=True)
    assert torch.isfinite(weights).all() and torch.isfinite(logit).all(), "weighted: no NaN, even for an empty review"
    assert torch.equal(weights[~mask], torch.zeros(4)) and torch.equal(scores[~mask], torch.zeros(4)), \
        "weighted: padding gets s = w = 0 (and an empty review all-zero weights)"
    w = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    assert torch.allclose(weights[0, :2], w), "weighted: the softmax runs over the real tokens only"
    assert torch.allclose(logit, torch.stack([(w * torch.tensor([1.0, 2.0])).sum(), torch.tensor(0.0)])), \
        "weighted: logit = Σ w_i s_i over the real tokens (0 for an empty review)"
    leaf = out.clone().requires_grad_(True)
    helpers.pool_token_scores(leaf, mask, weighted=True)[0].sum().backward()
    assert torch.isfinite(leaf.grad).all(), \
        "weighted: no NaN in the gradients either (a softmax over a row of -inf gives NaN in the backward pass)"


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


def test_attention_padding():
    torch.manual_seed(0)
    layer = helpers.SelfAttention(4, window=2, residual=True).double()
    x, mask = torch.randn(2, 5, 4, dtype=D), helpers.lengths_to_mask(torch.tensor([5, 3]), 5)
    out, attn = layer(x, mask)
    xp = layer.positions(x)
    i, j = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    allowed = mask[:, None, :] & ((i - j).abs() <= 2)  # real keys within the window
    scores = (layer.q(xp) @ layer.k(xp).transpose(1, 2) / 4 ** 0.5).masked_fill(~allowed, float("-inf"))
    want = torch.softmax(scores, dim=-1)
    real = mask[:, :, None].expand(-1, -1, 5)
    assert torch.allclose(attn[real], want[real]), \
        "SelfAttention: a real word's row of A is the softmax over the real keys in its window (padding keys get 0)"
    assert torch.allclose(out[mask], (x + attn @ layer.v(x))[mask]) and torch.isfinite(out[mask]).all(), \
        "SelfAttention: with residual=True the output at real words is x + A V"
    for row, want_row in zip(attn[1, 3:], want[1, 3:]):  # padding queries: a zero row or the real keys' softmax
        assert torch.equal(row, torch.zeros_like(row)) or torch.allclose(row, want_row), \
            "SelfAttention: a padding query's row of A is either all zero or the softmax over its real keys"

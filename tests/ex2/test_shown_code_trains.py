"""The code the notebooks show is the code that trains.

For each shown computation - the RNN and GRU updates (`RNNCell.update`, `GRUCell.update`), the hand-written
BPTT (`update_backward` and the recurrence in `RecurrentBPTT.backward`), self-attention (`SelfAttention.forward`,
its per-offset code `RelativePositions.scores` / `.values`) and the token heads' pooling (`pool_token_scores`) - a
wrong variant is monkeypatched in, in the one place it is defined (`ex2.layers`), and one `helpers.train_step` must
compute something else. As a control, the unpatched code gives the numbers of an independent reference
(torch.nn.RNN / GRU, autograd, the formulas written out here)."""
import math

import pytest
import torch
import torch.nn.functional as F

import helpers
from ex2 import layers

SMALL = {"trainable": False, "emb_dropout": 0.0, "hidden": 8}
"""Small models without dropout or trainable vectors: one step is deterministic and quick."""


def toy_batch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 5000, (4, 8), generator=generator)
    return ids, torch.tensor([8, 3, 6, 1]), torch.tensor([1.0, 0.0, 1.0, 0.0])


def one_step(name: str, **config) -> tuple[float, torch.Tensor]:
    """The summed loss of one `helpers.train_step` on `toy_batch()` and all parameters after it."""
    model = helpers.make_model(name, seed=0, **{**SMALL, **config})
    optimizer = helpers.make_optimizer(model, lr=1e-2)
    loss, _ = helpers.train_step(model, optimizer, *toy_batch())
    return loss, torch.cat([p.detach().flatten() for p in model.parameters()])


def summed_bce(logits, labels) -> float:
    return F.binary_cross_entropy_with_logits(logits, labels).item() * len(labels)


# --- references written independently of helpers' formulas ---

def torch_recurrent(model) -> torch.nn.Module:
    """torch.nn.RNN / GRU with the weights of `model.cell`."""
    cls = torch.nn.GRU if isinstance(model.cell, helpers.GRUCell) else torch.nn.RNN
    ref = cls(model.emb_dim, model.cell.hidden_size, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(model.cell.ih.weight)
        ref.bias_ih_l0.copy_(model.cell.ih.bias)
        ref.weight_hh_l0.copy_(model.cell.hh.weight)
        ref.bias_hh_l0.copy_(model.cell.hh.bias)
    return ref


def reference_recurrent_loss(name: str) -> float:
    model = helpers.make_model(name, seed=0, **SMALL)
    ids, lengths, labels = toy_batch()
    with torch.no_grad():
        states, _ = torch_recurrent(model)(model.embed(ids))
        last = states[torch.arange(len(ids)), lengths - 1]  # the state at each review's last real token
        return summed_bce(model.out(last).squeeze(-1), labels)


def reference_attention(att, x, mask, window="layer"):
    """softmax(Q Kᵀ / √d) V over the allowed keys (real tokens within the window), residual if asked; with relative
    positions each neighbour's key and value input is x_j + r_{j−i}, built out as a (B, T, T, d) tensor."""
    T, d = x.shape[1], x.shape[2]
    xp = x + layers.sinusoidal_positions(T, d) if att.positions is not None else x
    i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    if att.relative is not None:
        k = att.relative.max_offset
        code = att.relative.code[(j - i).clamp(-k, k) + k]  # (T, T, d)
        neighbours = xp[:, None, :, :] + code  # the key / value input of key j for query i
        scores = (att.q(xp)[:, :, None, :] * att.k(neighbours)).sum(-1) / math.sqrt(d)
        values = att.v(x[:, None, :, :] + code)
    else:
        scores = att.q(xp) @ att.k(xp).transpose(1, 2) / math.sqrt(d)
        values = att.v(x)[:, None, :, :].expand(-1, T, -1, -1)
    window = att.window if window == "layer" else window
    allowed = mask[:, None, :] & ((i - j).abs() <= (window if window is not None else T))
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
    z = (weights[..., None] * values).sum(2)
    return x + z if att.residual else z


def reference_token_loss(name: str, attention_window="layer", **config) -> float:
    model = helpers.make_model(name, seed=0, **{**SMALL, **config})
    ids, lengths, labels = toy_batch()
    mask = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
    with torch.no_grad():
        x = model.embed(ids)
        if model.head is not None:  # the exercise's layout: token layer, attention in its space, output layer
            u = model.token(x if model.positions is None else x + layers.sinusoidal_positions(x.shape[1], x.shape[2]))
            out = model.head(reference_attention(model.attention, u, mask, attention_window))
        else:
            if model.attention is not None:
                x = reference_attention(model.attention, x, mask, attention_window)
            out = model.mlp(x)
        s = torch.where(mask, out[..., 0], 0.0)
        if model.weighted:
            w = torch.softmax(out[..., 1].masked_fill(~mask, float("-inf")), dim=-1)
            logits = (w * s).sum(-1)
        else:
            logits = s.sum(-1) / (mask.sum(-1).clamp(min=1) if model.mean else 1)  # attn_sum: the mean sub-score
    return summed_bce(logits, labels)


# --- wrong variants of each shown computation ---

def rnn_update_relu(x_proj, gh, h):
    """ReLU instead of tanh."""
    h_new = torch.relu(x_proj + gh)
    return h_new, h_new


def gru_update_z_swapped(x_proj, gh, h):
    """z and 1 − z swapped: h' = z ⊙ n + (1 − z) ⊙ h."""
    H = h.shape[-1]
    r = torch.sigmoid(x_proj[..., :H] + gh[..., :H])
    z = torch.sigmoid(x_proj[..., H:2 * H] + gh[..., H:2 * H])
    n = torch.tanh(x_proj[..., 2 * H:] + r * gh[..., 2 * H:])
    return z * n + (1 - z) * h, (r, 1 - z, n, gh[..., 2 * H:])


def without_direct_path(original):
    """The BPTT backward without the direct path of δ to h (GRU: z ⊙ δ)."""
    def update_backward(dh_new, h, cache):
        d_pre, d_gh, _ = original(dh_new, h, cache)
        return d_pre, d_gh, 0.0
    return update_backward


def rnn_backward_without_tanh_derivative(dh_new, h, cache):
    """Forgets the factor tanh' = 1 − h'² of the RNN update."""
    return dh_new, dh_new, 0.0


def bptt_backward_dropping_delta_at_padding(ctx, grad_h):
    """`RecurrentBPTT.backward` with one mistake: at padding, where h_t = h_{t-1}, δ is not carried over."""
    w_hh, keep = ctx.saved_tensors
    T = keep.shape[1]
    dh, d_pre, d_gh = grad_h.contiguous(), [None] * T, [None] * T
    for t in reversed(range(T)):
        m = keep[:, t, None].to(dh.dtype)
        d_pre[t], d_gh[t], direct = ctx.cell.update_backward(dh * m, ctx.h_prev[t], ctx.caches[t])
        dh = direct + d_gh[t] @ w_hh  # the mistake: no dh * (1 - m)
    d_gh_all, h_prev_all = torch.stack(d_gh, dim=1).flatten(0, 1), torch.stack(ctx.h_prev, dim=1).flatten(0, 1)
    return None, torch.stack(d_pre, dim=1), d_gh_all.t() @ h_prev_all, d_gh_all.sum(0), dh, None


def attention_ignoring_the_window(original):
    def forward(self, x, mask):
        window, self.window = self.window, None
        try:
            return original(self, x, mask)
        finally:
            self.window = window
    return forward


def mean_pool(out, mask, weighted):
    """Uniform weights (the mean of the sub-scores) for both heads."""
    scores = out[..., 0].masked_fill(~mask, 0.0)
    weights = mask / mask.sum(-1, keepdim=True)
    return (weights * scores).sum(-1), scores, weights


# --- the tests ---

@pytest.mark.parametrize("name, cell, wrong", [("rnn", helpers.RNNCell, rnn_update_relu),
                                               ("gru", helpers.GRUCell, gru_update_z_swapped)])
def test_the_shown_cell_update_is_what_trains(name, cell, wrong, monkeypatch):
    loss, params = one_step(name)
    assert loss == pytest.approx(reference_recurrent_loss(name), rel=1e-5)  # control: torch.nn.RNN / GRU
    model = helpers.make_model(name, seed=0, **SMALL)
    prefix = helpers.explain(model, "a great film , not bad")["prefix_probs"]

    monkeypatch.setattr(cell, "update", staticmethod(wrong))
    wrong_loss, wrong_params = one_step(name)
    assert wrong_loss != pytest.approx(loss, rel=1e-3)  # the loss training computes changed ...
    assert not torch.allclose(wrong_params, params)  # ... and so did the step it took
    assert not torch.allclose(torch.from_numpy(helpers.explain(model, "a great film , not bad")["prefix_probs"]),
                              torch.from_numpy(prefix))  # explain (autograd path, `step`) runs it too


@pytest.mark.parametrize("name, cell, wrong", [
    ("rnn", helpers.RNNCell, rnn_backward_without_tanh_derivative),
    ("gru", helpers.GRUCell, without_direct_path(helpers.GRUCell.update_backward))])
def test_the_shown_bptt_backward_is_what_trains(name, cell, wrong, monkeypatch):
    torch.manual_seed(0)
    ours = cell(5, 6)
    x = torch.randn(3, 7, 5)
    mask = helpers.lengths_to_mask(torch.tensor([7, 4, 2]), 7)

    def forward_and_gradient(manual_bptt: bool):
        h = helpers.run_cell(ours, x, mask, manual_bptt=manual_bptt)
        grads = torch.autograd.grad(h.pow(2).sum(), list(ours.parameters()))
        return h.detach(), torch.cat([g.flatten() for g in grads])

    h, grad = forward_and_gradient(manual_bptt=True)
    h_auto, grad_auto = forward_and_gradient(manual_bptt=False)
    torch.testing.assert_close(h, h_auto)  # control: the hand-written backward is autograd's gradient
    torch.testing.assert_close(grad, grad_auto, rtol=1e-4, atol=1e-6)
    loss, params = one_step(name)

    monkeypatch.setattr(cell, "update_backward", staticmethod(wrong))
    wrong_h, wrong_grad = forward_and_gradient(manual_bptt=True)
    torch.testing.assert_close(wrong_h, h, rtol=0, atol=0)  # the forward pass is untouched ...
    assert not torch.allclose(wrong_grad, grad, rtol=1e-3)  # ... the gradient of the training path is not
    torch.testing.assert_close(forward_and_gradient(manual_bptt=False)[1], grad_auto)  # autograd does not use it
    wrong_loss, wrong_params = one_step(name)
    assert wrong_loss == pytest.approx(loss, rel=1e-6)  # same loss, other step: training used this backward
    assert not torch.allclose(wrong_params, params)


@pytest.mark.parametrize("name", ["rnn", "gru"])
def test_the_shown_bptt_recurrence_is_what_trains(name, monkeypatch):
    loss, params = one_step(name)  # toy_batch() has short reviews: padding at the end of their rows
    monkeypatch.setattr(helpers.RecurrentBPTT, "backward", staticmethod(bptt_backward_dropping_delta_at_padding))
    wrong_loss, wrong_params = one_step(name)
    assert wrong_loss == pytest.approx(loss, rel=1e-6)  # the same forward pass ...
    assert not torch.allclose(wrong_params, params)  # ... another step: training runs the shown recurrence


@pytest.mark.parametrize("name", ["attn_sum", "attn_weighted"])
def test_the_shown_attention_is_what_trains(name, monkeypatch):
    config = {"window": 2}  # reviews of 8 tokens: a window of ±2 is a real restriction
    loss, params = one_step(name, **config)
    assert loss == pytest.approx(reference_token_loss(name, **config), rel=1e-5)  # control: the formula above
    monkeypatch.setattr(helpers.SelfAttention, "forward", attention_ignoring_the_window(helpers.SelfAttention.forward))
    wrong_loss, wrong_params = one_step(name, **config)
    assert wrong_loss != pytest.approx(loss, rel=1e-4)
    assert not torch.allclose(wrong_params, params)
    variant = reference_token_loss(name, attention_window=None, **config)
    assert wrong_loss == pytest.approx(variant, rel=1e-5)  # the variant ran


@pytest.mark.parametrize("name", ["sum", "weighted", "attn_sum", "attn_weighted"])
def test_the_shown_pooling_is_what_trains(name, monkeypatch):
    loss, params = one_step(name)
    assert loss == pytest.approx(reference_token_loss(name), rel=1e-5)  # control: Σ s_i or Σ softmax(a)_i s_i
    model = helpers.make_model(name, seed=0, **SMALL)
    monkeypatch.setattr(layers, "pool_token_scores", mean_pool)
    wrong_loss, wrong_params = one_step(name)
    # at initialisation softmax(a) is close to uniform (attn_weighted: losses 2.873264 vs 2.873257), so the first loss
    # differs only slightly; the step it takes differs clearly (the parameters below)
    assert wrong_loss != pytest.approx(loss, rel=1e-6)
    assert not torch.allclose(wrong_params, params)
    info = helpers.explain(model, "a great film , not bad at all")  # explain and the figures read the same pooling
    assert info["weights"] == pytest.approx([1 / len(info["tokens"])] * len(info["tokens"]))


@pytest.mark.parametrize("name", ["attn_sum", "attn_weighted"])
@pytest.mark.parametrize("part", ["scores", "values"])
def test_the_shown_relative_positions_are_what_trains(name, part, monkeypatch):
    """Notebook 04 shows `RelativePositions.scores` (the term R of the scores) and `.values` (the W_v r term of the
    values): leaving either out must change what one training step computes."""
    config = {"window": 2}
    loss, params = one_step(name, **config)
    assert loss == pytest.approx(reference_token_loss(name, **config), rel=1e-5)  # control: keys of x_j + r_{j−i}
    original = getattr(helpers.RelativePositions, part)
    monkeypatch.setattr(helpers.RelativePositions, part, lambda self, a, linear: 0 * original(self, a, linear))
    wrong_loss, wrong_params = one_step(name, **config)
    assert wrong_loss != pytest.approx(loss, rel=1e-7)  # the codes start small (0.02 · N(0, 1)): a small change ...
    assert not torch.allclose(wrong_params, params, rtol=1e-4, atol=1e-6)  # ... and another step

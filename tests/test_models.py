"""Models: hand-written cells against torch's, padding invariance, BPTT, heads, attention."""
import pytest
import torch

import helpers


def _copy(src, cell):
    with torch.no_grad():
        cell.ih.weight.copy_(src.weight_ih if hasattr(src, "weight_ih") else src.weight_ih_l0)
        cell.ih.bias.copy_(src.bias_ih if hasattr(src, "bias_ih") else src.bias_ih_l0)
        cell.hh.weight.copy_(src.weight_hh if hasattr(src, "weight_hh") else src.weight_hh_l0)
        cell.hh.bias.copy_(src.bias_hh if hasattr(src, "bias_hh") else src.bias_hh_l0)


@pytest.mark.parametrize("ours, theirs", [(helpers.RNNCell, torch.nn.RNNCell), (helpers.GRUCell, torch.nn.GRUCell)])
def test_cell_matches_torch_cell(ours, theirs):
    torch.manual_seed(0)
    ref, cell = theirs(50, 86), ours(50, 86)
    _copy(ref, cell)
    x, h = torch.randn(16, 50), torch.randn(16, 86)
    torch.testing.assert_close(cell(x, h), ref(x, h), rtol=0, atol=1e-5)


@pytest.mark.parametrize("ours, theirs", [(helpers.RNNCell, torch.nn.RNN), (helpers.GRUCell, torch.nn.GRU)])
@pytest.mark.parametrize("manual_bptt", [True, False])
def test_sequence_matches_torch_and_gradients_agree(ours, theirs, manual_bptt):
    torch.manual_seed(1)
    ref, cell = theirs(50, 32, batch_first=True), ours(50, 32)
    _copy(ref, cell)
    x = torch.randn(8, 20, 50)
    _, h_ref = ref(x)
    h = helpers.run_cell(cell, x, manual_bptt=manual_bptt)
    torch.testing.assert_close(h, h_ref[0], rtol=0, atol=1e-5)
    h.pow(2).sum().backward()
    h_ref[0].pow(2).sum().backward()
    torch.testing.assert_close(cell.hh.weight.grad, ref.weight_hh_l0.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cell.ih.weight.grad, ref.weight_ih_l0.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ours", [helpers.RNNCell, helpers.GRUCell])
def test_hand_written_bptt_equals_autograd_with_padding(ours):
    torch.manual_seed(2)
    cell = ours(4, 6).double()
    x = torch.randn(5, 7, 4, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(5, 6, dtype=torch.double, requires_grad=True)
    mask = helpers.lengths_to_mask(torch.tensor([7, 3, 1, 5, 7]), 7)
    grads = []
    for manual in (True, False):
        params = [*cell.parameters(), x, h0]
        out = helpers.run_cell(cell, x, mask, h0=h0, manual_bptt=manual)
        grads.append([out.detach(), *torch.autograd.grad((out * torch.arange(6.0)).sum(), params)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # and torch's own numeric check of the custom backward
    assert torch.autograd.gradcheck(lambda inp: helpers.run_cell(cell, inp, mask, h0=h0), (x,))


@pytest.mark.parametrize("name", helpers.MODEL_NAMES)
def test_padding_does_not_change_the_logit(name):
    model = helpers.make_model(name, seed=0).eval()
    ids = torch.randint(2, 5000, (3, 9))
    lengths = torch.tensor([9, 4, 6])
    padded = torch.cat([ids, torch.full((3, 11), helpers.PAD)], dim=1)
    garbage = torch.cat([ids, torch.randint(2, 5000, (3, 11))], dim=1)  # padding slots hold junk
    with torch.no_grad():
        base = model(ids, lengths)
        torch.testing.assert_close(model(padded, lengths), base, rtol=0, atol=1e-5)
        torch.testing.assert_close(model(garbage, lengths), base, rtol=0, atol=1e-5)
        # each review alone, unpadded, gives the same logit as in the batch
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(model(ids[i:i + 1, :n], lengths[i:i + 1]), base[i:i + 1], rtol=0, atol=1e-5)


def test_sum_and_weighted_heads_follow_their_formulas():
    ids, lengths = torch.randint(2, 5000, (2, 6)), torch.tensor([6, 3])
    s = helpers.make_model("sum", seed=0)
    logit, parts = s(ids, lengths, details=True)
    torch.testing.assert_close(logit, parts["scores"].sum(-1))
    assert (parts["scores"][1, 3:] == 0).all()
    w = helpers.make_model("weighted", seed=0)
    logit, parts = w(ids, lengths, details=True)
    torch.testing.assert_close(parts["weights"].sum(-1), torch.ones(2))
    assert (parts["weights"][1, 3:] == 0).all()
    torch.testing.assert_close(logit, (parts["weights"] * parts["scores"]).sum(-1))


@pytest.mark.parametrize("window", [None, 0, 2])
def test_attention_is_masked_and_windowed(window):
    model = helpers.make_model("attn_weighted", seed=0, window=window)
    ids, lengths = torch.randint(2, 5000, (2, 8)), torch.tensor([8, 5])
    _, parts = model(ids, lengths, details=True)
    attn = parts["attention"]
    torch.testing.assert_close(attn[0].sum(-1), torch.ones(8))
    torch.testing.assert_close(attn[1, :5].sum(-1), torch.ones(5))
    assert (attn[1, :, 5:] == 0).all()  # nobody attends to padding
    if window is not None:
        i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
        assert (attn[0][(i - j).abs() > window] == 0).all()
    if window == 0:  # attention to oneself only: the identity matrix on real tokens
        torch.testing.assert_close(attn[0], torch.eye(8))


def test_positions_make_attention_order_aware():
    model = helpers.make_model("attn_sum", seed=0, window=None).eval()
    ids = torch.randint(2, 5000, (1, 6))
    with torch.no_grad():
        a = model(ids, torch.tensor([6]))
        b = model(ids.flip(1), torch.tensor([6]))
    assert not torch.allclose(a, b)
    plain = helpers.make_model("sum", seed=0).eval()
    with torch.no_grad():  # without attention the order does not matter
        torch.testing.assert_close(plain(ids, torch.tensor([6])), plain(ids.flip(1), torch.tensor([6])))


def test_make_model_rejects_unknown_names_and_windows():
    with pytest.raises(ValueError, match="unknown model"):
        helpers.make_model("lstm")
    with pytest.raises(ValueError):
        helpers.make_model("attn_sum", window=-1)


def test_seeded_construction_is_reproducible():
    a, b = helpers.make_model("gru", seed=3), helpers.make_model("gru", seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)

"""Models: hand-written cells and BPTT against autograd and torch.nn.RNN / GRU, padding invariance, the token
heads, attention and its layouts, word vectors (frozen or trainable), the model record."""
import math

import numpy as np
import pytest
import torch

import experiments
import helpers
from ex2 import checkpoints, layers, models
from ex2 import data as imdb


def _copy(src, cell):
    cell.load_torch_weights(src)


def test_load_torch_weights_refuses_a_cell_of_another_size():
    with pytest.raises(ValueError, match="GRUCell's weight_ih is \\(12, 5\\), this GRUCell needs \\(12, 3\\)"):
        helpers.GRUCell(3, 4).load_torch_weights(torch.nn.GRUCell(5, 4))


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
    padded = torch.cat([ids, torch.full((3, 11), imdb.PAD)], dim=1)
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
    w = helpers.make_model("weighted", seed=0).eval()  # eval: no embedding dropout, so both passes agree
    logit, parts = w(ids, lengths, details=True)
    out = w.mlp(w.embed(ids))  # the token network's (s_i, a_i), computed here without the pooling
    for i, n in enumerate(lengths.tolist()):  # w = softmax(a) over the real tokens, s as the network gave it
        torch.testing.assert_close(parts["weights"][i, :n], torch.softmax(out[i, :n, 1], dim=0))
        torch.testing.assert_close(parts["scores"][i, :n], out[i, :n, 0])
    assert (parts["weights"][1, 3:] == 0).all()
    torch.testing.assert_close(logit, (parts["weights"] * parts["scores"]).sum(-1))


def test_the_mean_sub_score_divides_by_each_reviews_own_length():
    """attn_sum's mean pooling: the logit is Σ s_i / n over the n real tokens (not over the padded width T), and the
    contributions `explain` shows are s_i / n, adding up to it."""
    model = helpers.make_model("sum", seed=0, mean=True).eval()
    ids, lengths = torch.randint(2, 5000, (2, 8)), torch.tensor([8, 3])
    with torch.no_grad():
        logit, parts = model(ids, lengths, details=True)
        total = helpers.make_model("sum", seed=0).eval()(ids, lengths)  # the same network, summing
    torch.testing.assert_close(logit, total / torch.tensor([8.0, 3.0]))  # dividing by T = 8 would fail review 2
    torch.testing.assert_close(parts["contributions"], parts["scores"] / torch.tensor([[8.0], [3.0]]))
    torch.testing.assert_close(parts["contributions"].sum(-1), logit)
    with torch.no_grad():  # and a review with no real token gets logit 0, not NaN
        assert model(ids[:1], torch.tensor([0])).item() == 0.0


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


@pytest.mark.parametrize("name", ["attn_sum", "attn_weighted"])
def test_the_window_0_control_has_the_named_models_parameters_and_initial_weights(name):
    """The same-capacity control of attention: with window=0 every token sees only itself (A = I, above), and the
    model keeps every parameter of the ±5 model, seed for seed the same initial values, so that the paired difference
    is attention's context alone."""
    named, control = helpers.make_model(name, seed=3), helpers.make_model(name, seed=3, window=0)
    assert control.attention.window == 0 and named.attention.window == 5
    a, b = dict(named.named_parameters()), dict(control.named_parameters())
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


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


@pytest.mark.parametrize("ours", [helpers.RNNCell, helpers.GRUCell])
def test_run_cell_all_states_and_start_state(ours):
    torch.manual_seed(3)
    cell, reference = ours(5, 7), (torch.nn.GRU if ours is helpers.GRUCell else torch.nn.RNN)(5, 7, batch_first=True)
    _copy(reference, cell)  # torch's own recurrence with the same weights
    x, h0 = torch.randn(2, 6, 5), torch.randn(2, 7)
    mask = helpers.lengths_to_mask(torch.tensor([6, 2]), 6)
    h, states = helpers.run_cell(cell, x, mask, h0=h0, return_all=True)
    with torch.no_grad():
        torch.testing.assert_close(states[0], reference(x[:1], h0[None, :1])[0][0])
        torch.testing.assert_close(states[1, :2], reference(x[1:, :2], h0[None, 1:])[0][0])  # review 1's 2 tokens
    torch.testing.assert_close(h, states[:, -1])
    assert (states[1, 2:] == states[1, 1]).all()  # padding carries the state over unchanged
    torch.testing.assert_close(helpers.run_cell(cell, x, mask, h0=h0), h)  # the hand-written BPTT path
    assert not torch.allclose(helpers.run_cell(cell, x, mask), h)  # h0 matters (default: zeros)


# --- word vectors: frozen GloVe, or trainable corrections of the training vocabulary ---

def test_only_training_vocabulary_rows_are_trained_and_checkpoints_store_them(toy_data, tmp_path):
    vocab = helpers.training_vocabulary(toy_data.train, min_count=3)
    assert imdb.PAD not in vocab.tolist() and imdb.UNK not in vocab.tolist()
    words = set(imdb.token_words(vocab.tolist()))
    assert {"great", "bad", "film"} <= words and "number" in words
    assert not ({"0", "11"} & words)  # each number occurs once or twice per class: below min_count
    model, _ = helpers.train_model("weighted", toy_data, seed=0, epochs=3, batch_size=4, lr=1e-2, progress=False,
                                   verbose=False, config={"min_count": 3})
    assert model.trainable and model.delta is not None
    assert set(model.adapted_ids.tolist()) == set(vocab.tolist())
    glove = imdb.load_glove()
    assert torch.equal(model.embedding, glove.vectors)  # the GloVe table itself never changes
    great, eleven = glove.index["great"], glove.index["11"]
    e = model.embed(torch.tensor([[great, eleven]]))
    assert not torch.allclose(e[0, 0], glove.vectors[great])  # a vocabulary word moved
    assert torch.equal(e[0, 1], glove.vectors[eleven])  # a rare word kept its GloVe vector
    assert model.delta.weight[0].abs().sum() == 0  # the fixed zero row
    assert helpers.count_parameters(model) - helpers.count_parameters(model, embeddings=False) == len(vocab) * 50

    path = checkpoints.save_checkpoint(model, tmp_path / "m.pt")
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert stored["delta.weight"].dtype == torch.float16 and "embedding" not in stored
    loaded = checkpoints.load_checkpoint(path)
    assert torch.equal(loaded.adapted_ids, model.adapted_ids)
    texts = ["a great wonderful film", "bad boring awful"]
    np.testing.assert_allclose(helpers.predict(loaded, texts), helpers.predict(model, texts), atol=2e-3)


def test_the_frozen_recipe_trains_no_word_vector(toy_data):
    config, settings = helpers.recipe("sum", trainable=False)
    model, _ = helpers.train_model("sum", toy_data, seed=0, config=config, progress=False, verbose=False,
                                   **{**settings, "epochs": 2, "batch_size": 4, "lr": 1e-2})
    assert not model.trainable and model.delta is None
    model.train()  # dropout would show here: the frozen recipe has none
    ids = toy_data.train.ids[:4]
    assert torch.equal(model.embed(ids), imdb.load_glove().vectors[ids])  # still GloVe after training
    assert helpers.count_parameters(model) == helpers.count_parameters(model, embeddings=False)
    assert helpers.count_parameters(model) == sum(p.numel() for p in model.mlp.parameters())
    # the trainable recipe of the same model does adapt rows, with dropout while training
    trainable, _ = helpers.train_model("sum", toy_data, seed=0, progress=False, verbose=False, epochs=1)
    assert trainable.delta is not None and len(trainable.adapted_ids) > 0
    assert model.info.settings == {**settings, "epochs": 2, "batch_size": 4, "lr": 1e-2}
    assert trainable.info.settings == {**helpers.recipe("sum")[1], "epochs": 1}
    with pytest.raises(ValueError, match="unknown model"):
        helpers.recipe("bert")


def test_embedding_dropout_acts_only_in_training():
    model = helpers.make_model("sum", seed=0, emb_dropout=0.5)
    ids = torch.tensor([[5, 6, 7, 8]])
    model.train()
    assert (model.embed(ids) == 0).any()
    model.eval()
    assert torch.equal(model.embed(ids), imdb.load_glove().vectors[ids])


# --- where attention sits: the exercise's layout and the residual one ---

def _attention_input(model, ids, lengths):
    seen = []
    handle = model.attention.register_forward_hook(lambda module, args, output: seen.append((args[0], output[0])))
    with torch.no_grad():
        model(ids, lengths)
    handle.remove()
    return seen[0]


def test_exercise_layout_attends_in_the_hidden_space_without_residual():
    ids, lengths = torch.randint(2, 5000, (2, 7)), torch.tensor([7, 4])
    model = helpers.make_model("attn_sum", seed=0).eval()
    assert model.info.config["layout"] == "exercise"
    x, z = _attention_input(model, ids, lengths)
    with torch.no_grad():  # the attention reads the token layer u = ReLU(W x + b), not the word vectors
        assert model.positions is None and model.attention.relative is not None  # positions: a code per offset
        u = model.token(model.embed(ids))
        torch.testing.assert_close(x, u)
        assert (x >= 0).all() and x.shape[-1] == model.info.config["hidden"]
        model.attention.v.weight.zero_()
        model.attention.v.bias.zero_()
        assert (_attention_input(model, ids, lengths)[1] == 0).all()  # no residual: z = A V = 0 when V = 0

    variant = helpers.make_model("attn_weighted", seed=0, layout="residual").eval()  # the residual variant
    assert variant.info.config["layout"] == "residual"
    x, _ = _attention_input(variant, ids, lengths)
    with torch.no_grad():
        torch.testing.assert_close(x, variant.embed(ids))  # attention on the word vectors themselves
        variant.attention.v.weight.zero_()
        variant.attention.v.bias.zero_()
        torch.testing.assert_close(_attention_input(variant, ids, lengths)[1], x)  # x + A V = x when V = 0
    assert helpers.make_model("attn_weighted", layout="exercise").attention.residual is False
    with pytest.raises(ValueError, match="layout"):
        helpers.make_model("attn_sum", layout="sideways")
    # no residual: with a window of 0 each word sees only itself
    _, parts = helpers.make_model("attn_sum", seed=0, window=0)(ids, lengths, details=True)
    torch.testing.assert_close(parts["attention"][0], torch.eye(7))


def test_position_code_is_added_and_grows_for_long_inputs():
    # the Transformer's code, by hand: P[p, 2i] = sin(p / 10000^(2i/d)), P[p, 2i+1] = cos(p / 10000^(2i/d))
    table = layers.sinusoidal_positions(600, 6)
    for p_, i in ((0, 0), (1, 0), (1, 1), (7, 2), (599, 1)):
        angle = p_ / 10000 ** (2 * i / 6)
        assert math.isclose(table[p_, 2 * i], math.sin(angle), abs_tol=1e-5)
        assert math.isclose(table[p_, 2 * i + 1], math.cos(angle), abs_tol=1e-5)
    code = layers.PositionCode(6)
    x = torch.zeros(1, 600, 6)  # longer than the initial table
    torch.testing.assert_close(code(x)[0], layers.sinusoidal_positions(600, 6))
    torch.testing.assert_close(code(x[:, :3] + 1)[0], layers.sinusoidal_positions(3, 6) + 1)


def test_model_info_is_the_one_record_of_what_a_model_is():
    model = helpers.make_model("gru", seed=0, hidden=16)
    assert model.info == models.ModelInfo(name="gru", config={**models.DEFAULT_CONFIGS["gru"], "hidden": 16})
    assert model.cell.hidden_size == 16  # the config is the one the model was built with


def test_a_recurrent_model_builds_only_the_cells_it_has():
    assert type(helpers.make_model("rnn", seed=0, hidden=4).cell) is helpers.RNNCell
    assert type(helpers.make_model("gru", seed=0, cell="gru", hidden=4).cell) is helpers.GRUCell
    for cell in ("lstm", "GRU", ""):
        with pytest.raises(ValueError, match=f"cell must be one of rnn, gru, got {cell!r}"):
            helpers.make_model("rnn", seed=0, cell=cell)


def test_full_config_says_when_two_configs_build_the_same_model():
    # spelling a default out, or the constructor's own default, is the same model
    assert experiments.full_config("attn_sum", {"mean": True}) == experiments.full_config("attn_sum")
    assert experiments.full_config("weighted", {"mean": False}) == experiments.full_config("weighted")
    assert experiments.full_config("gru", {"hh_init": "default"}) == experiments.full_config("gru")
    assert experiments.full_config("gru", {"hidden": 64}) != experiments.full_config("gru")
    # a record keeps the merged config it was built with: read without merging today's DEFAULT_CONFIGS again
    made = helpers.make_model("attn_weighted", seed=0, positions="relative").info.config
    relative = experiments.full_config("attn_weighted", {"positions": "relative"})
    assert experiments.full_config("attn_weighted", made, named=False) == relative
    assert experiments.full_config("attn_weighted", {"layout": "residual"}, named=False)["positions"] == "absolute"

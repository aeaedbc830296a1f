"""The measurements notebooks 03 and 04 read off models and data (`experiments.analysis`), each on inputs small enough
to work out by hand: what a tokenizer keeps, rare words shared between reviews, the gradient's reach, the over-fitting
table and its per-run metrics, the most confidently wrong reviews and the write-up's review 2."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import helpers
from ex2 import data, layers
from experiments import analysis


def _split(texts, labels, ids, lengths, ratings=None) -> data.Split:
    return data.Split(texts=list(texts), labels=torch.tensor(labels, dtype=torch.float32),
                      ids=torch.tensor(ids), lengths=torch.tensor(lengths),
                      ratings=torch.tensor(ratings if ratings is not None else [1] * len(texts)))


def test_first_tokens_profile_counts_the_first_n_tokens():
    # glove6b-v1 keeps punctuation: ["great", "film", "."] and ["qwzxv", "great", "great", "great"] (+1 cut off)
    profile = analysis.first_tokens_profile(["great film .", "qwzxv great great great great"], "glove6b-v1", n=4)
    assert profile["tokens kept"] == 3.5
    assert profile["words among them"] == 3.0  # "." is not a word; the unknown "qwzxv" is
    assert profile["reviews cut (> 100 tokens)"] == 0.5
    assert profile["in GloVe"] == pytest.approx(6 / 7)  # all kept tokens but "qwzxv"


def test_shared_rare_words_needs_three_rare_words_shared_with_one_review():
    pool = [{"a", "b", "c", "the"}, {"a", "b", "c", "the"}, {"d", "e", "f", "the"}, {"d", "the"}, {"e", "f"},
            {"g", "h", "i"}]
    held = [{"a", "b", "c"},  # three rare words (in 2 reviews each) with review 0: a hit
            {"a", "b", "the"},  # "the" is in 4 > max_df reviews: not rare, so only two
            {"d", "e", "f"},  # a hit with review 2
            {"a", "d", "e"},  # three rare words, but never three with the same review
            {"g", "h", "i"}]  # in one review only: names no other review shares, not counted
    assert analysis.shared_rare_words(held, pool, max_df=3) == pytest.approx(2 / 5)
    assert analysis.shared_rare_words(held, pool, min_shared=2, max_df=3) == pytest.approx(4 / 5)
    assert analysis.shared_rare_words(held, pool, max_df=4) == pytest.approx(3 / 5)  # now "the" counts
    assert analysis.shared_rare_words([], pool) == 0.0


def test_gradient_reach_is_the_mean_gradient_norm_over_the_first_n_full_reviews():
    model = helpers.make_model("rnn", seed=0, hidden=4)
    ids = torch.randint(2, 5000, (4, 5), generator=torch.Generator().manual_seed(0))
    lengths = [5, 3, 5, 5]
    ids[1, 3:] = 0
    split = _split(["r"] * 4, [1, 0, 1, 0], ids.tolist(), lengths)
    reach = analysis.gradient_reach(model, split, n=2)

    def logit(x, row):  # one review's logit from its word vectors, the model's own path
        mask = layers.lengths_to_mask(torch.tensor([lengths[row]]), 5)
        return model.out(layers.run_cell(model.cell, x[None], mask)).squeeze()

    norms = []
    for row in (0, 2):  # the first two full-length reviews; review 1 is short, review 3 beyond n
        x = model.embed(ids[row:row + 1])[0].detach()
        assert torch.allclose(logit(x, row), model(ids[row:row + 1], torch.tensor([5]))[0])
        jacobian = torch.autograd.functional.jacobian(lambda v, r=row: logit(v, r), x)  # (T, D)
        norms.append(jacobian.norm(dim=-1).numpy())
    assert reach.shape == (5,)
    np.testing.assert_allclose(reach, np.mean(norms, axis=0), rtol=1e-5)
    assert reach[-1] > 0

    with pytest.raises(ValueError, match="recurrent"):
        analysis.gradient_reach(helpers.make_model("sum", seed=0), split)
    with pytest.raises(ValueError, match="full length"):
        analysis.gradient_reach(model, _split(["r"], [1], [[5, 6, 0]], [2]))


def _run(val_acc, val_loss, train_acc, epochs=10):
    return SimpleNamespace(history={"val_acc": val_acc, "val_loss": val_loss, "train_acc": train_acc},
                           settings={"epochs": epochs})


def test_overfitting_table_and_the_per_run_metrics():
    a = _run([0.70, 0.80, 0.78], [0.60, 0.50, 0.55], [0.75, 0.90, 0.98])  # loss lowest at epoch 2, then +0.05
    b = _run([0.72, 0.76], [0.40, 0.45], [0.74, 0.80])  # lowest at epoch 1, then +0.05
    table = analysis.overfitting_table({"g": [a, b]})
    row = table.loc["g"]
    assert row["best val acc"] == "0.780 ± 0.028"  # max 0.80 and 0.76
    assert row["epochs run / cap"] == "3/2 of 10"
    assert row["min val loss at epoch"] == "2/1"
    assert row["val loss rise after min"] == "0.050 ± 0.000"
    assert row["train − val acc (last epoch)"] == "0.120 ± 0.113"  # 0.20 and 0.04
    assert analysis.train_val_gap(a) == pytest.approx(0.20)
    assert analysis.val_loss_rise(a) == pytest.approx(0.05)
    assert analysis.val_loss_rise(_run([0.7], [0.3, 0.2], [0.7])) == 0.0  # still falling: no rise
    assert analysis.val_jitter(a.history) == pytest.approx((0.10 + 0.02) / 2)
    assert np.isnan(analysis.val_jitter({"val_acc": [0.7]}))


def test_seen_tokens_are_the_ids_up_to_the_length():
    glove = data.load_glove()
    row = [glove.index["great"], data.UNK, glove.index["film"], glove.index["bad"], 0]
    split = _split(["x"], [1], [row], [3])
    assert analysis.seen_tokens(split, 0) == ["great", "<unk>", "film"]


def test_confident_errors_ranks_wrong_reviews_by_confidence_and_lists_a_text_once():
    texts = ["great film", "awful", "great film", "fine", "good fun", "dull dull dull"]
    labels = [0, 1, 0, 1, 0, 1]
    probs = np.array([0.95, 0.10, 0.95, 0.80, 0.60, 0.10])  # wrong: 0, 1, 2, 4, 5; review 3 is right
    split = _split(texts, labels, [[2]] * 6, [1] * 6, ratings=[3, 8, 3, 7, 4, 9])
    errors = analysis.confident_errors(probs, split, "course-v1", k=4)
    assert errors["review"].tolist() == [0, 1, 5, 4]  # 2 repeats 0's text; 1 and 5 tie and keep their order
    assert errors["label"].tolist() == ["neg", "pos", "pos", "neg"]
    assert errors["rating"].tolist() == [3, 8, 9, 4]
    assert errors["P(positive)"].tolist() == [0.95, 0.10, 0.10, 0.60]
    assert errors["tokens (all)"].tolist() == [2, 1, 3, 2]  # the whole text's length in token ids
    assert len(analysis.confident_errors(probs, split, "course-v1", k=2)) == 2
    assert analysis.confident_errors(np.array(labels, float), split, "course-v1").empty  # no error, no row


def test_review2_prob_reads_the_second_write_up_review():
    assert analysis.review2_prob(SimpleNamespace(writeup_probs=[0.1, 0.7, 0.3])) == 0.7

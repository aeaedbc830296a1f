"""Training engine, predict / explain on odd input, checkpoints, the TF-IDF anchor."""
import numpy as np
import pytest
import torch

import helpers



@pytest.mark.parametrize("name", ["gru", "attn_weighted"])
def test_training_is_deterministic_and_learns(toy_data, name):
    runs = []
    for _ in range(2):
        model, history = helpers.train_model(name, toy_data, seed=7, epochs=6, batch_size=4,
                                             lr=1e-2, progress=False, verbose=False, patience=None)
        runs.append((history, [p.detach().clone() for p in model.parameters()]))
        runs[-1] += (helpers.evaluate(model, toy_data.test)["acc"],)
    (h1, p1, acc1), (h2, p2, acc2) = runs
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert acc1 == acc2
    assert h1.train_loss[-1] < h1.train_loss[0]
    assert acc1 >= 0.75  # the first run learnt the toy task (4 separable test reviews)
    other, _ = helpers.train_model(name, toy_data, seed=8, epochs=1, batch_size=4, lr=1e-2, progress=False,
                                   verbose=False, patience=None)
    assert not all(torch.equal(a, b) for a, b in zip(p1, other.parameters()))  # the seed matters


def test_early_stopping_restores_the_best_epoch(toy_data):
    model, history = helpers.train_model("sum", toy_data, seed=0, epochs=30, batch_size=4, lr=5e-2,
                                         patience=2, progress=False, verbose=False)
    # the toy validation set is learnt within a few epochs and cannot improve on 1.0: training stops
    assert history.stopped_early and len(history.val_acc) < 30
    assert len(history.val_acc) == history.best_epoch + 2  # two epochs without a better accuracy
    assert history.val_acc[history.best_epoch - 1] == history.best_val_acc
    assert helpers.evaluate(model, toy_data.val)["acc"] == pytest.approx(history.best_val_acc)


def test_callback_sees_every_epoch_and_can_stop(toy_data):
    seen = []

    def callback(epoch, history):
        seen.append((epoch, len(history.val_acc)))
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        helpers.train_model("sum", toy_data, epochs=5, batch_size=4, callback=callback,
                            progress=False, verbose=False)
    assert seen == [(1, 1), (2, 2)]


@pytest.mark.parametrize("name", helpers.MODEL_NAMES)
def test_predict_and_explain_on_odd_input(name):
    model = helpers.make_model(name, seed=0)
    probs = helpers.predict(model, ["great movie", "?!...", "qwzxv blorptang", "Très bon film, ça!",
                                    "word " * 10_000])
    assert probs.shape == (5,) and probs.dtype == np.float32
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    # a 10,000-word review is cut to its first max_len tokens: the same as its first 100 words
    assert probs[4] == pytest.approx(helpers.predict(model, "word " * 100)[0], abs=1e-6)
    for bad in ["", "   \n ", None, 42, ["fine", 3], []]:
        with pytest.raises(ValueError):
            helpers.predict(model, bad)
    with pytest.raises(ValueError):
        helpers.explain(model, ["a list is not one review"])
    info = helpers.explain(model, "qwzxv blorptang is not good")
    assert info["tokens"] == ["<unk>", "<unk>", "is", "not", "good"]
    assert info["known"] == [False, False, True, True, True]
    assert info["prob"] == pytest.approx(float(helpers.predict(model, "qwzxv blorptang is not good")[0]), abs=1e-6)
    if name in ("rnn", "gru"):
        assert info["prefix_probs"].shape == (5,) and info["prefix_probs"][-1] == pytest.approx(info["prob"], abs=1e-6)
    else:
        assert info["scores"].shape == (5,)
        assert (info["weights"] is not None) == ("weighted" in name)
        assert (info["attention"] is not None) == name.startswith("attn")
        if "weighted" in name:
            assert info["weights"].sum() == pytest.approx(1.0, abs=1e-5)
            assert info["logit"] == pytest.approx(float((info["weights"] * info["scores"]).sum()), abs=1e-5)
        else:
            assert info["logit"] == pytest.approx(float(info["scores"].sum()), abs=1e-5)
    long = helpers.explain(model, "word " * 10_000)
    assert len(long["tokens"]) == 100


def test_checkpoint_roundtrip(tmp_path, toy_data):
    model, _ = helpers.train_model("attn_weighted", toy_data, epochs=1, batch_size=4, progress=False,
                                   verbose=False, config={"window": 3})
    path = helpers.save_checkpoint(model, tmp_path / "m.pt", {"test_acc": 0.5})
    assert path.stat().st_size < 2_000_000
    loaded = helpers.load_checkpoint(path)
    assert loaded.config["window"] == 3 and loaded.meta["test_acc"] == 0.5
    assert loaded.meta["tokenizer"] == helpers.TOKENIZER_VERSION and loaded.meta["max_len"] == 12
    text = "a wonderful film"
    assert helpers.predict(loaded, text) == pytest.approx(helpers.predict(model, text), abs=1e-7)
    with pytest.raises(FileNotFoundError):
        helpers.load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError):
        helpers.load_pretrained("bert")


@pytest.mark.parametrize("finetune", [True, False], ids=["trainable", "frozen"])
@pytest.mark.parametrize("name", helpers.MODEL_NAMES)
def test_committed_checkpoints_load_and_are_small(name, finetune):
    path = helpers.checkpoint_path(name, finetune)
    assert path.exists(), f"{path} is missing: python tools/train_results.py --only {name}/"
    assert path.stat().st_size <= 2_000_000
    model = helpers.load_checkpoint(path)
    for key in ("seed", "max_len", "tokenizer", "val_acc", "test_acc", "settings", "history", "writeup_probs"):
        assert key in model.meta
    # the checkpoint was trained with today's recipe: the named architecture and settings
    config, settings = helpers.recipe(name, finetune)
    assert model.config == {**helpers.DEFAULT_CONFIGS[name], **config}
    assert model.meta["settings"] == settings
    assert model.finetune == finetune and (model.delta is not None) == finetune
    p = helpers.predict(model, ["an absolute masterpiece, i loved every minute of it",
                                "the worst film i have ever seen, a boring waste of time"])
    assert p[0] > 0.5 > p[1]


def test_tfidf_anchor_learns_the_toy_task(toy_data):
    result = helpers.tfidf_baseline(toy_data)
    # "great/wonderful/loved" vs "bad/boring/awful/hated": the 4 test reviews share those words
    assert result["test_acc"] == 1.0 and result["val_acc"] == 1.0


@pytest.mark.parametrize("name, panels", [("gru", 1), ("sum", 1), ("weighted", 2), ("attn_weighted", 4)])
def test_show_draws_one_panel_per_explanation(name, panels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, info = helpers.show(helpers.make_model(name, seed=0), "not bad at all")
    assert len(fig.axes) == panels  # attention adds its heatmap and colour bar
    assert info["tokens"] == ["not", "bad", "at", "all"]
    plt.close(fig)

"""The training engine (train -> train_epoch -> train_step, the optimiser, clipping, early stopping, the epoch
line), evaluation, predict / explain on odd input, the TF-IDF anchor, and device selection."""
import dataclasses

import numpy as np
import pytest
import torch

import experiments
import helpers
from ex2 import data, runtime, training
from ex2.checkpoints import load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name", ["gru", "attn_weighted"])
def test_training_is_deterministic_and_learns(toy_data, name):
    runs = []
    for _ in range(2):
        model, history = helpers.train_model(name, toy_data, seed=7, epochs=6, batch_size=4,
                                             lr=1e-2, progress=False, verbose=False, patience=None)
        runs.append((history, [p.detach().clone() for p in model.parameters()],
                     helpers.evaluate(model, toy_data.test)["acc"]))
    (h1, p1, acc1), (h2, p2, acc2) = runs
    assert h1.train_loss == h2.train_loss and h1.val_acc == h2.val_acc
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert acc1 == acc2
    assert h1.train_loss[-1] < h1.train_loss[0]
    assert acc1 >= 0.75  # the first run learnt the toy task (4 separable test reviews)
    other, _ = helpers.train_model(name, toy_data, seed=8, epochs=1, batch_size=4, lr=1e-2, progress=False,
                                   verbose=False, patience=None)
    assert not all(torch.equal(a, b) for a, b in zip(p1, other.parameters()))  # the seed matters


def test_training_runs_every_batch_through_train_step_and_prints_one_line_per_epoch(toy_data, monkeypatch, capsys):
    calls = []
    train_step = helpers.train_step

    def counting(model, optimizer, ids, lengths, labels):
        calls.append(len(labels))
        return train_step(model, optimizer, ids, lengths, labels)

    monkeypatch.setattr(training, "train_step", counting)
    model = helpers.make_model("sum", seed=0)
    history = helpers.train(model, toy_data, epochs=2, batch_size=4, progress=False)
    assert calls == [4, 4, 4, 4, 2] * 2  # 18 training reviews in batches of 4, twice
    lines = capsys.readouterr().out.splitlines()
    assert lines == [history.line(1), history.line(2)]
    assert lines[1].startswith("epoch  2 | train loss") and f"acc {history.val_acc[1]:.3f}" in lines[1]
    with pytest.raises(ValueError, match="epochs"):
        helpers.train(model, toy_data, epochs=0)


def test_train_curves_are_measured_in_eval_mode_after_each_epoch(toy_data, monkeypatch):
    model = helpers.make_model("weighted", seed=0, emb_dropout=0.5)  # dropout: batch and eval numbers differ
    snapshots = []
    history = helpers.train(model, toy_data, epochs=2, batch_size=4, progress=False, verbose=False,
                            callback=lambda epoch, h: snapshots.append(helpers.evaluate(model, toy_data.train)))
    # the toy training split is smaller than TRAIN_PROBE, so the probe is all of it
    assert history.train_acc == [s["acc"] for s in snapshots]
    assert history.train_loss == pytest.approx([s["loss"] for s in snapshots])
    assert len(history.batch_loss) == 2 and history.batch_loss != history.train_loss  # the optimiser's view
    monkeypatch.setattr(training, "TRAIN_PROBE", 6)  # a larger split: a fixed stratified sample of 6 reviews
    probes = []
    evaluate = helpers.evaluate
    monkeypatch.setattr(training, "evaluate",
                        lambda m, split, **k: probes.append(split.texts) or evaluate(m, split, **k))
    helpers.train(helpers.make_model("sum", seed=0), toy_data, epochs=2, batch_size=4, progress=False, verbose=False)
    assert len(probes[0]) == 6 and probes[0] == probes[2] and probes[1] == toy_data.val.texts


def test_train_step_updates_with_clipped_gradients(toy_data, monkeypatch):
    ids, lengths, labels = next(data.batches(toy_data.train, 8))

    def step(clip: float):
        monkeypatch.setattr(training, "CLIP_NORM", clip)
        model = helpers.make_model("gru", seed=0, trainable=False, emb_dropout=0.0)
        before = [p.detach().clone() for p in model.parameters()]
        loss, correct = helpers.train_step(model, helpers.make_optimizer(model, lr=1e-3), ids, lengths, labels)
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
        moved = any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
        return loss, correct, float(norm), moved

    loss, correct, norm, moved = step(float("inf"))
    assert moved and 0 <= correct <= 8 and norm > 1e-3
    with torch.no_grad():
        model = helpers.make_model("gru", seed=0, trainable=False, emb_dropout=0.0)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(model(ids, lengths), labels).item() * 8
    assert loss == pytest.approx(expected, rel=1e-6)  # the summed loss of the batch, before the update
    assert step(1e-3)[2] == pytest.approx(1e-3, rel=1e-3)  # the gradient is clipped to CLIP_NORM


def test_the_word_vector_decay_acts_on_the_corrections_only(toy_data):
    ids, lengths, labels = next(data.batches(toy_data.train, 8))

    def step(emb_weight_decay: float):
        model = helpers.make_model("sum", seed=0, emb_dropout=0.0)
        model.adapt_rows(helpers.training_vocabulary(toy_data.train, 1))
        with torch.no_grad():
            model.delta.weight[1:] = 1.0
        helpers.train_step(model, helpers.make_optimizer(model, lr=0.1, emb_weight_decay=emb_weight_decay),
                           ids, lengths, labels)
        return model

    plain, decayed = step(0.0), step(1.0)
    unused = [i for i in range(1, plain.delta.weight.shape[0]) if plain.delta.weight.grad[i].abs().sum() == 0]
    assert unused  # rows of words not in this batch: only the decay moves them
    torch.testing.assert_close(plain.delta.weight[unused], torch.ones(len(unused), 50))
    torch.testing.assert_close(decayed.delta.weight[unused], torch.full((len(unused), 50), 0.9))  # 1 − lr · decay
    for a, b in zip(plain.mlp.parameters(), decayed.mlp.parameters()):
        torch.testing.assert_close(a, b)  # the network itself has no weight decay


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


def test_evaluate_counts_correct_reviews(toy_data):
    model = helpers.make_model("sum", seed=0)
    probs = helpers.predict_split(model, toy_data.test)
    result = helpers.evaluate(model, toy_data.test, batch_size=3)  # batches of any size give the same
    labels = toy_data.test.labels.numpy()
    assert result["acc"] == pytest.approx(np.mean((probs > 0.5) == labels))
    expected_loss = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-4)


@pytest.mark.parametrize("name", helpers.MODEL_NAMES)
def test_predict_and_explain_on_odd_input(name):
    model = helpers.make_model(name, seed=0)
    probs = helpers.predict(model, ["great movie", "qwzxv blorptang", "Très bon film, ça!", "word " * 10_000])
    assert probs.shape == (4,) and probs.dtype == np.float32
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    # a 10,000-word review is cut to its first max_len tokens: the same as its first 100 words
    assert probs[3] == pytest.approx(helpers.predict(model, "word " * 100)[0], abs=1e-6)
    model.info.tokenizer = "glove6b-v1"  # punctuation is a token there
    assert np.isfinite(helpers.predict(model, "?!...")).all()
    model.info.tokenizer = "course-v1"  # and nothing here: no letter, no token, a clear error
    for bad in ["", "   \n ", None, 42, ["fine", 3], [], "?!... 10/10"]:
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
        else:  # SUM, or its mean for attn_sum (`mean`)
            pooled = info["scores"].mean() if model.mean else info["scores"].sum()
            assert info["logit"] == pytest.approx(float(pooled), abs=1e-5)
        assert info["logit"] == pytest.approx(float(info["contributions"].sum()), abs=1e-5)  # each token's share
    long = helpers.explain(model, "word " * 10_000)
    assert len(long["tokens"]) == 100


def test_bad_input_messages_name_the_review():
    model = helpers.make_model("sum", seed=0)
    with pytest.raises(ValueError, match="^the review is empty"):
        helpers.predict(model, "   ")
    with pytest.raises(ValueError, match="^review 1 is empty"):
        helpers.predict(model, ["fine", ""])
    with pytest.raises(ValueError, match="^review 1 is a int"):
        helpers.predict(model, ["fine", 3])
    with pytest.raises(ValueError, match="^the review has no tokens"):
        helpers.predict(model, "!!! 10/10")  # not blank, but no letter: no token of the course's definition
    model.info.tokenizer = "glove6b-v1"
    with pytest.raises(ValueError, match="^the review has no tokens"):
        helpers.predict(model, "<br /><br />")  # only line breaks, which glove6b-v1 drops


def test_tfidf_anchor_learns_the_toy_task(toy_data, train_results_tool):
    tfidf_c = experiments.plan.TFIDF_C
    result = experiments.tfidf_baseline(toy_data)
    # "great/wonderful/loved" vs "bad/boring/awful/hated": the 4 test reviews share those words
    assert result["test_acc"] == 1.0 and result["val_acc"] == 1.0
    assert set(result["val_by_C"]) == {str(c) for c in tfidf_c}
    # C is chosen on validation (ties: the smallest C), never on test
    assert result["C"] == min(c for c in tfidf_c if result["val_by_C"][str(c)] == result["val_acc"])
    assert result["tokenizer"] == toy_data.tokenizer and result["split"] == "idblock-v1"


# --- device selection ---

def test_device_selection(monkeypatch):
    monkeypatch.delenv("DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert helpers.get_device() == torch.device("cpu")
    monkeypatch.setenv("DEVICE", "CPU ")
    assert helpers.get_device() == torch.device("cpu")
    monkeypatch.setenv("DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="sees no CUDA"):
        helpers.get_device()
    monkeypatch.setenv("DEVICE", "mps")
    with pytest.raises(RuntimeError, match="sees no MPS"):
        helpers.get_device()
    monkeypatch.setenv("DEVICE", "tpu")
    with pytest.raises(ValueError, match="cpu, cuda"):
        helpers.get_device()
    monkeypatch.delenv("DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert helpers.get_device() == torch.device("cuda")  # a GPU is used when there is one
    assert helpers.get_device("cpu") == torch.device("cpu")


def test_models_follow_the_device_they_are_moved_to(monkeypatch, tmp_path):
    monkeypatch.setenv("DEVICE", "cpu")
    model = helpers.make_model("gru", seed=0)
    path = save_checkpoint(model, tmp_path / "g.pt")
    loaded = load_checkpoint(path)
    assert runtime.model_device(loaded) == torch.device("cpu")
    assert helpers.predict(loaded, "fine").shape == (1,)


def test_one_run_mode_knob(monkeypatch, tmp_path):
    """RUN_MODE is the one knob, read into one `RunMode`: unset it loads the committed results here ("course") and
    trains the student run where there are none (the release); SMOKE_TEST=1 is the test command's "smoke"; RETRAIN=1 /
    FULL=1 mean "full"; RESULTS moves the results folder; an unknown value, or "course" without committed results, is
    an error that names the choices."""
    for name in ("RUN_MODE", "SMOKE_TEST", "FULL", "RETRAIN", "RESULTS"):
        monkeypatch.delenv(name, raising=False)

    def mode(name: str, quick: bool, recompute: bool, results):
        got = helpers.RunMode.from_environment()
        assert (got.name, got.quick, got.recompute, got.results) == (name, quick, recompute, results), got
        return got

    assert (runtime.CHECKPOINT_DIR / "runs").is_dir()  # the reference
    course = mode("course", False, False, runtime.CHECKPOINT_DIR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        course.name = "full"
    assert experiments.results_folder() == runtime.CHECKPOINT_DIR
    monkeypatch.setenv("RETRAIN", "1")
    mode("full", False, True, runtime.DATA_DIR / "retrain")
    monkeypatch.delenv("RETRAIN")
    monkeypatch.setenv("SMOKE_TEST", "1")
    mode("smoke", True, True, runtime.DATA_DIR / "retrain-smoke")
    monkeypatch.setenv("RUN_MODE", "student")  # RUN_MODE wins over SMOKE_TEST
    mode("student", False, False, runtime.DATA_DIR / "student-run")
    assert experiments.results_folder() == experiments.STUDENT_RUN
    monkeypatch.setenv("RESULTS", str(tmp_path / "mine"))
    mode("student", False, False, tmp_path / "mine")
    monkeypatch.delenv("RESULTS")
    monkeypatch.setenv("RUN_MODE", "fast")
    with pytest.raises(ValueError, match="student, full, smoke, course"):
        helpers.RunMode.from_environment()
    monkeypatch.delenv("RUN_MODE")
    monkeypatch.delenv("SMOKE_TEST")
    monkeypatch.setattr(runtime, "CHECKPOINT_DIR", tmp_path / "checkpoints")  # no committed results: the release
    mode("student", False, False, runtime.DATA_DIR / "student-run")
    monkeypatch.setenv("RUN_MODE", "course")
    with pytest.raises(ValueError, match="not here"):
        helpers.RunMode.from_environment()

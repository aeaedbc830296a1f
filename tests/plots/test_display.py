"""What the notebooks draw and print: learning curves, the model comparison, the explanation figures
(`show_explanation`, `show_reviews`, `show_attention`), the review explorer's `try_review`, and `show_source`."""
import textwrap

import matplotlib
import numpy as np
import pytest
import torch

import experiments
import helpers
import plots
from ex2 import layers

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def history(val_acc, offset=0.0) -> dict:
    n = len(val_acc)
    return helpers.History(train_loss=[0.7 - 0.1 * i + offset for i in range(n)],
                           train_acc=[0.6 + 0.05 * i for i in range(n)],
                           val_loss=[0.6 - 0.05 * i for i in range(n)], val_acc=list(val_acc),
                           epoch_seconds=[1.0] * n, best_epoch=int(np.argmax(val_acc)) + 1).as_dict()


def test_learning_curves_overlaid_and_one_column_per_run():
    runs = {"sum": history([0.7, 0.8, 0.75]), "gru": history([0.6, 0.7, 0.8, 0.82])}
    fig = plots.plot_history(runs, overlay=True)
    loss, acc = fig.axes
    assert [line.get_label() for line in acc.get_lines()] == ["sum train (eval mode)", "sum validation",
                                                              "gru train (eval mode)", "gru validation"]
    assert not acc.get_legend() and len(fig.legends) == 1  # one legend, below the panels
    assert list(acc.get_lines()[3].get_ydata()) == runs["gru"]["val_acc"]
    assert list(loss.get_lines()[0].get_ydata()) == runs["sum"]["train_loss"]

    fig = plots.plot_history(runs, reference={"sum": history([0.5, 0.55])})
    assert len(fig.axes) == 4  # loss and accuracy, one column per run
    sum_acc = fig.axes[2]  # rows are (loss, acc): axes[0], axes[1] are the top row
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"reference train", "reference validation", "train (eval mode)", "validation",
                          "best epoch (kept)"}
    assert list(lines["best epoch (kept)"].get_xdata()) == [2, 2]  # sum's best validation accuracy, epoch 2
    assert "best val acc 0.800 at epoch 2" in fig.axes[0].get_title()
    assert "best val acc 0.820 at epoch 4" in fig.axes[1].get_title()
    assert not any(line.get_label().startswith("reference") for line in fig.axes[1].get_lines())  # none for gru
    assert list(sum_acc.get_lines()[-2].get_ydata()) == runs["sum"]["val_acc"]


def test_model_comparison_draws_means_from_chance_with_intervals_and_the_anchor():
    records = {"a": [{"val_acc": 0.8, "test_acc": 0.80, "best_epoch": 3, "parameters": 1000},
                     {"val_acc": 0.8, "test_acc": 0.84, "best_epoch": 3, "parameters": 1000}],
               "b": [{"val_acc": 0.7, "test_acc": 0.75, "best_epoch": 1, "parameters": 50}]}
    table = experiments.results_table({label: [experiments.RunRecord(name=label, seed=seed, **r)
                                               for seed, r in enumerate(rs)]
                                       for label, rs in records.items()})
    fig = plots.plot_model_comparison(table, anchor=0.77)
    acc, params = fig.axes
    bars = acc.patches
    assert [bar.get_y() for bar in bars] == [0.5, 0.5]  # every bar starts at the stated baseline, chance
    assert [bar.get_y() + bar.get_height() for bar in bars] == pytest.approx([0.82, 0.75])
    assert bars[0].get_facecolor() != bars[1].get_facecolor()
    (whiskers,) = [c for c in acc.collections if len(c.get_segments()) == 2]
    (lo, hi) = whiskers.get_segments()[0][:, 1]
    half = 12.7062047 * 0.02828427 / 2 ** 0.5  # t(0.975, 1) · sample std / sqrt(2): the 95 % interval of the mean
    assert (lo, hi) == pytest.approx((0.82 - half, 0.82 + half), abs=1e-4)
    assert whiskers.get_segments()[1][0, 1] == whiskers.get_segments()[1][1, 1]  # one seed: no interval
    assert [bar.get_height() for bar in params.patches] == [1000, 50]
    assert [list(line.get_ydata()) for line in acc.get_lines() if line.get_linestyle() == "--"] == [[0.77, 0.77]]
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["TF-IDF + LR anchor: 0.770"]
    assert not acc.texts or all("TF-IDF" not in t.get_text() for t in acc.texts)  # in the legend, not on a bar
    fig = plots.plot_model_comparison(table)
    assert not [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]  # no anchor, no line


@pytest.mark.parametrize("name, panels", [("gru", 1), ("sum", 1), ("weighted", 2), ("attn_weighted", 4)])
def test_show_draws_one_panel_per_explanation(name, panels):
    model = helpers.make_model(name, seed=0)
    fig, info = plots.show_explanation(model, "not bad at all")
    assert len(fig.axes) == panels  # attention adds its heatmap and colour bar
    assert info["tokens"] == ["not", "bad", "at", "all"]
    assert f"{name}: P(positive) = {info['prob']:.3f}" in fig.axes[0].get_title()
    if name == "gru":  # the running prediction after each prefix
        assert list(fig.axes[0].get_lines()[0].get_ydata()) == pytest.approx(info["prefix_probs"])


def test_show_reviews_draws_what_explain_finds():
    model = helpers.make_model("attn_weighted", seed=0)
    texts = ["a great film", "bad , boring and far too long"]
    fig, infos = plots.show_reviews(model, texts)
    grid = np.array(fig.axes[:6]).reshape(3, 2)  # rows: sub-scores, weights, attention; one column per review
    for col, (text, info) in enumerate(zip(texts, infos)):
        assert info["prob"] == pytest.approx(float(helpers.predict(model, text)[0]), abs=1e-6)
        assert [bar.get_height() for bar in grid[0, col].patches] == pytest.approx(info["scores"].tolist())
        assert [bar.get_height() for bar in grid[1, col].patches] == pytest.approx(info["weights"].tolist())
        assert [tick.get_text() for tick in grid[0, col].get_xticklabels()] == info["tokens"]
    with pytest.raises(ValueError, match="use `show_explanation`"):
        plots.show_reviews(helpers.make_model("gru", seed=0), texts)


def test_attention_heatmap_blanks_what_a_word_cannot_see():
    model = helpers.make_model("attn_sum", seed=0, window=1)
    info = helpers.explain(model, "one two three four five")
    ax = plots.show_attention(info["attention"], info["tokens"])
    cells = ax.collections[0].get_array()
    assert np.ma.is_masked(cells) and cells.mask.sum() == (np.asarray(info["attention"]) <= 0).sum() == 12
    assert len(ax.texts) == 25 - 12  # the values of the visible cells are printed
    long = helpers.explain(model, " ".join(["word"] * 20))
    assert not plots.show_attention(long["attention"], long["tokens"]).texts  # more than 16 tokens: no numbers


def test_try_review_prints_one_line_and_returns_nothing(capsys, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)
    model = helpers.make_model("weighted", seed=0)
    assert plots.try_review(model, "   ") is None
    assert capsys.readouterr().out == "cannot classify this review: the review is empty: there is nothing to classify\n"
    assert plots.try_review(model, 42) is None
    assert capsys.readouterr().out.startswith("cannot classify this review: ")
    assert plots.try_review(model, "a great qwzxqwzx film") is None  # interact_manual shows no extra value
    p = float(helpers.predict(model, "a great qwzxqwzx film")[0])
    verdict = "positive" if p > 0.5 else "negative"
    assert capsys.readouterr().out == (f"weighted: P(positive) = {p:.3f} -> {verdict} | 4 tokens read, "
                                       "1 of them unknown to GloVe (<unk>)\n")


def test_show_source_shows_the_code_that_runs():
    pool, update = (plots.show_source(obj).data for obj in (helpers.pool_token_scores, helpers.GRUCell.update))
    both = plots.show_source(helpers.pool_token_scores, helpers.GRUCell.update).data
    assert both.startswith(pool) and both.endswith(update)  # several objects, in the order asked
    namespace = dict(vars(layers))  # the module that defines them: its imports (torch, math) are the shown code's
    for shown in (pool, update):
        exec(textwrap.dedent(shown), namespace)  # the shown text, run, computes what helpers computes
    out, mask = torch.randn(2, 5, 2), torch.tensor([[True] * 5, [True, True, False, False, False]])
    for weighted in (False, True):
        shown, reference = namespace["pool_token_scores"], helpers.pool_token_scores
        for a, b in zip(shown(out, mask, weighted), reference(out, mask, weighted)):
            assert (a is None and b is None) or torch.equal(a, b)
    x_proj, gh, h = torch.randn(3, 12), torch.randn(3, 12), torch.randn(3, 4)
    torch.testing.assert_close(namespace["update"](x_proj, gh, h)[0], helpers.GRUCell.update(x_proj, gh, h)[0])
